"""Reliability score per provider: integer basis points from on-chain events only.

score = clamp(
    (4·uptime + 4·completion + 2·tenure) // 10 − 2500·slashes − 1000·jailings, 0, 10000)

- uptime     = (heartbeats·10⁴ + 5000·24) // (epochs owed + 24): heartbeat share, pulled
               towards the prior by 24 pseudo-epochs so a few epochs cannot make it extreme;
- completion = (finished·10⁴ + 5000·4) // (finished + failed + 4): the same, 4 pseudo-leases;
- tenure     = min(age, 90 days)·10⁴ // 90 days: time since registration.

A brand-new provider scores 4000: above any provider with a bad record, below a proven one.
`compute_figures` books the score and its parts as `reliability.by_provider.*` with their
transactions, so the indexer, `tessera audit` and the tenant's bid table all use this one
definition. Definitions and the why of each weight: docs/explorer.md ("Reliability").
"""

from __future__ import annotations

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

    heartbeats: int = 0
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
        if self.heartbeats > self.epochs:
            raise ValueError(f"reliability input heartbeats ({self.heartbeats}) exceeds epochs "
                             f"owed ({self.epochs})")


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
    uptime = smoothed(inputs.heartbeats, inputs.epochs, UPTIME_PSEUDO_EPOCHS)
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


class EvidenceBook:
    """The evidence fold, resumable: `apply` events in chain order (after those applied so far),
    read `evidence()` at any time without changing the book. `FigureBook` keeps one; its JSON
    state is `to_json()` (docs/explorer.md, "Reliability")."""

    def __init__(self) -> None:
        self.providers: dict[str, Evidence] = {}
        self.lease_provider: dict[int, str] = {}
        self.first: dict[int, tuple[str, str]] = {}   # lease id -> (finished | failed | undecided, tx)
        self.downtime: dict[int, set[str]] = {}
        self.downtime_txs: set[str] = set()
        # Slashes as (tx), per provider; whether one settles a downtime claim is decided at read
        # time, since the claim's own event follows the slash in its transaction.

    def apply(self, e: EventRecord) -> None:
        a = e.args
        if e.contract == "ProviderRegistry":
            if e.event == "ProviderRegistered":
                self.providers.setdefault(a["provider"], Evidence(e.timestamp, e.tx_hash))
                return
            p = self.providers.get(a.get("provider", ""))
            if p is None:
                return
            if e.event == "Slashed":
                p.slashes.append(e.tx_hash)
            elif e.event == "Jailed":
                if a["until"] > e.timestamp and p.jailed_until <= e.timestamp:
                    p.jails.append(e.tx_hash)
                p.jailed_until = a["until"]
        elif e.contract == "Market":
            lease_id = a.get("lease_id")
            if e.event == "LeaseCreated":
                self.lease_provider[lease_id] = a["provider"]
            elif e.event == "DowntimeClaimed":
                self.downtime.setdefault(lease_id, set()).add(e.tx_hash)
                self.downtime_txs.add(e.tx_hash)
            elif lease_id in self.lease_provider and lease_id not in self.first:
                if e.event == "ResultCommitted":
                    self.first[lease_id] = ("finished", e.tx_hash)
                elif e.event == "LeaseClosed":
                    by_provider = a["closed_by"].lower() == self.lease_provider[lease_id].lower()
                    self.first[lease_id] = ("failed" if by_provider else "undecided", e.tx_hash)

    def evidence(self) -> dict[str, Evidence]:
        out = {addr: Evidence(p.registered_at, p.registered_tx,
                              slashes=[t for t in p.slashes if t not in self.downtime_txs],
                              jails=list(p.jails), jailed_until=p.jailed_until)
               for addr, p in self.providers.items()}
        for lease_id, provider in self.lease_provider.items():
            p = out.get(provider)
            if p is None:
                continue
            if lease_id in self.downtime:
                p.failed[lease_id] = set(self.downtime[lease_id])
            elif lease_id in self.first and self.first[lease_id][0] != "undecided":
                kind, tx = self.first[lease_id]
                (p.finished if kind == "finished" else p.failed)[lease_id] = {tx}
        return out

    def to_json(self) -> dict:
        return {
            "providers": {a: [p.registered_at, p.registered_tx, p.slashes, p.jails, p.jailed_until]
                          for a, p in self.providers.items()},
            "leases": [[i, prov] for i, prov in self.lease_provider.items()],
            "first": [[i, k, t] for i, (k, t) in self.first.items()],
            "downtime": [[i, sorted(txs)] for i, txs in self.downtime.items()],
            "downtime_txs": sorted(self.downtime_txs),
        }

    @classmethod
    def from_json(cls, raw: dict) -> EvidenceBook:
        book = cls()
        for a, (at, tx, slashes, jails, until) in raw["providers"].items():
            book.providers[a] = Evidence(at, tx, slashes=list(slashes), jails=list(jails),
                                         jailed_until=until)
        book.lease_provider = {int(i): prov for i, prov in raw["leases"]}
        book.first = {int(i): (k, t) for i, k, t in raw["first"]}
        book.downtime = {int(i): set(txs) for i, txs in raw["downtime"]}
        book.downtime_txs = set(raw["downtime_txs"])
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
        beats = uptime.get(("uptime.by_provider.heartbeats", address))
        owed = uptime.get(("uptime.by_provider.epochs", address))
        inputs = Inputs(heartbeats=beats.value if beats else 0, epochs=owed.value if owed else 0,
                        finished=len(ev.finished), failed=len(ev.failed), slashes=len(ev.slashes),
                        jails=len(ev.jails), age_seconds=max(as_of - ev.registered_at, 0))
        s = score(inputs)
        reg = {ev.registered_tx}
        uptime_txs = _txs(beats) | reg
        finished_txs = set().union(*ev.finished.values())
        failed_txs = set().union(*ev.failed.values())
        outcome_txs = finished_txs | failed_txs
        penalty_txs = set(ev.slashes) | set(ev.jails)
        for part, value, txs in (
                ("finished", inputs.finished, finished_txs),
                ("failed", inputs.failed, failed_txs),
                ("slashes", inputs.slashes, set(ev.slashes)),
                ("jails", inputs.jails, set(ev.jails)),
                ("age_seconds", inputs.age_seconds, reg),
                ("uptime_bps", s.uptime_bps, uptime_txs),
                ("completion_bps", s.completion_bps, outcome_txs),
                ("tenure_bps", s.tenure_bps, reg),
                ("penalty_bps", s.penalty_bps, penalty_txs),
                ("bps", s.bps, uptime_txs | outcome_txs | penalty_txs)):
            yield f"{NAME}.{part}", address, value, txs
