"""The figures' fold, resumable: `FigureBook` (pure, no I/O).

`apply(records)` folds events in chain order, after everything applied so far; `figures(as_of)`
finalizes the time-dependent parts (registered capacity up to `as_of`, leased GPU-seconds, active
leases, uptime epochs, reliability) on the side, without changing the book, so `apply` and
`figures` interleave; `to_json()` / `from_json()` carry the whole state (versioned) so a reader
can persist it and resume. `protocol.figures.compute_figures(records, as_of)` is
`FigureBook().apply(records).figures(as_of)`: one definition (docs/explorer.md).

Agent payments and the AgentBudget's figures are folded by protocol/agent_payments.py
(`AgentPayments.book`, its state under "agents"); AgentBudget and token events go nowhere else.

Uptime (heartbeats, validators' liveness reports, receipt claims, resolved challenges) is folded
by protocol/uptime_book.py (`UptimeLog`, its state under "uptime").

A read costs what changed since the last read, plus one pass over the open leases and the
providers: figures of the event-driven part are kept as built `Figure`s and rebuilt only for the
keys an `apply` touched; a provider's uptime figures are rebuilt only when its liveness evidence
or the epoch changed; a model's price percentiles only when it has a new lease.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from tessera.protocol.agent_payments import AgentPayments
from tessera.protocol.events import EventRecord
from tessera.protocol.figure_parts import (
    ALL,
    PERCENTILES,
    Figure,
    Figures,
    day_of,
    in_chain_order,
    nearest_rank,
    split_by_day,
)
from tessera.protocol.lease import exhausted_at
from tessera.protocol.money import slash_split
from tessera.protocol.reliability import EvidenceBook, reliability_figures
from tessera.protocol.uptime_book import UptimeLog

STATE_VERSION = 4   # 4: set challenges (InclusionsChallenged); 3: reports and receipt claims


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


class _Book:
    """Accumulators by (figure name, key); `dirty` names the keys changed since the last read."""

    def __init__(self) -> None:
        self.acc: dict[tuple[str, str], _Acc] = defaultdict(_Acc)
        self.dirty: set[tuple[str, str]] = set()

    def add(self, name: str, key: str, value: int, tx: str | Iterable[str] | None = None) -> None:
        self.acc[(name, key)].add(value, tx)
        self.dirty.add((name, key))


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


def _capacity(book: _Book, p: _Provider, now: int) -> None:
    """Book the provider's registered GPU-seconds for [p.since, now)."""
    if p.stake > 0 and p.gpu_count > 0 and now > p.since:
        for day, seconds in split_by_day(p.since, now):
            amount = seconds * p.gpu_count
            for name, key in (("by_day", day), ("by_model", p.gpu_model),
                              ("by_day_model", f"{day}/{p.gpu_model}"), ("total", ALL)):
                book.add(f"utilization.{name}.registered_gpu_seconds", key, amount, p.txs)


