"""Explorer fixtures: a real anvil devnet with a seeded, randomized market on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tessera.chain.client import Chain
from tessera.chain.devnet import Devnet, free_port
from tessera.explorer import db
from tessera.explorer.simulate import TSTK, Workload


@pytest.fixture(scope="module")
def market_run(tmp_path_factory):
    """A devnet with ~40 leases over six providers (seeded), including a slash and an unbond."""
    home: Path = tmp_path_factory.mktemp("explorer")
    devnet = Devnet(home / "devnet")
    network = devnet.up(port=free_port())
    try:
        work = Workload(network, seed=7)
        work.run(leases=40, orders_per_round=8)
        provider = next(iter(work.providers.values()))
        work.send(work.deployer, work.registry, "slash", provider.address, 30 * TSTK, work.deployer)
        work.send(provider.address, work.registry, "request_unbond", 10 * TSTK)
        work.mine(120)
        for _ in range(3):
            work.mine()
        yield home, devnet, network, work
    finally:
        devnet.down()


@pytest.fixture
def chain(market_run) -> Chain:
    return Chain(market_run[2])


def dump(engine) -> dict[str, list[tuple]]:
    """Every row of every explorer table (autoincrement ids left out), sorted."""
    out = {}
    with Session(engine) as session:
        for table in db.Base.metadata.sorted_tables:
            columns = [c for c in table.columns if c.name != "id"]
            rows = session.execute(select(*columns)).all()
            out[table.name] = sorted(tuple(r) for r in rows)
    return out
