"""`tessera explorer serve`: a read-only web explorer over the indexed database.

A FastAPI app with a JSON API (described by `/openapi.json`) and server-rendered HTML pages.
Every figure comes from `figures.compute_figures` over the database's stored events (through
`indexer.database_figures`, the same path as `tessera stats` and the audit), and carries the tx
hashes that make it up; every figure on a page links to the list of its transactions, and every
transaction to `/tx/{hash}`, which lists that transaction's events from the database (a devnet has
no external block explorer). Hardware, endpoints and per-lease rows come from the derived tables.

Pages are plain HTML with inline CSS and inline SVG charts drawn here: no CDN, no JavaScript. Every
value is HTML-escaped (on-chain strings such as GPU models and endpoints are attacker-chosen), and
the HTML responses carry a Content-Security-Policy that allows no script at all.
Definitions: docs/explorer.md.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote, urlencode

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from web3 import Web3

from tessera.chain.market import PAYMENT_DECIMALS, PAYMENT_SYMBOL, STAKE_DECIMALS, STAKE_SYMBOL
from tessera.explorer import db, reliability
from tessera.explorer.figures import ALL, PERCENTILES, Figure, Figures, epoch_at, exhausted_at, ratio
from tessera.explorer.indexer import IndexerError, database_figures, record_of
from tessera.protocol.money import format_amount

LEASE_EVENTS = ("LeaseCreated", "LeaseToppedUp", "Withdrawn", "LeaseClosed", "ResultCommitted")
STRIP_EPOCHS = 120   # epochs drawn in a provider's uptime chart
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; script-src 'none'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


# -- API models (they make /openapi.json) ---------------------------------------------------------
class FigureOut(BaseModel):
    """One figure: an exact integer with the sorted hashes of the transactions that make it up."""

    name: str = Field(description="figure name, e.g. revenue.by_day.tenant_paid (docs/explorer.md)")
    key: str = Field(description="day, provider address, GPU model, day/model, or 'all'")
    value: str = Field(description="exact integer as decimal text (base units or seconds; may exceed 2^53)")
    txs: list[str] = Field(description="sorted tx hashes behind the figure")


class RevenueRow(BaseModel):
    key: str
    tenant_paid: FigureOut
    provider_income: FigureOut
    protocol_fees: FigureOut


class UtilizationRow(BaseModel):
    key: str
    leased_gpu_seconds: FigureOut
    registered_gpu_seconds: FigureOut
    utilization: float | None = Field(description="leased / registered, for display only")


class PriceRow(BaseModel):
    model: str
    count: FigureOut
    min: FigureOut
    p25: FigureOut
    median: FigureOut
    p75: FigureOut
    max: FigureOut
    spread: str = Field(description="max - min in base units (display; both parts are figures)")


class StakeOut(BaseModel):
    active: FigureOut
    unbonding: FigureOut
    slashed: FigureOut
    slashes_count: FigureOut
    slashes_amount: FigureOut
    jails_count: FigureOut


class LeaseTotals(BaseModel):
    total: FigureOut
    active: FigureOut
    active_gpus: FigureOut
    closed: FigureOut
    closed_refunds: FigureOut
    top_ups: FigureOut


class Units(BaseModel):
    payment_symbol: str = PAYMENT_SYMBOL
    payment_decimals: int = PAYMENT_DECIMALS
    stake_symbol: str = STAKE_SYMBOL
    stake_decimals: int = STAKE_DECIMALS


class UptimeOut(BaseModel):
    """Heartbeats against epochs owed since registration (docs/uptime.md)."""

    epochs: FigureOut = Field(description="epochs owed since the registration's epoch")
    heartbeats: FigureOut
    bps: FigureOut | None = Field(description="heartbeats * 10000 // epochs; null while no epoch is owed")


class ReliabilityOut(BaseModel):
    """The reliability score (basis points) and the parts it is made of (docs/explorer.md)."""

    bps: FigureOut = Field(description="the score, 0..10000")
    uptime_bps: FigureOut = Field(description="heartbeat share smoothed towards the prior")
    completion_bps: FigureOut = Field(description="finished share of decided leases, smoothed")
    tenure_bps: FigureOut = Field(description="age as a share of 90 days")
    penalty_bps: FigureOut = Field(description="subtracted for slashes and jailings")
    finished: FigureOut
    failed: FigureOut
    slashes: FigureOut
    jails: FigureOut
    age_seconds: FigureOut


class LivenessOut(BaseModel):
    """Validators' probes, reported outages and claimed downtime (docs/validators.md, docs/uptime.md)."""

    probes_answered: FigureOut = Field(description="probes answered, summed over validators' reports")
    probes_missed: FigureOut = Field(description="probes missed, as the validators posted them")
    outages: FigureOut = Field(description="outages reported (Uptime.report_outage), each a jailing")
    outage_epochs: FigureOut = Field(description="epochs those reports cover")
    downtime_epochs: FigureOut = Field(description="epochs of its leases claimed as downtime")
    downtime_forfeited: FigureOut = Field(description="pay for those epochs, payment base units")


class ProviderScore(BaseModel):
    address: str
    uptime: UptimeOut | None = Field(description="null on a network without the Uptime contract")
    liveness: LivenessOut
    reliability: ReliabilityOut


class DowntimeTotals(BaseModel):
    claims: FigureOut = Field(description="Market.claim_downtime transactions")
    epochs: FigureOut
    forfeited: FigureOut = Field(description="pay for the claimed epochs, payment base units")
    refunds: FigureOut = Field(description="refunded to tenants at once, payment base units")


class Overview(BaseModel):
    block: int = Field(description="last final block indexed: every figure is as of this block")
    block_hash: str | None
    as_of: int = Field(description="timestamp of that block")
    units: Units
    providers: FigureOut
    orders: FigureOut
    revenue: RevenueRow
    revenue_by_day: list[RevenueRow]
    utilization: UtilizationRow
    utilization_by_day: list[UtilizationRow]
    utilization_by_model: list[UtilizationRow]
    prices: list[PriceRow]
    stake: StakeOut
    leases: LeaseTotals
    downtime: DowntimeTotals
    provider_scores: list[ProviderScore] = Field(
        description="uptime, probes, outages, downtime and reliability per provider")


class ProviderOut(BaseModel):
    address: str
    gpu_model: str
    gpu_count: int
    gpu_memory_mb: int
    endpoint: str
    price_floor: str = Field(description="offer's floor price per GPU-hour, payment base units")
    registered_at: int
    registered_tx: str
    jailed_until: int
    stake_active: FigureOut
    stake_unbonding: FigureOut
    stake_slashed: FigureOut
    stake_withdrawn: FigureOut
    leases: FigureOut
    leases_active: FigureOut
    tenant_paid: FigureOut
    provider_income: FigureOut
    protocol_fees: FigureOut
    uptime: UptimeOut | None = Field(description="null on a network without the Uptime contract")
    liveness: LivenessOut
    reliability: ReliabilityOut


class PaymentOut(BaseModel):
    tx_hash: str
    log_index: int
    block_number: int
    timestamp: int
    day: str
    kind: str
    lease_id: int
    provider: str
    provider_amount: str
    fee: str


