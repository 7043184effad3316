"""Figures and database rows shaped into the API models; the HTML pages format the same models.

Nothing is defined here: every number is a figure selected by name and key (docs/explorer.md).
"""

from __future__ import annotations

from tessera.explorer import db
from tessera.explorer.derive import record_of
from tessera.explorer.web.models import (
    AgentPaymentOut,
    AgentPaymentsOut,
    AgentTotals,
    DowntimeTotals,
    EpochOut,
    EpochStrip,
    EventOut,
    FigureOut,
    LeaseOut,
    LeaseTotals,
    LivenessOut,
    Overview,
    Paging,
    PaymentOut,
    PriceRow,
    ProviderOut,
    ProviderScore,
    ReliabilityOut,
    RevenueRow,
    StakeOut,
    Units,
    UptimeOut,
    UtilizationRow,
)
from tessera.explorer.web.queries import Explorer, Paged, Snapshot
from tessera.explorer.web.units import DECIMALS, arg_unit, figure_unit
from tessera.protocol import reliability
from tessera.protocol.figures import ALL, PERCENTILES, Figure, Figures, epoch_at, ratio
from tessera.protocol.lease import exhausted_at
from tessera.protocol.uptime_book import PENDING, REVOKED, UP_STATES

STRIP_EPOCHS = 120   # epochs drawn in a provider's uptime chart


def _fig(figures: Figures, name: str, key: str = ALL) -> Figure:
    """The figure, or a zero with no transactions where nothing booked it."""
    return figures.get((name, key)) or Figure(name, key, 0, ())


# A figure inside a larger answer (overview, providers) lists at most this many of its
# transactions: revenue.total.tenant_paid has one per payment, so the whole list would make the
# overview grow with history; `tx_count` gives them all and /api/figure pages through them.
TXS_INLINE = 100


def figure_out(f: Figure, txs: list[str] | None = None) -> FigureOut:
    """The figure with its transactions: the first TXS_INLINE (`txs`: one page of them instead)."""
    unit = figure_unit(f.name)
    return FigureOut(name=f.name, key=f.key, value=str(f.value), unit=unit, decimals=DECIMALS.get(unit, 0),
                     txs=list(f.txs[:TXS_INLINE]) if txs is None else txs, tx_count=len(f.txs))


def paging_out(rows: Paged) -> Paging:
    return Paging(page=rows.page, pages=rows.pages, total=rows.total, size=rows.size)


def _keys(figures: Figures, name: str) -> list[str]:
    return sorted(key for n, key in figures if n == name)



def revenue_row(figures: Figures, scope: str, key: str) -> RevenueRow:
    return RevenueRow(key=key, **{part: figure_out(_fig(figures, f"revenue.{scope}.{part}", key))
                                  for part in ("tenant_paid", "provider_income", "protocol_fees")})


def agent_payments_out(figures: Figures, scope: str = "total", key: str = ALL) -> AgentPaymentsOut:
    """Agent payments to registered providers: `scope` 'total' (key 'all') or 'by_provider'."""
    return AgentPaymentsOut(**{part: figure_out(_fig(figures, f"agent_payments.{scope}.{part}", key))
                               for part in AgentPaymentsOut.model_fields})


def agent_totals(figures: Figures) -> AgentTotals:
    f = figures
    return AgentTotals(
        **agent_payments_out(f).model_dump(),
        **{f"{scheme}_{part}": figure_out(_fig(f, f"agent_payments.by_scheme.{part}", scheme))
           for scheme in ("budget", "exact") for part in ("count", "amount")},
        **{part: figure_out(_fig(f, f"agent_budget.total.{part}"))
           for part in ("deposits", "withdrawals", "paid", "balance", "grants")})


def agent_payment_out(p: db.AgentPayment) -> AgentPaymentOut:
    return AgentPaymentOut(tx_hash=p.tx_hash, log_index=p.log_index, block_number=p.block_number,
                           timestamp=p.timestamp, scheme=p.scheme, payer=p.payer, key=p.key,
                           payee=p.payee, grant_id=p.grant_id, nonce=p.nonce,
                           to_provider=bool(p.to_provider), self_paid=bool(p.self_paid),
                           amount_base_units=str(p.amount))


def utilization_row(figures: Figures, scope: str, key: str) -> UtilizationRow:
    return UtilizationRow(
        key=key, leased_gpu_seconds=figure_out(_fig(figures, f"utilization.{scope}.leased_gpu_seconds", key)),
        registered_gpu_seconds=figure_out(_fig(figures, f"utilization.{scope}.registered_gpu_seconds", key)),
        utilization=ratio(figures, scope, key))


