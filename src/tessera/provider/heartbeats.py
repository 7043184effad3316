"""Uptime heartbeats: one transaction per epoch naming a recent block hash (docs/uptime.md).

The epoch is computed from the head block the watcher has just read, with Uptime's genesis and
epoch length (immutable, read once): `(timestamp - genesis) // epoch_length` is what
`Uptime.current_epoch` answers for that block, so no call is made for it (issue 15). Whether the
epoch already holds this node's heartbeat is asked once per epoch."""

from __future__ import annotations

import time
from collections.abc import Mapping

from tessera.chain.client import tx_hash
from tessera.errors import ChainError, RpcUnavailable
from tessera.provider.context import NodeContext


class Heartbeats:
    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self._beat_epoch: int | None = None   # last epoch known to hold our heartbeat
        self._beat_retry_at = 0.0             # monotonic time before which a refused beat waits
        self._clock: tuple[int, int] | None = None   # Uptime (genesis, epoch_length)

    def epoch_of(self, timestamp: int) -> int:
        """The uptime epoch of a block with this timestamp (Uptime._current_epoch's rule)."""
        if self._clock is None:
            uptime = self.ctx.uptime
            self._clock = (uptime.genesis(), uptime.epoch_length())
        genesis, length = self._clock
        return (timestamp - genesis) // length

    def beat(self, head: Mapping | None = None) -> int | None:
        """Prove liveness for the current uptime epoch once (docs/uptime.md); the epoch or None.
        `head`: the latest block as the watcher just read it (read here when None).

        A refused heartbeat (epoch turned, hash too old, not registered) is logged and retried
        after a pause; it never stops the watcher. RpcUnavailable propagates to `watch`."""
        if time.monotonic() < self._beat_retry_at:
            return None
        chain, address = self.ctx.chain, self.ctx.address
        if head is None:
            head = chain.rpc(lambda: chain.w3.eth.get_block("latest"), what="get block")
        epoch = self.epoch_of(head["timestamp"])
        if epoch == self._beat_epoch:
            return None
        uptime = self.ctx.uptime
        if uptime.beats(address, epoch):
            self._beat_epoch = epoch
            return None
        try:
            # Name the head's parent: some nodes (anvil) estimate gas in the latest block's
            # own context, where BLOCKHASH(latest) is not yet known.
            number, block_hash = head["number"] - 1, bytes(head["parentHash"])
            receipt = uptime.heartbeat(epoch, number, block_hash)
        except RpcUnavailable:
            raise
        except ChainError as exc:
            self.ctx.metrics.heartbeats.labels("refused").inc()
            self._beat_retry_at = time.monotonic() + 2.0
            self.ctx.log("heartbeat-refused", "warning", epoch=epoch, error=str(exc))
            return None
        self._beat_epoch = epoch
        self.ctx.metrics.heartbeats.labels("sent").inc()
        self.ctx.metrics.heartbeat_epoch.set(epoch)
        self.ctx.log("heartbeat", epoch=epoch, block=number, tx=tx_hash(receipt),
                     gas=receipt["gasUsed"])
        return epoch