class EventOut(BaseModel):
    block_number: int
    block_hash: str
    timestamp: int
    tx_hash: str
    log_index: int
    contract: str
    event: str
    args: dict


class LeaseOut(BaseModel):
    lease_id: int
    order_id: int
    tenant: str
    provider: str
    gpu_model: str
    price_per_gpu_hour: str
    gpus: int
    budget: str
    start: int
    exhausts_at: int = Field(description="first second at which earned reaches the budget")
    closed_at: int | None
    status: str = Field(description="'closed', 'exhausted' or 'active' as of the last indexed block")
    earned: str
    provider_income: str
    fees: str
    refund: str
    result_hash: str | None
    created_tx: str
    closed_tx: str | None


class EpochOut(BaseModel):
    epoch: int
    start: int = Field(description="timestamp at which the epoch starts")
    heartbeat_tx: str | None = Field(description="the heartbeat's transaction; null: missed")


class EpochStrip(BaseModel):
    """The most recent epochs owed (up to 120), oldest first: what the uptime chart draws."""

    genesis: int
    epoch_length: int
    first_owed: int = Field(description="first epoch owed (the registration's)")
    last_owed: int = Field(description="last epoch owed as of the block")
    epochs: list[EpochOut]


class OutageOut(BaseModel):
    """One `OutageReported` event: the epochs without a heartbeat and the jail it set."""

    first_epoch: int
    last_epoch: int
    jailed_until: int
    reporter: str
    tx_hash: str
    timestamp: int


class ProviderDetail(ProviderOut):
    lease_list: list[LeaseOut]
    payments: list[PaymentOut]
    outage_reports: list[OutageOut]
    recent_epochs: EpochStrip | None = Field(description="null without the Uptime contract or "
                                                         "before any epoch is owed")


class LeaseDetail(LeaseOut):
    events: list[EventOut]
    payments: list[PaymentOut]


class TxOut(BaseModel):
    tx_hash: str
    events: list[EventOut]


class FigureTxs(BaseModel):
    figure: FigureOut
    block: int


# -- data -----------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    figures: Figures
    block: int
    block_hash: str | None
    as_of: int


