"""Payouts: withdraw a lease's pay; a verified lease's pay is first released round by round as
its rounds become final, also after the lease closed (docs/verification.md)."""

from __future__ import annotations

import time

from tessera.chain.client import tx_hash
from tessera.chain.market import Lease
from tessera.provider.context import NodeContext


class Payouts:
    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        # Verified leases' pay is held until their rounds are final, also after they close:
        # swept every config.payouts.sweep_every until released and withdrawn.
        self._next_sweep = 0.0
        self._settled: set[int] = set()

    def sweep(self) -> None:
        """Release and withdraw verified leases' pay as their rounds become final; a lease is
        settled once closed, released up to its close and withdrawn."""
        if time.monotonic() < self._next_sweep:
            return
        ctx = self.ctx
        self._next_sweep = time.monotonic() + ctx.config.payouts.sweep_every
        for record in ctx.state.leases():
            if record.lease_id in self._settled:
                continue
            lease = ctx.market.lease(record.lease_id)
            if not ctx.market.is_verified(lease.order_id):
                self._settled.add(record.lease_id)
                continue
            self.withdraw(record.lease_id, lease)
            released_to = max(ctx.settlement.releases(record.lease_id).until, lease.start)
            if not lease.is_open and released_to >= lease.closed_at and \
                    ctx.market.withdrawable(record.lease_id) == 0:
                self._settled.add(record.lease_id)

    def withdraw(self, lease_id: int, lease: Lease | None = None) -> int:
        """Take the lease's pay. A verified lease's pay is released first (its final rounds;
        it stays in escrow until then, also after the lease closed). `lease`: the lease as
        the caller has just read it, to save reading it again."""
        ctx = self.ctx
        lease = lease or ctx.market.lease(lease_id)
        if ctx.market.is_verified(lease.order_id):
            released = ctx.settlement.release_ready(lease_id, lease.order_id)
            if released is not None:
                ctx.log("released", lease_id=lease_id, amount=released.amount,
                        withheld=released.withheld, to_round=released.to_round, tx=released.tx)
        elif not lease.is_open:
            return 0
        if ctx.market.withdrawable(lease_id) == 0:
            return 0
        receipt = ctx.market.withdraw(lease_id)
        amount = ctx.market.withdrawn_event(receipt).get("amount_to_provider", 0)
        ctx.metrics.withdrawn.inc(amount)
        ctx.log("withdrew", lease_id=lease_id, amount=amount,
                tx=tx_hash(receipt))
        return amount
