"""Market.vy: orders, escrow, leases, pay streams, verified release and downtime claims."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.client import tx_hash
from tessera.chain.contract import ZERO_ADDRESS, ContractWrapper
from tessera.chain.registry import ProviderRegistry
from tessera.chain.tokens import PaymentToken
from tessera.chain.uptime import Uptime
from tessera.chain.verification import Verification
from tessera.errors import ChainError, TxRefused
from tessera.protocol.lease import claimable_epochs
from tessera.protocol.wire import BidMessage


@dataclass(frozen=True)
class Order:
    order_id: int
    tenant: str
    spec_hash: bytes
    gpu_model: str
    min_gpus: int
    min_gpu_memory_mb: int
    max_price_per_gpu_hour: int
    duration: int
    nodes: int
    deposit: int
    allocated: int
    leases_made: int
    open: bool
    verified: bool = False  # leases paid only for final Verification rounds (`release`)


@dataclass(frozen=True)
class Lease:
    lease_id: int
    order_id: int
    tenant: str
    provider: str
    price_per_gpu_hour: int
    gpus: int
    start: int
    budget: int
    paid: int
    closed_at: int
    result_hash: bytes
    downtime: int = 0            # pay (gross) for claimed epochs without a heartbeat
    downtime_refunded: int = 0   # the part of it already sent back to the tenant

    @property
    def is_open(self) -> bool:
        return self.closed_at == 0


@dataclass(frozen=True)
class Release:
    """A verified lease's release state (`Market.releases`; all zero for other leases)."""
    next_round: int   # the next round of the job to walk
    until: int        # pay for [start, until) is released (0: nothing yet)
    proven: int       # gross pay of rounds proven to cheat: never the provider's
    refunded: int     # sent back to the tenant besides downtime (proven rounds, the close)


@dataclass(frozen=True)
class PayRelease:
    """One `release` transaction, from its PayReleased event."""
    from_round: int
    to_round: int
    released_until: int
    amount: int     # gross pay newly payable to the provider
    withheld: int   # gross pay of the proven rounds walked
    refund: int     # the part of it sent back to the tenant now
    tx: str


# What each refusal of Market.release means, for whoever reads the error.
RELEASE_REFUSALS = {
    "market: round not final": "a round in the range is inside its challenge window or has a "
                               "challenge open (Verification.round_finalized is false); retry later",
    "market: round not posted": "the job has fewer round roots on chain than asked for",
    "market: nothing to release": "every posted final round and all time older than the "
                                  "release delay are released already",
    "market: too many rounds at once": "at most MAX_RELEASE_ROUNDS rounds per transaction",
    "market: lease not verified": "the lease's order is not verified: its pay streams by time",
    "market: unknown lease": "no such lease",
}


@dataclass(frozen=True)
class DowntimeClaim:
    """One `claim_downtime` transaction, from its DowntimeClaimed event."""
    epochs: list[int]
    amount: int          # the lease's pay for those epochs (gross)
    refund: int          # sent to the tenant now (the rest is netted at close)
    stake_slashed: int   # stake-token base units slashed from the provider to the tenant
    tx: str