class Explorer:
    """Figures cached per indexed cursor (block number and hash): recomputed once per new batch."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._cache: tuple[tuple, Snapshot] | None = None

    def snapshot(self) -> Snapshot:
        with Session(self.engine) as session:
            cursor = session.get(db.Cursor, 1)
            if cursor is None or cursor.last_timestamp is None:
                raise HTTPException(503, "nothing indexed yet: run `tessera explorer index` first")
            mark = (cursor.last_block, cursor.last_hash, cursor.last_timestamp)
        with self._lock:
            if self._cache and self._cache[0] == mark:
                return self._cache[1]
            try:
                figures, cursor = database_figures(self.engine)
            except IndexerError as exc:
                raise HTTPException(503, str(exc)) from exc
            snap = Snapshot(figures, cursor.last_block, cursor.last_hash, cursor.last_timestamp)
            self._cache = ((cursor.last_block, cursor.last_hash, cursor.last_timestamp), snap)
            return snap

    def providers(self) -> list[db.Provider]:
        with Session(self.engine) as session:
            rows = list(session.scalars(select(db.Provider).order_by(db.Provider.registered_at,
                                                                     db.Provider.address)))
            session.expunge_all()
            return rows

    def provider(self, address: str) -> tuple[db.Provider, list[db.Lease], list[db.Payment]]:
        with Session(self.engine) as session:
            row = session.get(db.Provider, address)
            if row is None:
                raise HTTPException(404, f"no provider {address} in the explorer database")
            leases = list(session.scalars(select(db.Lease).where(db.Lease.provider == address)
                                          .order_by(db.Lease.lease_id)))
            payments = list(session.scalars(select(db.Payment).where(db.Payment.provider == address)
                                            .order_by(db.Payment.block_number, db.Payment.log_index)))
            session.expunge_all()
            return row, leases, payments

    def lease(self, lease_id: int) -> tuple[db.Lease, list[db.Event], list[db.Payment]]:
        with Session(self.engine) as session:
            row = session.get(db.Lease, lease_id)
            if row is None:
                raise HTTPException(404, f"no lease {lease_id} in the explorer database")
            candidates = session.scalars(
                select(db.Event).where(db.Event.contract == "Market", db.Event.event.in_(LEASE_EVENTS),
                                       db.Event.args.like(f'%"lease_id":{lease_id}%'))
                .order_by(db.Event.block_number, db.Event.log_index))
            events = [e for e in candidates if json.loads(e.args).get("lease_id") == lease_id]
            payments = list(session.scalars(select(db.Payment).where(db.Payment.lease_id == lease_id)
                                            .order_by(db.Payment.block_number, db.Payment.log_index)))
            session.expunge_all()
            return row, events, payments

    def uptime_clock(self) -> tuple[int, int] | None:
        """(genesis, epoch length) from the indexed `UptimeStarted` log; None without one."""
        with Session(self.engine) as session:
            row = session.scalars(select(db.Event).where(db.Event.contract == "Uptime",
                                                         db.Event.event == "UptimeStarted")
                                  .order_by(db.Event.block_number, db.Event.log_index)).first()
        if row is None:
            return None
        args = json.loads(row.args)
        return args["genesis"], args["epoch_length"]

    def heartbeats(self, address: str, since: int) -> dict[int, str]:
        """{epoch: tx} of the provider's indexed heartbeats in blocks at or after `since`."""
        with Session(self.engine) as session:
            rows = session.scalars(select(db.Event).where(
                db.Event.contract == "Uptime", db.Event.event == "Heartbeat",
                db.Event.timestamp >= since, db.Event.args.like(f'%"provider":"{address}"%')))
            beats = {}
            for row in rows:
                args = json.loads(row.args)
                if args["provider"] == address:
                    beats.setdefault(args["epoch"], row.tx_hash)
        return beats

    def outages(self, address: str) -> list[OutageOut]:
        """The provider's indexed `OutageReported` events, oldest first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(db.Event).where(
                db.Event.contract == "Uptime", db.Event.event == "OutageReported",
                db.Event.args.like(f'%"provider":"{address}"%'))
                .order_by(db.Event.block_number, db.Event.log_index))
            out = []
            for row in rows:
                args = json.loads(row.args)
                if args["provider"] == address:
                    out.append(OutageOut(first_epoch=args["first_epoch"], last_epoch=args["last_epoch"],
                                         jailed_until=args["jailed_until"], reporter=args["reporter"],
                                         tx_hash=row.tx_hash, timestamp=row.timestamp))
        return out

    def tx(self, tx_hash: str) -> list[db.Event]:
        with Session(self.engine) as session:
            rows = list(session.scalars(select(db.Event).where(db.Event.tx_hash == tx_hash)
                                        .order_by(db.Event.log_index)))
            session.expunge_all()
        if not rows:
            raise HTTPException(404, f"no indexed event in transaction {tx_hash}")
        return rows


def _fig(figures: Figures, name: str, key: str = ALL) -> Figure:
    return figures.get((name, key)) or Figure(name, key, 0, ())


def _out(f: Figure) -> FigureOut:
    return FigureOut(name=f.name, key=f.key, value=str(f.value), txs=list(f.txs))


def _keys(figures: Figures, name: str) -> list[str]:
    return sorted(key for n, key in figures if n == name)


def _address(text: str) -> str:
    try:
        return Web3.to_checksum_address(text)
    except (ValueError, TypeError) as exc:
        raise HTTPException(404, f"no provider {text!r}: not an address") from exc


def _tx_hash(text: str) -> str:
    value = text.lower()
    if len(value) != 66 or not value.startswith("0x") or any(c not in "0123456789abcdef" for c in value[2:]):
        raise HTTPException(404, f"no transaction {text!r}: not a 32-byte hex hash")
    return value


def revenue_row(figures: Figures, scope: str, key: str) -> RevenueRow:
    return RevenueRow(key=key, **{part: _out(_fig(figures, f"revenue.{scope}.{part}", key))
                                  for part in ("tenant_paid", "provider_income", "protocol_fees")})


def utilization_row(figures: Figures, scope: str, key: str) -> UtilizationRow:
    return UtilizationRow(
        key=key, leased_gpu_seconds=_out(_fig(figures, f"utilization.{scope}.leased_gpu_seconds", key)),
        registered_gpu_seconds=_out(_fig(figures, f"utilization.{scope}.registered_gpu_seconds", key)),
        utilization=ratio(figures, scope, key))


def overview(snap: Snapshot) -> Overview:
    f = snap.figures
    prices = []
    for model in _keys(f, "price.by_model.count"):
        parts = {label: _out(_fig(f, f"price.by_model.{label}", model)) for label in PERCENTILES}
        spread = _fig(f, "price.by_model.max", model).value - _fig(f, "price.by_model.min", model).value
        prices.append(PriceRow(model=model, count=_out(_fig(f, "price.by_model.count", model)),
                               spread=str(spread), **parts))
    return Overview(
        block=snap.block, block_hash=snap.block_hash, as_of=snap.as_of, units=Units(),
        providers=_out(_fig(f, "providers.total.count")), orders=_out(_fig(f, "orders.total.count")),
        revenue=revenue_row(f, "total", ALL),
        revenue_by_day=[revenue_row(f, "by_day", d) for d in _keys(f, "revenue.by_day.tenant_paid")],
        utilization=utilization_row(f, "total", ALL),
        utilization_by_day=[utilization_row(f, "by_day", d)
                            for d in _keys(f, "utilization.by_day.registered_gpu_seconds")],
        utilization_by_model=[utilization_row(f, "by_model", m)
                              for m in _keys(f, "utilization.by_model.registered_gpu_seconds")],
        prices=prices,
        stake=StakeOut(active=_out(_fig(f, "stake.total.active")),
                       unbonding=_out(_fig(f, "stake.total.unbonding")),
                       slashed=_out(_fig(f, "stake.total.slashed")),
                       slashes_count=_out(_fig(f, "slashes.total.count")),
                       slashes_amount=_out(_fig(f, "slashes.total.amount")),
                       jails_count=_out(_fig(f, "jails.total.count"))),
        leases=LeaseTotals(total=_out(_fig(f, "leases.total.count")),
                           active=_out(_fig(f, "leases.active.count")),
                           active_gpus=_out(_fig(f, "leases.active.gpus")),
                           closed=_out(_fig(f, "leases.closed.count")),
                           closed_refunds=_out(_fig(f, "leases.closed.refunds")),
                           top_ups=_out(_fig(f, "leases.total.top_ups"))),
        downtime=DowntimeTotals(**{part: _out(_fig(f, f"downtime.total.{part}"))
                                   for part in DowntimeTotals.model_fields}),
        provider_scores=provider_scores(f))


def uptime_out(figures: Figures, address: str) -> UptimeOut | None:
    epochs = figures.get(("uptime.by_provider.epochs", address))
    if epochs is None:
        return None
    bps = figures.get(("uptime.by_provider.bps", address))
    beats = _fig(figures, "uptime.by_provider.heartbeats", address)
    return UptimeOut(epochs=_out(epochs), heartbeats=_out(beats), bps=_out(bps) if bps else None)


def liveness_out(figures: Figures, address: str) -> LivenessOut:
    return LivenessOut(
        probes_answered=_out(_fig(figures, "probes.by_provider.answered", address)),
        probes_missed=_out(_fig(figures, "probes.by_provider.missed", address)),
        outages=_out(_fig(figures, "outages.by_provider.count", address)),
        outage_epochs=_out(_fig(figures, "outages.by_provider.epochs", address)),
        downtime_epochs=_out(_fig(figures, "downtime.by_provider.epochs", address)),
        downtime_forfeited=_out(_fig(figures, "downtime.by_provider.forfeited", address)))


def reliability_out(figures: Figures, address: str) -> ReliabilityOut:
    return ReliabilityOut(**{part: _out(_fig(figures, f"{reliability.NAME}.{part}", address))
                             for part in ReliabilityOut.model_fields})


def provider_scores(figures: Figures) -> list[ProviderScore]:
    return [ProviderScore(address=a, uptime=uptime_out(figures, a), liveness=liveness_out(figures, a),
                          reliability=reliability_out(figures, a))
            for a in _keys(figures, f"{reliability.NAME}.bps")]


def epoch_strip(snap: Snapshot, explorer: Explorer, address: str) -> EpochStrip | None:
    """The last STRIP_EPOCHS epochs owed, each with the heartbeat the uptime figure counts, if any."""
    owed = snap.figures.get(("uptime.by_provider.epochs", address))
    clock = explorer.uptime_clock()
    if owed is None or owed.value == 0 or clock is None:
        return None
    genesis, length = clock
    now = epoch_at(snap.as_of, genesis, length)
    counted = set(_fig(snap.figures, "uptime.by_provider.heartbeats", address).txs)
    since = genesis + max(now - STRIP_EPOCHS, 0) * length
    beats = {ep: tx for ep, tx in explorer.heartbeats(address, since).items() if tx in counted}
    last = now if now in beats else now - 1      # the running epoch is owed once it has a beat
    first = last - owed.value + 1
    return EpochStrip(genesis=genesis, epoch_length=length, first_owed=first, last_owed=last,
                      epochs=[EpochOut(epoch=ep, start=genesis + ep * length, heartbeat_tx=beats.get(ep))
                              for ep in range(max(first, last - STRIP_EPOCHS + 1), last + 1)])


def provider_out(snap: Snapshot, p: db.Provider) -> ProviderOut:
    f, a = snap.figures, p.address
    return ProviderOut(
        address=a, gpu_model=p.gpu_model, gpu_count=p.gpu_count, gpu_memory_mb=p.gpu_memory_mb,
        endpoint=p.endpoint, price_floor=str(p.price_floor), registered_at=p.registered_at,
        registered_tx=p.registered_tx, jailed_until=p.jailed_until,
        stake_active=_out(_fig(f, "stake.by_provider.active", a)),
        stake_unbonding=_out(_fig(f, "stake.by_provider.unbonding", a)),
        stake_slashed=_out(_fig(f, "stake.by_provider.slashed", a)),
        stake_withdrawn=_out(_fig(f, "stake.by_provider.withdrawn", a)),
        leases=_out(_fig(f, "leases.by_provider.count", a)),
        leases_active=_out(_fig(f, "leases.active_by_provider.count", a)),
        tenant_paid=_out(_fig(f, "revenue.by_provider.tenant_paid", a)),
        provider_income=_out(_fig(f, "revenue.by_provider.provider_income", a)),
        protocol_fees=_out(_fig(f, "revenue.by_provider.protocol_fees", a)),
        uptime=uptime_out(f, a), liveness=liveness_out(f, a), reliability=reliability_out(f, a))


def lease_out(snap: Snapshot, row: db.Lease) -> LeaseOut:
    exhausts = exhausted_at(row.start, row.budget, row.price_per_gpu_hour, row.gpus)
    status = "closed" if row.closed_at is not None else ("active" if exhausts > snap.as_of else "exhausted")
    return LeaseOut(
        lease_id=row.lease_id, order_id=row.order_id, tenant=row.tenant, provider=row.provider,
        gpu_model=row.gpu_model, price_per_gpu_hour=str(row.price_per_gpu_hour), gpus=row.gpus,
        budget=str(row.budget), start=row.start, exhausts_at=exhausts, closed_at=row.closed_at,
        status=status, earned=str(row.earned), provider_income=str(row.provider_income),
        fees=str(row.fees), refund=str(row.refund), result_hash=row.result_hash,
        created_tx=row.created_tx, closed_tx=row.closed_tx)


def payment_out(p: db.Payment) -> PaymentOut:
    return PaymentOut(tx_hash=p.tx_hash, log_index=p.log_index, block_number=p.block_number,
                      timestamp=p.timestamp, day=p.day, kind=p.kind, lease_id=p.lease_id,
                      provider=p.provider, provider_amount=str(p.provider_amount), fee=str(p.fee))


def event_out(e: db.Event) -> EventOut:
    r = record_of(e)
    return EventOut(block_number=r.block_number, block_hash=r.block_hash, timestamp=r.timestamp,
                    tx_hash=r.tx_hash, log_index=r.log_index, contract=r.contract, event=r.event,
                    args=r.args)


# -- HTML -----------------------------------------------------------------------------------------
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}header small{color:#aab}
main{padding:16px 24px;max-width:1200px}h1{font-size:20px;margin:8px 0 12px}
h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;margin:4px 0 12px;min-width:360px}
th,td{border:1px solid #dde;padding:4px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#eef0f4}
a{color:#2456c7}a.provider{white-space:nowrap;word-break:normal}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{background:#fff;border:1px solid #dde;padding:8px}
.chart h3{margin:0 0 4px;font-size:14px}svg text{font-size:10px;fill:#556}
svg .bar{fill:#3b6fd8}svg a:hover .bar{fill:#1d3f8f}svg .line{fill:none;stroke:#d9822b;stroke-width:2}
svg .point{fill:#d9822b}svg .axis{stroke:#889;stroke-width:1}svg .grid{stroke:#e3e6ec;stroke-width:1}
svg .beat{fill:#2e9e5b}svg .missed{fill:#e8b4b4}.probes,.outages,.downtime{white-space:nowrap}
.muted{color:#778}.err{background:#fff3f3;border:1px solid #e0b4b4;padding:12px}
pre{background:#fff;border:1px solid #dde;padding:6px;margin:0;white-space:pre-wrap;word-break:break-all}
"""


