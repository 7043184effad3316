"""Reliability score per provider: integer basis points from on-chain events only.

score = clamp(
    (4·uptime + 4·completion + 2·tenure) // 10 − 2500·slashes − 1000·jailings, 0, 10000)

- uptime     = (up·10⁴ + 5000·24) // (epochs owed + 24): the share of epochs owed that were up
               (heartbeat, receipt claim or validators' report; protocol/uptime_book.py), pulled
               towards the prior by 24 pseudo-epochs so a few epochs cannot make it extreme;
- completion = (finished·10⁴ + 5000·4) // (finished + failed + 4): the same, 4 pseudo-leases;
- tenure     = min(age, 90 days)·10⁴ // 90 days: time since registration.

A brand-new provider scores 4000: above any provider with a bad record, below a proven one.
`compute_figures` books the score and its parts as `reliability.by_provider.*` with their
transactions, so the indexer, `tessera audit` and the tenant's bid table all use this one
definition. Definitions and the why of each weight: docs/explorer.md ("Reliability").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tessera.protocol.events import EventRecord

BPS = 10_000
PRIOR_BPS = 5_000               # what no evidence says: neither good nor bad
UPTIME_PSEUDO_EPOCHS = 24       # evidence needed before uptime moves halfway from the prior
LEASE_PSEUDO_COUNT = 4          # the same for lease outcomes (sparser, so fewer)
TENURE_FULL_SECONDS = 90 * 86_400
WEIGHT_UPTIME, WEIGHT_COMPLETION, WEIGHT_TENURE = 4, 4, 2
SLASH_PENALTY_BPS = 2_500       # a proven fault that cost stake
JAIL_PENALTY_BPS = 1_000        # a suspension; its missed epochs already lower uptime

NAME = "reliability.by_provider"


@dataclass(frozen=True)
class Inputs:
    """What the chain says about one provider (counts and seconds)."""

    up: int = 0              # epochs owed that were up (uptime.by_provider.up)
    epochs: int = 0          # epochs owed (docs/uptime.md)
    finished: int = 0
    failed: int = 0
    slashes: int = 0
    jails: int = 0
    age_seconds: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"reliability input {f.name} must be a non-negative integer, "
                                 f"got {value!r}")
        if self.up > self.epochs:
            raise ValueError(f"reliability input up ({self.up}) exceeds epochs owed "
                             f"({self.epochs})")


@dataclass(frozen=True)
class Score:
    uptime_bps: int
    completion_bps: int
    tenure_bps: int
    penalty_bps: int
    bps: int


def smoothed(successes: int, trials: int, pseudo: int) -> int:
    """successes / trials in basis points, with `pseudo` trials at the prior mixed in."""
    return (successes * BPS + PRIOR_BPS * pseudo) // (trials + pseudo)


def score(inputs: Inputs) -> Score:
    uptime = smoothed(inputs.up, inputs.epochs, UPTIME_PSEUDO_EPOCHS)
    completion = smoothed(inputs.finished, inputs.finished + inputs.failed, LEASE_PSEUDO_COUNT)
    tenure = min(inputs.age_seconds, TENURE_FULL_SECONDS) * BPS // TENURE_FULL_SECONDS
    base = ((WEIGHT_UPTIME * uptime + WEIGHT_COMPLETION * completion + WEIGHT_TENURE * tenure)
            // (WEIGHT_UPTIME + WEIGHT_COMPLETION + WEIGHT_TENURE))
    penalty = SLASH_PENALTY_BPS * inputs.slashes + JAIL_PENALTY_BPS * inputs.jails
    return Score(uptime, completion, tenure, penalty, max(base - penalty, 0))


NEW_PROVIDER_BPS = score(Inputs()).bps


@dataclass
class Evidence:
    """One provider's reliability evidence from events, each item with the tx that shows it."""

    registered_at: int
    registered_tx: str
    finished: dict[int, set[str]] = field(default_factory=dict)   # lease id -> txs that show it
    failed: dict[int, set[str]] = field(default_factory=dict)
    slashes: list[str] = field(default_factory=list)
    jails: list[str] = field(default_factory=list)
    jailed_until: int = 0


FINISHED, FAILED, UNDECIDED = "finished", "failed", "undecided"


