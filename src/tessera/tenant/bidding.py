"""Leasing nodes for a job: post the order with escrow, collect and judge bids (shown with each
provider's reliability score, from the tenant's index of chain logs), accept the best, refund the rest.

Shared by the single-node rental (tenant/flow.py) and the DiLoCo job (tenant/multinode.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console

from tessera.chain.client import Chain, tx_hash
from tessera.errors import ChainError, NetworkError, TenantError
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.matching import SELECTION_RULE, BidVerdict, ProviderOffer, rank
from tessera.protocol.money import (
    PAYMENT_DECIMALS,
    PAYMENT_SYMBOL,
    STAKE_DECIMALS,
    STAKE_SYMBOL,
    show_amount,
)
from tessera.protocol.reliability import NAME as RELIABILITY
from tessera.tenant.bid_collection import collect_bids
from tessera.tenant.client import Tenant
from tessera.tenant.reliability_index import ReliabilityIndex


def money(amount: int) -> str:
    """A payment-token amount for a person (exact: TUSD has 6 decimals)."""
    return show_amount(amount, PAYMENT_DECIMALS, PAYMENT_SYMBOL)


def tstk(amount: int) -> str:
    """A stake-token amount for a person: at most 6 decimals, '≈' when rounded
    ('≈5.00 TSTK', not '4.999999999999999998 TSTK')."""
    return show_amount(amount, STAKE_DECIMALS, STAKE_SYMBOL)


UPTIME = "uptime.by_provider"


def bid_reliability(chain: Chain, console: Console) -> dict[str, dict[str, int]]:
    """{lower-case address: {part: value}} of every provider's `reliability.by_provider.*` figures,
    plus `up` and `epochs` (the explorer's `uptime.by_provider.*`: the measured uptime its
    provider page shows, before the score's smoothing), as of the chain's head with the explorer's
    own definition (docs/explorer.md). They come from the tenant's reliability index
    (tenant/reliability_index.py): only the logs since the last rental are read. A chain that
    cannot answer leaves the column empty, not the rental."""
    try:
        values = ReliabilityIndex(chain).values(console)
    except (ChainError, NetworkError, OSError) as exc:
        console.print(f"reliability scores unavailable: {exc}")
        return {}
    scores: dict[str, dict[str, int]] = {}
    for (name, address), value in values.items():
        if name.startswith(f"{RELIABILITY}."):
            scores.setdefault(address.lower(), {})[name.removeprefix(f"{RELIABILITY}.")] = value
    for (name, address), value in values.items():
        part = name.removeprefix(f"{UPTIME}.")
        if part in ("up", "epochs") and address.lower() in scores:
            scores[address.lower()][part] = value
    return scores


def uptime_text(score: dict[str, int]) -> str:
    """The uptime part of a bid line, two figures, each named: the measured share of epochs with
    a heartbeat (`uptime.by_provider.bps`, what the explorer's provider page shows) and the
    smoothed one the score uses, which 24 pseudo-epochs at 50 % pull towards the middle while
    evidence is thin (protocol/reliability.py): a provider with a heartbeat in its one epoch
    shows 'uptime 100.00% = 1/1 epochs, 52.00% smoothed'."""
    smoothed = f"{score['uptime_bps'] / 100:.2f}% smoothed"
    epochs = score.get("epochs")
    if epochs is None:
        return f"uptime {smoothed}"
    if epochs == 0:
        return f"uptime: no epoch owed yet, {smoothed}"
    beats = score.get("up", 0)
    return f"uptime {beats * 10_000 // epochs / 100:.2f}% = {beats}/{epochs} epochs, {smoothed}"


def reliability_text(score: dict[str, int] | None) -> str:
    """'40.80% (uptime 100.00% = 1/1 epochs, 52.00% smoothed; 0 finished / 0 failed,
    0 slashes)' for a bid line; '?' if unknown."""
    if not score:
        return "?"
    return (f"{score['bps'] / 100:.2f}% ({uptime_text(score)}; "
            f"{score['finished']} finished / {score['failed']} failed, {score['slashes']} slashes)")


def device_text(offer: ProviderOffer | None) -> str:
    """A provider's registered device and its memory, named for what it is: a CPU provider
    registers its system memory in the registry's `gpu_memory_mb` (provider/hardware.py)."""
    if offer is None:
        return "?"
    kind = "system memory" if offer.gpu_model.lower().startswith("cpu") else "GPU memory"
    return f"{offer.gpu_model}, {offer.gpu_memory_mb:,} MB {kind}"


@dataclass
class Leasing:
    """What leasing a job's nodes did: the order, the leases with the bids they came from, the
    transactions by step, every bid as judged, and the escrow no lease needed."""

    order_id: int
    leases: list[tuple[int, BidVerdict]]
    transactions: dict[str, str | list[str]]
    bids: list[dict]
    order_to_lease_s: float
    unallocated_refund: int | None = None

    def summary(self) -> dict:
        """The fields a job summary shows about it (`tessera job submit --json`), in order."""
        out = {"transactions": self.transactions, "order_id": self.order_id, "bids": self.bids,
               "selection_rule": SELECTION_RULE, "order_to_lease_s": self.order_to_lease_s}
        if self.unallocated_refund is not None:
            out["unallocated_refund"] = self.unallocated_refund
        return out


def _refund_route(tenant: Tenant) -> str:
    """Where an order's refund goes beyond the Market, in words ("" for the tenant itself)."""
    if tenant.pay_from is None:
        return ""
    return f" to BridgeOrders, which sends it back to chain {tenant.pay_from.network.chain_id}"


def lease_nodes(tenant: Tenant, spec: JobSpec, console: Console) -> Leasing:
    """Order with escrow, collect and judge bids, accept the best `order.nodes` of them (one per
    provider), and take back the escrow no lease needed."""
    txs: dict = {}
    t0 = time.monotonic()
    # a verified job's pay waits for its rounds to be final (docs/verification.md)
    order_id, order_txs = tenant.post_order(
        spec, verified=spec.mode == "diloco" and spec.verification.enabled)
    if len(order_txs) > 1:
        txs["approve"] = order_txs[0]
    txs["order"] = order_txs[-1]
    if tenant.pay_from is None:
        console.print(f"order {order_id} posted with {money(spec.order.escrow)} in escrow "
                      f"(tx {order_txs[-1]})")
    else:
        console.print(f"order {order_id} opened on chain {tenant.chain.network.chain_id} by the "
                      f"delivery of its {money(spec.order.escrow)} deposit, sent from chain "
                      f"{tenant.pay_from.network.chain_id} (tx {order_txs[-1]} there)")
    console.print(f"collecting bids for {spec.order.bid_window} s ...")
    # concurrently, from the providers whose offer can match only (tenant/bid_collection.py)
    verdicts = collect_bids(tenant.market, order_id, spec.order.bid_window, emit=tenant.emit)
    ranked = rank(verdicts)
    scores = bid_reliability(tenant.chain, console)
    bids = [{"provider": v.bid.provider, "price_per_gpu_hour": v.bid.price_per_gpu_hour,
             "device": v.offer.gpu_model if v.offer else None,
             "device_memory": device_text(v.offer) if v.offer else None,
             "benchmark_mflops": v.offer.benchmark_score if v.offer else None,
             "reliability": scores.get(v.bid.provider.lower()),
             "valid": v.valid, "problems": v.problems} for v in verdicts]
    for v in sorted(verdicts, key=lambda v: v.bid.price_per_gpu_hour):
        state = "valid" if v.valid else "rejected: " + "; ".join(v.problems)
        console.print(f"  bid {money(v.bid.price_per_gpu_hour)}/GPU-h from {v.bid.provider} "
                      f"({device_text(v.offer)}; reliability "
                      f"{reliability_text(scores.get(v.bid.provider.lower()))}): {state}")
    if not ranked:
        cancel = tenant.market.cancel_order(order_id)
        back = _refund_route(tenant)
        raise TenantError(f"no valid bid for order {order_id}; the order was cancelled and its "
                          f"escrow refunded{back} (tx {tx_hash(cancel)})")
    chosen = ranked[:spec.order.nodes]
    if len(chosen) < spec.order.nodes:
        console.print(f"only {len(chosen)} valid bid(s) for {spec.order.nodes} node(s): "
                      "going on with those")
    console.print(f"rule: {SELECTION_RULE} (reliability is shown, not used)")
    leases = []
    for verdict in chosen:
        lease_id, accept_tx = tenant.accept(verdict)
        txs.setdefault("accept", []).append(accept_tx)
        leases.append((lease_id, verdict))
        console.print(f"lease {lease_id} with {verdict.bid.provider} at "
                      f"{money(verdict.bid.price_per_gpu_hour)}/GPU-h (tx {accept_tx})")
    leasing = Leasing(order_id, leases, txs, bids, round(time.monotonic() - t0, 3))
    order = tenant.market.order(order_id)
    if order.deposit > order.allocated:  # escrow beyond the accepted prices comes back now
        receipt = tenant.market.cancel_order(order_id)
        txs["refund"] = tx_hash(receipt)
        leasing.unallocated_refund = order.deposit - order.allocated
        back = _refund_route(tenant)
        console.print(f"unallocated escrow {money(order.deposit - order.allocated)} refunded"
                      f"{back} (tx {txs['refund']})")
    return leasing