def overview(snap: Snapshot) -> Overview:
    f = snap.figures
    prices = []
    for model in _keys(f, "price.by_model.count"):
        parts = {label: figure_out(_fig(f, f"price.by_model.{label}", model)) for label in PERCENTILES}
        spread = _fig(f, "price.by_model.max", model).value - _fig(f, "price.by_model.min", model).value
        prices.append(PriceRow(model=model, count=figure_out(_fig(f, "price.by_model.count", model)),
                               spread_base_units=str(spread), **parts))
    return Overview(
        block=snap.block, block_hash=snap.block_hash, as_of=snap.as_of, units=Units(),
        providers=figure_out(_fig(f, "providers.total.count")),
        orders=figure_out(_fig(f, "orders.total.count")),
        revenue=revenue_row(f, "total", ALL),
        revenue_by_day=[revenue_row(f, "by_day", d) for d in _keys(f, "revenue.by_day.tenant_paid")],
        utilization=utilization_row(f, "total", ALL),
        utilization_by_day=[utilization_row(f, "by_day", d)
                            for d in _keys(f, "utilization.by_day.registered_gpu_seconds")],
        utilization_by_model=[utilization_row(f, "by_model", m)
                              for m in _keys(f, "utilization.by_model.registered_gpu_seconds")],
        prices=prices,
        stake=StakeOut(active=figure_out(_fig(f, "stake.total.active")),
                       unbonding=figure_out(_fig(f, "stake.total.unbonding")),
                       slashed=figure_out(_fig(f, "stake.total.slashed")),
                       slashes_count=figure_out(_fig(f, "slashes.total.count")),
                       slashes_amount=figure_out(_fig(f, "slashes.total.amount")),
                       jails_count=figure_out(_fig(f, "jails.total.count"))),
        leases=LeaseTotals(total=figure_out(_fig(f, "leases.total.count")),
                           active=figure_out(_fig(f, "leases.active.count")),
                           active_gpus=figure_out(_fig(f, "leases.active.gpus")),
                           closed=figure_out(_fig(f, "leases.closed.count")),
                           closed_refunds=figure_out(_fig(f, "leases.closed.refunds")),
                           top_ups=figure_out(_fig(f, "leases.total.top_ups"))),
        downtime=DowntimeTotals(**{part: figure_out(_fig(f, f"downtime.total.{part}"))
                                   for part in DowntimeTotals.model_fields}),
        agent_payments=agent_totals(f))


def uptime_out(figures: Figures, address: str) -> UptimeOut | None:
    epochs = figures.get(("uptime.by_provider.epochs", address))
    if epochs is None:
        return None
    bps = figures.get(("uptime.by_provider.bps", address))
    return UptimeOut(epochs=figure_out(epochs), bps=figure_out(bps) if bps else None,
                     **{part: figure_out(_fig(figures, f"uptime.by_provider.{part}", address))
                        for part in ("up", "heartbeats", "claimed", "reported", "revoked", "pending")})


def liveness_out(figures: Figures, address: str) -> LivenessOut:
    return LivenessOut(
        probes_answered=figure_out(_fig(figures, "probes.by_provider.answered", address)),
        probes_missed=figure_out(_fig(figures, "probes.by_provider.missed", address)),
        outages=figure_out(_fig(figures, "outages.by_provider.count", address)),
        outage_epochs=figure_out(_fig(figures, "outages.by_provider.epochs", address)),
        downtime_epochs=figure_out(_fig(figures, "downtime.by_provider.epochs", address)),
        downtime_forfeited=figure_out(_fig(figures, "downtime.by_provider.forfeited", address)))


def reliability_out(figures: Figures, address: str) -> ReliabilityOut:
    return ReliabilityOut(**{part: figure_out(_fig(figures, f"{reliability.NAME}.{part}", address))
                             for part in ReliabilityOut.model_fields})


def provider_score(out: ProviderOut) -> ProviderScore:
    """A provider's uptime, probes, outages, downtime and reliability (from its `provider_out`)."""
    return ProviderScore(address=out.address, uptime=out.uptime, liveness=out.liveness,
                         reliability=out.reliability)


