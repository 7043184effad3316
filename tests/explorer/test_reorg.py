"""Reorgs faked with anvil's evm_snapshot / evm_revert: shallow ones change nothing final, deep
ones are detected, rolled back and re-indexed."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.support.explorer import dump

from tessera.chain.client import Chain
from tessera.explorer import db
from tessera.explorer.audit import audit
from tessera.explorer.db import make_engine
from tessera.explorer.indexer import Indexer, database_figures, indexed_state
from tessera.explorer.simulate import TSTK, TUSD, Workload
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
    assert dump(fresh)["explorer_events"] == dump(engine)["explorer_events"]
    assert dump(fresh)["explorer_providers"] == dump(engine)["explorer_providers"]
