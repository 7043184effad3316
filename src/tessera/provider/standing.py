"""The provider's standing in the registry: active, or jailed / below the minimum stake."""

from __future__ import annotations

from tessera.provider.context import NodeContext


class Standing:
    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self._standing: tuple[bool, int] | None = None  # (registry is_active, jailed until)

    def check(self) -> tuple[bool, int]:
        """(registry is_active, jailed until or 0): logged and exported when it changes.

        A jail comes from `Uptime.report_outage` (or the owner); stake below the minimum (for
        example after downtime slashes) also makes the provider inactive. Either way tenants
        cannot lease it, so the node does not bid (docs/uptime.md)."""
        ctx = self.ctx
        record = ctx.market.registry.provider_record(ctx.address)
        now = ctx.chain.block_timestamp()
        until = record["jailed_until"] if record["jailed_until"] > now else 0
        active = ctx.market.registry.is_active(ctx.address)
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
