"""The provider's standing in the registry: active, or jailed / below the minimum stake.

Read from the chain only when it may have changed, not on every block (issue 15: an idle node
must cost its RPC endpoint less than a call a second): when the registry logged an event naming
this provider (`mark_stale`, from the chain watcher), when a jail it knows of has ended, and at
the latest every REFRESH_S as a safety net. The registry record it reads also gives the
provider's own offer (`offer`), which the bidder needs for every order."""

from __future__ import annotations

import time

from tessera.errors import ChainError
from tessera.protocol.matching import ProviderOffer
from tessera.provider.context import NodeContext

REFRESH_S = 300.0


class Standing:
    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self._standing: tuple[bool, int] | None = None  # (registry is_active, jailed until)
        self._record: dict | None = None    # the registry's Provider struct, as last read
        self._jailed_until = 0              # the record's jailed_until, whatever the time
        self._read_at = float("-inf")       # monotonic time of the last read
        self._stale = True
        self._now: int | None = None        # the chain's time as of the newest head seen

    def mark_stale(self) -> None:
        """The registry logged something about this provider: read it again before next use."""
        self._stale = True

    def on_head(self, timestamp: int) -> None:
        """The newest block's timestamp (the watcher reads the head anyway): the chain's time
        the jail is measured against, without a call of its own."""
        self._now = timestamp

    def _due(self, now: int) -> bool:
        return (self._stale or self._standing is None
                or time.monotonic() - self._read_at > REFRESH_S
                or (self._standing[1] != 0 and now >= self._jailed_until))   # a jail ended

    def check(self) -> tuple[bool, int]:
        """(registry is_active, jailed until or 0): logged and exported when it changes.

        A jail comes from `Uptime.report_outage` (or the owner); stake below the minimum (for
        example after downtime slashes) also makes the provider inactive. Either way tenants
        cannot lease it, so the node does not bid (docs/uptime.md)."""
        ctx = self.ctx
        now = self._now if self._now is not None else ctx.chain.block_timestamp()
        if not self._due(now):
            return self._standing
        record = ctx.market.registry.provider_record(ctx.address)
        active = ctx.market.registry.is_active(ctx.address)
        self._record, self._jailed_until = record, record["jailed_until"]
        self._read_at, self._stale = time.monotonic(), False
        until = record["jailed_until"] if record["jailed_until"] > now else 0
        ctx.metrics.jailed_until.set(until)
        ctx.metrics.registry_active.set(1 if active else 0)
        standing, before = (active, until), self._standing
        self._standing = standing
        if standing != (before if before is not None else (True, 0)):
            if until:
                ctx.log("jailed", "warning", until=until, seconds_left=until - now)
            elif not active:
                ctx.log("inactive", "warning", stake=record["stake"],
                        reason="stake below the registry's minimum")
            else:
                ctx.log("active-again")
        return standing

    def offer(self) -> ProviderOffer:
        """This provider's offer as the registry has it (provider/registration.py's
        `registered_offer`, from the record `check` keeps instead of two more calls)."""
        active, _ = self.check()
        record = self._record
        if record is None or record["registered_at"] == 0:
            raise ChainError("this provider is not registered")
        return ProviderOffer(
            address=self.ctx.address, active=active, gpu_model=record["gpu_model"],
            gpu_count=record["gpu_count"], gpu_memory_mb=record["gpu_memory_mb"],
            benchmark_score=record["benchmark_score"], endpoint=record["endpoint"],
            price_floor=record["price_floor"])