class FigureBook:
    """Every figure's state after the events applied so far (see the module docstring)."""

    def __init__(self) -> None:
        self.base = _Book()                 # the event-driven part, final once booked
        self.providers: dict[str, _Provider] = {}
        self.leases: dict[int, _Lease] = {}
        self.prices: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.uptime = UptimeLog()                                      # liveness evidence
        self.evidence = EvidenceBook()
        self.agents = AgentPayments()                                  # agent payments' fold
        self.last: tuple[int, int] | None = None                       # (block, log index) applied
        self.last_timestamp: int | None = None
        self.events = 0
        # Read caches (not state: rebuilt on demand, never serialized).
        self._built: dict[tuple[str, str], Figure] = {}
        self._price_cache: dict[str, tuple[int, list[Figure]]] = {}

    # -- folding ---------------------------------------------------------------------------------
    def apply(self, records: Iterable[EventRecord]) -> FigureBook:
        """Fold `records` (any order among themselves) after everything applied so far; a record
        at or before the last applied (block, log index) is refused with a ValueError saying so."""
        events = in_chain_order(records, self.last, "FigureBook")
        for e in events:
            self._fold(e)
        if events:
            self.last = events[-1].order
            self.last_timestamp = events[-1].timestamp
            self.events += len(events)
        return self

    def _fold(self, e: EventRecord) -> None:
        book = self.base
        a, tx = e.args, e.tx_hash
        self.evidence.apply(e)
        self.uptime.apply(e)
        self.agents.book(e, book.add)     # protocol/agent_payments.py: its figures and state
        if e.contract in ("AgentBudget", "PaymentToken", "StakeToken"):
            return                        # (AgentBudget's Withdrawn is not the Market's)
        if e.contract == "Uptime":
            if e.event == "OutageReported":  # the registry's Jailed event counts the jail
                book.add("outages.by_provider.count", a["provider"], 1, tx)
                book.add("outages.by_provider.epochs", a["provider"],
                         a["last_epoch"] - a["first_epoch"] + 1, tx)
            return
        if e.contract == "Probes" and e.event == "ProbeTally":
            book.add("probes.by_provider.answered", a["provider"], a["answered"], tx)
            book.add("probes.by_provider.missed", a["provider"], a["missed"], tx)
            return
        if e.contract == "ProviderRegistry":
            self._registry(e)
            return
        # Every other contract's events are read by their names (PayReleased and RoundRefunded
        # come from the verification contracts).
        self._market(e)

    def _close_capacity(self, p: _Provider, now: int) -> None:
        _capacity(self.base, p, now)
        p.since = now

    def _registry(self, e: EventRecord) -> None:
        book, a, ts, tx = self.base, e.args, e.timestamp, e.tx_hash
        addr = a.get("provider")
        if e.event == "ProviderRegistered":
            p = self.providers[addr] = _Provider(addr, since=ts)
            p.gpu_model, p.gpu_count, p.stake = a["gpu_model"], a["gpu_count"], a["stake"]
            p.txs.add(tx)
            book.add("stake.by_provider.active", addr, a["stake"], tx)
            book.add("providers.total.count", ALL, 1, tx)
            return
        p = self.providers.get(addr)
        if p is None:
            return
        if e.event == "OfferUpdated":
            self._close_capacity(p, ts)
            p.gpu_model, p.gpu_count = a["gpu_model"], a["gpu_count"]
            p.txs.add(tx)
        elif e.event == "StakeAdded":
            self._close_capacity(p, ts)
            p.stake += a["amount"]
            p.txs.add(tx)
            book.add("stake.by_provider.active", addr, a["amount"], tx)
        elif e.event == "UnbondRequested":
            self._close_capacity(p, ts)
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
            self._close_capacity(p, ts)
            from_stake, from_unbonding = slash_split(a["amount"], p.stake)
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

    def _pay(self, e: EventRecord, provider: str, income: int, fee: int) -> None:
        if income + fee == 0:
            return
        day = day_of(e.timestamp)
        for name, key in (("by_day", day), ("by_provider", provider), ("total", ALL)):
            self.base.add(f"revenue.{name}.tenant_paid", key, income + fee, e.tx_hash)
            self.base.add(f"revenue.{name}.provider_income", key, income, e.tx_hash)
            self.base.add(f"revenue.{name}.protocol_fees", key, fee, e.tx_hash)

    def _market(self, e: EventRecord) -> None:
        book, a, ts, tx = self.base, e.args, e.timestamp, e.tx_hash
        if e.event == "OrderCreated":
            book.add("orders.total.count", ALL, 1, tx)
            book.add("orders.total.deposits", ALL, a["deposit"], tx)
        elif e.event == "OrderCancelled":
            book.add("orders.cancelled.count", ALL, 1, tx)
            book.add("orders.cancelled.refunds", ALL, a["refund"], tx)
        elif e.event == "LeaseCreated":
            provider = self.providers.get(a["provider"])
            model = provider.gpu_model if provider else ""
            lease = self.leases[a["lease_id"]] = _Lease(
                a["lease_id"], a["provider"], model, a["price_per_gpu_hour"], a["gpus"], a["start"],
                a["budget"], created_tx=tx)
            lease.txs.add(tx)
            self.prices[model].append((a["price_per_gpu_hour"], tx))
            book.add("leases.total.count", ALL, 1, tx)
            book.add("leases.by_provider.count", a["provider"], 1, tx)
        elif e.event == "LeaseToppedUp":
            lease = self.leases.get(a["lease_id"])
            if lease:
                lease.budget = a["budget"]
                lease.txs.add(tx)
            book.add("leases.total.top_ups", ALL, a["amount"], tx)
        elif e.event == "Withdrawn":
            self._pay(e, a["provider"], a["amount_to_provider"], a["fee"])
        elif e.event == "LeaseClosed":
            lease = self.leases.get(a["lease_id"])
            if lease:
                lease.closed_at = ts
                lease.txs.add(tx)
                self._pay(e, lease.provider, a["provider_amount"], a["fee"])
            book.add("leases.closed.count", ALL, 1, tx)
            book.add("leases.closed.refunds", ALL, a["refund"], tx)
        elif e.event == "ResultCommitted":
            book.add("results.total.count", ALL, 1, tx)
        elif e.event == "PayReleased":
            # A verified lease's pay made withdrawable by final rounds (income counts only when
            # withdrawn); `withheld`: pay of proven and forfeited rounds, never the provider's.
            book.add("verified.total.released", ALL, a["amount"], tx)
            book.add("verified.total.withheld", ALL, a["withheld"], tx)
        elif e.event == "RoundRefunded":
            # One per round whose pay goes back to the tenant: proven to cheat itself, or
            # `forfeited` (a cheat proven for the lease in another round: Settlement releases
            # none of its pay any more; round_index = the rounds posted for the time after the
            # last root). Records without the field (made by hand) count as proven.
            kind = "forfeited_rounds" if a.get("forfeited", False) else "proven_rounds"
            book.add(f"verified.total.{kind}", ALL, 1, tx)
            book.add("verified.total.refunds", ALL, a["refund"], tx)
        elif e.event == "DowntimeClaimed":
            # Pay for final epochs the provider was not up: a refund to the tenant, never provider income
            # (income counts only Withdrawn and LeaseClosed payouts). docs/uptime.md.
            book.add("downtime.total.claims", ALL, 1, tx)
            book.add("downtime.total.refunds", ALL, a["refund"], tx)
            for scope, key in (("by_provider", a["provider"]), ("total", ALL)):
                book.add(f"downtime.{scope}.epochs", key, len(a["epochs"]), tx)
                book.add(f"downtime.{scope}.forfeited", key, a["amount"], tx)

    # -- reading ---------------------------------------------------------------------------------
    def figures(self, as_of: int) -> Figures:
        """Every figure as of `as_of` (the timestamp of the block read up to); the book is not
        changed, so more events can be applied afterwards."""
        base = self.base
        for key in base.dirty:
            acc = base.acc[key]
            self._built[key] = Figure(key[0], key[1], acc.value, tuple(sorted(acc.txs)))
        base.dirty.clear()
        side = _Book()
        # Registered capacity up to `as_of` (the open segment of each provider), stake totals.
        for p in self.providers.values():
            _capacity(side, p, max(as_of, p.since))
            for bucket in ("active", "unbonding", "slashed", "withdrawn"):
                side.add(f"stake.by_provider.{bucket}", p.address, 0)
            for bucket, value in (("active", p.stake), ("unbonding", p.unbonding),
                                  ("slashed", p.slashed)):
                known = base.acc.get((f"stake.by_provider.{bucket}", p.address))
                side.add(f"stake.total.{bucket}", ALL, value, known.txs if known else ())
        # Leased GPU-seconds and active leases.
        side.add("leases.active.count", ALL, 0)
        side.add("leases.active.gpus", ALL, 0)
        for lease in self.leases.values():
            exhaust = exhausted_at(lease.start, lease.budget, lease.price, lease.gpus)
            end = min(lease.closed_at if lease.closed_at is not None else as_of, exhaust)
            for day, seconds in split_by_day(lease.start, end):
                amount = seconds * lease.gpus
                for name, key in (("by_day", day), ("by_model", lease.gpu_model),
                                  ("by_day_model", f"{day}/{lease.gpu_model}"), ("total", ALL)):
                    side.add(f"utilization.{name}.leased_gpu_seconds", key, amount, lease.txs)
            if lease.closed_at is None and exhaust > as_of:
                side.add("leases.active.count", ALL, 1, lease.created_tx)
                side.add("leases.active.gpus", ALL, lease.gpus, lease.created_tx)
                side.add("leases.active_by_provider.count", lease.provider, 1, lease.created_tx)
        # Every key that has registered hours also shows leased hours (zero when none).
        for (name, key) in [*base.acc, *side.acc]:
            if name.startswith("utilization.") and name.endswith(".registered_gpu_seconds"):
                side.add(name.replace("registered_gpu_seconds", "leased_gpu_seconds"), key, 0)

        out: Figures = dict(self._built)
        for key, acc in side.acc.items():
            known = base.acc.get(key)
            if known is None:
                out[key] = Figure(key[0], key[1], acc.value, tuple(sorted(acc.txs)))
            else:
                out[key] = Figure(key[0], key[1], known.value + acc.value,
                                  tuple(sorted(known.txs | acc.txs)))
        for figs in self._price_figures():
            out.update(((f.name, f.key), f) for f in figs)
        out.update(self.provider_figures(as_of))
        return out

    def provider_figures(self, as_of: int) -> Figures:
        """Only `uptime.by_provider.*` and `reliability.by_provider.*` as of `as_of` (what a
        tenant's bid table shows), without building every other figure; equal to those of
        `figures(as_of)`."""
        out: Figures = self.uptime.figures(as_of)
        # Reliability per provider (protocol/reliability.py), from the uptime figures just built.
        rel = _Book()
        for name, key, value, txs in reliability_figures(self.evidence.evidence(), as_of, out):
            rel.add(name, key, value, txs)
        for key, acc in rel.acc.items():
            out[key] = Figure(key[0], key[1], acc.value, tuple(sorted(acc.txs)))
        return out

    def _price_figures(self) -> Iterable[list[Figure]]:
        """Price per GPU-hour by model; a model's figures are rebuilt only when it has new leases."""
        for model, entries in self.prices.items():
            cached = self._price_cache.get(model)
            if cached is None or cached[0] != len(entries):
                values = sorted(v for v, _ in entries)
                txs = tuple(sorted({t for _, t in entries}))
                figs = [Figure("price.by_model.count", model, len(values), txs)]
                figs += [Figure(f"price.by_model.{label}", model, nearest_rank(values, pct), txs)
                         for label, pct in PERCENTILES.items()]
                cached = self._price_cache[model] = (len(entries), figs)
            yield cached[1]

    # -- state -----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """The whole state, JSON-safe and versioned (`from_json` reads it back)."""
        return _state_of(self)

    @classmethod
    def from_json(cls, raw: dict) -> FigureBook:
        """A book from `to_json()`'s state; ValueError naming the problem if it is not one."""
        return _book_of(raw)


