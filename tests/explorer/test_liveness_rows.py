"""Uptime's inclusion challenges in the explorer's derived tables (hand-made events, no chain): one
row per challenge with its outcome (an answer's bond split between answerer and validator), the
validator's slash explained by the unanswered challenge, and a reorg rollback that rebuilds only
what it removed (issue 15, derive_liveness.py)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from web3 import Web3

from tessera.errors import IndexerError
from tessera.explorer import db
from tessera.explorer.db import make_engine
from tessera.explorer.derive import apply_event, event_columns
from tessera.explorer.indexer import rollback_to
from tessera.explorer.web.liveness import liveness_challenge_out, liveness_challenges_table
from tessera.protocol.events import EventRecord, args_json

P, V, CHALLENGER = (Web3.to_checksum_address("0x" + c * 40) for c in "abc")
TSTK = 10**18


def _record(n: int, log: int, event: str, contract: str = "Uptime", **args) -> EventRecord:
    return EventRecord(block_number=n, block_hash="0x" + f"{n:064x}", timestamp=1_800_000_000 + 60 * n,
                       tx_hash="0x" + f"{n:064x}", log_index=log, contract=contract, event=event, args=args)


def _challenged(n: int, cid: int, epoch: int) -> EventRecord:
    return _record(n, 0, "InclusionChallenged", challenge_id=cid, validator=V, provider=P, epoch=epoch,
                   challenger=CHALLENGER, bond=10 * TSTK, answer_by_epoch=epoch + 3)


RECORDS = [
    _record(1, 0, "ValidatorRegistered", "Validators", validator=V, stake=200 * TSTK),
    _record(2, 0, "LivenessReported", validator=V, epoch=7, words_hash="0x" + "1" * 64, words=[3]),
    _challenged(3, 1, 7), _challenged(4, 2, 7),
    _record(5, 0, "ChallengeAnswered", challenge_id=2, validator=V, answered_by=P, to_answerer=5 * TSTK,
            to_validator=5 * TSTK),
    # resolve_challenge: the Validators' slash first, then Uptime's ChallengeResolved, one tx.
    _record(6, 0, "ValidatorSlashed", "Validators", validator=V, amount=50 * TSTK, recipient=CHALLENGER,
            slasher=V),
    _record(6, 1, "ChallengeResolved", challenge_id=1, validator=V, provider=P, epoch=7,
            slashed=50 * TSTK, bond_returned=10 * TSTK),
]


def _index(engine, records: list[EventRecord]) -> None:
    with Session(engine) as session, session.begin():
        for r in records:
            session.merge(db.Block(number=r.block_number, hash=r.block_hash, timestamp=r.timestamp))
            session.add(db.Event(block_number=r.block_number, block_hash=r.block_hash, timestamp=r.timestamp,
                                 tx_hash=r.tx_hash, log_index=r.log_index, contract=r.contract,
                                 event=r.event, args=args_json(r.args), **event_columns(session, r)))
            apply_event(session, r)


def _state(engine) -> tuple[list, list]:
    with Session(engine) as session:
        found = session.scalars(select(db.LivenessChallenge).order_by(db.LivenessChallenge.challenge_id))
        rows = [(c.challenge_id, c.status, c.slashed, c.answered_by, c.resolved_tx, c.to_answerer,
                 c.to_validator) for c in found]
        slashes = [(s.kind, s.address, s.amount, s.cause, s.cause_ref)
                   for s in session.scalars(select(db.Slash))]
    return rows, slashes


def test_challenges_get_rows_with_their_outcome_and_explain_the_validator_slash(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/liveness.db")
    _index(engine, RECORDS)
    rows, slashes = _state(engine)
    assert rows == [(1, "resolved", 50 * TSTK, None, RECORDS[-1].tx_hash, 0, 0),
                    (2, "answered", 0, P, None, 5 * TSTK, 5 * TSTK)]   # the bond split answerer / validator
    assert slashes == [("validator", V, 50 * TSTK, "liveness", "1")]
    with Session(engine) as session:
        event = session.scalars(select(db.Event).where(db.Event.event == "ChallengeAnswered")).one()
        assert (event.entity, event.validator, event.lease_id) == ("liveness:2", V, None)


def test_a_rollback_reopens_the_challenge_it_removed_the_resolution_of(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/liveness.db")
    _index(engine, RECORDS)
    with Session(engine) as session, session.begin():
        stats = rollback_to(session, 4)
    rows, slashes = _state(engine)
    assert rows == [(1, "open", 0, None, None, 0, 0), (2, "open", 0, None, None, 0, 0)]
    assert slashes == []
    assert stats.removed_events == 3
    # Indexing the same blocks again gives the same rows.
    _index(engine, RECORDS[-3:])
    assert _state(engine) == ([(1, "resolved", 50 * TSTK, None, RECORDS[-1].tx_hash, 0, 0),
                               (2, "answered", 0, P, None, 5 * TSTK, 5 * TSTK)],
                              [("validator", V, 50 * TSTK, "liveness", "1")])


def test_the_answered_bond_split_is_served_and_shown(tmp_path):
    """The API answer and the table say who got the answered challenge's bond."""
    engine = make_engine(f"sqlite:///{tmp_path}/liveness.db")
    _index(engine, RECORDS)
    with Session(engine) as session:
        answered = session.get(db.LivenessChallenge, 2)
        out = liveness_challenge_out(answered)
        html = liveness_challenges_table([answered, session.get(db.LivenessChallenge, 1)])
    assert (out.answered_by, out.to_answerer_base_units, out.to_validator_base_units) == (
        P, str(5 * TSTK), str(5 * TSTK))
    assert P in html and html.count("to the validator") == 1 and "to the answerer" in html


def test_a_database_from_before_the_bond_split_is_refused(tmp_path):
    """The explorer's schema rule (db._check_columns): a database whose liveness table still has
    `bond_to_validator` and lacks the split columns is refused, naming them, never half-read."""
    url = f"sqlite:///{tmp_path}/old.db"
    make_engine(url).dispose()
    raw = sqlite3.connect(tmp_path / "old.db")
    raw.execute("ALTER TABLE explorer_liveness_challenges DROP COLUMN to_answerer")
    raw.execute("ALTER TABLE explorer_liveness_challenges RENAME COLUMN to_validator TO bond_to_validator")
    raw.commit()
    raw.close()
    with pytest.raises(IndexerError, match="explorer_liveness_challenges lacks to_answerer, to_validator"):
        make_engine(url)