def first_outcome(event: str, closed_by: str, provider: str) -> str | None:
    """What a lease's first `ResultCommitted` or `LeaseClosed` makes it (see `evidence`)."""
    if event == "ResultCommitted":
        return FINISHED
    if event == "LeaseClosed":
        return FAILED if closed_by.lower() == provider.lower() else UNDECIDED
    return None


def counted_as(first: str, claimed: bool) -> str | None:
    """What a lease counts as: failed once a downtime claim names it, else what its first
    result or close said; None while undecided."""
    if claimed:
        return FAILED
    return first if first in (FINISHED, FAILED) else None


def jail_starts(jailed_until: int, until: int, now: int) -> bool:
    """Whether a `Jailed` at `now` starts a new jailing (not an extension, not a release)."""
    return until > now and jailed_until <= now


@dataclass
class _Record:
    """One registered provider's evidence: counts always, tx hashes only in the full mode."""

    registered_at: int
    registered_tx: str
    jailed_until: int = 0
    slashes: int = 0
    jails: int = 0
    slash_txs: list[str] = field(default_factory=list)
    jail_txs: list[str] = field(default_factory=list)


@dataclass
class _LeaseState:
    provider: str
    first: str = ""                 # FINISHED, FAILED, UNDECIDED or "" (not yet)
    first_tx: str = ""
    claimed: bool = False
    closed_at: int | None = None
    claim_txs: set[str] = field(default_factory=set)


