"""Training throughput under the provider against the same loop run bare, side by side.

Three ways to run the same workload on the same data, alternated over several repeats:
  bare      train() called in this process
  runner    the provider's JobSupervisor: a separate, resource-limited child process
  provider  a real lease: anvil, a `tessera provider run` daemon (with its chain watcher and
            HTTP server running beside the job), a tenant's signed manifest and dataset upload
Tokens/s is what the training loop itself measured (steady state); wall time includes
process start-up (and for `provider`, the time from manifest sent to job succeeded).

    .venv/bin/python bench/workload_overhead.py [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import Devnet, free_port
from tessera.chain.network import load_network
from tessera.compute.corpus import build_stdlib_corpus, write_dataset
from tessera.compute.train import train
from tessera.demo import DemoProvider, start_provider, stop, wait_healthy
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.matching import rank
from tessera.protocol.workload import TrainingWorkload
from tessera.provider.runner import JobSupervisor
from tessera.tenant.client import Tenant

RESULTS = Path(__file__).parent / "results" / "workload_overhead.json"


def run_bare(workload: TrainingWorkload, data: bytes, scratch: Path) -> dict:
    t0 = time.perf_counter()
    result = train(workload, data, scratch, resume=False)
    return {"tokens_per_s": result.timing["tokens_per_s"], "wall_s": time.perf_counter() - t0}


def done_timing(progress: list[dict]) -> dict:
    return next(p for p in reversed(progress) if p.get("event") == "done")["timing"]


def run_runner(workload: TrainingWorkload, dataset: Path, scratch: Path, lease_id: int) -> dict:
    jobs = JobSupervisor(scratch, threads=workload.threads, memory_limit_mb=8192, timeout_s=3600)
    t0 = time.perf_counter()
    jobs.start(lease_id, {"workload": workload.model_dump(), "dataset_sha256": dataset.name},
               dataset)
    while (outcome := jobs.outcome(lease_id)) is None:
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    assert outcome.succeeded, outcome.detail
    return {"tokens_per_s": done_timing(jobs.progress(lease_id))["tokens_per_s"], "wall_s": wall}


def run_provider(tenant: Tenant, workload: TrainingWorkload, data: bytes) -> dict:
    spec = JobSpec.model_validate({"order": {"max_price_per_gpu_hour": "3.00", "duration": "1h",
                                             "bid_window": "3s"},
                                   "workload": workload.model_dump()})
    order_id, _ = tenant.post_order(spec)
    lease_id, _ = tenant.accept(rank(tenant.collect_bids(order_id, 3))[0])
    t0 = time.perf_counter()
    tenant.send_manifest(lease_id, spec, data)
    final = tenant.follow(lease_id, poll_s=0.05)
    wall = time.perf_counter() - t0
    assert final.status == "succeeded", final
    timing = done_timing(tenant.logs(lease_id))
    tenant.close(lease_id)
    return {"tokens_per_s": timing["tokens_per_s"], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    console = Console()
    workload = TrainingWorkload(steps=args.steps, threads=args.threads, device="cpu",
                                eval_every=args.steps, checkpoint_every=args.steps)
    data = build_stdlib_corpus(1 << 20)
    home = Path(tempfile.mkdtemp(prefix="tessera-overhead-"))
    dataset = write_dataset(data, home / "blobs")
    devnet = Devnet(home / "devnet")
    devnet.up(port=free_port())
    proc, url = start_provider(DemoProvider("bench", 2, "1.00", args.threads), home,
                               devnet.network_file)
    samples: dict[str, list[dict]] = {"bare": [], "runner": [], "provider": []}
    try:
        wait_healthy({"bench": (proc, url)})
        tenant = Tenant(Chain(load_network(devnet.network_file), devnet_account(5)))
        modes = list(samples)
        for r in range(args.repeats):
            for mode in modes[r % 3:] + modes[:r % 3]:  # rotate the order every repeat
                console.print(f"repeat {r + 1}/{args.repeats}: {mode}")
                scratch = home / f"{mode}-{r}"
                if mode == "bare":
                    samples[mode].append(run_bare(workload, data, scratch))
                elif mode == "runner":
                    samples[mode].append(run_runner(workload, dataset, scratch, r + 1))
                else:
                    samples[mode].append(run_provider(tenant, workload, data))
    finally:
        stop(proc)
        devnet.down()

    med = {m: {k: statistics.median(s[k] for s in runs) for k in ("tokens_per_s", "wall_s")}
           for m, runs in samples.items()}
    table = Table(title=f"same training loop, {args.steps} steps, {args.threads} thread(s), "
                        f"median of {args.repeats}")
    for column in ("mode", "tokens/s (loop)", "ratio to bare", "wall s", "wall ratio to bare"):
        table.add_column(column, justify="right" if column != "mode" else "left")
    for mode, m in med.items():
        table.add_row(mode, f"{m['tokens_per_s']:,.0f}",
                      f"{m['tokens_per_s'] / med['bare']['tokens_per_s']:.3f}",
                      f"{m['wall_s']:.2f}", f"{med['bare']['wall_s'] / m['wall_s']:.3f}")
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"steps": args.steps, "threads": args.threads,
                                   "repeats": args.repeats, "samples": samples, "median": med,
                                   "throughput_ratio": {m: med[m]["tokens_per_s"] /
                                                        med["bare"]["tokens_per_s"] for m in med}},
                                  indent=2))
    console.print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
