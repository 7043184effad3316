"""Uptime's inclusion challenges in the explorer's derived tables and in the money audit
(hand-made events, no chain; issue 15, session 25's set challenges, derive_liveness.py): one row
per challenge naming a set of a report's providers by registry index, resolved to addresses; each
named provider's beat, shown on it, on another challenge of the epoch, or never; the outcome and
where the bond and the slash went (the bond less the answer fees back to the challenger in
either outcome, session 25's second change); the validator's slash explained by the unresolved
challenge; reorg rollbacks that rebuild exactly what indexing gives; a database from before either
change refused; and the Uptime contract's holding accounted to the wei at every step."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.support.explorer import dump
from web3 import Web3

from tessera.errors import IndexerError
from tessera.explorer import db
from tessera.explorer.db import make_engine
from tessera.explorer.derive import apply_event, event_columns
from tessera.explorer.indexer import rollback_to
from tessera.explorer.web.liveness import (
    liveness_challenge_out,
    liveness_challenges,
    liveness_challenges_table,
)
from tessera.explorer.web.queries import Explorer
from tessera.explorer.web.tables import args_html
from tessera.protocol.events import EventRecord, args_json
from tessera.protocol.holdings import holdings
from tessera.protocol.liveness import words_of

P, Q, R, V, V2, CHALLENGER, UPTIME, VALIDATORS = (Web3.to_checksum_address("0x" + c * 40)
                                                  for c in "abcdef98")
ZERO = "0x" + "0" * 40
TSTK = 10**18
BOND = 10 * TSTK + 1            # odd: the answer fee rounds down, the rest is still paid
LIVENESS = ("explorer_liveness_challenges", "explorer_liveness_named", "explorer_registry_indices",
            "explorer_slashes")


def _record(n: int, log: int, event: str, contract: str = "Uptime", **args) -> EventRecord:
    return EventRecord(block_number=n, block_hash="0x" + f"{n:064x}", timestamp=1_800_000_000 + 60 * n,
                       tx_hash="0x" + f"{n:064x}", log_index=log, contract=contract, event=event, args=args)


def _registered(n: int, provider: str) -> EventRecord:
    return _record(n, 0, "ProviderRegistered", "ProviderRegistry", provider=provider, stake=100 * TSTK,
                   gpu_model="H100", gpu_count=1, gpu_memory_mb=1, benchmark_score=1, endpoint="x",
                   price_floor=1)


def _challenged(n: int, cid: int, validator: str, *indices: int) -> list[EventRecord]:
    """challenge_inclusions: the event, then the bond pulled from the challenger."""
    return [_record(n, 0, "InclusionsChallenged", challenge_id=cid, validator=validator, epoch=7,
                    challenger=CHALLENGER, named_count=len(indices), bond=BOND, answer_by_epoch=10,
                    named=words_of(indices, 3)),
            _transfer(n, 1, CHALLENGER, UPTIME, BOND)]


def _transfer(n: int, log: int, sender: str, receiver: str, value: int) -> EventRecord:
    return _record(n, log, "Transfer", "StakeToken", sender=sender, receiver=receiver, value=value)


FEE = BOND * 625 // 10_000 // 32            # Uptime.answer_fee(): per beat shown in a batch
SLASH = 50 * TSTK
RECORDS = [
    _registered(1, P), _registered(2, Q), _registered(3, R),     # registry indices 0, 1, 2
    _record(4, 0, "ValidatorRegistered", "Validators", validator=V, stake=200 * TSTK),
    _record(5, 0, "LivenessReported", validator=V, epoch=7, words_hash="0x" + "1" * 64, words=[0b111]),
    _record(5, 1, "LivenessReported", validator=V2, epoch=7, words_hash="0x" + "2" * 64, words=[0b010]),
    *_challenged(6, 1, V, 0, 1),                 # P (the lie) and Q (a decoy) in one challenge
    *_challenged(7, 2, V, 2),
    # Q's beat shown on challenge 1: the answer fee to the answerer (the validator itself).
    _record(8, 0, "InclusionAnswered", challenge_id=1, validator=V, provider=Q, epoch=7, answered_by=V,
            to_answerer=FEE),
    _transfer(8, 1, UPTIME, V, FEE),
    # R's beat on challenge 2: every named beat shown, settled in the same call, the rest of the
    # bond back to the challenger.
    _record(9, 0, "InclusionAnswered", challenge_id=2, validator=V, provider=R, epoch=7, answered_by=R,
            to_answerer=FEE),
    _record(9, 1, "ChallengeResolved", challenge_id=2, validator=V, epoch=7, unanswered=0, slashed=0,
            to_challenger=0, burned=0, bond_returned=BOND - FEE),
    _transfer(9, 2, UPTIME, R, FEE), _transfer(9, 3, UPTIME, CHALLENGER, BOND - FEE),
    *_challenged(10, 3, V2, 1),                  # V2's report of Q: Q's beat already shown (on 1)
    # resolve_challenge(1): the Validators' slash first, then Uptime's ChallengeResolved, one tx.
    _record(11, 0, "ValidatorSlashed", "Validators", validator=V, amount=SLASH, recipient=UPTIME,
            slasher=UPTIME),
    _transfer(11, 1, VALIDATORS, UPTIME, SLASH),
    _record(11, 2, "ChallengeResolved", challenge_id=1, validator=V, epoch=7, unanswered=1,
            slashed=SLASH, to_challenger=SLASH // 5, burned=SLASH - SLASH // 5,
            bond_returned=BOND - FEE),
    _transfer(11, 3, UPTIME, ZERO, SLASH - SLASH // 5),
    _transfer(11, 4, UPTIME, CHALLENGER, BOND - FEE + SLASH // 5),
    # resolve_challenge(3): its one named beat was shown on challenge 1: settled as answered, the
    # whole bond back to the challenger (nothing paid from it).
    _record(12, 0, "ChallengeResolved", challenge_id=3, validator=V2, epoch=7, unanswered=0, slashed=0,
            to_challenger=0, burned=0, bond_returned=BOND),
    _transfer(12, 1, UPTIME, CHALLENGER, BOND),
]


def _tx(event: str, block: int) -> str:
    return next(r.tx_hash for r in RECORDS if r.event == event and r.block_number == block)


def _index(engine, records: list[EventRecord]) -> None:
    with Session(engine) as session, session.begin():
        for r in records:
            session.merge(db.Block(number=r.block_number, hash=r.block_hash, timestamp=r.timestamp))
            session.add(db.Event(block_number=r.block_number, block_hash=r.block_hash, timestamp=r.timestamp,
                                 tx_hash=r.tx_hash, log_index=r.log_index, contract=r.contract,
                                 event=r.event, args=args_json(r.args), **event_columns(session, r)))
            apply_event(session, r)


def _rows(engine) -> list[tuple]:
    with Session(engine) as session:
        found = session.scalars(select(db.LivenessChallenge).order_by(db.LivenessChallenge.challenge_id))
        return [(c.challenge_id, c.status, c.named_count, c.answered, c.paid, c.unanswered, c.slashed,
                 c.to_challenger, c.burned, c.bond_returned) for c in found]


def test_set_challenges_get_rows_with_their_named_providers_and_outcome(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/liveness.db")
    _index(engine, RECORDS)
    assert _rows(engine) == [
        (1, "resolved", 2, 1, FEE, 1, SLASH, SLASH // 5, SLASH - SLASH // 5, BOND - FEE),
        (2, "answered", 1, 1, FEE, 0, 0, 0, 0, BOND - FEE),
        (3, "answered", 1, 0, 0, 0, 0, 0, 0, BOND)]
    with Session(engine) as session:
        n = db.LivenessNamed
        named = [(x.challenge_id, x.registry_index, x.provider)
                 for x in session.scalars(select(n).order_by(n.challenge_id, n.registry_index))]
        assert named == [(1, 0, P), (1, 1, Q), (2, 2, R), (3, 1, Q)]     # indices resolved to addresses
        slashes = [(s.kind, s.address, s.amount, s.cause, s.cause_ref)
                   for s in session.scalars(select(db.Slash))]
        assert slashes == [("validator", V, SLASH, "liveness", "1")]
        answer = session.scalars(select(db.Event).where(db.Event.event == "InclusionAnswered")).first()
        assert (answer.entity, answer.validator, answer.provider, answer.lease_id) == (
            "liveness:1", V, Q, None)
        opened = session.scalars(select(db.Event).where(db.Event.event == "InclusionsChallenged")).first()
        assert "2 providers named (registry indices 0, 1)" in args_html(opened)


def test_every_rollback_gives_what_indexing_up_to_it_gives(tmp_path):
    """Rolling back to any block (a reorg) rebuilds the challenge rows from their kept events and
    drops the named providers and registry indices of removed transactions: exactly the tables a
    fresh index of the kept blocks makes; indexing the removed blocks again restores the whole."""
    full = make_engine(f"sqlite:///{tmp_path}/full.db")
    _index(full, RECORDS)
    want = {t: rows for t, rows in dump(full).items() if t in LIVENESS}
    for keep in range(RECORDS[-1].block_number, 0, -1):
        with Session(full) as session, session.begin():
            rollback_to(session, keep)
        fresh = make_engine(f"sqlite:///{tmp_path}/fresh-{keep}.db")
        _index(fresh, [r for r in RECORDS if r.block_number <= keep])
        got = {t: rows for t, rows in dump(full).items() if t in LIVENESS}
        assert got == {t: rows for t, rows in dump(fresh).items() if t in LIVENESS}, keep
        _index(full, [r for r in RECORDS if r.block_number > keep])
        assert {t: rows for t, rows in dump(full).items() if t in LIVENESS} == want, keep
        fresh.dispose()


def test_each_named_beat_is_served_and_shown(tmp_path):
    """A provider's page lists the challenges naming it with its own beat; a validator's lists the
    named providers with theirs: shown here (by whom, for what fee), on another challenge, or
    never; the rest of the bond back to the challenger in both outcomes, nothing to the
    validator; amounts in TSTK with the token's decimals."""
    engine = make_engine(f"sqlite:///{tmp_path}/liveness.db")
    _index(engine, RECORDS)
    explorer = Explorer(engine)
    [for_p] = liveness_challenges(explorer, "provider", P).rows
    mine = liveness_challenge_out(for_p)
    assert (mine.challenge_id, mine.status, mine.named_count, mine.unanswered, mine.named_more) == (
        1, "resolved", 2, 1, 0)
    assert [(n.provider, n.answered_by, n.shown_on_challenge) for n in mine.named] == [(P, None, None)]
    assert (mine.slashed_base_units, mine.to_challenger_base_units, mine.bond_returned_base_units) == (
        str(SLASH), str(SLASH // 5), str(BOND - FEE))
    for_q = liveness_challenges(explorer, "provider", Q).rows
    assert [liveness_challenge_out(x).challenge_id for x in for_q] == [3, 1]        # newest first
    [(q3,), (q1,)] = [liveness_challenge_out(x).named for x in for_q]
    assert (q1.answered_by, q1.to_answerer_base_units, q1.answered_tx) == (
        V, str(FEE), _tx("InclusionAnswered", 8))
    assert (q3.answered_by, q3.shown_on_challenge) == (None, 1)
    against_v = liveness_challenges(explorer, "validator", V).rows
    out = [liveness_challenge_out(x) for x in against_v]
    assert [o.challenge_id for o in out] == [2, 1]
    assert [(n.registry_index, n.provider) for n in out[1].named] == [(0, P), (1, Q)]
    assert liveness_challenges(explorer, "validator", V2).total == 1
    assert liveness_challenges(explorer, "provider", VALIDATORS).total == 0
    html = liveness_challenges_table(against_v, who="provider")
    assert "#0" in html and P in html and "beat not shown" in html and "beat shown by" in html
    assert "1 of 2 beats never shown" in html and "10.00 TSTK</span> to the challenger" in html
    assert html.count("back to the challenger") == 2 and "to the validator" not in html
    assert (liveness_challenge_out(against_v[0]).bond_returned_base_units,
            liveness_challenge_out(against_v[0]).paid_base_units) == (str(BOND - FEE), str(FEE))
    html = liveness_challenges_table(for_q)
    assert "beat shown on inclusion challenge 1" in html and V in html


def test_a_database_from_before_set_challenges_is_refused(tmp_path):
    """The explorer's schema rule (db._check_columns): a database whose liveness table still has one
    provider per challenge and lacks the set columns is refused, naming them, never half-read:
    it must be indexed again."""
    url = f"sqlite:///{tmp_path}/old.db"
    make_engine(url).dispose()
    raw = sqlite3.connect(tmp_path / "old.db")
    for column in ("named_count", "answered", "paid", "unanswered", "to_challenger", "burned"):
        raw.execute(f"ALTER TABLE explorer_liveness_challenges DROP COLUMN {column}")
    raw.execute("ALTER TABLE explorer_liveness_challenges ADD COLUMN provider VARCHAR(42)")
    raw.commit()
    raw.close()
    with pytest.raises(IndexerError, match="explorer_liveness_challenges lacks answered, burned, "
                                           "named_count, paid, to_challenger, unanswered.*index` again"):
        make_engine(url)


def test_a_database_that_still_has_to_validator_is_refused(tmp_path):
    """A database made before the bond's rest went always to the challenger still has the
    `to_validator` column (NOT NULL, no server default: this explorer's inserts, which no longer
    name it, would fail mid-index). Nothing lacks, so only the check for columns this explorer no
    longer has refuses it, naming the column, before any block is read."""
    url = f"sqlite:///{tmp_path}/old.db"
    make_engine(url).dispose()
    raw = sqlite3.connect(tmp_path / "old.db")
    table = "explorer_liveness_challenges"
    [create] = raw.execute(f"SELECT sql FROM sqlite_master WHERE name = '{table}'").fetchone()
    raw.execute(f"DROP TABLE {table}")
    raw.execute(create.replace("bond_returned VARCHAR",
                               "to_validator VARCHAR(80) NOT NULL, bond_returned VARCHAR", 1))
    raw.commit()
    raw.close()
    with pytest.raises(IndexerError, match=f"{table} still has to_validator.*index` again"):
        make_engine(url)


def test_the_uptime_holding_is_accounted_to_the_wei_at_every_step():
    """The audit (protocol/holdings.py): after every transaction the Uptime contract holds exactly
    what open challenges can still pay out, bond less the answer fees paid (an odd bond's
    rounding included), and the claim names the challenger (the validator no longer gets any of
    the bond). Adversary: an answerer paid twice for one beat, or a bond settled but still
    counted, would leave a surplus or a shortfall here."""
    txs = sorted({r.tx_hash for r in RECORDS})
    for tx in txs:
        upto = [r for r in RECORDS if r.tx_hash <= tx]
        [held] = [h for h in holdings(upto, {"Uptime": UPTIME}) if h.token == "StakeToken"]
        assert held.surplus == 0, (tx, held.held, held.owed)
    upto = [r for r in RECORDS if r.block_number <= 8]           # 1 paid one share, 2 untouched
    [held] = [h for h in holdings(upto, {"Uptime": UPTIME}) if h.token == "StakeToken"]
    assert [(c.address, c.amount) for c in held.claims] == [(CHALLENGER, BOND - FEE), (CHALLENGER, BOND)]
    assert all("challenger" in c.party and V not in c.party and "resolve_challenge" in c.call
               for c in held.claims)
    [held] = [h for h in holdings(RECORDS, {"Uptime": UPTIME}) if h.token == "StakeToken"]
    assert held.held == 0 and held.claims == []
