"""Typed access to Tessera's contracts: registry, market and tokens, over one Chain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.logs import DISCARD
from web3.types import TxReceipt

from tessera.chain.client import Chain, ChainError, TxRefused
from tessera.protocol.matching import ProviderOffer
from tessera.protocol.money import format_amount
from tessera.protocol.wire import BidMessage

PAYMENT_SYMBOL, PAYMENT_DECIMALS = "TUSD", 6
STAKE_SYMBOL, STAKE_DECIMALS = "TSTK", 18


class InsufficientFunds(ChainError):
    """Not enough tokens for what was asked; raised before any transaction is sent."""


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
    "market: too many rounds at once": "at most MAX_RELEASE_ROUNDS (64) rounds per transaction",
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


def claimable_epochs(lease: Lease, genesis: int, epoch_length: int, now: int) -> range:
    """Uptime epochs that may be claimed for a lease (before checking heartbeats): wholly inside
    [start, close or now), starting before the budget ran out. Mirrors Market.claim_downtime."""
    end = lease.closed_at or now
    first = -(-(lease.start - genesis) // epoch_length)
    ended = (end - genesis) // epoch_length
    rate = lease.price_per_gpu_hour * lease.gpus
    if rate > 0:  # epochs that begin before the stream reaches the budget
        exhausted = lease.start + -(-lease.budget * 3600 // rate)
        ended = min(ended, max(-(-(exhausted - genesis) // epoch_length), first))
    return range(first, max(ended, first))


def _named(fn_abi: dict, value: Any) -> dict:
    """Name the fields of a struct returned by a getter, whatever order the contract uses."""
    outputs = fn_abi["outputs"]
    if len(outputs) == 1 and outputs[0].get("components"):
        names = [c["name"] for c in outputs[0]["components"]]
    else:
        names = [o["name"] for o in outputs]
        value = value if len(outputs) > 1 else (value,)
    return dict(zip(names, value, strict=True))


def _event_arg(receipt: TxReceipt, contract, event: str, arg: str) -> Any:
    logs = getattr(contract.events, event)().process_receipt(receipt, errors=DISCARD)
    if not logs:
        raise ChainError(f"transaction 0x{receipt['transactionHash'].hex()} emitted no {event}")
    return logs[0]["args"][arg]


def tx_hash(receipt) -> str:
    """0x-prefixed hash of the transaction behind a receipt or a log."""
    return "0x" + receipt["transactionHash"].hex().removeprefix("0x")


class Market:
    """What tenants and providers do on chain, with errors in words."""

    def __init__(self, chain: Chain):
        self.chain = chain
        self.market = chain.market
        self.registry = chain.registry

    def _struct(self, contract, getter: str, key: Any) -> dict:
        fn = getattr(contract.functions, getter)
        return _named(fn(key).abi, self.chain.call(fn(key)))

    # -- providers -----------------------------------------------------------------------
    def provider_addresses(self) -> list[str]:
        count = self.chain.call(self.registry.functions.provider_count())
        return [self.chain.call(self.registry.functions.provider_at(i)) for i in range(count)]

    def provider_offer(self, address: str) -> ProviderOffer | None:
        record = self._struct(self.registry, "providers", Web3.to_checksum_address(address))
        if record["registered_at"] == 0:
            return None
        return ProviderOffer(
            address=Web3.to_checksum_address(address),
            active=self.chain.call(self.registry.functions.is_active(address)),
            gpu_model=record["gpu_model"], gpu_count=record["gpu_count"],
            gpu_memory_mb=record["gpu_memory_mb"], benchmark_score=record["benchmark_score"],
            endpoint=record["endpoint"], price_floor=record["price_floor"],
        )

    def provider_record(self, address: str) -> dict:
        return self._struct(self.registry, "providers", Web3.to_checksum_address(address))

    def register_provider(self, stake: int, gpu_model: str, gpu_count: int, gpu_memory_mb: int,
                          benchmark_score: int, endpoint: str, price_floor: int) -> TxReceipt:
        self.require_balance(self.chain.stake_token, stake, "stake", STAKE_SYMBOL, STAKE_DECIMALS)
        self.ensure_allowance(self.chain.stake_token, self.registry.address, stake)
        return self.chain.send(self.registry.functions.register(
            stake, gpu_model, gpu_count, gpu_memory_mb, benchmark_score, endpoint, price_floor))

    def update_offer(self, gpu_model: str, gpu_count: int, gpu_memory_mb: int,
                     benchmark_score: int, endpoint: str, price_floor: int) -> TxReceipt:
        return self.chain.send(self.registry.functions.update_offer(
            gpu_model, gpu_count, gpu_memory_mb, benchmark_score, endpoint, price_floor))

    # -- tokens --------------------------------------------------------------------------
    def require_balance(self, token, amount: int, purpose: str, symbol: str, decimals: int) -> None:
        have = self.chain.call(token.functions.balanceOf(self.chain.address))
        if have < amount:
            raise InsufficientFunds(
                f"not enough {symbol} for {purpose}: {self.chain.address} holds "
                f"{format_amount(have, decimals, symbol)}, needs {format_amount(amount, decimals, symbol)}"
            )

    def ensure_allowance(self, token, spender: str, amount: int) -> TxReceipt | None:
        allowance = self.chain.call(token.functions.allowance(self.chain.address, spender))
        if allowance >= amount:
            return None
        return self.chain.send(token.functions.approve(spender, amount))

    def payment_balance(self, address: str) -> int:
        return self.chain.call(self.chain.payment_token.functions.balanceOf(address))

    # -- orders and leases ---------------------------------------------------------------
    def create_order(self, spec_hash: bytes, gpu_model: str, min_gpus: int, min_gpu_memory_mb: int,
                     max_price_per_gpu_hour: int, duration: int, nodes: int,
                     deposit: int, *, verified: bool = False) -> tuple[int, list[TxReceipt]]:
        """Post an order; `verified`: its leases are paid only for final Verification rounds
        (the Market must know its Verification contract: deploy_all wires it)."""
        token = self.chain.payment_token
        self.require_balance(token, deposit, "the order's escrow", PAYMENT_SYMBOL, PAYMENT_DECIMALS)
        receipts = []
        approval = self.ensure_allowance(token, self.market.address, deposit)
        if approval is not None:
            receipts.append(approval)
        receipt = self.chain.send(self.market.functions.create_order(
            spec_hash, gpu_model, min_gpus, min_gpu_memory_mb, max_price_per_gpu_hour,
            duration, nodes, deposit, verified))
        receipts.append(receipt)
        return _event_arg(receipt, self.market, "OrderCreated", "order_id"), receipts

    def order(self, order_id: int) -> Order:
        record = self._struct(self.market, "orders", order_id)
        if record["tenant"] == "0x" + "0" * 40:
            raise ChainError(f"order {order_id} does not exist")
        verified = self.chain.call(self.market.functions.verified(order_id))
        return Order(order_id=order_id, verified=verified,
                     **{k: record[k] for k in Order.__dataclass_fields__
                        if k not in ("order_id", "verified")})

    def lease(self, lease_id: int) -> Lease:
        record = self._struct(self.market, "leases", lease_id)
        if record["tenant"] == "0x" + "0" * 40:
            raise ChainError(f"lease {lease_id} does not exist")
        return Lease(lease_id=lease_id, **{k: record[k] for k in Lease.__dataclass_fields__
                                          if k != "lease_id"})

    def earned(self, lease_id: int) -> int:
        return self.chain.call(self.market.functions.earned(lease_id))

    def withdrawable(self, lease_id: int) -> int:
        """Gross amount `withdraw` would pay now (a verified lease: released pay only)."""
        return self.chain.call(self.market.functions.withdrawable(lease_id))

    # -- verified leases: pay waits for final rounds (docs/verification.md) ----------------
    def is_verified(self, order_id: int) -> bool:
        return self.chain.call(self.market.functions.verified(order_id))

    def releases(self, lease_id: int) -> Release:
        return Release(**self._struct(self.market, "releases", lease_id))

    def final_rounds(self, lease_id: int, job: int) -> int:
        """The end (exclusive) of the run of final rounds from the lease's next round to
        release, at most MAX_RELEASE_ROUNDS of them: the `up_to_round` that `release` accepts."""
        verification = self.chain.contract("Verification")
        start = self.releases(lease_id).next_round
        posted = self.chain.call(verification.functions.rounds_posted(job))
        end = start
        while end < min(posted, start + 64) and self.chain.call(
                verification.functions.round_finalized(job, end)):
            end += 1
        return end

    def release(self, lease_id: int, up_to_round: int | None = None) -> PayRelease:
        """Release a verified lease's pay for its job's final rounds before `up_to_round` (by
        default: as far as they are final) and, past the last posted root, for time older than
        the release delay. Refusals are explained (RELEASE_REFUSALS)."""
        if up_to_round is None:
            up_to_round = self.final_rounds(lease_id, self.lease(lease_id).order_id)
        try:
            receipt = self.chain.send(self.market.functions.release(lease_id, up_to_round))
        except TxRefused as exc:
            reason = next((f"{r} ({why})" for r, why in RELEASE_REFUSALS.items() if r in str(exc)),
                          None)
            if reason is None:
                raise
            raise TxRefused(f"release of lease {lease_id} up to round {up_to_round} refused: "
                            f"{reason}") from None
        logs = self.market.events.PayReleased().process_receipt(receipt, errors=DISCARD)
        if not logs:
            raise ChainError(f"transaction {tx_hash(receipt)} emitted no PayReleased")
        args = logs[0]["args"]
        return PayRelease(args["from_round"], args["to_round"], args["released_until"],
                          args["amount"], args["withheld"], args["refund"], tx_hash(receipt))

    def release_ready(self, lease_id: int) -> PayRelease | None:
        """`release` as far as possible; None when there is nothing to release (or the lease is
        not verified), so a provider can call it before every withdrawal."""
        lease = self.lease(lease_id)
        if not self.is_verified(lease.order_id):
            return None
        try:
            return self.release(lease_id)
        except TxRefused as exc:
            if "market: nothing to release" in str(exc):
                return None
            raise

    # -- downtime (docs/uptime.md) ---------------------------------------------------------
    def missed_epochs(self, lease: Lease) -> list[int]:
        """Claimable epochs of a lease without a heartbeat and not yet claimed: one Uptime and
        one Market call per 256 epochs."""
        uptime = self.chain.uptime
        genesis = self.chain.call(uptime.functions.genesis())
        length = self.chain.call(uptime.functions.epoch_length())
        epochs = claimable_epochs(lease, genesis, length, self.chain.block_timestamp())
        missed: list[int] = []
        for index in range(epochs.start >> 8, ((epochs.stop - 1) >> 8) + 1 if epochs else 0):
            beats = self.chain.call(uptime.functions.beat_word(lease.provider, index))
            claimed = self.chain.call(self.market.functions.claimed_word(lease.lease_id, index))
            taken = beats | claimed
            missed += [e for e in range(max(index << 8, epochs.start),
                                        min((index + 1) << 8, epochs.stop))
                       if not taken >> (e & 255) & 1]
        return missed

    def claim_downtime(self, lease_id: int, epochs: list[int]) -> DowntimeClaim:
        receipt = self.chain.send(self.market.functions.claim_downtime(lease_id, epochs))
        logs = self.market.events.DowntimeClaimed().process_receipt(receipt, errors=DISCARD)
        if not logs:
            raise ChainError(f"transaction {tx_hash(receipt)} emitted no DowntimeClaimed")
        args = logs[0]["args"]
        return DowntimeClaim(list(args["epochs"]), args["amount"], args["refund"],
                             args["stake_slashed"], tx_hash(receipt))

    def accept_bid(self, bid: BidMessage) -> tuple[int, TxReceipt]:
        receipt = self.chain.send(self.market.functions.accept_bid(
            bid.order_id, Web3.to_checksum_address(bid.provider), bid.price_per_gpu_hour,
            bid.nonce, bid.expiry, bytes.fromhex(bid.signature.removeprefix("0x"))))
        return _event_arg(receipt, self.market, "LeaseCreated", "lease_id"), receipt

    def withdraw(self, lease_id: int) -> TxReceipt:
        return self.chain.send(self.market.functions.withdraw(lease_id))

    def close_lease(self, lease_id: int) -> TxReceipt:
        return self.chain.send(self.market.functions.close_lease(lease_id))

    def cancel_order(self, order_id: int) -> TxReceipt:
        return self.chain.send(self.market.functions.cancel_order(order_id))

    def top_up(self, lease_id: int, amount: int) -> list[TxReceipt]:
        token = self.chain.payment_token
        self.require_balance(token, amount, "the top-up", PAYMENT_SYMBOL, PAYMENT_DECIMALS)
        approval = self.ensure_allowance(token, self.market.address, amount)
        receipt = self.chain.send(self.market.functions.top_up(lease_id, amount))
        return [r for r in (approval, receipt) if r is not None]

    def commit_result(self, lease_id: int, result_hash: bytes) -> TxReceipt:
        return self.chain.send(self.market.functions.commit_result(lease_id, result_hash))

    def fee_bps(self) -> int:
        return self.chain.call(self.market.functions.fee_bps())

    def lease_closed_event(self, receipt: TxReceipt) -> dict:
        logs = self.market.events.LeaseClosed().process_receipt(receipt, errors=DISCARD)
        return dict(logs[0]["args"]) if logs else {}

    def withdrawn_event(self, receipt: TxReceipt) -> dict:
        logs = self.market.events.Withdrawn().process_receipt(receipt, errors=DISCARD)
        return dict(logs[0]["args"]) if logs else {}
