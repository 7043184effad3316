"""Explorer fixtures: a real anvil devnet with a seeded, randomized market on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.chain.client import Chain
from tessera.explorer.simulate import TSTK, Workload


@pytest.fixture(scope="module")
def market_run(tmp_path_factory, private_devnet):
    """A devnet with ~40 leases over six providers (seeded), including a slash and an unbond."""
    home: Path = tmp_path_factory.mktemp("explorer")
    with private_devnet(home) as (devnet, network):
        work = Workload(network, seed=7)
        work.run(leases=40, orders_per_round=8)
        provider = next(iter(work.providers.values()))
        work.send(work.deployer, work.registry, "slash", provider.address, 30 * TSTK, work.deployer)
        work.send(provider.address, work.registry, "request_unbond", 10 * TSTK)
        work.mine(120)
        for _ in range(3):
            work.mine()
        yield home, devnet, network, work


@pytest.fixture
def chain(market_run) -> Chain:
    return Chain(market_run[2])
