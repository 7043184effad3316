"""The reliability scores' own fold, compact: `ReliabilityBook` (pure, no I/O).

What a tenant's bid table needs is `reliability.by_provider.*` and the measured uptime
(`uptime.by_provider.*`) per provider, values only. `FigureBook` gives them too, but keeps every
figure's transaction hashes, every lease and every epoch's liveness evidence, so its state grows
with history. This book keeps only what can still change a score:

- per registered provider: registration time and registry index, jail state, slash and jail
  counts, finished and failed lease counts, and its final epochs counted by state (up by a
  heartbeat, by a receipt claim, by validators' reports; revoked) (protocol/uptime_book.py
  `UptimeCounts`);
- the epochs not yet final in full (heartbeats, claims, the OR of the validators' report words,
  the registry indices inclusion challenges named and those whose beat was shown);
- per lease, only while its count can still change (`EvidenceBook` compact mode): open leases, and
  closed ones until the Market's `claim_window` after the close has passed; a lease that counts as
  failed is final and dropped at once;
- the uptime clock and liveness rules, the place folded up to, and the transaction whose slashes
  still wait for a possible downtime claim.

So its state is O(providers + open leases + leases closed within the last claim window +
epochs not final), independent of how many events came before. The rules are the full fold's own
(protocol/reliability.py `EvidenceBook`, `parts`; protocol/uptime_book.py): tests/protocol/
test_figures_incremental.py checks the values equal `compute_figures`'.

It relies on what the contracts guarantee, and refuses (ValueError) a history that breaks it rather
than guess: heartbeats, receipt claims and reports come only after `UptimeStarted` (and
`LivenessRulesSet`, logged with it), from or naming registered providers, within their windows
(Uptime.heartbeat: the current epoch, once; claim_beat: report_delay + 1 epochs; report_liveness:
report_delay epochs), so nothing names an epoch once it is final; the uptime clock and rules are
set once; a transaction's events are consecutive; and it is read as of a time no earlier than
the last event folded.
"""

from __future__ import annotations

from collections.abc import Iterable

from tessera.protocol.events import EventRecord
from tessera.protocol.figure_parts import epoch_at, in_chain_order
from tessera.protocol.reliability import NAME, EvidenceBook, Inputs, parts
from tessera.protocol.uptime_book import UPTIME, UptimeCounts

STATE_VERSION = 3     # 3: set challenges (InclusionsChallenged); 2: reports and receipt claims

Values = dict[tuple[str, str], int]


class ReliabilityBook:
    """`apply` records in chain order, read `values(as_of)` at any time (see the module docstring).
    `claim_window`: the Market's, in seconds (None keeps every closed lease: exact for any window,
    but grows with history)."""

    def __init__(self, claim_window: int | None) -> None:
        self.evidence = EvidenceBook(compact=True, claim_window=claim_window)
        self.uptime = UptimeCounts()
        self.last: tuple[int, int] | None = None          # (block, log index) applied
        self.last_timestamp: int | None = None
        self.events = 0

    def apply(self, records: Iterable[EventRecord]) -> ReliabilityBook:
        events = in_chain_order(records, self.last, "ReliabilityBook")
        if events and self.last_timestamp is not None and events[0].timestamp < self.last_timestamp:
            raise ValueError(f"event at block {events[0].block_number} has time "
                             f"{events[0].timestamp}, before the book's {self.last_timestamp}")
        for e in events:
            self.evidence.apply(e)
            self.uptime.apply(e, lambda e=e: _where(e))
        if events:
            self.last = events[-1].order
            self.last_timestamp = events[-1].timestamp
            self.events += len(events)
        return self

    def advance(self, timestamp: int) -> ReliabilityBook:
        """Say that every event up to `timestamp` has been applied (the time of the last block
        read, which may hold none of this book's events): closed leases whose claim window ended
        before it are dropped now, not at the next event."""
        if self.last_timestamp is None or timestamp > self.last_timestamp:
            self.last_timestamp = timestamp
            self.evidence.sweep(timestamp)
            if self.uptime.clock is not None:
                self.uptime.settle(epoch_at(timestamp, *self.uptime.clock))
        return self

    def values(self, as_of: int) -> Values:
        """{(figure name, provider): value} of `uptime.by_provider.*` (when the network has the
        Uptime contract) and `reliability.by_provider.*` as of `as_of`: the values
        `compute_figures(every event, as_of)` gives them."""
        if self.last_timestamp is not None and as_of < self.last_timestamp:
            raise ValueError(f"as_of {as_of} is before the last event folded "
                             f"({self.last_timestamp}): a compact book reads forward only")
        out: Values = {}
        uptime = self.uptime.values(as_of)
        for addr, counts in self.evidence.counts().items():
            registered_at = self.evidence.providers[addr].registered_at
            measured = uptime.get(addr, {})
            for part, value in measured.items():
                out[(f"{UPTIME}.{part}", addr)] = value
            inputs = Inputs(up=measured.get("up", 0), epochs=measured.get("epochs", 0),
                            finished=counts.finished, failed=counts.failed, slashes=counts.slashes,
                            jails=counts.jails, age_seconds=max(as_of - registered_at, 0))
            for part, value in parts(inputs).items():
                out[(f"{NAME}.{part}", addr)] = value
        return out

    def to_json(self) -> dict:
        """The whole state, JSON-safe and versioned (`from_json` reads it back)."""
        return {"version": STATE_VERSION, "last": list(self.last) if self.last else None,
                "last_timestamp": self.last_timestamp, "events": self.events,
                "uptime": self.uptime.to_json(), "evidence": self.evidence.to_json()}

    @classmethod
    def from_json(cls, raw: dict) -> ReliabilityBook:
        """A book from `to_json()`'s state; ValueError naming the problem if it is not one."""
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            found = raw.get("version") if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"not a ReliabilityBook state of version {STATE_VERSION} "
                             f"(found {found!r})")
        try:
            evidence = EvidenceBook.from_json(raw["evidence"])
            if not evidence.compact:
                raise ValueError("its evidence is not in compact mode")
            book = cls(evidence.claim_window)
            book.evidence = evidence
            book.last = tuple(raw["last"]) if raw["last"] else None
            book.last_timestamp = raw["last_timestamp"]
            book.events = int(raw["events"])
            book.uptime = UptimeCounts.from_json(raw["uptime"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"corrupt ReliabilityBook state: {type(exc).__name__}: {exc}") from exc
        return book


def _where(e: EventRecord) -> str:
    a = e.args
    who = a.get("provider") or a.get("validator") or "?"
    return f"{e.event} of {who} for epoch {a.get('epoch')} at block {e.block_number}"
