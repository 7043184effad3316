"""Uptime heartbeats: only registered providers, only the current epoch, once, with a recent hash."""

from __future__ import annotations

import boa
import pytest
from eth_utils import keccak

EPOCH = 60
HISTORY = 256


@pytest.fixture
def uptime(system, factories):
    return factories["Uptime"].deploy(system.registry.address, EPOCH)


def set_history() -> None:
    """Give the last 256 blocks distinct, known hashes (py-evm's default history is zeros)."""
    number = boa.env.evm.patch.block_number
    boa.env.evm.patch.prev_hashes = [keccak(b"block %d" % (number - 1 - i)) for i in range(HISTORY)]


def recent(depth: int = 1) -> tuple[int, bytes]:
    set_history()
    number = boa.env.evm.patch.block_number - depth
    return number, keccak(b"block %d" % number)


def beat(uptime, who: str, epoch: int | None = None, depth: int = 1, block_hash: bytes | None = None):
    number, good = recent(depth)
    with boa.env.prank(who):
        uptime.heartbeat(uptime.current_epoch() if epoch is None else epoch, number,
                         good if block_hash is None else block_hash)


def advance(seconds: int) -> None:
    boa.env.time_travel(seconds=seconds, block_delta=2)


def test_heartbeat_records_and_logs(system, uptime):
    provider = system.providers[0].address
    assert uptime.current_epoch() == 0
    advance(EPOCH)
    assert uptime.current_epoch() == 1
    beat(uptime, provider)
    logs = uptime.get_logs()
    assert [type(log).__name__ for log in logs] == ["Heartbeat"]
    assert (logs[0].provider, logs[0].epoch) == (provider, 1)
    assert uptime.beats(provider, 1)
    assert not uptime.beats(provider, 0) and not uptime.beats(provider, 2)
    assert not uptime.beats(system.providers[1].address, 1)
    assert uptime.epoch_start(1) == uptime.genesis() + EPOCH


def test_bitmap_spans_words(system, uptime):
    provider = system.providers[0].address
    for epoch in (255, 256, 513):
        advance(uptime.epoch_start(epoch) - boa.env.timestamp)
        beat(uptime, provider)
    assert [uptime.beats(provider, e) for e in (254, 255, 256, 257, 512, 513)] == \
        [False, True, True, False, False, True]


def test_unregistered_caller_refused(system, uptime):
    with boa.reverts("uptime: not registered"):
        beat(uptime, system.outsider.address)


def test_double_beat_refused(system, uptime):
    provider = system.providers[0].address
    beat(uptime, provider)
    boa.env.time_travel(blocks=1)
    with boa.reverts("uptime: already beat this epoch"):
        beat(uptime, provider)
    advance(EPOCH)
    beat(uptime, provider)  # the next epoch is fine again


@pytest.mark.parametrize("offset", [-1, 1, 5])
def test_wrong_epoch_refused(system, uptime, offset):
    advance(3 * EPOCH)
    with boa.reverts("uptime: not the current epoch"):
        beat(uptime, system.providers[0].address, epoch=uptime.current_epoch() + offset)


def test_wrong_block_hash_refused(system, uptime):
    with boa.reverts("uptime: wrong block hash"):
        beat(uptime, system.providers[0].address, block_hash=keccak(b"made up"))


def test_stale_or_future_block_refused(system, uptime):
    provider = system.providers[0].address
    boa.env.time_travel(blocks=400)
    with boa.reverts("uptime: block too old"):
        beat(uptime, provider, depth=257)
    with boa.reverts("uptime: block not in the past"):
        beat(uptime, provider, depth=0)
    beat(uptime, provider, depth=256)  # the oldest block BLOCKHASH still answers for


def test_gas_per_heartbeat(system, uptime):
    """titanoboa's execution gas (its cold/warm accounting is approximate: the figures in
    docs/uptime.md are receipts from anvil, measured by tests/e2e/test_uptime.py)."""
    provider = system.providers[0].address
    gas = []
    for _ in range(3):
        beat(uptime, provider)
        gas.append(uptime._computation.get_gas_used())
        advance(EPOCH)
    first, later = gas[0], gas[1]
    print(f"heartbeat execution gas: first in a 256-epoch word {first}, later {later}")
    assert later < first <= 50_000
