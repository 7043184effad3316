"""Job specs and tenant steps that several end-to-end test modules share."""

from __future__ import annotations

from rich.console import Console

from tessera.protocol.jobspec import JobSpec
from tessera.protocol.matching import rank
from tessera.tenant.client import Tenant

# A one-node training job small enough for two CPU cores.
SMALL_JOB = {
    "name": "e2e",
    "order": {"max_price_per_gpu_hour": "3.00", "duration": "10m", "bid_window": "3s"},
    "dataset": {"source": "builtin:stdlib", "max_bytes": 65536},
    "workload": {"kind": "train-charlm", "steps": 30, "eval_every": 10, "checkpoint_every": 10,
                 "threads": 1},
}

# A verified two-node DiLoCo job: commitments every 2 inner steps, every worker spot-checked.
VERIFIED_ROUNDS = 2
VERIFIED_DILOCO_JOB = {
    "name": "verified-diloco", "mode": "diloco",
    "order": {"max_price_per_gpu_hour": "3.00", "duration": "10m", "nodes": 2, "bid_window": "2s"},
    "dataset": {"source": "builtin:stdlib", "max_bytes": 65536},
    "workload": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
                 "eval_batches": 2},
    "diloco": {"inner_steps": 8, "rounds": VERIFIED_ROUNDS, "compression": "int8",
               "round_timeout": "60s", "replace_dropped": False},
    "verification": {"checkpoint_every": 2, "spot_check_probability": 1.0},
}


def lease_for(tenant: Tenant, spec: JobSpec) -> int:
    """Post `spec`'s order, collect the bids and accept the best valid one; the new lease."""
    order_id, _ = tenant.post_order(spec)
    verdicts = tenant.collect_bids(order_id, spec.order.bid_window)
    ranked = rank(verdicts)
    assert ranked, [v.problems for v in verdicts]
    lease_id, _ = tenant.accept(ranked[0])
    return lease_id



def leased_workers(tenant: Tenant, spec: JobSpec, dataset: bytes, console: Console) -> tuple:
    """A DiLoCo job's leases, as `tessera job submit` takes them: one per node, each sent its
    worker's manifest and running (asserted) before the coordinator starts. Returns the
    `Leasing` and the `WorkerLease`s. (The DiLoCo modules are imported here, not at the top:
    most users of this module run no DiLoCo job.)"""
    from tessera.tenant.bidding import lease_nodes
    from tessera.tenant.multinode import wait_started, worker_workload
    from tessera.tenant.worker_rounds import WorkerLease

    leasing = lease_nodes(tenant, spec, console)
    nodes = spec.order.nodes
    workers = []
    for index, (lease_id, verdict) in enumerate(leasing.leases):
        tenant.send_manifest(lease_id, worker_workload(spec, index, nodes), dataset)
        workers.append(WorkerLease(lease_id, verdict.bid.provider, verdict.offer.endpoint,
                                   index=index, order_id=leasing.order_id))
    assert len(workers) == nodes
    assert all(s.status == "running"
               for s in wait_started(tenant, [w.lease_id for w in workers]).values())
    return leasing, workers
