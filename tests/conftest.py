"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import resource
import time
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


# Where the suite's CPU goes (CI time is bounded): with TESSERA_CPU_LOG=PATH, one line per test
# phase with its CPU seconds, this process's plus the children it waited for (the processes a
# test starts and stops), appended to PATH. Off unless asked for.
_CPU_LOG = os.environ.get("TESSERA_CPU_LOG")


def _cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _CPU_LOG:
        yield
        return
    cpu, wall = _cpu_s(), time.monotonic()
    yield
    with open(_CPU_LOG, "a") as out:
        out.write(f"{_cpu_s() - cpu:.2f} {time.monotonic() - wall:.2f} {item.nodeid}\n")


# The slowest files first: `make test` runs two workers with `--dist loadfile
# --no-loadscope-reorder`, which hands out whole files in collection order (xdist's default
# order, by number of tests, put the long end-to-end files, which have few tests each, last,
# where one ran alone on one worker while the other had nothing left: minutes of CI's wall
# time). End-to-end and bench files first, the rest (seconds each) after them to even out the
# end. A stable sort: the order within each part, and so every worker's collection, stays.
_SLOW_FIRST = ("tests/e2e/", "tests/bench/")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.nodeid.startswith(_SLOW_FIRST))


@pytest.fixture(scope="session")
def postgres_cluster():
    """The session's throwaway PostgreSQL cluster (tests/support/postgres.py), started on first use
    and stopped at the session's end, also after failures. Without PostgreSQL the tests that need
    it fail with how to get it, unless TESSERA_SKIP_POSTGRES=1 skips them."""
    from tests.support.postgres import SKIP_ENV, Cluster, skip_requested, why_unavailable

    if skip_requested():
        pytest.skip(f"{SKIP_ENV}=1: the PostgreSQL variant is skipped")
    problem = why_unavailable()
    if problem:
        pytest.fail(problem, pytrace=False)
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
