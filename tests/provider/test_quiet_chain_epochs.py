"""The provider's side of an epoch turning on a quiet chain (anvil's automine, an L3 with no
traffic): no block comes when the epoch turns, so the node's head stays in the old epoch until
a validator's `open_epoch` (judged by the wall clock: validator/liveness.py) mines the block
that moves the chain on. In process, fake chain: milliseconds. On a real anvil:
tests/validator/test_liveness.py::test_a_quiet_chain_gets_its_epoch_opened_by_the_wall_clock.

Adversaries and bad luck considered:
- the watcher hands over the EpochOpened before the head that carries it (node.py applies the
  block's logs, then the head): the liveness thread, stepping with the old head meanwhile, does
  nothing for the new epoch, then beats it as soon as the head comes, with the log's seed and
  no read of its own;
- a wall clock past the head's epoch makes the node neither beat nor open an epoch the chain
  has not reached (a beat for it could not be receipted, a heartbeat would revert)."""

from __future__ import annotations

import pytest
from tests.provider.test_beat_sender import (
    CHAIN_ID,
    EPOCH_LENGTH,
    SEED,
    UPTIME,
    FakeUptime,
    HonestValidator,
    node_context,
)

from tessera.protocol import liveness, messages
from tessera.provider import heartbeats
from tessera.provider.heartbeats import Heartbeats

NEXT_SEED = b"\x66" * 32


class QuietUptime(FakeUptime):
    """Epoch 5 opened; epoch 6 not until a validator's open (`opened`)."""

    def __init__(self):
        super().__init__()
        self.opened = {5: SEED}
        self.reads: list[int] = []

    def seed(self, epoch, block_identifier="latest"):
        self.reads.append(epoch)
        return self.opened.get(epoch, bytes(32))

    def open_epoch(self):
        self.sent.append(("open_epoch",))
        return {"transactionHash": b"\x02" * 32, "gasUsed": 40_000}


def head(number: int, epoch: int, second: int) -> dict:
    return {"number": number, "timestamp": epoch * EPOCH_LENGTH + second,
            "parentHash": b"\0" * 32}


@pytest.fixture
def validator():
    honest = HonestValidator()
    yield honest
    honest.close()


def test_the_node_beats_the_new_epoch_once_the_validators_open_mines_it(tmp_path, validator,
                                                                        monkeypatch):
    monkeypatch.setattr(heartbeats, "OPEN_WAIT_S", (0.0, 0.0))
    ctx = node_context(tmp_path, [(validator.account.address, validator.url)])
    ctx.uptime = QuietUptime()
    beats = Heartbeats(ctx)
    try:
        last = head(40, 5, 2)
        beats.step(last)
        assert beats._current.done == "receipts"           # epoch 5 beaten
        beats.seeds.wall = lambda: 6 * EPOCH_LENGTH + 20    # the wall clock: epoch 6
        for _ in range(5):
            beats.step(last)                                # no block since
        assert beats._current.epoch == 5 and ctx.uptime.sent == []
        assert 6 not in ctx.uptime.reads

        # The validator's open_epoch mines block 41, in epoch 6; the watcher reads its
        # EpochOpened first, then hands over the head.
        ctx.uptime.opened[6] = NEXT_SEED
        beats.on_opened(6, NEXT_SEED)
        beats.step(last)                                    # the thread woke with the old head
        assert beats._current.epoch == 5
        beats.on_head(head(41, 6, 20))
        beats.step(beats._head)
        assert beats._current.epoch == 6 and beats._current.done == "receipts"
        assert ctx.uptime.sent == [] and 6 not in ctx.uptime.reads   # the log's seed
    finally:
        beats.close()
    typed = liveness.beat_typed_data(CHAIN_ID, UPTIME, ctx.address, 6, NEXT_SEED)
    assert messages.recover(typed, ctx.state.beat(6)[0]) == ctx.address
