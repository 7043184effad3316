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


@pytest.fixture(scope="module")
def verified_market_run(tmp_path_factory, private_devnet):
    """A devnet with the verified scenario (tessera.explorer.simulate_verified): validators,
    round roots, an upheld, a rejected and an expired challenge, Settlement releases, the
    cheater's lease refunded in full (its proven round, and every other round and the tail as
    forfeited), hardware reports slashed and cleared, every lease closed, the honest ones
    withdrawn.
    Yields (home, devnet, network, workload, scenario); `scenario` names the leases, providers,
    challenges and validators (VerifiedScenario)."""
    from tessera.explorer.simulate_verified import VerifiedWorkload

    home: Path = tmp_path_factory.mktemp("explorer-verified")
    with private_devnet(home) as (devnet, network):
        work = VerifiedWorkload(network, seed=11)
        scenario = work.verified()
        for _ in range(3):
            work.mine()
        yield home, devnet, network, work, scenario


# -- the explorer's database on SQLite and on PostgreSQL (H4, issue 12) ----------------------------
EXPLORER_BACKENDS = ("sqlite", "postgresql")


def _databases(request, folder: Path):
    from tests.support.postgres import Databases

    cluster = request.getfixturevalue("postgres_cluster") if request.param == "postgresql" else None
    return Databases(request.param, folder, cluster)


@pytest.fixture(params=EXPLORER_BACKENDS)
def explorer_db(request, tmp_path):
    """Fresh, empty explorer databases on one backend; the test runs once per backend.
    `explorer_db("name")` gives a new database's URL (`explorer_db.backend` says which backend);
    the PostgreSQL ones are dropped after the test."""
    databases = _databases(request, tmp_path)
    yield databases
    databases.close()


@pytest.fixture
def explorer_db_url(explorer_db) -> str:
    """One fresh, empty explorer database URL, once per backend."""
    return explorer_db("explorer")


@pytest.fixture(scope="module", params=EXPLORER_BACKENDS)
def explorer_module_db(request, tmp_path_factory):
    """As `explorer_db`, for module-scoped fixtures (a served database): every test of the module
    that uses it runs once per backend."""
    databases = _databases(request, tmp_path_factory.mktemp(f"db-{request.param}"))
    yield databases
    databases.close()
