"""The checkpoint states of leases whose worker no longer runs, pruned by the node.

A running DiLoCo worker prunes its lease's states after each answer
(`compute.diloco_worker.prune_checkpoints`, by `states_kept_until`); a stopped one prunes
nothing. Review 32, finding 2: a closed lease kept its last hours of full states (12 bytes a
parameter each) and the answers set aside for good, so many short verified leases filled a
provider's disk in proportion. The node now applies the same rule to stopped leases every
PRUNE_EVERY_S, outside its lock (deleting is file I/O), and forgets a lease once none of its
states is left. What stays of a lease (its logs, results, round answers and pseudo-gradients)
is small beside the states and is not pruned (not built).
"""

from __future__ import annotations

import time

from tessera.compute.diloco_worker import checkpoint_folders, prune_checkpoints
from tessera.provider.context import NodeContext
from tessera.provider.state import ACTIVE_STATUSES

PRUNE_EVERY_S = 600.0


class StoppedLeaseStates:
    """`sweep`, from the node's loop: prune the states of leases not active any more."""

    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self._next = 0.0
        self._done: set[int] = set()     # leases with no states left (rebuilt after a restart)

    def sweep(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + PRUNE_EVERY_S
        for record in self.ctx.state.leases():
            if record.lease_id in self._done or record.status in ACTIVE_STATUSES:
                continue
            out = self.ctx.jobs.folder(record.lease_id)
            prune_checkpoints(out)
            if not checkpoint_folders(out):
                self._done.add(record.lease_id)