class EvidenceBook:
    """The evidence fold, resumable: `apply` events in chain order (after those applied so far),
    read at any time without changing the book (docs/explorer.md, "Reliability").

    Full mode (`FigureBook`'s): every lease and the tx hashes behind each item, read by
    `evidence()`. Compact mode (`ReliabilityBook`'s, the tenant's index): counts per provider
    only, `counts()`; a lease is kept only while its count can still change, i.e. until it
    counts as failed (final), or until `claim_window` seconds after its close have passed (no
    downtime claim can name it any more; Market.claim_downtime). Open leases are kept, exhausted
    or not, since a claim on an unclosed lease has no deadline. Both modes run the same
    transitions below, so they count alike (tests/protocol/test_figures_incremental.py).

    A `Slashed` waits in `pending` until its transaction ends: a `DowntimeClaimed` later in the
    same transaction settles it (not counted). A transaction's events are consecutive in chain
    order, so the first event of another transaction ends it."""

    def __init__(self, compact: bool = False, claim_window: int | None = None) -> None:
        if claim_window is not None and claim_window < 0:
            raise ValueError(f"claim_window must be >= 0 seconds, got {claim_window}")
        self.compact = compact
        self.claim_window = claim_window if compact else None
        self.providers: dict[str, _Record] = {}
        self.leases: dict[int, _LeaseState] = {}
        self.outcomes: dict[str, list[int]] = {}    # any provider address -> [finished, failed]
        self.pending: list[str] = []                 # providers slashed in `pending_tx`
        self.pending_tx = ""
        self.claim_tx = ""                           # the last DowntimeClaimed's transaction
        self._closing: deque[tuple[int, int]] = deque()   # (closed_at, lease id), compact mode

    def apply(self, e: EventRecord) -> None:
        a = e.args
        if self.pending and e.tx_hash != self.pending_tx:
            self._settle_slashes()
        if e.contract == "ProviderRegistry":
            self._registry(e)
        elif e.contract == "Market":
            lease = self.leases.get(a.get("lease_id"))
            if e.event == "LeaseCreated":
                self.leases[a["lease_id"]] = _LeaseState(a["provider"])
            elif e.event == "DowntimeClaimed":
                self.claim_tx = e.tx_hash
                if self.pending_tx == e.tx_hash:
                    self.pending.clear()
                if lease is not None:
                    self._move(a["lease_id"], lease, claimed=True, tx=e.tx_hash)
            elif lease is not None and e.event in ("ResultCommitted", "LeaseClosed"):
                if e.event == "LeaseClosed" and lease.closed_at is None:
                    lease.closed_at = e.timestamp
                    if self.claim_window is not None:
                        self._closing.append((e.timestamp, a["lease_id"]))
                if not lease.first:
                    first = first_outcome(e.event, a.get("closed_by", ""), lease.provider)
                    self._move(a["lease_id"], lease, first=first, tx=e.tx_hash)
        self.sweep(e.timestamp)

    def sweep(self, now: int) -> None:
        """Compact mode: drop the closed leases no claim can name at `now` or later (a claim is
        accepted up to `claim_window` seconds after the close, Market.claim_downtime)."""
        if self.claim_window is not None:
            while self._closing and self._closing[0][0] + self.claim_window < now:
                self.leases.pop(self._closing.popleft()[1], None)

    def _registry(self, e: EventRecord) -> None:
        a = e.args
        if e.event == "ProviderRegistered":
            self.providers.setdefault(a["provider"], _Record(
                e.timestamp, "" if self.compact else e.tx_hash))
            return
        p = self.providers.get(a.get("provider", ""))
        if p is None:
            return
        if e.event == "Slashed" and e.tx_hash != self.claim_tx:
            self.pending.append(a["provider"])
            self.pending_tx = e.tx_hash
        elif e.event == "Jailed":
            if jail_starts(p.jailed_until, a["until"], e.timestamp):
                p.jails += 1
                if not self.compact:
                    p.jail_txs.append(e.tx_hash)
            p.jailed_until = a["until"]

    def _settle_slashes(self) -> None:
        for addr in self.pending:
            p = self.providers[addr]
            p.slashes += 1
            if not self.compact:
                p.slash_txs.append(self.pending_tx)
        self.pending.clear()

    def _move(self, lease_id: int, lease: _LeaseState, first: str | None = None,
              claimed: bool = False, tx: str = "") -> None:
        """Change a lease's state and its provider's counts with it."""
        before = counted_as(lease.first, lease.claimed)
        if first is not None:
            lease.first, lease.first_tx = first, ("" if self.compact else tx)
        if claimed:
            lease.claimed = True
            if not self.compact:
                lease.claim_txs.add(tx)
        after = counted_as(lease.first, lease.claimed)
        if after != before:
            counts = self.outcomes.setdefault(lease.provider, [0, 0])
            for kind, step in ((before, -1), (after, 1)):
                if kind is not None:
                    counts[0 if kind == FINISHED else 1] += step
        if self.compact and after == FAILED:      # final: nothing can change it back
            del self.leases[lease_id]

    def counts(self) -> dict[str, Inputs]:
        """Per registered provider: finished, failed, slashes and jails (the rest of `Inputs`
        left at zero), in either mode; slashes still pending count (as `evidence` says)."""
        out = {}
        for addr, p in self.providers.items():
            finished, failed = self.outcomes.get(addr, (0, 0))
            slashes = p.slashes + self.pending.count(addr)
            out[addr] = Inputs(finished=finished, failed=failed, slashes=slashes, jails=p.jails)
        return out

    def evidence(self) -> dict[str, Evidence]:
        """Per registered provider, every item with its txs (full mode only)."""
        if self.compact:
            raise ValueError("a compact EvidenceBook keeps counts only: read counts()")
        out = {addr: Evidence(p.registered_at, p.registered_tx,
                              slashes=p.slash_txs + [self.pending_tx] * self.pending.count(addr),
                              jails=list(p.jail_txs), jailed_until=p.jailed_until)
               for addr, p in self.providers.items()}
        for lease_id, lease in self.leases.items():
            p = out.get(lease.provider)
            kind = counted_as(lease.first, lease.claimed)
            if p is None or kind is None:
                continue
            if lease.claimed:
                p.failed[lease_id] = set(lease.claim_txs)
            else:
                (p.finished if kind == FINISHED else p.failed)[lease_id] = {lease.first_tx}
        return out

    def to_json(self) -> dict:
        return {
            "compact": self.compact, "claim_window": self.claim_window,
            "providers": {a: [p.registered_at, p.registered_tx, p.jailed_until, p.slashes, p.jails,
                              p.slash_txs, p.jail_txs] for a, p in self.providers.items()},
            "leases": [[i, x.provider, x.first, x.first_tx, x.claimed, x.closed_at,
                        sorted(x.claim_txs)] for i, x in self.leases.items()],
            "outcomes": self.outcomes,
            "pending": [self.pending_tx, self.pending], "claim_tx": self.claim_tx,
        }

    @classmethod
    def from_json(cls, raw: dict) -> EvidenceBook:
        book = cls(bool(raw["compact"]), raw["claim_window"])
        for a, (at, tx, until, slashes, jails, slash_txs, jail_txs) in raw["providers"].items():
            book.providers[a] = _Record(at, tx, until, slashes, jails, list(slash_txs),
                                        list(jail_txs))
        for i, prov, first, first_tx, claimed, closed_at, claim_txs in raw["leases"]:
            book.leases[int(i)] = _LeaseState(prov, first, first_tx, bool(claimed), closed_at,
                                              set(claim_txs))
        book.outcomes = {a: [int(f), int(x)] for a, (f, x) in raw["outcomes"].items()}
        book.pending_tx, book.pending = raw["pending"][0], list(raw["pending"][1])
        book.claim_tx = raw["claim_tx"]
        if book.claim_window is not None:
            book._closing = deque(sorted((x.closed_at, i) for i, x in book.leases.items()
                                         if x.closed_at is not None))
        return book


