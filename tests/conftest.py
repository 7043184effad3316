"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tessera.chain.devnet import Devnet
from tessera.chain.network import Network
from tessera.compute import numerics

# As every tessera process does at its start (the CLI, the worker process): before the first
# torch op, so that in-process spot checks and replays run the profile verified work signs.
numerics.pin()

# The shared helpers' asserts report their values, as a test module's do.
pytest.register_assert_rewrite("tests.support")


@contextmanager
def _private_devnet(home: Path, **options) -> Iterator[tuple[Devnet, Network]]:
    """A fresh anvil on a free port with the contracts deployed, its files under `home/devnet`;
    stopped on exit, whatever happened inside."""
    devnet = Devnet(home / "devnet")
    network = devnet.up_anywhere(**options)
    try:
        yield devnet, network
    finally:
        devnet.down()


@pytest.fixture(scope="session")
def private_devnet():
    """Factory for a devnet of the caller's own, so that nothing another test did (jails,
    slashes, validators, moved time) leaks in. Use it inside a fixture of any scope:

        with private_devnet(home, epoch_length=60) as (devnet, network):
            yield ...

    The keyword options are `Devnet.up`'s deploy options (`epoch_length`, `jail_after`,
    `challenge_window`, ...)."""
    return _private_devnet
