"""Uptime per provider from the Uptime contract's logs (pure, no I/O): `Uptime.is_up`'s rule in
two folds, one keeping every epoch's evidence with its transactions (`UptimeLog`, FigureBook's)
and one keeping counts only (`UptimeCounts`, the tenant's ReliabilityBook). Both give the same
`uptime.by_provider.*` values (tests/protocol/test_figures_incremental.py). docs/uptime.md.

Provider p in epoch e is, by the evidence in the logs:
- **up by a heartbeat** (`Heartbeat`) or **by a receipt claim** (`BeatClaimed`): p's heartbeat
  bit, which nothing undoes, so it counts at once, final or not;
- **up by validators' reports**: some validator's `LivenessReported` for e names p's registry
  index (bit i of words[j] = index 256*j + i; the index is p's place among `ProviderRegistered`
  events in chain order), e is final, and p's inclusion in e was not disputed, or was proven;
- **revoked** (down): e is final, it was reported, an `InclusionsChallenged` named p's registry
  index for e (its `named` bitmap, like a report's words) and no `InclusionAnswered` showed p's
  beat signature for e (on any challenge of e: the contract takes one beat per (p, e));
- **down**: e is final and none of the above;
- **pending**: e is not final and has no heartbeat bit: reports, receipt claims and challenges
  can still change it, so it counts neither as up nor as down (Uptime.is_up calls it up;
  downtime claims and outage reports wait for it).
e is final once the current epoch is past e + report_delay + 1 + answer_epochs
(`LivenessRulesSet`; protocol/liveness.is_final); an Uptime without those rules (heartbeats only)
makes an epoch final once it has ended. Challenges are opened and answered only before their
epoch is final, so a final epoch's state never changes (`ChallengeResolved` only moves the bond
and the validator's slash).

Figures, per registered provider, from its registration's epoch r to the epoch n of `as_of`:
`epochs` (owed: final epochs, plus epochs not final already up by a heartbeat bit), `up`
(= `heartbeats` + `claimed` + `reported`), `revoked`, `pending` and `bps` = up * 10000 // epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tessera.protocol.events import EventRecord
from tessera.protocol.figure_parts import Figure, Figures, epoch_at, uptime_bps
from tessera.protocol.liveness import WORD_BITS, indices_of

UPTIME = "uptime.by_provider"
HEARTBEAT, CLAIM, REPORT, REVOKED, DOWN, PENDING = (
    "heartbeat", "claim", "report", "revoked", "down", "pending")
UP_STATES = (HEARTBEAT, CLAIM, REPORT)
# The count figure of each final state (and of the up ones), in the order the figures list them.
COUNTED = {HEARTBEAT: "heartbeats", CLAIM: "claimed", REPORT: "reported", REVOKED: "revoked"}
PARTS = ("epochs", "up", "heartbeats", "claimed", "reported", "revoked", "pending")


def lag_of(rules: tuple[int, int] | None) -> int:
    """Epochs after an epoch before it is final: report_delay + 1 + answer_epochs; 0 without
    liveness rules (a heartbeat-only Uptime: final once ended)."""
    return rules[0] + 1 + rules[1] if rules else 0


def state_of(beat: str, reported: bool, revoked: bool, final: bool) -> str:
    """One epoch's state for one provider (see the module docstring)."""
    if beat:
        return beat
    if not final:
        return PENDING
    if reported:
        return REVOKED if revoked else REPORT
    return DOWN


def spans(first: int, now: int, lag: int) -> tuple[int, int]:
    """(final epochs, epochs not final) from the registration's epoch `first` to `now`."""
    final_last = now - lag - 1
    return max(final_last - first + 1, 0), max(now - max(first, final_last + 1) + 1, 0)


def values_of(counts: dict[str, int], first: int, now: int, lag: int, beats_not_final: int) -> dict:
    """Every part's value from the final states' counts (`heartbeats`, `claimed`, `reported`,
    `revoked` of epochs in range, heartbeat bits of epochs not final included) and the number
    of those heartbeat bits in epochs not final."""
    final, open_ = spans(first, now, lag)
    up = counts["heartbeats"] + counts["claimed"] + counts["reported"]
    return {"epochs": final + beats_not_final, "up": up, **counts,
            "pending": open_ - beats_not_final}


