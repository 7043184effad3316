"""Job specs and tenant steps that several end-to-end test modules share."""

from __future__ import annotations

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