def e(value: object) -> str:
    """HTML-escape any value (quotes included: safe in text and in attribute values)."""
    return escape(str(value), quote=True)


def href(path: str, **query: str) -> str:
    return e(path + ("?" + urlencode(query) if query else ""))


def money(value: int) -> str:
    return format_amount(value, PAYMENT_DECIMALS, PAYMENT_SYMBOL)


def stake_amount(value: int) -> str:
    return format_amount(value, STAKE_DECIMALS, STAKE_SYMBOL)


def when(ts: int | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def hours(seconds: int) -> str:
    return f"{seconds / 3600:,.1f} GPU-h"


def fig_link(f: Figure | FigureOut, text: str) -> str:
    """The figure's value, linking to the list of its transactions."""
    count = len(f.txs)
    return (f'<a class="fig" href="{href("/figure", name=f.name, key=f.key)}" '
            f'title="{e(f.name)}[{e(f.key)}]: {count} transaction{"s" * (count != 1)}">{e(text)}</a>')


def tx_link(tx: str | None, short: bool = True) -> str:
    if not tx:
        return "-"
    label = f"{tx[:10]}…{tx[-6:]}" if short else tx
    return f'<a class="tx mono" href="{href("/tx/" + quote(tx))}">{e(label)}</a>'


def provider_link(address: str) -> str:
    return f'<a class="provider mono" href="{href("/providers/" + quote(address))}">{e(address)}</a>'


def lease_link(lease_id: int) -> str:
    return f'<a class="lease" href="{href(f"/leases/{int(lease_id)}")}">#{int(lease_id)}</a>'


def page(title: str, body: str, snap: Snapshot | None = None, status: int = 200) -> HTMLResponse:
    state = (f"<small>as of block {e(snap.block)} · {e(when(snap.as_of))} UTC</small>" if snap else "")
    text = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{e(title)} · Tessera explorer</title><style>{STYLE}</style></head><body>"
            f'<header><a href="/">Tessera explorer</a><a href="/providers">providers</a>{state}</header>'
            f"<main><h1>{e(title)}</h1>{body}</main></body></html>")
    return HTMLResponse(text, status_code=status, headers={"Content-Security-Policy": CSP})