class _Clock:
    """What both folds read alike: the uptime clock, the liveness rules, registry order."""

    def __init__(self) -> None:
        self.clock: tuple[int, int] | None = None          # (genesis, epoch_length)
        self.rules: tuple[int, int] | None = None          # (report_delay, answer_epochs)
        self.order: list[str] = []                         # registry index -> provider
        self.index: dict[str, int] = {}

    def register(self, provider: str) -> bool:
        """A `ProviderRegistered`: the next registry index (once per address); True if new."""
        if provider in self.index:
            return False
        self.index[provider] = len(self.order)
        self.order.append(provider)
        return True

    def named(self, words: list[int]) -> list[str]:
        """The registered providers a bitmap names (a report's words, a challenge's named);
        indices past the registry name none."""
        return [self.order[i] for i in indices_of(words) if i < len(self.order)]

    @property
    def lag(self) -> int:
        return lag_of(self.rules)


@dataclass
class _Mark:
    """One provider's evidence in one epoch, with its transactions."""

    beat: str = ""                 # HEARTBEAT or CLAIM (the first; the contract takes one)
    beat_tx: str = ""
    reports: list[str] = field(default_factory=list)      # LivenessReported txs naming it
    revoked_tx: str = ""           # the first InclusionsChallenged naming it
    proven: bool = False           # an InclusionAnswered showed its beat signature

    @property
    def revoked(self) -> bool:
        return bool(self.revoked_tx) and not self.proven


@dataclass(frozen=True)
class EpochState:
    """What the explorer's uptime strip draws for one epoch."""

    epoch: int
    state: str                     # HEARTBEAT, CLAIM, REPORT, REVOKED, DOWN or PENDING
    txs: tuple[str, ...]           # the evidence: heartbeat / claim tx, report txs, revoking tx
    reported: bool = False         # a report names it (also while pending)


