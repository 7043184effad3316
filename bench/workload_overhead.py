"""Training throughput under the provider against the same loop run bare, side by side.

Ways to run the same workload on the same data, alternated (rotated order) over several repeats:
  bare      train() called in this process
  runner    the provider's WorkloadRunner: a separate child process (own process group,
            RLIMIT_DATA memory cap, thread env, wall-clock watchdog) running tessera.compute.job
  provider  (only with --provider; needs anvil) a real lease: a `tessera provider run` daemon
            with its chain watcher and HTTP server beside the job, a tenant's signed manifest
Two numbers per mode, both reported:
  tokens/s  measured by the training loop itself (steady state, excludes process start-up)
  wall s    end to end as the caller sees it (includes interpreter + torch import in the child)

    .venv/bin/python bench/workload_overhead.py [--steps 300] [--repeats 5] [--quick] [--provider]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from tessera.compute.corpus import build_stdlib_corpus, write_dataset
from tessera.compute.train import train
from tessera.protocol.workload import TrainingWorkload
from tessera.provider.runner import WorkloadRunner

RESULTS = Path(__file__).parent / "results" / "workload_overhead.json"


def run_bare(workload: TrainingWorkload, data: bytes, scratch: Path) -> dict:
    t0 = time.perf_counter()
    result = train(workload, data, scratch, resume=False)
    return {"tokens_per_s": result.timing["tokens_per_s"], "wall_s": time.perf_counter() - t0,
            "train_wall_s": result.timing["wall_s"]}


def done_timing(progress: list[dict]) -> dict:
    return next(p for p in reversed(progress) if p.get("event") == "done")["timing"]


def run_runner(workload: TrainingWorkload, dataset: Path, scratch: Path) -> dict:
    runner = WorkloadRunner(timeout_s=3600, memory_limit_mb=8192, threads=workload.threads)
    t0 = time.perf_counter()
    run = runner.start(workload, dataset, dataset.name, scratch)
    status = run.wait()
    wall = time.perf_counter() - t0
    assert status.state == "succeeded", status
    timing = done_timing(run.progress())
    return {"tokens_per_s": timing["tokens_per_s"], "wall_s": wall, "train_wall_s": timing["wall_s"]}


def run_provider(tenant, workload: TrainingWorkload, data: bytes) -> dict:
    from tessera.protocol.jobspec import JobSpec
    from tessera.protocol.matching import rank

    spec = JobSpec.model_validate({"order": {"max_price_per_gpu_hour": "3.00", "duration": "1h",
                                             "bid_window": "3s"},
                                   "workload": workload.model_dump()})
    order_id, _ = tenant.post_order(spec)
    lease_id, _ = tenant.accept(rank(tenant.collect_bids(order_id, 3))[0])
    t0 = time.perf_counter()
    tenant.send_manifest(lease_id, spec.workload, data)
    final = tenant.follow(lease_id, poll_s=0.05)
    wall = time.perf_counter() - t0
    assert final.status == "succeeded", final
    timing = done_timing(tenant.logs(lease_id))
    tenant.close(lease_id)
    return {"tokens_per_s": timing["tokens_per_s"], "wall_s": wall, "train_wall_s": timing["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="100 steps, 3 repeats")
    parser.add_argument("--provider", action="store_true",
                        help="also run a full lease through a provider daemon on a devnet")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 100, 3
    console = Console()
    workload = TrainingWorkload(steps=args.steps, threads=args.threads, device="cpu",
                                eval_every=args.steps, checkpoint_every=args.steps)
    data = build_stdlib_corpus(1 << 20)
    home = Path(tempfile.mkdtemp(prefix="tessera-overhead-"))
    dataset = write_dataset(data, home / "blobs")
    modes = ["bare", "runner"] + (["provider"] if args.provider else [])
    samples: dict[str, list[dict]] = {m: [] for m in modes}
    teardown, tenant = [], None
    try:
        if args.provider:
            tenant = start_lease_stack(home, args.threads, teardown)
        train(workload.model_copy(update={"steps": 5}), data, home / "warm-up", resume=False)
        for r in range(args.repeats):
            order = modes[r % len(modes):] + modes[:r % len(modes)]  # rotate every repeat
            for mode in order:
                scratch = home / f"{mode}-{r}"
                if mode == "bare":
                    sample = run_bare(workload, data, scratch)
                elif mode == "runner":
                    sample = run_runner(workload, dataset, scratch)
                else:
                    sample = run_provider(tenant, workload, data)
                samples[mode].append(sample)
                console.print(f"repeat {r + 1}/{args.repeats} {mode:>8}: "
                              f"{sample['tokens_per_s']:,.0f} tokens/s, {sample['wall_s']:.2f} s")
    finally:
        for undo in reversed(teardown):
            undo()

    import_s = statistics.median(child_import_seconds() for _ in range(3))
    keys = ("tokens_per_s", "wall_s", "train_wall_s")
    med = {m: {k: statistics.median(s[k] for s in runs) for k in keys}
           for m, runs in samples.items()}
    spread = {m: {"tokens_per_s_min": min(s["tokens_per_s"] for s in runs),
                  "tokens_per_s_max": max(s["tokens_per_s"] for s in runs)}
              for m, runs in samples.items()}
    # per-repeat ratios (each pair ran back to back) are steadier than a ratio of medians
    pair_ratios = {m: [s["tokens_per_s"] / b["tokens_per_s"]
                       for s, b in zip(samples[m], samples["bare"], strict=True)] for m in modes}
    table = Table(title=f"same training loop: {args.steps} steps, {args.threads} thread(s), "
                        f"median of {args.repeats}")
    for column in ("mode", "tokens/s", "ratio", "ratio min-max", "wall s", "start-up s"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, m in med.items():
        table.add_row(mode, f"{m['tokens_per_s']:,.0f}", f"{statistics.median(pair_ratios[mode]):.3f}",
                      f"{min(pair_ratios[mode]):.3f}-{max(pair_ratios[mode]):.3f}",
                      f"{m['wall_s']:.2f}", f"{m['wall_s'] - m['train_wall_s']:.2f}")
    console.print(table)
    console.print("tokens/s and ratio: the training loop's own steady-state measure, per repeat "
                  "against the bare run beside it; wall s: end to end; start-up s: wall s minus "
                  f"the loop's time (a fresh `python -c 'import tessera.compute.job'` takes "
                  f"{import_s:.2f} s here)")
    ratio = statistics.median(pair_ratios["runner"])
    verdict = "meets" if ratio >= 0.95 else "MISSES"
    console.print(f"runner/bare steady-state throughput {ratio:.3f}: {verdict} the 0.95 goal")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "steps": args.steps, "threads": args.threads, "repeats": args.repeats,
        "workload": workload.model_dump(), "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "samples": samples, "median": med, "spread": spread,
        "throughput_ratio_per_repeat": pair_ratios,
        "throughput_ratio": {m: statistics.median(r) for m, r in pair_ratios.items()},
        "wall_ratio": {m: med["bare"]["wall_s"] / med[m]["wall_s"] for m in modes},
        "child_import_s": import_s,
        "goal": {"runner_over_bare_tokens_per_s": 0.95, "met": ratio >= 0.95},
    }, indent=2))
    console.print(f"written to {args.out}")


def child_import_seconds() -> float:
    """What every child pays before training: a fresh interpreter importing torch and the job."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tessera.compute.job"], check=True)
    return time.perf_counter() - t0


def start_lease_stack(home: Path, threads: int, teardown: list):
    """anvil + a provider daemon + a funded tenant, for the --provider mode."""
    from tessera.chain.accounts import devnet_account
    from tessera.chain.client import Chain
    from tessera.chain.devnet import Devnet, free_port
    from tessera.chain.network import load_network
    from tessera.daemons import stop, wait_healthy
    from tessera.demo import DemoProvider, start_provider
    from tessera.tenant.client import Tenant

    devnet = Devnet(home / "devnet")
    devnet.up(port=free_port())
    teardown.append(devnet.down)
    proc, url = start_provider(DemoProvider("bench", 2, "1.00", threads), home,
                               devnet.network_file)
    teardown.append(lambda: stop(proc))
    wait_healthy({"bench": (proc, url)})
    return Tenant(Chain(load_network(devnet.network_file), devnet_account(5)))


if __name__ == "__main__":
    main()
