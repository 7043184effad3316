"""End-to-end fixtures: a real anvil with deployed contracts, and real provider processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.processes import ProviderProcess
from tests.support.processes import tessera_home as tessera_home_env

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import Devnet
from tessera.chain.network import Network

TENANT = 5


@pytest.fixture(scope="session")
def tessera_home(tmp_path_factory) -> Path:
    with tessera_home_env(tmp_path_factory.mktemp("tessera-home")) as home:
        yield home


@pytest.fixture(scope="session")
def devnet(tessera_home, private_devnet) -> Devnet:
    """The session's shared devnet (default deploy options), for tests that need no chain of
    their own."""
    with private_devnet(tessera_home) as (devnet, _):
        yield devnet


@pytest.fixture(scope="session")
def network(devnet) -> Network:
    from tessera.chain.network import load_network

    return load_network(devnet.network_file)


@pytest.fixture
def tenant_chain(network) -> Chain:
    return Chain(network, devnet_account(TENANT))


@pytest.fixture(scope="session")
def provider(tessera_home, devnet) -> ProviderProcess:
    node = ProviderProcess(tessera_home, devnet.network_file, account=2, price="1.00", name="p-one")
    node.start()
    yield node
    node.stop()
