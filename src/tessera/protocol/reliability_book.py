"""The reliability scores' own fold, compact: `ReliabilityBook` (pure, no I/O).

What a tenant's bid table needs is `reliability.by_provider.*` and the measured uptime
(`uptime.by_provider.*`) per provider, values only. `FigureBook` gives them too, but keeps every
figure's transaction hashes and every lease, so its state grows with history. This book keeps only
what can still change a score:

- per registered provider: registration time, jail state, slash and jail counts, finished and
  failed lease counts, counted heartbeats and the last heartbeat's epoch;
- per lease, only while its count can still change (`EvidenceBook` compact mode): open leases, and
  closed ones until the Market's `claim_window` after the close has passed; a lease that counts as
  failed is final and dropped at once;
- the uptime clock, the place folded up to, and the transaction whose slashes still wait for a
  possible downtime claim.

So its state is O(providers + open leases + leases closed within the last claim window),
independent of how many events came before. The rules are the full fold's own (protocol/
reliability.py `EvidenceBook`, `parts`; protocol/figure_parts.py `uptime_owed`, `uptime_bps`):
tests/protocol/test_figures_incremental.py checks the values equal `compute_figures`'.

It relies on what the contracts guarantee, and refuses (ValueError) a history that breaks it rather
than guess: heartbeats come only from registered providers after `UptimeStarted`, for the current
epoch of their block, at most one per epoch (Uptime.heartbeat), so a provider's heartbeat epochs
only grow; the uptime clock is set once; a transaction's events are consecutive; and it is read
as of a time no earlier than the last event folded.
"""

from __future__ import annotations

from collections.abc import Iterable

from tessera.protocol.events import EventRecord
from tessera.protocol.figure_parts import epoch_at, in_chain_order, uptime_bps, uptime_owed
from tessera.protocol.reliability import NAME, EvidenceBook, Inputs, parts

STATE_VERSION = 1
UPTIME = "uptime.by_provider"

Values = dict[tuple[str, str], int]


class ReliabilityBook:
    """`apply` records in chain order, read `values(as_of)` at any time (see the module docstring).
    `claim_window`: the Market's, in seconds (None keeps every closed lease: exact for any window,
    but grows with history)."""

    def __init__(self, claim_window: int | None) -> None:
        self.evidence = EvidenceBook(compact=True, claim_window=claim_window)
        self.clock: tuple[int, int] | None = None         # (genesis, epoch_length)
        self.beats: dict[str, list[int]] = {}             # provider -> [counted, last epoch]
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
            if e.contract == "Uptime":
                self._uptime(e)
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
        return self

    def _uptime(self, e: EventRecord) -> None:
        a = e.args
        if e.event == "UptimeStarted":
            clock = (a["genesis"], a["epoch_length"])
            if self.clock is not None and self.clock != clock:
                raise ValueError(f"a second UptimeStarted (block {e.block_number}) changes the "
                                 f"uptime clock {self.clock} to {clock}: the contract sets it once")
            self.clock = clock
        elif e.event == "Heartbeat":
            where = f"Heartbeat of {a['provider']} for epoch {a['epoch']} at block {e.block_number}"
            if self.clock is None:
                raise ValueError(f"{where} before UptimeStarted")
            record = self.evidence.providers.get(a["provider"])
            if record is None:
                raise ValueError(f"{where} from a provider not registered")
            counted, last = self.beats.get(a["provider"], (0, -1))
            if a["epoch"] <= last or a["epoch"] > epoch_at(e.timestamp, *self.clock):
                raise ValueError(f"{where}: the Uptime contract takes one heartbeat per epoch, for "
                                 f"the current one only (last was epoch {last})")
            first = epoch_at(record.registered_at, *self.clock)
            self.beats[a["provider"]] = [counted + (a["epoch"] >= first), a["epoch"]]

    def values(self, as_of: int) -> Values:
        """{(figure name, provider): value} of `uptime.by_provider.*` (when the network has the
        Uptime contract) and `reliability.by_provider.*` as of `as_of`: the values
        `compute_figures(every event, as_of)` gives them."""
        if self.last_timestamp is not None and as_of < self.last_timestamp:
            raise ValueError(f"as_of {as_of} is before the last event folded "
                             f"({self.last_timestamp}): a compact book reads forward only")
        out: Values = {}
        for addr, counts in self.evidence.counts().items():
            registered_at = self.evidence.providers[addr].registered_at
            beats = owed = 0
            if self.clock is not None:
                now = epoch_at(as_of, *self.clock)
                beats, last = self.beats.get(addr, (0, -1))
                owed = uptime_owed(epoch_at(registered_at, *self.clock), now, last == now)
                out[(f"{UPTIME}.epochs", addr)] = owed
                out[(f"{UPTIME}.heartbeats", addr)] = beats
                bps = uptime_bps(beats, owed)
                if bps is not None:
                    out[(f"{UPTIME}.bps", addr)] = bps
            inputs = Inputs(heartbeats=beats, epochs=owed, finished=counts.finished,
                            failed=counts.failed, slashes=counts.slashes, jails=counts.jails,
                            age_seconds=max(as_of - registered_at, 0))
            for part, value in parts(inputs).items():
                out[(f"{NAME}.{part}", addr)] = value
        return out

    def to_json(self) -> dict:
        """The whole state, JSON-safe and versioned (`from_json` reads it back)."""
        return {"version": STATE_VERSION, "last": list(self.last) if self.last else None,
                "last_timestamp": self.last_timestamp, "events": self.events,
                "clock": list(self.clock) if self.clock else None,
                "beats": self.beats, "evidence": self.evidence.to_json()}

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
            book.clock = tuple(raw["clock"]) if raw["clock"] else None
            book.beats = {a: [int(c), int(e)] for a, (c, e) in raw["beats"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"corrupt ReliabilityBook state: {type(exc).__name__}: {exc}") from exc
        return book
