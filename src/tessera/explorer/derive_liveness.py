"""The derived rows of Uptime's inclusion challenges, one event at a time in chain order (called by
`derive.apply_event`, whose rules they follow): one entity row per challenge (kind 'liveness',
`db.LivenessChallenge`), opened by `InclusionChallenged`, closed by `ChallengeAnswered` (its bond
split between `answered_by` and the validator) or `ChallengeResolved`. Heartbeats, liveness
reports and receipt claims make no rows: the uptime figures fold them (protocol/uptime_book.py),
and the pages read them raw."""

from __future__ import annotations

from sqlalchemy.orm import Session

from tessera.explorer import db
from tessera.protocol.events import EventRecord

MAX_ID = 2**63 - 1
CHALLENGE_EVENTS = ("InclusionChallenged", "ChallengeAnswered", "ChallengeResolved")


def _id(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID else None


def liveness_entities(r: EventRecord) -> list[tuple[str, object]]:
    """The entity row an Uptime event changes (derive.entities_of): its challenge's."""
    if r.event in CHALLENGE_EVENTS and _id(r.args.get("challenge_id")) is not None:
        return [("liveness", r.args["challenge_id"])]
    return []


def uptime_challenges(session: Session, r: EventRecord, scope) -> None:
    a = r.args
    key = _id(a.get("challenge_id"))
    if r.event not in CHALLENGE_EVENTS or key is None:
        return
    if scope is not None and ("liveness", key) not in scope.touched:
        return
    if r.event == "InclusionChallenged":
        session.add(db.LivenessChallenge(
            challenge_id=key, validator=a["validator"], provider=a["provider"], epoch=a["epoch"],
            challenger=a["challenger"], bond=a["bond"], answer_by_epoch=a["answer_by_epoch"],
            status="open", opened_at=r.timestamp, opened_tx=r.tx_hash, to_answerer=0,
            to_validator=0, slashed=0, bond_returned=0))
        return
    c = session.get(db.LivenessChallenge, key)
    if c is None:
        return
    if r.event == "ChallengeAnswered":
        c.status, c.answered_by, c.answered_tx = "answered", a["answered_by"], r.tx_hash
        c.to_answerer, c.to_validator = a["to_answerer"], a["to_validator"]
    else:
        c.status, c.resolved_at, c.resolved_tx = "resolved", r.timestamp, r.tx_hash
        c.slashed, c.bond_returned = a["slashed"], a["bond_returned"]
