"""Market.vy: orders, escrow, leases, pay streams and downtime claims (a verified lease's pay is
released by Settlement.vy: chain/settlement.py)."""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.client import tx_hash
from tessera.chain.contract import ZERO_ADDRESS, ContractWrapper
from tessera.chain.registry import ProviderRegistry
from tessera.chain.tokens import PaymentToken
from tessera.chain.uptime import Uptime
from tessera.errors import ChainError
from tessera.protocol import liveness
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
    verified: bool = False  # leases paid only for final Verification rounds (Settlement)


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
    fee_bps: int = 0             # the protocol fee of its payouts, fixed at its creation

    @property
    def is_open(self) -> bool:
        return self.closed_at == 0


@dataclass(frozen=True)
class DowntimeClaim:
    """One `claim_downtime` transaction, from its DowntimeClaimed event."""
    epochs: list[int]
    amount: int          # the lease's pay for those epochs (gross)
    refund: int          # sent to the tenant now (the rest is netted at close)
    stake_slashed: int   # stake-token base units slashed from the provider and burned
    tx: str


class Market(ContractWrapper):
    """What tenants and providers do with the Market, with errors in words."""

    NAME = "Market"

    def __init__(self, chain):
        super().__init__(chain)
        self.payment_token = PaymentToken(chain)   # escrow is paid in it
        self.registry = ProviderRegistry(chain)    # who may bid, and their offers

    # -- orders and leases ---------------------------------------------------------------
    def create_order(self, spec_hash: bytes, gpu_model: str, min_gpus: int, min_gpu_memory_mb: int,
                     max_price_per_gpu_hour: int, duration: int, nodes: int,
                     deposit: int, *, verified: bool = False) -> tuple[int, list[TxReceipt]]:
        """Post an order; `verified`: its leases are paid only for final Verification rounds
        (the Market must know its Settlement contract: deploy_all wires it)."""
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

    # -- verified leases: pay waits for final rounds (Settlement, docs/verification.md) ------
    def is_verified(self, order_id: int) -> bool:
        return self._call("verified", order_id)

    # -- downtime (docs/uptime.md) ---------------------------------------------------------
    def missed_epochs(self, lease: Lease) -> list[int]:
        """Claimable epochs of a lease in which its provider was not up and not yet claimed:
        final epochs only (Uptime.is_up presumes a later one up), with no heartbeat (one Uptime
        and one Market call per 256 epochs) and no validator's report naming the provider (one
        call per epoch left). docs/uptime.md."""
        uptime = Uptime(self.chain)
        epochs = claimable_epochs(lease.start, lease.closed_at or self.chain.block_timestamp(),
                                  lease.price_per_gpu_hour, lease.gpus, lease.budget,
                                  uptime.genesis(), uptime.epoch_length())
        if not epochs:
            return []
        report_delay, answer_epochs = uptime.liveness_rules()
        current = uptime.current_epoch()
        epochs = range(epochs.start, min(epochs.stop, max(
            epochs.start, current - liveness.answer_end(0, report_delay, answer_epochs))))
        candidates: list[int] = []
        for index in range(epochs.start >> 8, ((epochs.stop - 1) >> 8) + 1 if epochs else 0):
            taken = uptime.beat_word(lease.provider, index) | self._call(
                "claimed_word", lease.lease_id, index)
            candidates += [e for e in range(max(index << 8, epochs.start),
                                            min((index + 1) << 8, epochs.stop))
                           if not taken >> (e & 255) & 1]
        if not candidates:
            return []
        slot = ProviderRegistry(self.chain).index_of(lease.provider)
        return [e for e in candidates
                if not uptime.live_word(e, slot >> 8) >> (slot & 255) & 1]

    def max_claim_epochs(self) -> int:
        """Epochs one `claim_downtime` transaction may carry (Market.MAX_CLAIM_EPOCHS)."""
        return self._call("MAX_CLAIM_EPOCHS")

    def claim_window(self) -> int:
        """Seconds after a lease closes during which its downtime may still be claimed."""
        return self._call("claim_window")

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
        payer = self.refund_to(self.lease(lease_id).order_id)
        if payer != ZERO_ADDRESS and payer.lower() != self.chain.address.lower():
            raise ChainError(f"lease {lease_id}'s order was paid for by {payer} and its refunds "
                             "go there: only that payer tops it up (an order funded from another "
                             "chain: tessera job top-up LEASE AMOUNT --pay-from-chain ID)")
        receipts = self.payment_token.fund(self.address, amount, "the top-up")
        return [*receipts, self._send("top_up", lease_id, amount)]

    def refund_to(self, order_id: int) -> str:
        """Who paid the order's deposit and gets its refunds, when not its tenant (else the
        zero address: the tenant)."""
        return self._call("refund_to", order_id) or ZERO_ADDRESS

    def refunded(self, order_id: int) -> int:
        """All that went back to the order's payer (`refund_to`) so far."""
        return self._call("refunded", order_id)

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