class UptimeLog(_Clock):
    """The full fold: every epoch's evidence per provider, with transactions (FigureBook's).
    Its figures are rebuilt per provider only when its evidence or the epoch changed."""

    def __init__(self) -> None:
        super().__init__()
        self.registered: dict[str, tuple[int, str]] = {}          # provider -> (timestamp, tx)
        self.marks: dict[str, dict[int, _Mark]] = {}
        self._version: dict[str, int] = {}                        # cache keys, not state
        self._cache: dict[str, tuple[tuple, list[Figure]]] = {}

    def _mark(self, provider: str, epoch: int) -> _Mark:
        self._version[provider] = self._version.get(provider, 0) + 1
        return self.marks.setdefault(provider, {}).setdefault(epoch, _Mark())

    def apply(self, e: EventRecord) -> None:
        a, tx = e.args, e.tx_hash
        if e.contract == "ProviderRegistry":
            if e.event == "ProviderRegistered" and self.register(a["provider"]):
                self.registered[a["provider"]] = (e.timestamp, tx)
            return
        if e.contract != "Uptime":
            return
        if e.event == "UptimeStarted":
            self.clock = (a["genesis"], a["epoch_length"])
        elif e.event == "LivenessRulesSet":
            self.rules = (a["report_delay"], a["answer_epochs"])
        elif e.event in ("Heartbeat", "BeatClaimed"):
            mark = self._mark(a["provider"], a["epoch"])
            if not mark.beat:
                mark.beat, mark.beat_tx = (HEARTBEAT if e.event == "Heartbeat" else CLAIM), tx
        elif e.event == "LivenessReported":
            for provider in self.named(a["words"]):
                mark = self._mark(provider, a["epoch"])
                if tx not in mark.reports:
                    mark.reports.append(tx)
        elif e.event == "InclusionsChallenged":
            for provider in self.named(a["named"]):
                mark = self._mark(provider, a["epoch"])
                mark.revoked_tx = mark.revoked_tx or tx
        elif e.event == "InclusionAnswered":
            self._mark(a["provider"], a["epoch"]).proven = True

    def _states(self, provider: str, first: int, now: int) -> Iterable[tuple[int, str, _Mark]]:
        final_last = now - self.lag - 1
        for epoch, m in self.marks.get(provider, {}).items():
            if first <= epoch <= now:
                yield epoch, state_of(m.beat, bool(m.reports), m.revoked,
                                      epoch <= final_last), m

    def figures(self, as_of: int) -> Figures:
        """Every `uptime.by_provider.*` figure as of `as_of` (none without the Uptime clock)."""
        if self.clock is None:
            return {}
        now = epoch_at(as_of, *self.clock)
        out: Figures = {}
        for provider, (ts, reg_tx) in self.registered.items():
            key = (self.clock, self.rules, now, ts, self._version.get(provider, 0))
            cached = self._cache.get(provider)
            if cached is None or cached[0] != key:
                cached = self._cache[provider] = (key, self._provider(provider, ts, reg_tx, now))
            out.update(((f.name, f.key), f) for f in cached[1])
        return out

    def _provider(self, provider: str, ts: int, reg_tx: str, now: int) -> list[Figure]:
        first = epoch_at(ts, *self.clock)
        counts = dict.fromkeys(COUNTED.values(), 0)
        txs: dict[str, set[str]] = {name: set() for name in COUNTED.values()}
        beats_not_final = 0
        final_last = now - self.lag - 1
        for epoch, state, m in self._states(provider, first, now):
            if state in (HEARTBEAT, CLAIM):
                beats_not_final += epoch > final_last
                txs[COUNTED[state]].add(m.beat_tx)
            elif state == REPORT:
                txs["reported"].update(m.reports)
            elif state == REVOKED:
                txs["revoked"].add(m.revoked_tx)
            if state in COUNTED:
                counts[COUNTED[state]] += 1
        values = values_of(counts, first, now, self.lag, beats_not_final)
        up_txs = txs["heartbeats"] | txs["claimed"] | txs["reported"]
        part_txs = {"epochs": {reg_tx}, "up": up_txs, "pending": set(), **txs}
        figs = [Figure(f"{UPTIME}.{part}", provider, values[part], tuple(sorted(part_txs[part])))
                for part in PARTS]
        bps = uptime_bps(values["up"], values["epochs"])
        if bps is not None:
            figs.append(Figure(f"{UPTIME}.bps", provider, bps,
                               tuple(sorted(up_txs | txs["revoked"]))))
        return figs

    def epoch_states(self, provider: str, first: int, last: int, as_of: int) -> list[EpochState]:
        """Each epoch `first` .. `last` of `provider` as of `as_of`, with its evidence (the
        explorer's uptime strip); [] without the Uptime clock."""
        if self.clock is None:
            return []
        now = epoch_at(as_of, *self.clock)
        final_last = now - self.lag - 1
        marks = self.marks.get(provider, {})
        out = []
        for epoch in range(first, last + 1):
            m = marks.get(epoch) or _Mark()
            state = state_of(m.beat, bool(m.reports), m.revoked, epoch <= final_last)
            txs = ((m.beat_tx,) if m.beat else ()) + tuple(m.reports) + (
                (m.revoked_tx,) if m.revoked else ())
            out.append(EpochState(epoch, state, txs, bool(m.reports)))
        return out

    def to_json(self) -> dict:
        return {"clock": list(self.clock) if self.clock else None,
                "rules": list(self.rules) if self.rules else None, "order": self.order,
                "registered": {p: list(v) for p, v in self.registered.items()},
                "marks": {p: [[ep, m.beat, m.beat_tx, m.reports, m.revoked_tx, m.proven]
                              for ep, m in marks.items()] for p, marks in self.marks.items()}}

    @classmethod
    def from_json(cls, raw: dict) -> UptimeLog:
        log = cls()
        log.clock = tuple(raw["clock"]) if raw["clock"] else None
        log.rules = tuple(raw["rules"]) if raw["rules"] else None
        for provider in raw["order"]:
            log.register(provider)
        log.registered = {p: (int(ts), tx) for p, (ts, tx) in raw["registered"].items()}
        for p, marks in raw["marks"].items():
            log.marks[p] = {int(ep): _Mark(beat, beat_tx, list(reports), revoked, bool(proven))
                            for ep, beat, beat_tx, reports, revoked, proven in marks}
        return log


@dataclass
class _Open:
    """One epoch not yet final, in the compact fold."""

    beats: dict[str, str] = field(default_factory=dict)      # provider -> HEARTBEAT or CLAIM
    live: list[int] = field(default_factory=list)            # OR of the reports' words
    disputed: set[int] = field(default_factory=set)          # registry indices challenged
    proven: set[int] = field(default_factory=set)            # ... and answered

    def revoked(self, index: int) -> bool:
        return index in self.disputed and index not in self.proven

    def reported(self, index: int) -> bool:
        j = index // WORD_BITS
        return j < len(self.live) and (self.live[j] >> (index % WORD_BITS)) & 1 == 1


