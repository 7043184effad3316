"""The heartbeat fallback on a chain that mines only when there are transactions (anvil's
automine under another chain id, an Arbitrum Orbit L3, a quiet appchain), with
`[liveness] confirmations` > 0. The head stops at the `open_epoch` block: the seed never gets
deep, and the head's own timestamp never reaches mid-epoch. Mid-epoch is judged by the wall
clock too (and by the time since the head was first seen), so the node still sends the
heartbeat in time; the epoch stays the head's. In process, fake chain and clocks: milliseconds.

Adversaries and bad luck considered:
- nobody sends a transaction after the open (a quiet chain, or validators that stop): the
  heartbeat goes out once the wall clock passes mid-epoch, naming the head's parent (the
  heartbeat's own transaction mines the next block, so that block stays recent);
- a wall clock far ahead (skewed, or spoofed over NTP to make the node spend gas, or fake
  timestamps that put it epochs away): past the epoch's end it is not believed, and no clock
  makes the node beat for an epoch the chain's head has not reached; inside the epoch it can
  only bring the one heartbeat of the epoch forward;
- a chain clock ahead of the wall clock (time-warped devnets): the head's timestamp plus the
  time since it was first seen still reaches mid-epoch;
- a restart mid-epoch: the new process judges from the same clocks, and does not send a
  second heartbeat for an epoch it already beat in."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from eth_account import Account
from tests.provider.test_beat_sender import EPOCH_LENGTH, SEED, ReorgUptime, head_at, node_context

from tessera.provider import heartbeats
from tessera.provider.heartbeats import Heartbeats
from tessera.provider.metrics import ProviderMetrics

START = 5 * EPOCH_LENGTH          # epoch 5's first second (FakeUptime's genesis is 0)
OPEN_BLOCK = 20                   # open_epoch's block: the last one mined


class QuietUptime(ReorgUptime):
    """Epoch 5 opened in block OPEN_BLOCK, no block after it; heartbeats are remembered
    (`beats` answers from them, as the contract's would after a restart)."""

    def __init__(self):
        super().__init__(SEED, opened_in=OPEN_BLOCK)
        self.named: list[tuple[int, int, bytes]] = []

    def heartbeat(self, epoch, number, block_hash):
        self.named.append((epoch, number, block_hash))
        return super().heartbeat(epoch, number, block_hash)

    def beats(self, provider, epoch):
        return ("heartbeat", epoch) in self.sent


class Clocks:
    """The node's monotonic clock (heartbeats.time) and wall clock (EpochSeeds.wall)."""

    def __init__(self, wall: float):
        # from the real monotonic time: beat_sender compares its own with the round's deadline
        self.mono, self.wall = time.monotonic(), wall

    def tick(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def quiet(tmp_path, monkeypatch):
    """A node (confirmations 3) on a quiet chain, its clocks, and how to restart it."""
    monkeypatch.setattr(heartbeats, "OPEN_WAIT_S", (0.0, 0.0))
    clocks = Clocks(wall=START + 1)
    monkeypatch.setattr(heartbeats, "time", SimpleNamespace(monotonic=lambda: clocks.mono))
    # a validator publishes an endpoint; it is never asked: no seed is deep enough to sign
    ctx = node_context(tmp_path, [(Account.create().address, "http://127.0.0.1:9")],
                       confirmations=3, deadline_s=1.0)
    ctx.uptime = QuietUptime()
    started: list[Heartbeats] = []

    def node() -> Heartbeats:   # a (re)started process: same state DB, same chain
        ctx.metrics = ProviderMetrics()
        beats = Heartbeats(ctx)
        beats.seeds.wall = lambda: clocks.wall
        started.append(beats)
        return beats

    yield SimpleNamespace(ctx=ctx, clocks=clocks, node=node)
    for beats in started:
        beats.close()


def run(beats: Heartbeats, clocks: Clocks, head: dict, seconds: int) -> None:
    """The liveness thread: a step a second with the same head (nothing new is mined)."""
    for _ in range(seconds):
        beats.step(head)
        clocks.tick(1.0)


def test_a_quiet_chain_gets_its_heartbeat_by_mid_epoch(quiet):
    beats, head = quiet.node(), head_at(OPEN_BLOCK, 1)
    run(beats, quiet.clocks, head, EPOCH_LENGTH // 2 - 2)      # the wall clock: second 29
    assert quiet.ctx.uptime.sent == [] and not beats._current.done
    run(beats, quiet.clocks, head, 2)                           # second 30: half the epoch
    assert quiet.ctx.uptime.sent == [("heartbeat", 5)] and beats._current.done == "heartbeat"
    # the head is the open block, never deep, and the heartbeat names its parent: the
    # heartbeat's own transaction mines block 21, so 19 is two blocks back (BLOCKHASH knows it)
    assert quiet.ctx.uptime.named == [(5, OPEN_BLOCK - 1, head["parentHash"])]
    assert "not set 3 blocks deep" in quiet.ctx.log.named("heartbeat")[0]["reason"]
    run(beats, quiet.clocks, head, 10)
    assert len(quiet.ctx.uptime.sent) == 1                      # once per epoch


def test_a_wall_clock_past_the_epoch_is_not_believed_and_names_no_epoch(quiet):
    """The wall clock says epoch 6 (or epoch 29 million: fake timestamps): a heartbeat for
    epoch 5 would be mined in a later epoch, and the chain has not reached epoch 6."""
    quiet.clocks.wall = START + EPOCH_LENGTH + 5
    beats, head = quiet.node(), head_at(OPEN_BLOCK, 1)
    run(beats, quiet.clocks, head, 10)
    quiet.clocks.wall = 10.0 ** 9
    run(beats, quiet.clocks, head, 10)
    assert quiet.ctx.uptime.sent == [] and beats._current.epoch == 5
    # the chain's clock still counts: its head plus the time since the node first saw it
    run(beats, quiet.clocks, head, EPOCH_LENGTH // 2 - 20)
    assert quiet.ctx.uptime.sent == [("heartbeat", 5)]


def test_a_chain_clock_ahead_of_the_wall_clock_still_reaches_mid_epoch(quiet):
    """A time-warped chain (evm_setNextBlockTimestamp): the wall clock is before the epoch."""
    quiet.clocks.wall = START - 10 * EPOCH_LENGTH
    beats, head = quiet.node(), head_at(OPEN_BLOCK, 25)
    run(beats, quiet.clocks, head, 5)                           # 25 + 4 s seen: second 29
    assert quiet.ctx.uptime.sent == []
    run(beats, quiet.clocks, head, 1)
    assert quiet.ctx.uptime.sent == [("heartbeat", 5)]


def test_a_restart_mid_epoch_resumes_and_beats_once(quiet):
    first, head = quiet.node(), head_at(OPEN_BLOCK, 1)
    run(first, quiet.clocks, head, 10)                          # down at second 11
    assert quiet.ctx.uptime.sent == []
    quiet.clocks.tick(30.0)                                     # back at second 41
    second = quiet.node()
    run(second, quiet.clocks, head, 3)    # its own open wait and deadline (1 s), then the beat
    assert quiet.ctx.uptime.sent == [("heartbeat", 5)]
    third = quiet.node()                                        # and restarted once more
    run(third, quiet.clocks, head, 5)
    assert third._current.done == "heartbeat" and len(quiet.ctx.uptime.sent) == 1
    assert quiet.ctx.state.beat(5) is not None


def test_the_seed_deep_in_time_still_means_no_transaction(quiet):
    """The wall clock only decides when to give up waiting: blocks that come bring the beat."""
    beats = quiet.node()
    run(beats, quiet.clocks, head_at(OPEN_BLOCK, 1), 5)
    for number in range(OPEN_BLOCK + 1, OPEN_BLOCK + 4):
        beats.step(head_at(number, 6))
    assert beats._current.signature is not None and quiet.ctx.uptime.sent == []
