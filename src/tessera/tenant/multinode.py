"""A DiLoCo job on several leased providers, as `tessera job submit` runs it for mode = "diloco"."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from tessera.compute.diloco import DilocoConfig
from tessera.compute.evaluate import evaluate_model
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.workload import DilocoWorkerWorkload
from tessera.tenant.client import Tenant, TenantError
from tessera.tenant.coordinator import DilocoCoordinator, RoundReport, WorkerLease
from tessera.tenant.flow import lease_nodes, money


def diloco_config(spec: JobSpec, workers: int) -> DilocoConfig:
    d = spec.diloco
    return DilocoConfig(workload=spec.workload, workers=workers, inner_steps=d.inner_steps,
                        rounds=d.rounds, compression=d.compression, aggregation=d.aggregation)


def wait_running(tenant: Tenant, lease_ids: list[int], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    for lease_id in lease_ids:
        while (status := tenant.status(lease_id)).status != "running":
            if status.status in ("failed", "closed") or time.monotonic() > deadline:
                raise TenantError(f"worker on lease {lease_id} did not start: {status.status} "
                                  f"{status.detail}")
            time.sleep(0.1)


def run_diloco_job(tenant: Tenant, spec: JobSpec, dataset: bytes, console: Console,
                   results_dir: Path) -> dict:
    summary: dict = {"job": spec.name, "mode": "diloco", "tenant": tenant.chain.address,
                     "transactions": {}}
    start_balance = tenant.market.payment_balance(tenant.chain.address)
    leases = lease_nodes(tenant, spec, console, summary)
    workers = []
    for index, (lease_id, verdict) in enumerate(leases):
        workload = DilocoWorkerWorkload(model=spec.workload, inner_steps=spec.diloco.inner_steps,
                                        worker=index, workers=len(leases),
                                        compression=spec.diloco.compression)
        tenant.send_manifest(lease_id, workload, dataset)
        workers.append(WorkerLease(lease_id, verdict.bid.provider, verdict.offer.endpoint))
    wait_running(tenant, [w.lease_id for w in workers])
    console.print(f"{len(workers)} workers running; coordinator (this process) starts "
                  f"{spec.diloco.rounds} rounds of {spec.diloco.inner_steps} inner steps")

    def show(report: RoundReport) -> None:
        console.print(f"round {report.round + 1}/{spec.diloco.rounds}: {report.contributors}/"
                      f"{report.workers} workers, held-out loss {report.val_loss:.4f}, "
                      f"{report.bytes_up + report.bytes_down:,} bytes moved, {report.seconds:.1f} s")
        for line in report.dropped:
            console.print(f"  [yellow]dropped[/] {line}")

    config = diloco_config(spec, len(workers))
    job_dir = results_dir / f"diloco-order-{summary['order_id']}"
    coordinator = DilocoCoordinator(tenant, config, dataset, workers, job_dir / "coordinator.pt",
                                    round_timeout_s=spec.diloco.round_timeout, on_round=show)
    reports = coordinator.run()
    coordinator.save_model(job_dir / "model.pt")
    recomputed = evaluate_model(job_dir / "model.pt", dataset)
    settlements = []
    for worker in workers:
        if worker.active:
            settlement = tenant.close(worker.lease_id)
            settlements.append(settlement.__dict__)
    summary.update({
        "workers": [{"lease_id": w.lease_id, "provider": w.provider, "finished": w.active,
                     "dropped_because": w.reason} for w in workers],
        "rounds": [r.__dict__ for r in reports], "final_val_loss": recomputed,
        "bytes_moved": sum(r.bytes_up + r.bytes_down for r in reports),
        "model": str(job_dir / "model.pt"), "settlements": settlements,
        "tenant_spent": start_balance - tenant.market.payment_balance(tenant.chain.address),
    })
    console.print(f"final held-out loss {recomputed:.4f} (recomputed from the saved model); "
                  f"{summary['bytes_moved']:,} bytes moved in {len(reports)} rounds; "
                  f"tenant paid {money(summary['tenant_spent'])}; model at {job_dir / 'model.pt'}")
    return summary