class UptimeCounts(_Clock):
    """The compact fold (the tenant's ReliabilityBook): per provider the counts of its final
    epochs by state, and only the epochs not yet final in full, so its state is O(providers +
    epochs not final), whatever the history. An epoch is folded into the counts once the time of
    an event (or `settle`) makes it final; the contracts guarantee that no report, heartbeat,
    claim, challenge or answer names it afterwards, and it refuses (ValueError) a history that
    breaks that rather than guess. A challenge's named providers are disputed in its epoch's
    slot, an answer proves (provider, epoch) whichever challenge it answered, so a disputed
    report that nobody answered is `revoked` when it is folded. No challenge is kept: its
    `ChallengeResolved` only moves money."""

    def __init__(self) -> None:
        super().__init__()
        self.registered_at: list[int] = []                  # by registry index
        self.counts: dict[str, list[int]] = {}              # provider -> [hb, claim, report, revoked]
        self.open: dict[int, _Open] = {}                    # epochs not final
        self.final_through: int = -1                        # every epoch <= it is final and folded

    def first(self, provider: str) -> int:
        return epoch_at(self.registered_at[self.index[provider]], *self.clock)

    def apply(self, e: EventRecord, where: Callable[[], str]) -> None:
        a = e.args
        if e.contract == "ProviderRegistry":
            if e.event == "ProviderRegistered" and self.register(a["provider"]):
                self.registered_at.append(e.timestamp)
            return
        if e.contract != "Uptime":
            return
        if e.event == "UptimeStarted":
            clock = (a["genesis"], a["epoch_length"])
            if self.clock is not None and self.clock != clock:
                raise ValueError(f"a second UptimeStarted (block {e.block_number}) changes the "
                                 f"uptime clock {self.clock} to {clock}: the contract sets it once")
            self.clock = clock
            return
        if e.event == "LivenessRulesSet":
            rules = (a["report_delay"], a["answer_epochs"])
            if rules != self.rules and (self.rules is not None or self.final_through >= 0
                                        or self.open):
                raise ValueError(f"LivenessRulesSet at block {e.block_number} changes the rules "
                                 f"{self.rules} after epochs were counted: the contract sets "
                                 "them once, at deployment")
            self.rules = rules
            return
        if e.event not in ("Heartbeat", "BeatClaimed", "LivenessReported", "InclusionsChallenged",
                           "InclusionAnswered", "ChallengeResolved"):
            return
        if self.clock is None:
            raise ValueError(f"{where()} before UptimeStarted")
        now = epoch_at(e.timestamp, *self.clock)
        self.settle(now)
        if e.event == "ChallengeResolved":
            return          # the bond and the slash; the epoch's bits were settled by now
        epoch, provider = a["epoch"], a.get("provider")
        if provider is not None and provider not in self.index:
            raise ValueError(f"{where()} names a provider not registered")
        if e.event == "InclusionsChallenged":
            self._dispute(epoch, where).disputed.update(self._indices(a["named"], where))
        elif e.event == "InclusionAnswered":
            self._dispute(epoch, where).proven.add(self.index[provider])
        else:
            self._evidence(e, now, where)

    def _indices(self, words: list, where: Callable[[], str]) -> list[int]:
        """The registry indices a bitmap names, all of registered providers (else ValueError)."""
        named = indices_of([int(w) for w in words])
        if named and named[-1] >= len(self.order):
            raise ValueError(f"{where()} names registry index {named[-1]}, past the "
                             f"{len(self.order)} providers registered")
        return named

    def _dispute(self, epoch: int, where: Callable[[], str]) -> _Open:
        if epoch <= self.final_through:
            raise ValueError(f"{where()}: the Uptime contract takes challenges and answers "
                             f"only before their epoch ({epoch}) is final")
        return self.open.setdefault(epoch, _Open())

    def _evidence(self, e: EventRecord, now: int, where: Callable[[], str]) -> None:
        a, epoch = e.args, e.args["epoch"]
        delay = self.rules[0] if self.rules else 0
        if e.event == "Heartbeat":
            window, rule = epoch == now, "one heartbeat per epoch, for the current one only"
        elif e.event == "BeatClaimed":
            window, rule = (epoch < now <= epoch + delay + 1,
                            "a receipt claim in the report_delay + 1 epochs after its epoch")
        else:
            window, rule = (epoch < now <= epoch + delay,
                            "a report in the report_delay epochs after its epoch")
        if self.rules is None and e.event != "Heartbeat":
            raise ValueError(f"{where()} before LivenessRulesSet")
        if not window or epoch <= self.final_through:
            raise ValueError(f"{where()}: the Uptime contract takes it {rule} (now epoch {now})")
        slot = self.open.setdefault(epoch, _Open())
        if e.event == "LivenessReported":
            words = [int(w) for w in a["words"]]
            self._indices(words, where)
            short, long_ = sorted((slot.live, words), key=len)
            slot.live = [w | (short[j] if j < len(short) else 0) for j, w in enumerate(long_)]
            return
        if a["provider"] in slot.beats:
            raise ValueError(f"{where()}: the Uptime contract takes one heartbeat (or receipt "
                             f"claim) per epoch (epoch {epoch} already has one)")
        slot.beats[a["provider"]] = HEARTBEAT if e.event == "Heartbeat" else CLAIM

    def settle(self, now: int) -> None:
        """Fold every epoch final in epoch `now` into the counts (call with times that only grow)."""
        if self.clock is None:
            return
        final_last = now - self.lag - 1
        if final_last <= self.final_through:
            return
        for epoch in sorted(ep for ep in self.open if ep <= final_last):
            slot = self.open.pop(epoch)
            for provider, state, _ in self._open_states(slot, epoch, True):
                if state in COUNTED:
                    self.counts.setdefault(provider, [0, 0, 0, 0])[
                        list(COUNTED).index(state)] += 1
        self.final_through = final_last

    def _open_states(self, slot: _Open, epoch: int, final: bool) -> Iterable[tuple[str, str, int]]:
        """(provider, state, registry index) of the providers with evidence in an open epoch,
        from their registration's epoch on."""
        seen = set(slot.beats)
        named = [i for i in indices_of(slot.live) if i < len(self.order)]
        for provider in [*slot.beats, *(self.order[i] for i in named if self.order[i] not in seen)]:
            index = self.index[provider]
            if epoch < self.first(provider):
                continue
            yield provider, state_of(slot.beats.get(provider, ""), slot.reported(index),
                                     slot.revoked(index), final), index

    def values(self, as_of: int) -> dict[str, dict[str, int]]:
        """{provider: {part: value}} of every registered provider as of `as_of` (not earlier
        than the last event applied); {} without the Uptime clock."""
        if self.clock is None:
            return {}
        now = epoch_at(as_of, *self.clock)
        final_last = now - self.lag - 1
        names = list(COUNTED.values())
        counts = {p: dict(zip(names, self.counts.get(p, [0, 0, 0, 0]), strict=True))
                  for p in self.order}
        beats_not_final = dict.fromkeys(self.order, 0)
        for epoch, slot in self.open.items():
            if epoch > now:
                continue
            final = epoch <= final_last
            for provider, state, _ in self._open_states(slot, epoch, final):
                if state in COUNTED:
                    counts[provider][COUNTED[state]] += 1
                if state in (HEARTBEAT, CLAIM) and not final:
                    beats_not_final[provider] += 1
        out = {}
        for provider in self.order:
            first = self.first(provider)
            parts = values_of(counts[provider], first, now, self.lag, beats_not_final[provider])
            bps = uptime_bps(parts["up"], parts["epochs"])
            out[provider] = {**parts, **({"bps": bps} if bps is not None else {})}
        return out

    def to_json(self) -> dict:
        return {"clock": list(self.clock) if self.clock else None,
                "rules": list(self.rules) if self.rules else None,
                "order": [[p, t] for p, t in zip(self.order, self.registered_at, strict=True)],
                "counts": self.counts, "final_through": self.final_through,
                "open": [[ep, s.beats, [hex(w) for w in s.live], sorted(s.disputed),
                          sorted(s.proven)] for ep, s in self.open.items()]}

    @classmethod
    def from_json(cls, raw: dict) -> UptimeCounts:
        book = cls()
        book.clock = tuple(raw["clock"]) if raw["clock"] else None
        book.rules = tuple(raw["rules"]) if raw["rules"] else None
        for provider, ts in raw["order"]:
            book.register(provider)
            book.registered_at.append(int(ts))
        book.counts = {p: [int(x) for x in c] for p, c in raw["counts"].items()}
        book.final_through = int(raw["final_through"])
        for ep, beats, live, disputed, proven in raw["open"]:
            book.open[int(ep)] = _Open(dict(beats), [int(w, 16) for w in live], set(disputed),
                                       set(proven))
        return book
