"""The derived rows of Uptime's inclusion challenges, one event at a time in chain order (called by
`derive.apply_event`, whose rules they follow; the tables: db_liveness.py):
- `ProviderRegistered` gives the provider its registry index (`db.RegistryIndex`, per event), so
  that the indices a challenge names are addresses;
- `InclusionsChallenged` opens one entity row per challenge (kind 'liveness',
  `db.LivenessChallenge`) and writes a `db.LivenessNamed` row per named provider (per event);
- each `InclusionAnswered` adds a beat shown and its answer fee (paid from the bond) to the
  challenge's row (who answered for which provider is that event, read raw by its indexed provider);
- `ChallengeResolved` closes it: answered (`unanswered` 0) or resolved (the validator slashed for
  each beat not shown); either way the rest of the bond goes back to the challenger.
Heartbeats, liveness reports and receipt claims make no rows: the uptime figures fold them
(protocol/uptime_book.py), and the pages read them raw."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tessera.explorer import db
from tessera.protocol.events import EventRecord
from tessera.protocol.liveness import indices_of

MAX_ID = 2**63 - 1
CHALLENGE_EVENTS = ("InclusionsChallenged", "InclusionAnswered", "ChallengeResolved")
CHUNK = 500         # registry indices per IN (...) lookup


def _id(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID else None


def liveness_entities(r: EventRecord) -> list[tuple[str, object]]:
    """The entity row an Uptime event changes (derive.entities_of): its challenge's."""
    if r.event in CHALLENGE_EVENTS and _id(r.args.get("challenge_id")) is not None:
        return [("liveness", r.args["challenge_id"])]
    return []


def registry_index(session: Session, r: EventRecord) -> None:
    """A `ProviderRegistered` (not in a rollback's replay: a per-event row): the next registry
    index, once per address (`ProviderRegistry.register` refuses a second registration)."""
    provider = r.args.get("provider")
    if session.scalar(select(db.RegistryIndex).where(db.RegistryIndex.provider == provider)) is not None:
        return
    last = session.scalar(select(func.max(db.RegistryIndex.registry_index)))
    session.add(db.RegistryIndex(registry_index=0 if last is None else last + 1, provider=provider,
                                 tx_hash=r.tx_hash))


def providers_at(session: Session, indices: list[int]) -> dict[int, str]:
    """{registry index: provider} of those of `indices` the database saw registered."""
    out: dict[int, str] = {}
    for part in (indices[i:i + CHUNK] for i in range(0, len(indices), CHUNK)):
        rows = session.execute(select(db.RegistryIndex.registry_index, db.RegistryIndex.provider)
                               .where(db.RegistryIndex.registry_index.in_(part)))
        out.update((i, p) for i, p in rows)
    return out


def uptime_challenges(session: Session, r: EventRecord, scope) -> None:
    a = r.args
    key = _id(a.get("challenge_id"))
    if r.event not in CHALLENGE_EVENTS or key is None:
        return
    if r.event == "InclusionsChallenged" and scope is None:
        words = [v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0 for v in a["named"]]
        indices = indices_of(words)
        found = providers_at(session, indices)
        session.add_all(db.LivenessNamed(challenge_id=key, registry_index=i, provider=found.get(i),
                                         tx_hash=r.tx_hash) for i in indices)
    if scope is not None and ("liveness", key) not in scope.touched:
        return
    if r.event == "InclusionsChallenged":
        session.add(db.LivenessChallenge(
            challenge_id=key, validator=a["validator"], epoch=a["epoch"], challenger=a["challenger"],
            named_count=a["named_count"], bond=a["bond"], answer_by_epoch=a["answer_by_epoch"],
            status="open", opened_at=r.timestamp, opened_tx=r.tx_hash, answered=0, paid=0,
            unanswered=0, slashed=0, to_challenger=0, burned=0, bond_returned=0))
        return
    c = session.get(db.LivenessChallenge, key)
    if c is None:
        return
    if r.event == "InclusionAnswered":
        c.answered, c.paid = c.answered + 1, c.paid + a["to_answerer"]
        return
    c.status = "answered" if a["unanswered"] == 0 else "resolved"
    c.resolved_at, c.resolved_tx = r.timestamp, r.tx_hash
    for part in ("unanswered", "slashed", "to_challenger", "burned", "bond_returned"):
        setattr(c, part, a[part])
