"""Uptime heartbeats: one transaction per epoch naming a recent block hash (docs/uptime.md)."""

from __future__ import annotations

import time

from tessera.chain.client import tx_hash
from tessera.errors import ChainError, RpcUnavailable
from tessera.provider.context import NodeContext


class Heartbeats:
    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self._beat_epoch: int | None = None   # last epoch known to hold our heartbeat
        self._beat_retry_at = 0.0             # monotonic time before which a refused beat waits

    def beat(self) -> int | None:
        """Prove liveness for the current uptime epoch once (docs/uptime.md); the epoch or None.

        A refused heartbeat (epoch turned, hash too old, not registered) is logged and retried
        after a pause; it never stops the watcher. RpcUnavailable propagates to `watch`."""
        if time.monotonic() < self._beat_retry_at:
            return None
        chain, address = self.ctx.chain, self.ctx.address
        uptime = self.ctx.uptime
        epoch = uptime.current_epoch()
        if epoch == self._beat_epoch:
            return None
        if uptime.beats(address, epoch):
            self._beat_epoch = epoch
            return None
        try:
            latest = chain.rpc(lambda: chain.w3.eth.get_block("latest"), what="get block")
            # Name the latest block's parent: some nodes (anvil) estimate gas in the latest
            # block's own context, where BLOCKHASH(latest) is not yet known.
            number, block_hash = latest["number"] - 1, bytes(latest["parentHash"])
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
