"""One model trained by DiLoCo across several real provider processes, one of which dies."""

from __future__ import annotations

import pytest
from rich.console import Console

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.workload import DilocoWorkerWorkload
from tessera.tenant.client import Tenant
from tessera.tenant.coordinator import DilocoCoordinator, WorkerLease
from tessera.tenant.flow import lease_nodes, load_dataset
from tessera.tenant.multinode import diloco_config, wait_running

from .conftest import ProviderProcess

pytestmark = pytest.mark.e2e

JOB = {
    "name": "diloco-e2e", "mode": "diloco",
    "order": {"max_price_per_gpu_hour": "3.00", "duration": "10m", "nodes": 3, "bid_window": "3s"},
    "dataset": {"source": "builtin:stdlib", "max_bytes": 65536},
    "workload": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
                 "eval_batches": 2},
    "diloco": {"inner_steps": 10, "rounds": 4, "compression": "int8", "round_timeout": "60s"},
}


def test_three_workers_one_dies_the_job_finishes(tessera_home, devnet, network, provider,
                                                 tmp_path):
    extra = [ProviderProcess(tessera_home, devnet.network_file, account=a, price=p, name=n)
             for a, p, n in ((4, "0.80", "w-two"), (7, "0.90", "w-three"))]
    for node in extra:
        node.start()
    try:
        tenant = Tenant(Chain(network, devnet_account(6)))
        spec = JobSpec.model_validate(JOB)
        dataset = load_dataset(spec.dataset)
        summary: dict = {"transactions": {}}
        leases = lease_nodes(tenant, spec, Console(quiet=True), summary)
        assert len(leases) == 3
        workers = []
        for index, (lease_id, verdict) in enumerate(leases):
            tenant.send_manifest(lease_id, DilocoWorkerWorkload(
                model=spec.workload, inner_steps=spec.diloco.inner_steps, worker=index,
                workers=3, compression="int8"), dataset)
            workers.append(WorkerLease(lease_id, verdict.bid.provider, verdict.offer.endpoint))
        wait_running(tenant, [w.lease_id for w in workers])
        victim = next(n for n in extra if n.address == workers[0].provider) \
            if any(n.address == workers[0].provider for n in extra) else extra[0]

        def kill_after_first_round(report):
            if report.round == 0:
                victim.kill()

        coordinator = DilocoCoordinator(tenant, diloco_config(spec, 3), dataset, workers,
                                        tmp_path / "coordinator.pt", round_timeout_s=60,
                                        on_round=kill_after_first_round)
        reports = coordinator.run()
        assert [r.contributors for r in reports] == [3, 2, 2, 2]
        assert reports[-1].val_loss < reports[0].val_loss
        dead = next(w for w in workers if w.provider == victim.address)
        assert not dead.active and "lease" not in dead.reason.lower() or dead.reason
        assert not tenant.market.lease(dead.lease_id).is_open  # dropped: it stops costing money
        assert all(r.bytes_up > 0 and r.bytes_down > 0 for r in reports)
        # a restarted coordinator resumes from its checkpoint instead of starting over
        again = DilocoCoordinator(tenant, diloco_config(spec, 3), dataset, workers,
                                  tmp_path / "coordinator.pt")
        assert again.coordinator.round == 4 and len(again.reports) == 4
        for worker in workers:
            if worker.active:
                tenant.close(worker.lease_id)
    finally:
        for node in extra:
            node.stop()