def _state_of(self: FigureBook) -> dict:
    return {
        "version": STATE_VERSION,
        "last": list(self.last) if self.last else None,
        "last_timestamp": self.last_timestamp,
        "events": self.events,
        "acc": [[n, k, a.value, sorted(a.txs)] for (n, k), a in self.base.acc.items()],
        "providers": [[p.address, p.gpu_model, p.gpu_count, p.stake, p.unbonding, p.slashed,
                       p.withdrawn, p.since, sorted(p.txs)] for p in self.providers.values()],
        "leases": [[x.lease_id, x.provider, x.gpu_model, x.price, x.gpus, x.start, x.budget,
                    x.closed_at, sorted(x.txs), x.created_tx] for x in self.leases.values()],
        "prices": {m: [list(e) for e in entries] for m, entries in self.prices.items()},
        "uptime": self.uptime.to_json(),
        "evidence": self.evidence.to_json(),
        "agents": self.agents.to_json(),
    }

def _book_of(raw: dict) -> FigureBook:
    if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
        found = raw.get("version") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"not a FigureBook state of version {STATE_VERSION} (found {found!r})")
    try:
        book = FigureBook()
        book.last = tuple(raw["last"]) if raw["last"] else None
        book.last_timestamp = raw["last_timestamp"]
        book.events = raw["events"]
        for n, k, value, txs in raw["acc"]:
            book.base.acc[(n, k)] = _Acc(value, set(txs))
            book.base.dirty.add((n, k))
        for addr, model, count, stake, unb, slashed, wd, since, txs in raw["providers"]:
            book.providers[addr] = _Provider(addr, model, count, stake, unb, slashed, wd, since,
                                             set(txs))
        for lid, prov, model, price, gpus, start, budget, closed, txs, created in raw["leases"]:
            book.leases[lid] = _Lease(lid, prov, model, price, gpus, start, budget, closed,
                                      set(txs), created)
        for model, entries in raw["prices"].items():
            book.prices[model] = [(v, t) for v, t in entries]
        book.uptime = UptimeLog.from_json(raw["uptime"])
        book.evidence = EvidenceBook.from_json(raw["evidence"])
        book.agents = AgentPayments.from_json(raw["agents"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"corrupt FigureBook state: {type(exc).__name__}: {exc}") from exc
    return book
