"""Figures anyone can recompute from chain logs: pure functions of a list of event records.

The indexer's database and `tessera audit` both call `compute_figures`, so one definition serves
both. Every figure is an integer (money in base units, time in seconds) together with the sorted
tx hashes that make it up. Definitions in words: docs/explorer.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tessera.protocol.events import EventRecord
from tessera.protocol.lease import exhausted_at
from tessera.protocol.money import PAYMENT_SYMBOL, STAKE_SYMBOL
from tessera.protocol.reliability import reliability_figures

DAY = 86_400
ALL = "all"
PERCENTILES = {"min": 0, "p25": 25, "median": 50, "p75": 75, "max": 100}


@dataclass(frozen=True)
class Figure:
    name: str      # e.g. "revenue.by_day.provider_income"
    key: str       # e.g. "2026-01-02", a provider address, a GPU model, "2026-01-02/H100", "all"
    value: int
    txs: tuple[str, ...] = ()


Figures = dict[tuple[str, str], Figure]


def day_of(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def format_time(timestamp: int) -> str:
    """A block time for a person to read: '2026-12-05 09:12:00 UTC'."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def nearest_rank(sorted_values: list[int], percentile: int) -> int:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below it."""
    if percentile <= 0:
        return sorted_values[0]
    rank = -(-percentile * len(sorted_values) // 100)  # ceil(p/100 * n)
    return sorted_values[max(rank, 1) - 1]


def split_by_day(start: int, end: int) -> Iterable[tuple[str, int]]:
    """(UTC day, seconds) pieces of the half-open interval [start, end)."""
    t = start
    while t < end:
        boundary = (t // DAY + 1) * DAY
        piece_end = min(boundary, end)
        yield day_of(t), piece_end - t
        t = piece_end


# The unit of each figure, by name (the one home: explorer pages, API and `stats --json`).
_TUSD_FIGURES = ("revenue.", "price.by_model.min", "price.by_model.p25", "price.by_model.median",
                 "price.by_model.p75", "price.by_model.max", "orders.total.deposits",
                 "orders.cancelled.refunds",
                 "leases.closed.refunds", "leases.total.top_ups", "downtime.by_provider.forfeited",
                 "downtime.total.forfeited", "downtime.total.refunds", "verified.total.released",
                 "verified.total.withheld", "verified.total.refunds")
_TSTK_FIGURES = ("stake.", "slashes.total.amount")


def figure_unit(name: str) -> str:
    """'TUSD', 'TSTK', 'GPU-seconds', 'seconds', 'bps' or 'count' for a figure name."""
    if name.startswith(_TUSD_FIGURES):
        return PAYMENT_SYMBOL
    if name.startswith(_TSTK_FIGURES):
        return STAKE_SYMBOL
    if name.endswith("gpu_seconds"):
        return "GPU-seconds"
    if name.endswith("_seconds"):
        return "seconds"
    if name.endswith("bps"):
        return "bps"
    return "count"


@dataclass
class _Acc:
    value: int = 0
    txs: set[str] = field(default_factory=set)

    def add(self, value: int, tx: str | Iterable[str] | None = None) -> None:
        self.value += value
        if isinstance(tx, str):
            self.txs.add(tx)
        elif tx is not None:
            self.txs.update(tx)


@dataclass
class _Provider:
    address: str
    gpu_model: str = ""
    gpu_count: int = 0
    stake: int = 0
    unbonding: int = 0
    slashed: int = 0
    withdrawn: int = 0
    since: int = 0          # start of the current capacity segment
    txs: set[str] = field(default_factory=set)       # txs that shaped its capacity


@dataclass
class _Lease:
    lease_id: int
    provider: str
    gpu_model: str
    price: int
    gpus: int
    start: int
    budget: int
    closed_at: int | None = None
    txs: set[str] = field(default_factory=set)       # create, top-ups, close
    created_tx: str = ""


class _Book:
    def __init__(self):
        self.acc: dict[tuple[str, str], _Acc] = defaultdict(_Acc)

    def add(self, name: str, key: str, value: int, tx: str | Iterable[str] | None = None) -> None:
        self.acc[(name, key)].add(value, tx)

    def figures(self) -> Figures:
        return {k: Figure(k[0], k[1], a.value, tuple(sorted(a.txs))) for k, a in self.acc.items()}


def compute_figures(records: Iterable[EventRecord], as_of: int) -> Figures:
    """Every figure, from the events up to and including the block whose timestamp is `as_of`."""
    events = sorted(records, key=lambda r: r.order)
    book = _Book()
    providers: dict[str, _Provider] = {}
    leases: dict[int, _Lease] = {}
    prices: dict[str, list[tuple[int, str]]] = defaultdict(list)
    uptime_clock: tuple[int, int] | None = None                 # (genesis, epoch_length)
    heartbeats: dict[str, dict[int, str]] = defaultdict(dict)   # provider -> {epoch: tx}
    registered_at: dict[str, tuple[int, str]] = {}              # provider -> (timestamp, tx)

    def close_capacity(p: _Provider, now: int) -> None:
        """Book the provider's registered GPU-seconds for [p.since, now) and start a new segment."""
        if p.stake > 0 and p.gpu_count > 0 and now > p.since:
            for day, seconds in split_by_day(p.since, now):
                amount = seconds * p.gpu_count
                for name, key in (("by_day", day), ("by_model", p.gpu_model),
                                  ("by_day_model", f"{day}/{p.gpu_model}"), ("total", ALL)):
                    book.add(f"utilization.{name}.registered_gpu_seconds", key, amount, p.txs)
        p.since = now

    def pay(e: EventRecord, provider: str, income: int, fee: int) -> None:
        if income + fee == 0:
            return
        day = day_of(e.timestamp)
        for name, key in (("by_day", day), ("by_provider", provider), ("total", ALL)):
            book.add(f"revenue.{name}.tenant_paid", key, income + fee, e.tx_hash)
            book.add(f"revenue.{name}.provider_income", key, income, e.tx_hash)
            book.add(f"revenue.{name}.protocol_fees", key, fee, e.tx_hash)

    for e in events:
        a, ts, tx = e.args, e.timestamp, e.tx_hash
        if e.contract == "Uptime":
            if e.event == "UptimeStarted":
                uptime_clock = (a["genesis"], a["epoch_length"])
            elif e.event == "Heartbeat":
                heartbeats[a["provider"]].setdefault(a["epoch"], tx)
            elif e.event == "OutageReported":  # the registry's Jailed event counts the jail
                book.add("outages.by_provider.count", a["provider"], 1, tx)
                book.add("outages.by_provider.epochs", a["provider"],
                         a["last_epoch"] - a["first_epoch"] + 1, tx)
            continue
        if e.contract == "ProviderRegistry":
            addr = a.get("provider")
            if e.event == "ProviderRegistered":
                registered_at.setdefault(addr, (ts, tx))
                p = providers[addr] = _Provider(addr, since=ts)
                p.gpu_model, p.gpu_count, p.stake = a["gpu_model"], a["gpu_count"], a["stake"]
                p.txs.add(tx)
                book.add("stake.by_provider.active", addr, a["stake"], tx)
                book.add("providers.total.count", ALL, 1, tx)
                continue
            if addr not in providers:
                continue
            p = providers[addr]
            if e.event == "OfferUpdated":
                close_capacity(p, ts)
                p.gpu_model, p.gpu_count = a["gpu_model"], a["gpu_count"]
                p.txs.add(tx)
            elif e.event == "StakeAdded":
                close_capacity(p, ts)
                p.stake += a["amount"]
                p.txs.add(tx)
                book.add("stake.by_provider.active", addr, a["amount"], tx)
            elif e.event == "UnbondRequested":
                close_capacity(p, ts)
                p.stake -= a["amount"]
                p.unbonding += a["amount"]
                p.txs.add(tx)
                book.add("stake.by_provider.active", addr, -a["amount"], tx)
                book.add("stake.by_provider.unbonding", addr, a["amount"], tx)
            elif e.event == "StakeWithdrawn":
                p.unbonding -= a["amount"]
                p.withdrawn += a["amount"]
                book.add("stake.by_provider.unbonding", addr, -a["amount"], tx)
                book.add("stake.by_provider.withdrawn", addr, a["amount"], tx)
            elif e.event == "Slashed":
                close_capacity(p, ts)
                # The registry takes active stake first, then the unbonding bucket.
                from_stake = min(a["amount"], p.stake)
                from_unbonding = a["amount"] - from_stake
                p.stake -= from_stake
                p.unbonding -= from_unbonding
                p.slashed += a["amount"]
                p.txs.add(tx)
                book.add("stake.by_provider.active", addr, -from_stake, tx)
                book.add("stake.by_provider.unbonding", addr, -from_unbonding, tx)
                book.add("stake.by_provider.slashed", addr, a["amount"], tx)
                book.add("slashes.total.count", ALL, 1, tx)
                book.add("slashes.total.amount", ALL, a["amount"], tx)
            elif e.event == "Jailed":
                book.add("jails.total.count", ALL, 1, tx)
            continue

        # Market
        if e.event == "OrderCreated":
            book.add("orders.total.count", ALL, 1, tx)
            book.add("orders.total.deposits", ALL, a["deposit"], tx)
        elif e.event == "OrderCancelled":
            book.add("orders.cancelled.count", ALL, 1, tx)
            book.add("orders.cancelled.refunds", ALL, a["refund"], tx)
        elif e.event == "LeaseCreated":
            provider = providers.get(a["provider"])
            model = provider.gpu_model if provider else ""
            lease = leases[a["lease_id"]] = _Lease(
                a["lease_id"], a["provider"], model, a["price_per_gpu_hour"], a["gpus"], a["start"],
                a["budget"], created_tx=tx)
            lease.txs.add(tx)
            prices[model].append((a["price_per_gpu_hour"], tx))
            book.add("leases.total.count", ALL, 1, tx)
            book.add("leases.by_provider.count", a["provider"], 1, tx)
        elif e.event == "LeaseToppedUp":
            lease = leases.get(a["lease_id"])
            if lease:
                lease.budget = a["budget"]
                lease.txs.add(tx)
            book.add("leases.total.top_ups", ALL, a["amount"], tx)
        elif e.event == "Withdrawn":
            pay(e, a["provider"], a["amount_to_provider"], a["fee"])
        elif e.event == "LeaseClosed":
            lease = leases.get(a["lease_id"])
            if lease:
                lease.closed_at = ts
                lease.txs.add(tx)
                pay(e, lease.provider, a["provider_amount"], a["fee"])
            book.add("leases.closed.count", ALL, 1, tx)
            book.add("leases.closed.refunds", ALL, a["refund"], tx)
        elif e.event == "ResultCommitted":
            book.add("results.total.count", ALL, 1, tx)
        elif e.event == "PayReleased":
            # A verified lease's pay made withdrawable by final rounds (income counts only when
            # withdrawn); `withheld`: pay of proven rounds, never the provider's.
            book.add("verified.total.released", ALL, a["amount"], tx)
            book.add("verified.total.withheld", ALL, a["withheld"], tx)
        elif e.event == "RoundRefunded":
            book.add("verified.total.proven_rounds", ALL, 1, tx)
            book.add("verified.total.refunds", ALL, a["refund"], tx)
        elif e.event == "DowntimeClaimed":
            # Pay for epochs without a heartbeat: a refund to the tenant, never provider income
            # (income counts only Withdrawn and LeaseClosed payouts). docs/uptime.md.
            book.add("downtime.total.claims", ALL, 1, tx)
            book.add("downtime.total.refunds", ALL, a["refund"], tx)
            for scope, key in (("by_provider", a["provider"]), ("total", ALL)):
                book.add(f"downtime.{scope}.epochs", key, len(a["epochs"]), tx)
                book.add(f"downtime.{scope}.forfeited", key, a["amount"], tx)

    # Registered capacity up to `as_of`.
    for p in providers.values():
        close_capacity(p, max(as_of, p.since))
        for bucket in ("active", "unbonding", "slashed", "withdrawn"):
            book.add(f"stake.by_provider.{bucket}", p.address, 0)
        book.add("stake.total.active", ALL, p.stake, book.acc[("stake.by_provider.active", p.address)].txs)
        book.add("stake.total.unbonding", ALL, p.unbonding,
                 book.acc[("stake.by_provider.unbonding", p.address)].txs)
        book.add("stake.total.slashed", ALL, p.slashed,
                 book.acc[("stake.by_provider.slashed", p.address)].txs)

    # Leased GPU-seconds and active leases.
    book.add("leases.active.count", ALL, 0)
    book.add("leases.active.gpus", ALL, 0)
    for lease in leases.values():
        exhaust = exhausted_at(lease.start, lease.budget, lease.price, lease.gpus)
        end = min(lease.closed_at if lease.closed_at is not None else as_of, exhaust)
        for day, seconds in split_by_day(lease.start, end):
            amount = seconds * lease.gpus
            for name, key in (("by_day", day), ("by_model", lease.gpu_model),
                              ("by_day_model", f"{day}/{lease.gpu_model}"), ("total", ALL)):
                book.add(f"utilization.{name}.leased_gpu_seconds", key, amount, lease.txs)
        if lease.closed_at is None and exhaust > as_of:
            book.add("leases.active.count", ALL, 1, lease.created_tx)
            book.add("leases.active.gpus", ALL, lease.gpus, lease.created_tx)
            book.add("leases.active_by_provider.count", lease.provider, 1, lease.created_tx)

    # Every key that has registered hours also shows leased hours (zero when none).
    for (name, key) in list(book.acc):
        if name.startswith("utilization.") and name.endswith(".registered_gpu_seconds"):
            book.add(name.replace("registered_gpu_seconds", "leased_gpu_seconds"), key, 0)

    # Price per GPU-hour by model.
    for model, entries in prices.items():
        values = sorted(v for v, _ in entries)
        txs = [t for _, t in entries]
        book.add("price.by_model.count", model, len(values), txs)
        for label, pct in PERCENTILES.items():
            book.add(f"price.by_model.{label}", model, nearest_rank(values, pct), txs)

    if uptime_clock is not None:
        _uptime_figures(book, uptime_clock, registered_at, heartbeats, as_of)

    # Reliability per provider (protocol/reliability.py), from the uptime figures just booked.
    for name, key, value, txs in reliability_figures(events, as_of, book.acc):
        book.add(name, key, value, txs)

    _probe_figures(book, events)
    return book.figures()


def epoch_at(timestamp: int, genesis: int, epoch_length: int) -> int:
    """The Uptime contract's epoch at a timestamp (epoch 0 before genesis)."""
    return max(timestamp - genesis, 0) // epoch_length


def _uptime_figures(book: _Book, clock: tuple[int, int], registered_at: dict[str, tuple[int, str]],
                    heartbeats: dict[str, dict[int, str]], as_of: int) -> None:
    """uptime.by_provider.{epochs,heartbeats,bps}: docs/uptime.md.

    Epochs owed run from the registration's epoch to the one before `as_of`'s epoch, plus
    `as_of`'s own epoch once it holds a heartbeat (an epoch still running is not held against
    a provider until it ends)."""
    genesis, length = clock
    now = epoch_at(as_of, genesis, length)
    for addr, (ts, reg_tx) in registered_at.items():
        first = epoch_at(ts, genesis, length)
        beats = {ep: t for ep, t in heartbeats.get(addr, {}).items() if first <= ep <= now}
        owed = max(now - first, 0) + (1 if now in beats else 0)
        txs = sorted(beats.values())
        book.add("uptime.by_provider.epochs", addr, owed, reg_tx)
        book.add("uptime.by_provider.heartbeats", addr, len(beats), txs)
        if owed:
            book.add("uptime.by_provider.bps", addr, len(beats) * 10_000 // owed, txs)


def compare(expected: Figures, actual: Figures, check_txs: bool = True) -> list[str]:
    """Every difference between two figure sets, in words; empty when they agree exactly."""
    problems = []
    for key in sorted(set(expected) | set(actual)):
        left, right = expected.get(key), actual.get(key)
        label = f"{key[0]}[{key[1]}]"
        if left is None:
            problems.append(f"{label}: only in the second set (value {right.value})")
        elif right is None:
            problems.append(f"{label}: only in the first set (value {left.value})")
        elif left.value != right.value:
            problems.append(f"{label}: {left.value} != {right.value} (diff {right.value - left.value})")
        elif check_txs and left.txs != right.txs:
            extra = set(right.txs) - set(left.txs)
            missing = set(left.txs) - set(right.txs)
            problems.append(f"{label}: same value but tx lists differ "
                            f"(missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]})")
    return problems


def ratio(figures: Figures, name: str, key: str) -> float | None:
    """leased / registered GPU-seconds for a utilization key (display only; the parts are exact)."""
    leased = figures.get((f"utilization.{name}.leased_gpu_seconds", key))
    registered = figures.get((f"utilization.{name}.registered_gpu_seconds", key))
    if not registered or registered.value == 0:
        return None
    return (leased.value if leased else 0) / registered.value


def _probe_figures(book: _Book, events: list[EventRecord]) -> None:
    """probes.by_provider.{answered,missed}: validators' probe counts summed over every posted
    report, each with the report transactions that carry it (docs/validators.md). A count is the
    posting validator's word, summed across validators as posted."""
    for e in events:
        if e.contract == "Probes" and e.event == "ProbeTally":
            provider = e.args["provider"]
            book.add("probes.by_provider.answered", provider, e.args["answered"], e.tx_hash)
            book.add("probes.by_provider.missed", provider, e.args["missed"], e.tx_hash)
