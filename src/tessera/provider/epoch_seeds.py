"""An uptime epoch's seed, as this node's liveness thread (heartbeats.py) learns it: from the
watcher's `EpochOpened` logs (no call), else read when the node's wait (`open_at`) is over,
else opened by this node (`Uptime.open_epoch`: one transaction for the whole network).

Reorgs (docs/uptime.md, "Reorgs"): the seed is the hash of the block before `open_epoch`'s; a
reorg that re-mines that transaction in another block changes it, and a beat signed over the
old seed could neither answer an inclusion challenge nor be claimed. So the node signs only
the seed it reads at `head - confirmations` (`[liveness] confirmations`: 0 on the devnet,
else protocol.liveness.CONFIRMATIONS), once per head; an `EpochOpened` log only says that the
epoch is opened (not to open it again). It waits for that seed until half the epoch has gone
(and the fallback deadline past its own `open_at`), then the heartbeat goes out.

Half the epoch is judged by the clocks that can tell, not by the head's timestamp alone: a
chain that mines only when there are transactions (anvil's automine, an Orbit L3, a quiet
appchain) stops at the `open_epoch` block, so the seed never gets deep and the head's clock
never reaches mid-epoch. So the time is the latest of the head's timestamp, the head's timestamp
plus the time since this process first saw that head, and the wall clock while it is inside the
epoch (the chain's clocks follow it; a wall clock already past the epoch's end is not believed:
a heartbeat for the epoch would then be mined in a later one, or the clocks disagree). The epoch
itself is always the head's: no clock makes the node beat for an epoch the chain has not
reached, and a new head past the epoch ends it (heartbeats.py)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import Counter

from tessera.chain.client import tx_hash
from tessera.chain.devnet import liveness_confirmations
from tessera.errors import ChainError, RpcUnavailable
from tessera.provider.context import NodeContext

RETRY_S = 1.0                 # after an open mined too late, or a seed not yet deep
OPEN_RETRY_S = 2.0            # after a refused open_epoch
ZERO = bytes(32)


class EpochSeeds:
    """Which epochs are opened, their seeds once deep enough to sign, and opening them."""

    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self.confirmations = liveness_confirmations(ctx.chain.network,
                                                    ctx.config.liveness.confirmations)
        self._opened: dict[int, bytes] = {}          # seed at the head (EpochOpened, reads)
        self._deep_read: tuple[int, int] | None = None   # (epoch, head) of the last deep read
        self._seen: tuple[int, int, float] | None = None   # (head, its timestamp, first seen)
        self.wall = time.time                        # the local wall clock
        self.m_opened = Counter("tessera_provider_epochs_opened", "open_epoch transactions",
                                registry=ctx.metrics.registry)

    def on_opened(self, epoch: int, seed: bytes) -> None:
        """The watcher read an EpochOpened (earlier epochs are forgotten)."""
        self._opened[epoch] = seed
        for old in [e for e in self._opened if e < epoch]:
            del self._opened[old]

    def opened(self, epoch: int) -> bool:
        return epoch in self._opened

    def find(self, cur, now: float, head: Mapping) -> bool:
        """Set `cur.seed` (`cur`: heartbeats.EpochBeat) once it can be signed: True then; else
        `cur.retry_at` says when to look again (a new head or EpochOpened wakes the thread
        sooner)."""
        uptime = self.ctx.uptime
        seed = self._opened.get(cur.epoch)
        if seed is None:
            if now < cur.open_at:
                cur.retry_at = cur.open_at   # or an EpochOpened wakes us before
                return False
            seed = uptime.seed(cur.epoch)
        if seed == ZERO:
            try:
                receipt = uptime.open_epoch()
            except ChainError as exc:
                if isinstance(exc, RpcUnavailable):
                    raise
                self.ctx.log("open-epoch-refused", "warning", epoch=cur.epoch, error=str(exc))
                cur.retry_at = now + OPEN_RETRY_S
                return False
            self.m_opened.inc()
            self.ctx.log("epoch-opened", epoch=cur.epoch, tx=tx_hash(receipt),
                         gas=receipt["gasUsed"])
            seed = uptime.seed(cur.epoch)   # zero if the epoch turned before it was mined
        if seed == ZERO:   # the epoch turned before the open was mined
            cur.retry_at = now + RETRY_S
            return False
        if self.confirmations:
            self._opened.setdefault(cur.epoch, seed)   # opened: not read or opened again
            seed = self._deep(cur.epoch, head)
            if seed is None:   # not yet deep: the next head wakes us
                cur.retry_at = now + RETRY_S
                return False
        cur.seed = seed
        return True

    def _deep(self, epoch: int, head: Mapping) -> bytes | None:
        """The epoch's seed `confirmations` blocks below `head` (read once per head), or None
        while it is unset there."""
        number = int(head["number"])
        if self._deep_read == (epoch, number):
            return None
        self._deep_read = (epoch, number)
        seed = self.ctx.uptime.seed(epoch, max(number - self.confirmations, 0))
        return None if seed == ZERO else seed

    def saw(self, head: Mapping, now: float) -> None:
        """The liveness thread stepped with `head` at monotonic time `now` (the first time
        counts: on a quiet chain the same head comes back every second)."""
        key = (int(head["number"]), int(head["timestamp"]))
        if self._seen is None or self._seen[:2] != key:
            self._seen = (*key, now)

    def elapsed(self, epoch: int, now: float, head: Mapping, clock: tuple[int, int]) -> float:
        """Seconds of `epoch` gone by now (module docstring: which clocks count)."""
        genesis, length = clock
        start = genesis + epoch * length
        stamp = int(head["timestamp"])
        chain = float(stamp)
        if self._seen is not None and self._seen[:2] == (int(head["number"]), stamp):
            chain += max(now - self._seen[2], 0.0)
        wall = self.wall()
        if wall >= start + length:   # past the epoch: a clock this far ahead is not believed
            wall = 0.0
        return max(chain, wall) - start

    def overdue(self, cur, now: float, head: Mapping, deadline_s: float,
                clock: tuple[int, int]) -> bool:
        """Whether to stop waiting for the seed and send the heartbeat: `deadline_s` after
        `cur.open_at`, and with confirmations also half the epoch gone (`clock`: Uptime's
        genesis and epoch length; `elapsed`): the seed needs `confirmations` blocks, and then
        the POSTs' deadline and the heartbeat's own block must still fit in the epoch."""
        if now <= cur.open_at + deadline_s:
            return False
        if not self.confirmations:
            return True
        return self.elapsed(cur.epoch, now, head, clock) >= clock[1] / 2