def evidence(events: Iterable[EventRecord]) -> dict[str, Evidence]:
    """Per registered provider, from events in chain order (docs/explorer.md, "Reliability").

    A lease **failed** if any `DowntimeClaimed` names it (its provider missed whole epochs while
    holding it). Otherwise whichever comes first of its provider's `ResultCommitted` and its
    `LeaseClosed` decides: a result first, it **finished**; closed by the provider first, it
    **failed**; closed by the tenant first, it stays undecided for good (the chain does not say
    why a tenant stopped). Open leases, and leases exhausted without a result, are undecided.

    A `Slashed` in the same transaction as a `DowntimeClaimed` settles that downtime and is not
    counted as a slash (its epochs count against uptime and its lease as failed; counting it
    would also let the claimer multiply the penalty by claiming epoch by epoch). A `Jailed`
    counts when the provider was not already jailed at that moment: an extension is the same
    episode and an `until` in the past is a release."""
    book = EvidenceBook()
    for e in events:
        book.apply(e)
    return book.evidence()


def _txs(source: Any) -> set[str]:
    return set(source.txs) if source is not None else set()


def reliability_figures(events: Iterable[EventRecord] | Mapping[str, Evidence], as_of: int,
                        uptime: Mapping[tuple[str, str], Any]) -> Iterator[tuple[str, str, int, set[str]]]:
    """(name, key, value, txs) of every `reliability.by_provider.*` figure.

    `uptime` maps (figure name, address) to the already computed `uptime.by_provider.*` figures
    (anything with `.value` and `.txs`); a network without the Uptime contract has none, and its
    uptime part stays at the prior. `events` may also be evidence already folded
    (`EvidenceBook.evidence()`)."""
    found = events if isinstance(events, Mapping) else evidence(events)
    for address, ev in found.items():
        up = uptime.get(("uptime.by_provider.up", address))
        owed = uptime.get(("uptime.by_provider.epochs", address))
        inputs = Inputs(up=up.value if up else 0, epochs=owed.value if owed else 0,
                        finished=len(ev.finished), failed=len(ev.failed), slashes=len(ev.slashes),
                        jails=len(ev.jails), age_seconds=max(as_of - ev.registered_at, 0))
        reg = {ev.registered_tx}
        uptime_txs = _txs(up) | reg
        finished_txs = set().union(*ev.finished.values())
        failed_txs = set().union(*ev.failed.values())
        outcome_txs = finished_txs | failed_txs
        penalty_txs = set(ev.slashes) | set(ev.jails)
        txs = {"finished": finished_txs, "failed": failed_txs, "slashes": set(ev.slashes),
               "jails": set(ev.jails), "age_seconds": reg, "uptime_bps": uptime_txs,
               "completion_bps": outcome_txs, "tenure_bps": reg, "penalty_bps": penalty_txs,
               "bps": uptime_txs | outcome_txs | penalty_txs}
        for part, value in parts(inputs).items():
            yield f"{NAME}.{part}", address, value, txs[part]


def parts(inputs: Inputs) -> dict[str, int]:
    """The value of every `reliability.by_provider.*` part (their names after the prefix), in the
    order the figures list them: the one place both folds (full and compact) read scores from."""
    s = score(inputs)
    return {"finished": inputs.finished, "failed": inputs.failed, "slashes": inputs.slashes,
            "jails": inputs.jails, "age_seconds": inputs.age_seconds, "uptime_bps": s.uptime_bps,
            "completion_bps": s.completion_bps, "tenure_bps": s.tenure_bps,
            "penalty_bps": s.penalty_bps, "bps": s.bps}