def epoch_strip(snap: Snapshot, explorer: Explorer, address: str) -> EpochStrip | None:
    """The provider's last STRIP_EPOCHS epochs up to the block's, each with its state and the
    evidence the uptime figures count (the same fold: protocol/uptime_book.py)."""
    found = explorer.uptime_strip(address, snap.as_of, STRIP_EPOCHS)
    if found is None:
        return None
    (genesis, length), first, final_through, states = found
    return EpochStrip(genesis=genesis, epoch_length=length, first_epoch=first,
                      last_epoch=epoch_at(snap.as_of, genesis, length), final_through=final_through,
                      epochs=[EpochOut(epoch=s.epoch, start=genesis + s.epoch * length, state=s.state,
                                       up=None if s.state == PENDING else s.state in UP_STATES,
                                       tx=s.txs[-1] if s.state == REVOKED else (s.txs[0] if s.txs else None),
                                       txs=list(s.txs))
                              for s in states])


def provider_out(snap: Snapshot, p: db.Provider) -> ProviderOut:
    f, a = snap.figures, p.address
    return ProviderOut(
        address=a, gpu_model=p.gpu_model, is_cpu=is_cpu(p.gpu_model), gpu_count=p.gpu_count,
        gpu_memory_mb=p.gpu_memory_mb, endpoint=p.endpoint, price_floor_base_units=str(p.price_floor),
        registered_at=p.registered_at, registered_tx=p.registered_tx, jailed_until=p.jailed_until,
        locked_until=p.locked_until or 0,
        stake_active=figure_out(_fig(f, "stake.by_provider.active", a)),
        stake_unbonding=figure_out(_fig(f, "stake.by_provider.unbonding", a)),
        stake_slashed=figure_out(_fig(f, "stake.by_provider.slashed", a)),
        stake_withdrawn=figure_out(_fig(f, "stake.by_provider.withdrawn", a)),
        leases=figure_out(_fig(f, "leases.by_provider.count", a)),
        leases_active=figure_out(_fig(f, "leases.active_by_provider.count", a)),
        tenant_paid=figure_out(_fig(f, "revenue.by_provider.tenant_paid", a)),
        provider_income=figure_out(_fig(f, "revenue.by_provider.provider_income", a)),
        protocol_fees=figure_out(_fig(f, "revenue.by_provider.protocol_fees", a)),
        agent_payments=agent_payments_out(f, "by_provider", a),
        uptime=uptime_out(f, a), liveness=liveness_out(f, a), reliability=reliability_out(f, a))


def is_cpu(model: str) -> bool:
    """A provider without a GPU registers its model as 'cpu-<arch>' (provider/hardware.py)."""
    return model.strip().lower().startswith("cpu")


def lease_out(snap: Snapshot, row: db.Lease) -> LeaseOut:
    exhausts = exhausted_at(row.start, row.budget, row.price_per_gpu_hour, row.gpus)
    status = "closed" if row.closed_at is not None else ("active" if exhausts > snap.as_of else "exhausted")
    return LeaseOut(
        lease_id=row.lease_id, order_id=row.order_id, verified=bool(row.verified), tenant=row.tenant,
        provider=row.provider, gpu_model=row.gpu_model,
        price_per_gpu_hour_base_units=str(row.price_per_gpu_hour), gpus=row.gpus,
        budget_base_units=str(row.budget), start=row.start, exhausts_at=exhausts,
        time_left_s=exhausts - snap.as_of if status == "active" else None, closed_at=row.closed_at,
        status=status, earned_base_units=str(row.earned), provider_income_base_units=str(row.provider_income),
        fees_base_units=str(row.fees), refund_base_units=str(row.refund), result_hash=row.result_hash,
        created_tx=row.created_tx, closed_tx=row.closed_tx)


def payment_out(p: db.Payment) -> PaymentOut:
    return PaymentOut(tx_hash=p.tx_hash, log_index=p.log_index, block_number=p.block_number,
                      timestamp=p.timestamp, day=p.day, kind=p.kind, lease_id=p.lease_id,
                      provider=p.provider, provider_amount_base_units=str(p.provider_amount),
                      fee_base_units=str(p.fee))


def event_out(e: db.Event) -> EventOut:
    r = record_of(e)
    units = {name: unit for name in r.args if (unit := arg_unit(r.contract, r.event, name))}
    # Token amounts as exact decimal text (base units): 100 TSTK is 10^20, past a double's 2^53.
    args = {name: str(value) if units.get(name) in DECIMALS and isinstance(value, int) else value
            for name, value in r.args.items()}
    return EventOut(block_number=r.block_number, block_hash=r.block_hash, timestamp=r.timestamp,
                    tx_hash=r.tx_hash, log_index=r.log_index, contract=r.contract, event=r.event,
                    args=args, arg_units=units)