def table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), cls: str = "") -> str:
    """`rows` hold HTML already escaped by the caller; `headers` are escaped here."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{cell}</td>'
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>'
    return f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


W, H, PAD_L, PAD_B, PAD_T = 560, 220, 64, 34, 12


def bar_chart(chart_id: str, title: str, items: list[tuple[str, float, str, FigureOut]]) -> str:
    """Bars of (label, value, value text, figure); each bar links to its figure's transactions."""
    top = max((v for _, v, _, _ in items), default=0) or 1
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T
    step = plot_w / max(len(items), 1)
    parts = [f'<line class="axis" x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{W - 8}" y2="{PAD_T + plot_h}"/>']
    for frac in (0.5, 1.0):
        y = PAD_T + plot_h * (1 - frac)
        tick = e(f"{top * frac:,.2f}")
        parts.append(f'<line class="grid" x1="{PAD_L}" y1="{y:.1f}" x2="{W - 8}" y2="{y:.1f}"/>'
                     f'<text x="{PAD_L - 4}" y="{y + 3:.1f}" text-anchor="end">{tick}</text>')
    every = max(1, len(items) // 8)
    for i, (label, value, text, f) in enumerate(items):
        h = plot_h * value / top
        if value > 0:
            h = max(h, 1.0)
        x = PAD_L + i * step + step * 0.12
        parts.append(f'<a href="{href("/figure", name=f.name, key=f.key)}">'
                     f'<rect class="bar" data-key="{e(label)}" x="{x:.1f}" y="{PAD_T + plot_h - h:.1f}" '
                     f'width="{max(step * 0.76, 1):.1f}" height="{h:.1f}">'
                     f"<title>{e(label)}: {e(text)}</title></rect></a>")
        if i % every == 0:
            parts.append(f'<text x="{x + step * 0.38:.1f}" y="{H - PAD_B + 14}" '
                         f'text-anchor="middle">{e(label[5:] if len(label) == 10 else label)}</text>')
    return (f'<div class="chart"><h3>{e(title)}</h3><svg id="{e(chart_id)}" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" role="img" aria-label="{e(title)}">{"".join(parts)}</svg></div>')


def line_chart(chart_id: str, title: str, items: list[tuple[str, float, str, FigureOut]]) -> str:
    """A line through (label, value in 0..n) points; each point links to its figure's transactions."""
    top = max(1.0, max((v for _, v, _, _ in items), default=0))
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T
    step = plot_w / max(len(items), 1)
    parts = [f'<line class="axis" x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{W - 8}" y2="{PAD_T + plot_h}"/>']
    for frac in (0.5, 1.0):
        y = PAD_T + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{PAD_L}" y1="{y:.1f}" x2="{W - 8}" y2="{y:.1f}"/>'
                     f'<text x="{PAD_L - 4}" y="{y + 3:.1f}" text-anchor="end">{e(pct(top * frac))}</text>')
    points, every = [], max(1, len(items) // 8)
    for i, (label, value, text, f) in enumerate(items):
        x, y = PAD_L + (i + 0.5) * step, PAD_T + plot_h * (1 - value / top)
        points.append(f"{x:.1f},{y:.1f}")
        parts.append(f'<a href="{href("/figure", name=f.name, key=f.key)}"><circle class="point" '
                     f'data-key="{e(label)}" cx="{x:.1f}" cy="{y:.1f}" r="3.5">'
                     f"<title>{e(label)}: {e(text)}</title></circle></a>")
        if i % every == 0:
            parts.append(f'<text x="{x:.1f}" y="{H - PAD_B + 14}" '
                         f'text-anchor="middle">{e(label[5:] if len(label) == 10 else label)}</text>')
    line = f'<polyline class="line" points="{" ".join(points)}"/>' if points else ""
    return (f'<div class="chart"><h3>{e(title)}</h3><svg id="{e(chart_id)}" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" role="img" aria-label="{e(title)}">{line}{"".join(parts)}</svg></div>')


def bps_text(value: int | str) -> str:
    return f"{int(value) / 100:.2f}%"


def epoch_chart(strip: EpochStrip) -> str:
    """One cell per epoch owed (oldest left): green with a link to the heartbeat's tx, or red."""
    h, top, bottom = 86, 8, 30
    plot_w = W - 16
    cell = plot_w / len(strip.epochs)
    parts = []
    for i, ep in enumerate(strip.epochs):
        kind = "beat" if ep.heartbeat_tx else "missed"
        label = (f"epoch {ep.epoch} ({when(ep.start)} UTC): "
                 + (f"heartbeat in {ep.heartbeat_tx}" if ep.heartbeat_tx else "no heartbeat"))
        rect = (f'<rect class="epoch {kind}" data-epoch="{ep.epoch}" x="{8 + i * cell:.2f}" y="{top}" '
                f'width="{max(cell - (1 if cell > 3 else 0), 0.5):.2f}" height="{h - top - bottom}">'
                f"<title>{e(label)}</title></rect>")
        parts.append(f'<a href="{href("/tx/" + quote(ep.heartbeat_tx))}">{rect}</a>' if ep.heartbeat_tx
                     else rect)
    first, last = strip.epochs[0], strip.epochs[-1]
    parts.append(f'<text x="8" y="{h - bottom + 14}">epoch {first.epoch} · {e(when(first.start))}</text>'
                 f'<text x="{W - 8}" y="{h - bottom + 14}" text-anchor="end">epoch {last.epoch} · '
                 f"{e(when(last.start))}</text>")
    shown = len(strip.epochs)
    owed = strip.last_owed - strip.first_owed + 1
    title = (f"Heartbeats in the last {shown} of {owed} epochs owed ({strip.epoch_length} s each; "
             "green: heartbeat, red: missed)")
    return (f'<div class="chart"><h3>{e(title)}</h3><svg id="uptime-chart" width="{W}" height="{h}" '
            f'viewBox="0 0 {W} {h}" role="img" aria-label="{e(title)}">{"".join(parts)}</svg></div>')


def beats_of(u: UptimeOut) -> str:
    return fig_link(u.heartbeats, u.heartbeats.value) + " / " + fig_link(u.epochs, u.epochs.value)


def probes_of(lv: LivenessOut) -> str:
    return ('<span class="probes">' + fig_link(lv.probes_answered, lv.probes_answered.value) + " / "
            + fig_link(lv.probes_missed, lv.probes_missed.value) + "</span>")


def outages_of(lv: LivenessOut) -> str:
    return ('<span class="outages">' + fig_link(lv.outages, lv.outages.value) + " ("
            + fig_link(lv.outage_epochs, f"{lv.outage_epochs.value} epochs") + ")</span>")


def downtime_of(lv: LivenessOut) -> str:
    return ('<span class="downtime">' + fig_link(lv.downtime_epochs, f"{lv.downtime_epochs.value} epochs")
            + ", " + fig_link(lv.downtime_forfeited, money(int(lv.downtime_forfeited.value))) + "</span>")


def scores_table(scores: list[ProviderScore]) -> str:
    """Uptime, probes, outages, downtime and reliability per provider; every value links to its
    figure's transactions."""
    rows = []
    for s in scores:
        r, u, lv = s.reliability, s.uptime, s.liveness
        uptime_cells = ["-", "-"]
        if u:
            uptime_cells = [beats_of(u), fig_link(u.bps, bps_text(u.bps.value)) if u.bps else "-"]
        rows.append([provider_link(s.address), *uptime_cells, probes_of(lv), outages_of(lv), downtime_of(lv),
                     fig_link(r.finished, r.finished.value), fig_link(r.failed, r.failed.value),
                     fig_link(r.slashes, r.slashes.value), fig_link(r.jails, r.jails.value),
                     fig_link(r.age_seconds, f"{int(r.age_seconds.value) / 86_400:,.1f} d"),
                     '<span class="score">' + fig_link(r.bps, bps_text(r.bps.value)) + "</span>"])
    return table(["provider", "heartbeats / epochs owed", "uptime", "probes answered / missed",
                  "outages reported", "downtime claimed", "leases finished", "leases failed", "slashes",
                  "jailings", "age", "reliability"], rows, set(range(1, 12)), "reliability")


def outages_table(outages: list[OutageOut]) -> str:
    rows = [[e(o.first_epoch), e(o.last_epoch), e(when(o.jailed_until)),
             f'<span class="mono">{e(o.reporter)}</span>', e(when(o.timestamp)), tx_link(o.tx_hash)]
            for o in outages]
    return table(["first epoch", "last epoch", "jailed until (UTC)", "reported by", "time (UTC)", "tx"], rows,
                 {0, 1}, "outage-reports")


def liveness_html(lv: LivenessOut, outages: list[OutageOut]) -> str:
    """Probes by validators, outages reported (each a jailing) and downtime claimed by tenants."""
    facts = kv([
        ("probes answered / missed", probes_of(lv)),
        ("outages reported", outages_of(lv)),
        ("downtime claimed on its leases", downtime_of(lv)),
    ])
    return (facts + "<p class='muted'>Probes are the validators' word, summed as posted "
            "(docs/validators.md); an outage is <code>jail_after</code> epochs without a heartbeat, "
            "reported by anyone; downtime is pay for missed epochs refunded to tenants "
            "(docs/uptime.md).</p>" + outages_table(outages))


def reliability_html(r: ReliabilityOut) -> str:
    """The score and each part with its weight, as docs/explorer.md defines them."""
    weights = reliability.WEIGHT_UPTIME + reliability.WEIGHT_COMPLETION + reliability.WEIGHT_TENURE
    rows = [
        ["uptime (smoothed)", fig_link(r.uptime_bps, bps_text(r.uptime_bps.value)),
         e(f"× {reliability.WEIGHT_UPTIME}/{weights}")],
        ["lease completion (smoothed): " + fig_link(r.finished, f"{r.finished.value} finished") + ", "
         + fig_link(r.failed, f"{r.failed.value} failed"),
         fig_link(r.completion_bps, bps_text(r.completion_bps.value)),
         e(f"× {reliability.WEIGHT_COMPLETION}/{weights}")],
        ["tenure: " + fig_link(r.age_seconds, f"{int(r.age_seconds.value) / 86_400:,.1f} days registered"),
         fig_link(r.tenure_bps, bps_text(r.tenure_bps.value)), e(f"× {reliability.WEIGHT_TENURE}/{weights}")],
        ["penalty: " + fig_link(r.slashes, f"{r.slashes.value} slashes") + ", "
         + fig_link(r.jails, f"{r.jails.value} jailings"),
         fig_link(r.penalty_bps, "−" + bps_text(r.penalty_bps.value)),
         e(f"{reliability.SLASH_PENALTY_BPS} bps per slash, {reliability.JAIL_PENALTY_BPS} per jailing")],
        ["<b>reliability</b>", f'<b id="reliability">{fig_link(r.bps, bps_text(r.bps.value))}</b>',
         e(f"a new provider scores {bps_text(reliability.NEW_PROVIDER_BPS)}")],
    ]
    return table(["part", "value", "weight"], rows, {1}, "score-parts")


def overview_html(snap: Snapshot, providers: list[db.Provider]) -> str:
    o = overview(snap)
    v = lambda f: int(f.value)  # noqa: E731
    totals = [
        ("providers registered", fig_link(o.providers, o.providers.value)),
        ("orders", fig_link(o.orders, o.orders.value)),
        ("leases", fig_link(o.leases.total, o.leases.total.value)),
        ("leases active", fig_link(o.leases.active, o.leases.active.value)),
        ("GPUs leased now", fig_link(o.leases.active_gpus, o.leases.active_gpus.value)),
        ("tenant payments", fig_link(o.revenue.tenant_paid, money(v(o.revenue.tenant_paid)))),
        ("provider income", fig_link(o.revenue.provider_income, money(v(o.revenue.provider_income)))),
        ("protocol fees", fig_link(o.revenue.protocol_fees, money(v(o.revenue.protocol_fees)))),
        ("leased GPU-hours", fig_link(o.utilization.leased_gpu_seconds,
                                      hours(v(o.utilization.leased_gpu_seconds)))),
        ("registered GPU-hours", fig_link(o.utilization.registered_gpu_seconds,
                                          hours(v(o.utilization.registered_gpu_seconds)))),
        ("utilization", e(pct(o.utilization.utilization))),
        ("stake (active)", fig_link(o.stake.active, stake_amount(v(o.stake.active)))),
        ("stake (unbonding)", fig_link(o.stake.unbonding, stake_amount(v(o.stake.unbonding)))),
        ("slashed", fig_link(o.stake.slashes_amount, stake_amount(v(o.stake.slashes_amount)))
         + " in " + fig_link(o.stake.slashes_count, f"{o.stake.slashes_count.value} slashes")),
        ("jails", fig_link(o.stake.jails_count, o.stake.jails_count.value)),
        ("downtime claimed", fig_link(o.downtime.epochs, f"{o.downtime.epochs.value} epochs") + " in "
         + fig_link(o.downtime.claims, f"{o.downtime.claims.value} claims") + ": "
         + fig_link(o.downtime.forfeited, money(v(o.downtime.forfeited))) + " forfeited, "
         + fig_link(o.downtime.refunds, money(v(o.downtime.refunds))) + " refunded at once"),
    ]
    revenue_items = [(r.key, v(r.tenant_paid) / 10**PAYMENT_DECIMALS, money(v(r.tenant_paid)), r.tenant_paid)
                     for r in o.revenue_by_day]
    util_items = [(u.key, u.utilization or 0.0,
                   f"{pct(u.utilization)} ({hours(v(u.leased_gpu_seconds))} of "
                   f"{hours(v(u.registered_gpu_seconds))})", u.leased_gpu_seconds)
                  for u in o.utilization_by_day]
    charts = ('<div class="charts">'
              + bar_chart("revenue-chart", f"Tenant payments per day ({PAYMENT_SYMBOL})", revenue_items)
              + line_chart("utilization-chart", "GPU utilization per day (leased / registered)", util_items)
              + "</div>")
    revenue_rows = [[e(r.key), fig_link(r.tenant_paid, money(v(r.tenant_paid))),
                     fig_link(r.provider_income, money(v(r.provider_income))),
                     fig_link(r.protocol_fees, money(v(r.protocol_fees)))] for r in o.revenue_by_day]
    util_rows = [[e(u.key), fig_link(u.leased_gpu_seconds, hours(v(u.leased_gpu_seconds))),
                  fig_link(u.registered_gpu_seconds, hours(v(u.registered_gpu_seconds))),
                  e(pct(u.utilization))] for u in o.utilization_by_day]
    model_rows = [[e(u.key or "(any)"), fig_link(u.leased_gpu_seconds, hours(v(u.leased_gpu_seconds))),
                   fig_link(u.registered_gpu_seconds, hours(v(u.registered_gpu_seconds))),
                   e(pct(u.utilization))] for u in o.utilization_by_model]
    price_rows = [[e(p.model or "(any)"), fig_link(p.count, p.count.value),
                   *(fig_link(getattr(p, label), money(v(getattr(p, label)))) for label in PERCENTILES),
                   e(money(int(p.spread)))] for p in o.prices]
    return (f"<p class='muted'>Every figure is recomputed from the indexed chain events up to final block "
            f"{e(o.block)} (<span class='mono'>{e(o.block_hash)}</span>); click a value to see its "
            f"transactions.</p>"
            + kv(totals) + charts
            + "<h2>Revenue per day (UTC)</h2>"
            + table(["day", "tenant payments", "provider income", "protocol fees"], revenue_rows, {1, 2, 3},
                    "revenue")
            + "<h2>Utilization per day (UTC)</h2>"
            + table(["day", "leased", "registered", "utilization"], util_rows, {1, 2, 3}, "utilization")
            + "<h2>Utilization per GPU model</h2>"
            + table(["GPU model", "leased", "registered", "utilization"], model_rows, {1, 2, 3}, "models")
            + f"<h2>Price per GPU-hour by model ({PAYMENT_SYMBOL}, accepted bids)</h2>"
            + table(["GPU model", "leases", *PERCENTILES, "spread (max-min)"], price_rows,
                    {1, 2, 3, 4, 5, 6, 7}, "prices")
            + "<h2>Providers</h2>" + providers_table(snap, providers)
            + "<h2>Uptime, probes, outages and reliability per provider</h2>"
            + scores_table(o.provider_scores))


def providers_table(snap: Snapshot, providers: list[db.Provider]) -> str:
    rows = []
    for p in providers:
        out = provider_out(snap, p)
        rows.append([provider_link(p.address), e(p.gpu_model), e(p.gpu_count),
                     e(money(p.price_floor)), fig_link(out.leases, out.leases.value),
                     fig_link(out.provider_income, money(int(out.provider_income.value))),
                     fig_link(out.stake_active, stake_amount(int(out.stake_active.value))),
                     fig_link(out.stake_slashed, stake_amount(int(out.stake_slashed.value)))])
    return table(["provider", "GPU model", "GPUs", "floor / GPU-h", "leases", "income", "stake", "slashed"],
                 rows, {2, 3, 4, 5, 6, 7}, "providers")


def leases_table(snap: Snapshot, leases: list[db.Lease]) -> str:
    rows = []
    for row in leases:
        out = lease_out(snap, row)
        rows.append([lease_link(row.lease_id), e(out.status), e(row.gpu_model), e(row.gpus),
                     e(money(row.price_per_gpu_hour)), e(money(row.budget)), e(money(row.earned)),
                     e(when(row.start)), tx_link(row.created_tx)])
    return table(["lease", "status", "GPU model", "GPUs", "price / GPU-h", "budget", "paid out",
                  "start (UTC)", "created in"], rows, {3, 4, 5, 6}, "leases")


def payments_table(payments: list[db.Payment]) -> str:
    rows = [[tx_link(p.tx_hash), e(p.block_number), e(when(p.timestamp)), e(p.kind), lease_link(p.lease_id),
             e(money(p.provider_amount)), e(money(p.fee))] for p in payments]
    return table(["tx", "block", "time (UTC)", "kind", "lease", "to provider", "fee"], rows, {1, 5, 6},
                 "payments")


def events_table(events: list[db.Event], with_tx: bool = True) -> str:
    rows = []
    for ev in events:
        args = json.dumps(json.loads(ev.args), indent=1, sort_keys=True)
        rows.append([*([tx_link(ev.tx_hash)] if with_tx else []), e(ev.block_number), e(ev.log_index),
                     e(when(ev.timestamp)), e(ev.contract), e(ev.event), f"<pre>{e(args)}</pre>"])
    return table([*(["tx"] if with_tx else []), "block", "log", "time (UTC)", "contract", "event", "args"],
                 rows, set(), "events")


# -- the app --------------------------------------------------------------------------------------
def create_app(engine: Engine) -> FastAPI:
    explorer = Explorer(engine)
    app = FastAPI(title="Tessera explorer", version="1",
                  description="Figures recomputed from the indexed events of Tessera's contracts, "
                              "each with the transactions behind it (docs/explorer.md).",
                  docs_url=None, redoc_url=None)   # the stock docs pages load from a CDN
    app.state.explorer = explorer

    @app.exception_handler(StarletteHTTPException)
    async def _errors(request: Request, exc: StarletteHTTPException):
        if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        title = "Not found" if exc.status_code == 404 else f"Error {exc.status_code}"
        return page(title, f'<p class="err">{e(exc.detail)}</p><p><a href="/">overview</a></p>',
                    status=exc.status_code)

    # JSON API
    @app.get("/api/overview", response_model=Overview, tags=["api"])
    def api_overview() -> Overview:
        """Revenue, utilization, prices, stake and lease figures, each with its transactions."""
        return overview(explorer.snapshot())

    @app.get("/api/providers", response_model=list[ProviderOut], tags=["api"])
    def api_providers() -> list[ProviderOut]:
        """Every registered provider: current offer, stake, earnings and lease counts."""
        snap = explorer.snapshot()
        return [provider_out(snap, p) for p in explorer.providers()]

    @app.get("/api/providers/{address}", response_model=ProviderDetail, tags=["api"],
             responses={404: {"description": "unknown provider"}})
    def api_provider(address: str) -> ProviderDetail:
        """One provider with its leases and payouts."""
        snap = explorer.snapshot()
        p, leases, payments = explorer.provider(_address(address))
        return ProviderDetail(**provider_out(snap, p).model_dump(),
                              lease_list=[lease_out(snap, row) for row in leases],
                              payments=[payment_out(x) for x in payments],
                              outage_reports=explorer.outages(p.address),
                              recent_epochs=epoch_strip(snap, explorer, p.address))

    @app.get("/api/leases/{lease_id}", response_model=LeaseDetail, tags=["api"],
             responses={404: {"description": "unknown lease"}})
    def api_lease(lease_id: int) -> LeaseDetail:
        """One lease: terms, money, status, and every event that touched it."""
        snap = explorer.snapshot()
        row, events, payments = explorer.lease(lease_id)
        return LeaseDetail(**lease_out(snap, row).model_dump(), events=[event_out(x) for x in events],
                           payments=[payment_out(x) for x in payments])

    @app.get("/api/tx/{tx_hash}", response_model=TxOut, tags=["api"],
             responses={404: {"description": "no indexed event in that transaction"}})
    def api_tx(tx_hash: str) -> TxOut:
        """The indexed events of one transaction."""
        tx = _tx_hash(tx_hash)
        return TxOut(tx_hash=tx, events=[event_out(x) for x in explorer.tx(tx)])

    @app.get("/api/figure", response_model=FigureTxs, tags=["api"],
             responses={404: {"description": "unknown figure"}})
    def api_figure(name: str, key: str = ALL) -> FigureTxs:
        """One figure by name and key, with its transactions."""
        snap = explorer.snapshot()
        f = snap.figures.get((name, key))
        if f is None:
            raise HTTPException(404, f"no figure {name}[{key}]")
        return FigureTxs(figure=_out(f), block=snap.block)

    # HTML pages
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home():
        snap = explorer.snapshot()
        return page("Overview", overview_html(snap, explorer.providers()), snap)

    @app.get("/providers", response_class=HTMLResponse, include_in_schema=False)
    def providers_page():
        snap = explorer.snapshot()
        return page("Providers", providers_table(snap, explorer.providers())
                    + "<h2>Uptime, probes, outages and reliability</h2>"
                    + scores_table(provider_scores(snap.figures)), snap)

    @app.get("/providers/{address}", response_class=HTMLResponse, include_in_schema=False)
    def provider_page(address: str):
        snap = explorer.snapshot()
        p, leases, payments = explorer.provider(_address(address))
        out = provider_out(snap, p)
        n = lambda f: int(f.value)  # noqa: E731
        facts = kv([
            ("address", f'<span class="mono" id="address">{e(p.address)}</span>'),
            ("GPU model", f'<span id="gpu-model">{e(p.gpu_model)}</span>'),
            ("GPUs", e(p.gpu_count)), ("GPU memory", e(f"{p.gpu_memory_mb:,} MB")),
            ("endpoint", f'<code id="endpoint">{e(p.endpoint)}</code>'),
            ("floor price / GPU-hour", e(money(p.price_floor))),
            ("registered", f"{e(when(p.registered_at))} UTC in {tx_link(p.registered_tx)}"),
            ("jailed until", e(when(p.jailed_until) if p.jailed_until else "-")),
            ("stake (active)", fig_link(out.stake_active, stake_amount(n(out.stake_active)))),
            ("stake (unbonding)", fig_link(out.stake_unbonding, stake_amount(n(out.stake_unbonding)))),
            ("slashed", fig_link(out.stake_slashed, stake_amount(n(out.stake_slashed)))),
            ("withdrawn stake", fig_link(out.stake_withdrawn, stake_amount(n(out.stake_withdrawn)))),
            ("leases", fig_link(out.leases, out.leases.value)
             + " (" + fig_link(out.leases_active, f"{out.leases_active.value} active") + ")"),
            ("tenant payments", fig_link(out.tenant_paid, money(n(out.tenant_paid)))),
            ("income", fig_link(out.provider_income, money(n(out.provider_income)))),
            ("protocol fees", fig_link(out.protocol_fees, money(n(out.protocol_fees)))),
        ])
        u = out.uptime
        uptime = kv([
            ("uptime", '<span id="uptime">' + (fig_link(u.bps, bps_text(u.bps.value)) if u.bps else "-")
             + "</span>"),
            ("heartbeats / epochs owed", beats_of(u)),
        ]) if u else "<p class='muted'>This network has no Uptime contract.</p>"
        strip = epoch_strip(snap, explorer, p.address)
        chart = f'<div class="charts">{epoch_chart(strip)}</div>' if strip else ""
        body = (facts + "<h2>Uptime</h2>" + uptime + chart
                + "<h2>Probes, outages and downtime</h2>"
                + liveness_html(out.liveness, explorer.outages(p.address))
                + "<h2>Reliability</h2>" + reliability_html(out.reliability)
                + "<p class='muted'>Computed only from on-chain events; definition and weights in "
                  "docs/explorer.md.</p>"
                + "<h2>Leases</h2>" + leases_table(snap, leases)
                + "<h2>Payouts</h2>" + payments_table(payments))
        return page(f"Provider {p.address}", body, snap)

    @app.get("/leases/{lease_id}", response_class=HTMLResponse, include_in_schema=False)
    def lease_page(lease_id: int):
        snap = explorer.snapshot()
        row, events, payments = explorer.lease(lease_id)
        out = lease_out(snap, row)
        facts = kv([
            ("status", f'<span id="status">{e(out.status)}</span>'),
            ("order", e(row.order_id)), ("tenant", f'<span class="mono">{e(row.tenant)}</span>'),
            ("provider", provider_link(row.provider)), ("GPU model (at start)", e(row.gpu_model)),
            ("GPUs", e(row.gpus)), ("price / GPU-hour", e(money(row.price_per_gpu_hour))),
            ("budget", e(money(row.budget))), ("start", e(when(row.start)) + " UTC"),
            ("budget runs out", e(when(out.exhausts_at)) + " UTC"),
            ("closed", (e(when(row.closed_at)) + " UTC in " + tx_link(row.closed_tx))
             if row.closed_at is not None else "-"),
            ("paid out (gross)", e(money(row.earned))), ("to provider", e(money(row.provider_income))),
            ("protocol fees", e(money(row.fees))), ("refund", e(money(row.refund))),
            ("result hash", f'<span class="mono">{e(row.result_hash or "-")}</span>'),
            ("created in", tx_link(row.created_tx, short=False)),
        ])
        body = (facts + "<h2>Events</h2>" + events_table(events)
                + "<h2>Payouts</h2>" + payments_table(payments))
        return page(f"Lease #{row.lease_id}", body, snap)

    @app.get("/tx/{tx_hash}", response_class=HTMLResponse, include_in_schema=False)
    def tx_page(tx_hash: str):
        tx = _tx_hash(tx_hash)
        events = explorer.tx(tx)
        snap = explorer.snapshot()
        first = events[0]
        body = (f'<p>Block {e(first.block_number)} (<span class="mono">{e(first.block_hash)}</span>), '
                f"{e(when(first.timestamp))} UTC: {len(events)} indexed event"
                f"{'s' * (len(events) != 1)}.</p>" + events_table(events, with_tx=False))
        return page(f"Transaction {tx}", body, snap)

    @app.get("/figure", response_class=HTMLResponse, include_in_schema=False)
    def figure_page(name: str, key: str = ALL):
        snap = explorer.snapshot()
        f = snap.figures.get((name, key))
        if f is None:
            raise HTTPException(404, f"no figure {name}[{key}] as of block {snap.block}")
        rows = []
        with Session(engine) as session:
            for i in range(0, len(f.txs), 500):
                rows += session.execute(
                    select(db.Event.tx_hash, db.Event.block_number, db.Event.timestamp, db.Event.event)
                    .where(db.Event.tx_hash.in_(f.txs[i:i + 500]))
                    .order_by(db.Event.block_number, db.Event.log_index)).all()
        by_tx: dict[str, list] = {}
        for tx, block, ts, event in rows:
            slot = by_tx.setdefault(tx, [block, ts, []])
            if event not in slot[2]:
                slot[2].append(event)
        table_rows = [[tx_link(tx, short=False), e(by_tx.get(tx, ["-"])[0]),
                       e(when(by_tx[tx][1]) if tx in by_tx else "-"),
                       e(", ".join(by_tx[tx][2]) if tx in by_tx else "-")] for tx in f.txs]
        body = (kv([("figure", f"<code>{e(f.name)}</code>"), ("key", f"<code>{e(f.key)}</code>"),
                    ("value", f'<span class="mono" id="value">{e(f.value)}</span>'),
                    ("transactions", e(len(f.txs)))])
                + "<p class='muted'>Definition: docs/explorer.md. Values are base units "
                  "(TUSD 6 decimals, TSTK 18) or seconds.</p>"
                + table(["transaction", "block", "time (UTC)", "events"], table_rows, {1}, "txs"))
        return page(f"Figure {name}[{key}]", body, snap)

    return app
