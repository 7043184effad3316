"""Reorgs faked with anvil's evm_snapshot / evm_revert: shallow ones change nothing final, deep
ones are detected, rolled back and re-indexed."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.support.explorer import dump
from web3 import Web3

from tessera.chain.client import Chain
from tessera.explorer import db
from tessera.explorer.audit import audit
from tessera.explorer.db import make_engine
from tessera.explorer.derive import apply_event, entities_of, event_columns, record_of
from tessera.explorer.indexer import Indexer, RollbackStats, database_figures, indexed_state, rollback_to
from tessera.explorer.simulate import TSTK, TUSD, Workload
from tessera.protocol.events import EventRecord, args_json
from tessera.protocol.figures import compare

K = 5  # confirmations


@pytest.fixture(scope="module")
def small_market(tmp_path_factory, private_devnet):
    with private_devnet(tmp_path_factory.mktemp("reorg")) as (_, network):
        work = Workload(network, seed=11)
        work.run(leases=12, orders_per_round=4)
        yield Chain(network), work


def branch(work: Workload, blocks: int, tag: int) -> None:
    """Mine `blocks` blocks, each with a distinct transaction (a stake top-up or a new order)."""
    provider = next(iter(work.providers.values()))
    for i in range(blocks):
        if tag % 2:
            work.send(provider.address, work.registry, "add_stake", (tag * 10 + i + 1) * TSTK)
        else:
            work.send(work.tenants[0], work.market, "create_order", bytes([tag, i]) * 16, "", 1, 0,
                      TUSD, 3600, 1, TUSD + i, False)
        work.mine(7 + tag)


def tx_hashes(engine) -> set[str]:
    with Session(engine) as session:
        return set(session.scalars(select(db.Event.tx_hash)))


def test_shallow_reorg_changes_nothing_final(small_market, explorer_db_url):
    chain, work = small_market
    engine = make_engine(explorer_db_url)
    snapshot = work._rpc("evm_snapshot", [])
    branch(work, K - 2, tag=1)                 # K-2 blocks that will be orphaned
    Indexer(chain, engine, confirmations=K, batch_blocks=3).sync()
    final_before = dump(engine)
    figures_before = database_figures(engine)[0]
    assert indexed_state(engine).last_block == chain.block_number() - K

    saved_now = work.now
    assert work._rpc("evm_revert", [snapshot]) is True
    work.now = saved_now + 100                 # different timestamps: different blocks
    branch(work, K - 2, tag=3)                 # replaced by a different branch of the same height
    report = Indexer(chain, engine, confirmations=K, batch_blocks=3).sync()
    assert report.reorg_rolled_back_to is None and report.batches == 0
    assert dump(engine) == final_before
    assert compare(figures_before, database_figures(engine)[0]) == []
    assert audit(chain, engine).agrees


def test_deep_reorg_is_detected_and_reindexed(small_market, explorer_db):
    chain, work = small_market
    engine = make_engine(explorer_db("deep"))
    snapshot = work._rpc("evm_snapshot", [])
    fork_point = chain.block_number()
    branch(work, K + 4, tag=5)                 # K+4 blocks; the indexer takes 4 of them as final
    Indexer(chain, engine, confirmations=K, batch_blocks=2).sync()
    assert indexed_state(engine).last_block == fork_point + 4
    orphaned = tx_hashes(engine)

    saved_now = work.now
    assert work._rpc("evm_revert", [snapshot]) is True
    work.now = saved_now + 1000
    branch(work, K + 6, tag=2)                 # a longer, different branch
    report = Indexer(chain, engine, confirmations=K, batch_blocks=2).sync()
    assert report.reorg_rolled_back_to is not None and report.reorg_rolled_back_to <= fork_point
    assert indexed_state(engine).last_block == chain.block_number() - K
    result = audit(chain, engine)
    assert result.agrees, result.problems
    now = tx_hashes(engine)
    gone = orphaned - now
    assert gone, "the orphaned branch's events should be gone"
    # The database equals one built from scratch on the new chain.
    fresh = make_engine(explorer_db("fresh"))
    Indexer(chain, fresh, confirmations=K, batch_blocks=2).sync()
    assert compare(database_figures(fresh)[0], database_figures(engine)[0]) == []
    # Every table but the block hashes (batch ends differ: the re-index started at the fork).
    want, got = dump(fresh), dump(engine)
    assert_same(got, {name: rows for name, rows in want.items() if name != "explorer_blocks"}, "the reorg")
    for number, block_hash, _ in got["explorer_blocks"]:
        assert Indexer(chain, engine).reader.block(number)[0] == block_hash
    # The rollback rebuilt the rows the orphaned branch changed, not the history.
    stats = report.rollback
    assert stats is not None and stats.removed_events >= 4
    assert stats.replayed_events < len(got["explorer_events"]) // 4, stats


# -- rollbacks cost what they remove, and leave what a fresh index of the kept blocks gives ---------
BIG = 10**6     # one batch: the block table then holds the same checkpoints as a fresh index's


def index_to(chain: Chain, engine, block: int):
    """Index `engine` up to exactly `block` (the devnets here mine only on transactions)."""
    return Indexer(chain, engine, confirmations=chain.block_number() - block, batch_blocks=BIG).sync()


def tables(engine, without_block: int | None = None) -> dict[str, list[tuple]]:
    """Every table, less the checkpoint row of `without_block` (a fresh index up to a block keeps
    its hash as the batch's end; a rollback to it keeps the hash in the cursor only)."""
    out = dump(engine)
    out["explorer_blocks"] = [row for row in out["explorer_blocks"] if row[0] != without_block]
    return out


def assert_same(got: dict, want: dict, what: str) -> None:
    for name in want:
        assert got[name] == want[name], f"{what}: table {name} differs"


def block_of(engine, contract: str, event: str, last: bool = True) -> int:
    with Session(engine) as session:
        column = db.Event.block_number
        query = select(column).where(db.Event.contract == contract, db.Event.event == event)
        found = session.scalars(query.order_by(column.desc() if last else column).limit(1)).first()
    assert found is not None, f"no {contract}.{event} in the scenario"
    return found


def last_event_block(engine, nth: int = 1) -> int:
    """The `nth` newest block that holds events."""
    with Session(engine) as session:
        column = db.Event.block_number
        return list(session.scalars(select(column).distinct().order_by(column.desc()).limit(nth)))[-1]


def replay_bound(engine, keep: int) -> tuple[int, int]:
    """(kept events of the entities that the events above `keep` change, all kept events), by a
    plain scan of the stored events (not the rollback's indexed queries)."""
    with Session(engine) as session:
        records = [record_of(row) for row in session.scalars(select(db.Event))]
    touched = {e for r in records if r.block_number > keep for e in entities_of(r)}
    kept = [r for r in records if r.block_number <= keep]
    return sum(1 for r in kept if touched & set(entities_of(r))), len(kept)


def check_rollbacks(chain: Chain, engine, tmp_path, cuts: dict[str, int]) -> list[tuple[str, RollbackStats]]:
    """Index to the head, then for each cut: roll back to it (what a reorg there does), compare with a
    fresh index up to it, re-index and compare with the fresh full index."""
    head = chain.block_number()
    index_to(chain, engine, head)
    full = dump(engine)
    fresh_full = make_engine(f"sqlite:///{tmp_path}/fresh-full.db")
    index_to(chain, fresh_full, head)
    assert_same(full, dump(fresh_full), "indexing in one go")
    out = []
    for what, keep in sorted(cuts.items(), key=lambda kv: -kv[1]):
        bound, kept = replay_bound(engine, keep)
        indexer = Indexer(chain, engine, confirmations=0)
        block_hash, timestamp = indexer.reader.block(keep)
        with Session(engine) as session, session.begin():
            stats = indexer._rollback(session, session.get(db.Cursor, 1), keep, block_hash, timestamp)
        fresh = make_engine(f"sqlite:///{tmp_path}/fresh-{keep}.db")
        index_to(chain, fresh, keep)
        assert_same(tables(engine, keep), tables(fresh, keep), f"rolled back to {keep} ({what})")
        # Only the removed events' entities were rebuilt: never the whole history.
        assert stats.removed_events == full_count(full) - kept
        assert stats.replayed_events == bound < kept, (what, stats, kept)
        index_to(chain, engine, head)
        assert_same(dump(engine), full, f"re-indexed after the rollback to {keep} ({what})")
        out.append((what, stats))
    return out


def full_count(tables_: dict) -> int:
    return len(tables_["explorer_events"])


def test_rollbacks_of_the_verified_scenario(verified_market_run, explorer_db, tmp_path):
    """Cuts that remove a slash, a vote, a RoundRefunded, a challenge, or just the last block, on
    the verified scenario: rounds, challenges, votes, verdicts, slashes, settlement, hardware."""
    _home, _devnet, network, _work, s = verified_market_run
    chain = Chain(network)
    engine = make_engine(explorer_db("verified"))
    index_to(chain, engine, chain.block_number())
    cuts = {
        "the last event's block": last_event_block(engine) - 1,
        "two blocks of events": last_event_block(engine, nth=2) - 1,
        "a RoundRefunded": block_of(engine, "Settlement", "RoundRefunded") - 1,
        "the last vote": block_of(engine, "Verification", "Voted") - 1,
        "the last provider slash": block_of(engine, "ProviderRegistry", "Slashed") - 1,
        "a validator slash": block_of(engine, "Validators", "ValidatorSlashed") - 1,
        "a hardware report": block_of(engine, "HardwareReports", "HardwareReported") - 1,
        "every challenge": block_of(engine, "Verification", "ChallengeOpened", last=False) - 1,
        "the middle": (s.first_block + s.last_block) // 2,
    }
    results = check_rollbacks(chain, engine, tmp_path, cuts)
    shallow = dict(results)["the last event's block"]
    assert 0 < shallow.removed_events and shallow.replayed_events <= 30, shallow


def test_rollbacks_of_the_seeded_market(market_run, explorer_db, tmp_path):
    """The same on the seeded market: leases, payments, closes, a slash and an unbond."""
    chain = Chain(market_run[2])
    engine = make_engine(explorer_db("market"))
    index_to(chain, engine, chain.block_number())
    cuts = {
        "the slash": block_of(engine, "ProviderRegistry", "Slashed") - 1,
        "the last close": block_of(engine, "Market", "LeaseClosed") - 1,
        "the last lease": block_of(engine, "Market", "LeaseCreated") - 1,
        "the last withdrawal": block_of(engine, "Market", "Withdrawn") - 1,
        "the first lease": block_of(engine, "Market", "LeaseCreated", last=False) - 1,
    }
    check_rollbacks(chain, engine, tmp_path, cuts)


# -- every cut of a hand-made history with each entanglement (no chain) ------------------------------
P1, P2, V1, V3, TENANT = (Web3.to_checksum_address("0x" + c * 40) for c in "12345")
OFFER = dict(gpu_count=1, gpu_memory_mb=80_000, endpoint="http://x", price_floor=10**6)


def _history() -> list[EventRecord]:
    """One event a block (two where a slash and its cause share a transaction). The entanglements:
    a lease's GPU model is its provider's at LeaseCreated (an offer update comes between two leases,
    and the lease's close is cut without touching its provider);
    V3 votes on challenge 1 and does nothing after, V1 votes later (a cut between them must keep
    V3's vote count); slashes whose cause comes after them in their transaction; a RoundRefunded;
    a hardware case with reports, a dispute and a reward; an order created and cancelled."""
    steps = [
        ("ProviderRegistry", "ProviderRegistered", dict(provider=P1, gpu_model="H100", stake=500, **OFFER)),
        ("ProviderRegistry", "ProviderRegistered", dict(provider=P2, gpu_model="L4", stake=500, **OFFER)),
        ("Validators", "ValidatorRegistered", dict(validator=V1, stake=100)),
        ("Validators", "ValidatorRegistered", dict(validator=V3, stake=100)),
        ("Market", "OrderCreated", dict(order_id=1, tenant=TENANT, verified=True, deposit=10**7)),
        ("Market", "LeaseCreated", dict(lease_id=1, order_id=1, tenant=TENANT, provider=P1,
                                        price_per_gpu_hour=10**6, gpus=1, budget=10**7, start=1)),
        ("ProviderRegistry", "OfferUpdated", dict(provider=P1, gpu_model="A100", **OFFER)),
        ("ProviderRegistry", "StakeAdded", dict(provider=P1, amount=70)),
        ("Market", "LeaseCreated", dict(lease_id=2, order_id=1, tenant=TENANT, provider=P1,
                                        price_per_gpu_hour=10**6, gpus=1, budget=10**7, start=1)),
        ("Verification", "RootPosted", dict(job=1, round_index=0, root="0x" + "ab" * 32, n_leaves=2,
                                            coordinator=TENANT)),
        ("Verification", "ChallengeOpened", dict(challenge_id=1, job=1, round_index=0, lease_id=1,
                                                 provider=P1, challenger=TENANT, result_hash="0x" + "cd" * 32,
                                                 evidence="0x" + "ef" * 32, bond=10, quorum=2, deadline=99)),
        ("Verification", "Voted", dict(challenge_id=1, validator=V3, guilty=False, weight=100)),
        ("Market", "Withdrawn", dict(lease_id=1, amount_to_provider=900, fee=100)),
        ("Verification", "Voted", dict(challenge_id=1, validator=V1, guilty=True, weight=100)),
        [("ProviderRegistry", "Slashed", dict(provider=P1, amount=50, recipient=TENANT, slasher=TENANT)),
         ("Verification", "ChallengeResolved", dict(challenge_id=1, outcome=2, slashed=50, to_challenger=10,
                                                    to_tenant=10, to_voters=10, burned=20, bond_to_provider=0,
                                                    bond_returned=10))],
        ("Verification", "RewardClaimed", dict(challenge_id=1, voter=V1, amount=10)),
        ("Settlement", "PayReleased", dict(lease_id=1, from_round=0, to_round=1, released_until=5, amount=300,
                                           withheld=0, refund=0)),
        ("Settlement", "RoundRefunded", dict(lease_id=1, round_index=1, amount=200, refund=200)),
        ("HardwareReports", "HardwareReported", dict(provider=P2, epoch=5, validator=V1, reported=1, quorum=2,
                                                     outcome=2, evidence="0x" + "01" * 32, weight=100)),
        ("HardwareReports", "HardwareQuorumReached", dict(provider=P2, epoch=5, dispute_deadline=50)),
        ("HardwareReports", "HardwareDisputed", dict(provider=P2, epoch=5, vote_deadline=60, jury_quorum=1)),
        ("HardwareReports", "HardwareDisputeVoted", dict(provider=P2, epoch=5, validator=V1, passed=False,
                                                         weight=100)),
        [("ProviderRegistry", "Slashed", dict(provider=P2, amount=30, recipient=V1, slasher=V1)),
         ("HardwareReports", "HardwareSlashed", dict(provider=P2, epoch=5, slashed=30, reward_pool=20,
                                                     burned=10, jailed_until=70))],
        ("HardwareReports", "HardwareRewardClaimed", dict(provider=P2, epoch=5, validator=V1, amount=20)),
        ("Market", "LeaseToppedUp", dict(lease_id=2, budget=2 * 10**7)),
        ("Market", "LeaseClosed", dict(lease_id=1, provider_amount=500, fee=50, refund=8 * 10**6)),
        ("Market", "OrderCreated", dict(order_id=2, tenant=TENANT, verified=False, deposit=5)),
        ("Market", "OrderCancelled", dict(order_id=2)),
        ("Validators", "ValidatorSlashed", dict(validator=V1, amount=40, recipient=TENANT, slasher=TENANT)),
    ]
    records = []
    for n, step in enumerate(steps, start=1):
        for i, (contract, event, args) in enumerate(step if isinstance(step, list) else [step]):
            block = "0x" + f"{n:064x}"
            records.append(EventRecord(block_number=n, block_hash=block, timestamp=1_800_000_000 + n,
                                       tx_hash=block, log_index=i, contract=contract, event=event, args=args))
    return records


def _index(engine, records: list[EventRecord]) -> None:
    """What Indexer.sync writes for these events (no cursor, no block hashes)."""
    with Session(engine) as session, session.begin():
        for r in records:
            session.add(db.Event(block_number=r.block_number, block_hash=r.block_hash, timestamp=r.timestamp,
                                 tx_hash=r.tx_hash, log_index=r.log_index, contract=r.contract, event=r.event,
                                 args=args_json(r.args), **event_columns(session, r)))
            apply_event(session, r)


def test_every_cut_of_a_hand_made_history(tmp_path):
    records = _history()
    last = records[-1].block_number
    full = make_engine(f"sqlite:///{tmp_path}/full.db")
    _index(full, records)
    want_full = dump(full)
    for keep in range(last, -1, -1):
        with Session(full) as session, session.begin():
            stats = rollback_to(session, keep)
        fresh = make_engine(f"sqlite:///{tmp_path}/fresh-{keep}.db")
        _index(fresh, [r for r in records if r.block_number <= keep])
        assert_same(dump(full), dump(fresh), f"rolled back to block {keep}")
        removed = [r for r in records if r.block_number > keep]
        touched = {e for r in removed for e in entities_of(r)}
        assert stats.removed_events == len(removed) and stats.touched_rows == len(touched)
        assert stats.replayed_events == sum(1 for r in records if r.block_number <= keep
                                            and touched & set(entities_of(r)))
        _index(full, removed)
        assert_same(dump(full), want_full, f"re-indexed after the rollback to {keep}")
    with Session(full) as session:
        leases = {lease.lease_id: lease.gpu_model for lease in session.scalars(select(db.Lease))}
    assert leases == {1: "H100", 2: "A100"}