class Market(ContractWrapper):
    """What tenants and providers do with the Market, with errors in words."""

    NAME = "Market"

    def __init__(self, chain):
        super().__init__(chain)
        self.payment_token = PaymentToken(chain)   # escrow is paid in it
        self.registry = ProviderRegistry(chain)    # who may bid, and their offers

    @cached_property
    def max_release_rounds(self) -> int:
        """Rounds one `release` transaction may walk (Market.MAX_RELEASE_ROUNDS)."""
        return self._call("MAX_RELEASE_ROUNDS")

    # -- orders and leases ---------------------------------------------------------------
    def create_order(self, spec_hash: bytes, gpu_model: str, min_gpus: int, min_gpu_memory_mb: int,
                     max_price_per_gpu_hour: int, duration: int, nodes: int,
                     deposit: int, *, verified: bool = False) -> tuple[int, list[TxReceipt]]:
        """Post an order; `verified`: its leases are paid only for final Verification rounds
        (the Market must know its Verification contract: deploy_all wires it)."""
        receipts = self.payment_token.fund(self.address, deposit, "the order's escrow")
        receipt = self._send("create_order", spec_hash, gpu_model, min_gpus, min_gpu_memory_mb,
                             max_price_per_gpu_hour, duration, nodes, deposit, verified)
        receipts.append(receipt)
        return self._event(receipt, "OrderCreated")["order_id"], receipts

    def order(self, order_id: int) -> Order:
        record = self._struct("orders", order_id)
        if record["tenant"] == ZERO_ADDRESS:
            raise ChainError(f"order {order_id} does not exist")
        return Order(order_id=order_id, verified=self.is_verified(order_id),
                     **{k: record[k] for k in Order.__dataclass_fields__
                        if k not in ("order_id", "verified")})

    def lease(self, lease_id: int) -> Lease:
        record = self._struct("leases", lease_id)
        if record["tenant"] == ZERO_ADDRESS:
            raise ChainError(f"lease {lease_id} does not exist")
        return Lease(lease_id=lease_id, **{k: record[k] for k in Lease.__dataclass_fields__
                                          if k != "lease_id"})

    def earned(self, lease_id: int) -> int:
        return self._call("earned", lease_id)

    def withdrawable(self, lease_id: int) -> int:
        """Gross amount `withdraw` would pay now (a verified lease: released pay only)."""
        return self._call("withdrawable", lease_id)

    # -- verified leases: pay waits for final rounds (docs/verification.md) ----------------
    def is_verified(self, order_id: int) -> bool:
        return self._call("verified", order_id)

    def release_delay(self) -> int:
        """Seconds (challenge window + root grace) after which pay for time that no round root
        covers is released anyway."""
        return self._call("release_delay")

    def releases(self, lease_id: int) -> Release:
        return Release(**self._struct("releases", lease_id))

    def final_rounds(self, lease_id: int, job: int) -> int:
        """The end (exclusive) of the run of final rounds from the lease's next round to
        release, at most MAX_RELEASE_ROUNDS of them: the `up_to_round` that `release` accepts."""
        verification = Verification(self.chain)
        start = self.releases(lease_id).next_round
        posted = verification.rounds_posted(job)
        end = start
        while end < min(posted, start + self.max_release_rounds) and \
                verification.round_finalized(job, end):
            end += 1
        return end

    def release(self, lease_id: int, up_to_round: int | None = None, *,
                lease: Lease | None = None) -> PayRelease:
        """Release a verified lease's pay for its job's final rounds before `up_to_round` (by
        default: as far as they are final) and, past the last posted root, for time older than
        the release delay. Refusals are explained (RELEASE_REFUSALS)."""
        if up_to_round is None:
            order_id = (lease or self.lease(lease_id)).order_id
            up_to_round = self.final_rounds(lease_id, order_id)
        try:
            receipt = self._send("release", lease_id, up_to_round)
        except TxRefused as exc:
            reason = next((f"{r} ({why})" for r, why in RELEASE_REFUSALS.items() if r in str(exc)),
                          None)
            if reason is None:
                raise
            raise TxRefused(f"release of lease {lease_id} up to round {up_to_round} refused: "
                            f"{reason}") from None
        args = self._event(receipt, "PayReleased")
        return PayRelease(args["from_round"], args["to_round"], args["released_until"],
                          args["amount"], args["withheld"], args["refund"], tx_hash(receipt))

    def release_ready(self, lease_id: int, lease: Lease | None = None) -> PayRelease | None:
        """`release` as far as possible; None when there is nothing to release (or the lease is
        not verified), so a provider can call it before every withdrawal. `lease`: the lease
        as just read, to save reading it again."""
        lease = lease or self.lease(lease_id)
        if not self.is_verified(lease.order_id):
            return None
        try:
            return self.release(lease_id, lease=lease)
        except TxRefused as exc:
            if "market: nothing to release" in str(exc):
                return None
            raise

    # -- downtime (docs/uptime.md) ---------------------------------------------------------
    def missed_epochs(self, lease: Lease) -> list[int]:
        """Claimable epochs of a lease without a heartbeat and not yet claimed: one Uptime and
        one Market call per 256 epochs."""
        uptime = Uptime(self.chain)
        epochs = claimable_epochs(lease.start, lease.closed_at or self.chain.block_timestamp(),
                                  lease.price_per_gpu_hour, lease.gpus, lease.budget,
                                  uptime.genesis(), uptime.epoch_length())
        missed: list[int] = []
        for index in range(epochs.start >> 8, ((epochs.stop - 1) >> 8) + 1 if epochs else 0):
            taken = uptime.beat_word(lease.provider, index) | self._call(
                "claimed_word", lease.lease_id, index)
            missed += [e for e in range(max(index << 8, epochs.start),
                                        min((index + 1) << 8, epochs.stop))
                       if not taken >> (e & 255) & 1]
        return missed

    def max_claim_epochs(self) -> int:
        """Epochs one `claim_downtime` transaction may carry (Market.MAX_CLAIM_EPOCHS)."""
        return self._call("MAX_CLAIM_EPOCHS")

    def claim_downtime(self, lease_id: int, epochs: list[int]) -> DowntimeClaim:
        receipt = self._send("claim_downtime", lease_id, epochs)
        args = self._event(receipt, "DowntimeClaimed")
        return DowntimeClaim(list(args["epochs"]), args["amount"], args["refund"],
                             args["stake_slashed"], tx_hash(receipt))

    def accept_bid(self, bid: BidMessage) -> tuple[int, TxReceipt]:
        receipt = self._send(
            "accept_bid", bid.order_id, Web3.to_checksum_address(bid.provider),
            bid.price_per_gpu_hour, bid.nonce, bid.expiry,
            bytes.fromhex(bid.signature.removeprefix("0x")))
        return self._event(receipt, "LeaseCreated")["lease_id"], receipt

    def withdraw(self, lease_id: int) -> TxReceipt:
        return self._send("withdraw", lease_id)

    def close_lease(self, lease_id: int) -> TxReceipt:
        return self._send("close_lease", lease_id)

    def cancel_order(self, order_id: int) -> TxReceipt:
        return self._send("cancel_order", order_id)

    def top_up(self, lease_id: int, amount: int) -> list[TxReceipt]:
        receipts = self.payment_token.fund(self.address, amount, "the top-up")
        return [*receipts, self._send("top_up", lease_id, amount)]

    def commit_result(self, lease_id: int, result_hash: bytes) -> TxReceipt:
        return self._send("commit_result", lease_id, result_hash)

    def fee_bps(self) -> int:
        return self._call("fee_bps")

    def lease_closed_event(self, receipt: TxReceipt) -> dict:
        logs = self._events(receipt, "LeaseClosed")
        return logs[0] if logs else {}

    def withdrawn_event(self, receipt: TxReceipt) -> dict:
        logs = self._events(receipt, "Withdrawn")
        return logs[0] if logs else {}
