"""DiLoCo against synchronous data parallelism, side by side, at equal training tokens.

Same corpus (builtin stdlib), same model, 4 workers, several seeds:
  sync     gradients averaged every step, one AdamW state (true data parallelism)
  DiLoCo   H inner AdamW steps per worker between syncs, outer Nesterov SGD (lr 0.7, m 0.9),
           pseudo-gradients and broadcasts in fp32 or int8 (error feedback)
Bytes are counted analytically (syncs x workers x parameters x bytes per element, up + down)
and as serialized on the wire. Also: churn (a worker leaves at mid-run), a worker joining at
mid-run with a zero first pseudo-gradient (against leaving it out of that round), and a
bandwidth model (per-worker links at --mbit; compute time measured, communication time =
serialized bytes / rate, no overlap).

    .venv/bin/python bench/diloco.py            # the full run (~12 min on 2 CPU cores)
    .venv/bin/python bench/diloco.py --quick    # a smoke run (~1 min)
    .venv/bin/python bench/diloco.py --network  # measured over real leases and paced links

--network measures what the model above estimates: a local devnet, real provider processes, real
leases, the tenant's coordinator talking HTTP to each worker through its own TCP proxy whose two
directions are paced to --mbit (every byte waits for its transmission time on a link of that
rate; no extra latency), against the same jobs over unpaced loopback, side by side. Workers'
compute time is what each worker reports per round; the fraction is their total compute over
(workers x the job's wall time from the first round's start to the last round's end), so round
overheads (HTTP, polling, the coordinator's outer step, evaluation and checkpoint) count as
waiting. It is written under "network" in bench/results/diloco.json, leaving the rest as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import threading
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tessera.compute.corpus import build_stdlib_corpus, sha256_hex
from tessera.compute.diloco import DilocoConfig
from tessera.compute.diloco_simulation import run_diloco, run_sync_baseline
from tessera.logs import EventLog
from tessera.protocol.workload import TrainingWorkload

RESULTS = Path(__file__).parent / "results" / "diloco.json"
WORKERS = 4


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(m: float, s: float, digits: int = 3) -> str:
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--mbit", type=float, default=100.0, help="per-worker link rate, Mbit/s")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--network", action="store_true",
                    help="measure the compute fraction over real leases and paced links")
    ap.add_argument("--network-workers", type=int, default=WORKERS)
    ap.add_argument("--network-rounds", type=int, default=6)
    args = ap.parse_args()
    if args.network:
        network_main(args)
        return

    if args.quick:
        steps, hs, seeds, side_h = 300, [10, 30], args.seeds or 2, 30
    else:
        steps, hs, seeds, side_h = 2500, [10, 50, 100, 250], args.seeds or 3, 100
    base = TrainingWorkload(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8,
                            learning_rate=3e-3, eval_batches=16, device="cpu", threads=1)
    data = build_stdlib_corpus(1 << 20)
    rate = args.mbit * 1e6 / 8  # bytes per second
    console = Console(width=170)

    runs: dict[str, list[dict]] = {}
    plan = [("sync", None, "none")] + [(f"H={h} {c}", h, c) for h in hs for c in ("fp32", "int8")]
    side = [("churn", side_h, "int8"), ("join-zero", side_h, "int8"), ("join-skip", side_h, "int8")]
    t_all = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("runs", total=seeds * (len(plan) + len(side)))
        for seed in range(seeds):
            w = base.model_copy(update={"seed": 1000 + seed})
            for name, h, comp in plan + side:
                progress.update(task, description=f"seed {seed} {name}")
                cfg = DilocoConfig(workload=w, workers=WORKERS, inner_steps=h or 1,
                                   rounds=steps // (h or 1),
                                   compression="int8" if comp == "int8" else "none")
                t0 = time.perf_counter()
                if h is None:
                    r = run_sync_baseline(cfg, data, steps=steps)
                    rec = {"loss": r.final_val_loss, "syncs": steps, "tokens": r.tokens,
                           "bytes_analytic": r.bytes_analytic, "bytes_serialized": r.bytes_serialized,
                           "per_sync_worker_bytes": r.bytes_serialized // (steps * WORKERS)}
                else:
                    half = cfg.rounds // 2
                    kw = {}
                    if name == "churn":
                        kw["membership"] = lambda r_, half=half: range(4) if r_ < half else range(3)
                    elif name.startswith("join"):
                        kw["membership"] = lambda r_, half=half: range(3) if r_ < half else range(4)
                        kw["join_policy"] = "zero" if name == "join-zero" else "skip"
                    r = run_diloco(cfg, data, **kw)
                    rec = {"loss": r.final_val_loss, "syncs": cfg.rounds, "tokens": r.tokens,
                           "bytes_analytic": r.bytes_up_analytic + r.bytes_down_analytic,
                           "bytes_serialized": r.bytes_up + r.bytes_down, "bytes_join": r.bytes_join,
                           "compute_s": r.compute_s, "inner_step_s": r.inner_step_s,
                           "comm_s": sum(r.round_bytes_per_worker) / rate}
                rec["wall_s"] = time.perf_counter() - t0
                runs.setdefault(name, []).append(rec)
                progress.advance(task)
    wall_all = time.perf_counter() - t_all

    # bandwidth model for sync: per step, each worker computes one batch (the measured DiLoCo
    # inner-step time, same model and batch) and sends + receives one fp32 gradient
    step_s = statistics.fmean(x["inner_step_s"] for k, v in runs.items() if k.startswith("H=") for x in v)
    sync_comm_step = 2 * runs["sync"][0]["per_sync_worker_bytes"] / rate
    sync_fraction = step_s / (step_s + sync_comm_step)

    sync_loss = [x["loss"] for x in runs["sync"]]
    rows, summary = [], {}
    for name, _, _ in plan:
        v = runs[name]
        losses = [x["loss"] for x in v]
        gaps = [100 * (x["loss"] - s) / s for x, s in zip(v, sync_loss, strict=True)]
        ba, bs = v[0]["bytes_analytic"], v[0]["bytes_serialized"]
        ratio_a = runs["sync"][0]["bytes_analytic"] / ba
        ratio_s = runs["sync"][0]["bytes_serialized"] / bs
        frac = (sync_fraction if name == "sync" else
                statistics.fmean(x["compute_s"] / (x["compute_s"] + x["comm_s"]) for x in v))
        summary[name] = {"loss_mean": mean_sd(losses)[0], "loss_sd": mean_sd(losses)[1],
                         "gap_pct_mean": mean_sd(gaps)[0], "gap_pct_sd": mean_sd(gaps)[1],
                         "gap_pct_max": max(gaps), "syncs": v[0]["syncs"], "tokens": v[0]["tokens"],
                         "bytes_analytic": ba, "bytes_serialized": bs, "ratio_analytic": ratio_a,
                         "ratio_serialized": ratio_s, "compute_fraction": frac}
        rows.append((name, str(v[0]["syncs"]), fmt(*mean_sd(losses)),
                     "—" if name == "sync" else fmt(*mean_sd(gaps), digits=2),
                     f"{ba / 1e6:,.2f}", f"{bs / 1e6:,.2f}",
                     "1" if name == "sync" else f"{ratio_a:,.0f}",
                     "1" if name == "sync" else f"{ratio_s:,.0f}", f"{100 * frac:.1f}%"))

    table = Table(title=f"DiLoCo vs sync, {WORKERS} workers, {steps} steps/worker, {seeds} seeds, "
                        f"links {args.mbit:g} Mbit/s")
    for col in ("method", "syncs", "held-out loss", "gap vs sync %", "MB analytic", "MB serialized",
                "sync/this analytic", "sync/this serialized", "compute fraction"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)

    ref = f"H={side_h} int8"
    side_summary = {}
    side_table = Table(title=f"workers leaving and joining at mid-run (H={side_h}, int8)")
    for col in ("run", "held-out loss", "vs all 4 workers %", "join download MB"):
        side_table.add_column(col, justify="left" if col == "run" else "right")
    for name in [ref, "churn", "join-zero", "join-skip"]:
        v = runs[name]
        losses = [x["loss"] for x in v]
        diffs = [100 * (x["loss"] - y["loss"]) / y["loss"] for x, y in zip(v, runs[ref], strict=True)]
        side_summary[name] = {"loss_mean": mean_sd(losses)[0], "loss_sd": mean_sd(losses)[1],
                              "vs_full_pct_mean": mean_sd(diffs)[0], "vs_full_pct_sd": mean_sd(diffs)[1],
                              "bytes_join": v[0].get("bytes_join", 0)}
        side_table.add_row(name if name != ref else f"{ref} (all 4, no churn)", fmt(*mean_sd(losses)),
                           "—" if name == ref else fmt(*mean_sd(diffs), digits=2),
                           f"{v[0].get('bytes_join', 0) / 1e6:.3f}")
    console.print(side_table)
    zero_vs_skip = [100 * (x["loss"] - y["loss"]) / y["loss"]
                    for x, y in zip(runs["join-zero"], runs["join-skip"], strict=True)]
    side_summary["join_zero_vs_skip_pct"] = mean_sd(zero_vs_skip)

    def goal(min_ratio: float, max_gap: float) -> dict:
        ok = [n for n, s in summary.items() if n != "sync" and s["ratio_serialized"] >= min_ratio
              and s["gap_pct_mean"] <= max_gap]
        ok_a = [n for n, s in summary.items() if n != "sync" and s["ratio_analytic"] >= min_ratio
                and s["gap_pct_mean"] <= max_gap]
        return {"met_serialized": bool(ok), "configs_serialized": ok, "met_analytic": bool(ok_a),
                "configs_analytic": ok_a}

    goals = {
        ">=400x fewer bytes, gap <=2%": goal(400, 2.0),
        ">=1000x fewer bytes, gap <=3%": goal(1000, 3.0),
        "churn loss within 3%": {"met": abs(side_summary["churn"]["vs_full_pct_mean"]) <= 3.0},
        f"compute fraction >=90% at {args.mbit:g} Mbit/s": {
            "configs": [n for n, s in summary.items() if s["compute_fraction"] >= 0.9]},
    }
    console.print_json(json.dumps(goals))
    console.print(f"inner step {1e3 * step_s:.2f} ms/worker; sync compute fraction "
                  f"{100 * sync_fraction:.1f}%; total wall {wall_all:.0f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "workload": base.model_dump(), "workers": WORKERS, "steps_per_worker": steps,
        "seeds": [1000 + s for s in range(seeds)], "dataset_sha256": sha256_hex(data),
        "link_mbit": args.mbit, "inner_step_s": step_s, "summary": summary,
        "churn_and_join": side_summary, "goals": goals, "runs": runs, "wall_s": wall_all,
        "quick": args.quick}, indent=2))
    console.print(f"wrote {args.out}")


# ---------------------------------------------------------------------------------------------
# --network: the compute fraction measured over real leases, with paced links


class Pacer:
    """One direction of a link: each chunk is released once the link, busy with the chunks before
    it, would have finished transmitting it at `rate` bytes per second."""

    def __init__(self, rate: float):
        self.rate, self.free_at = rate, 0.0

    async def send(self, size: int) -> None:
        now = time.monotonic()
        self.free_at = max(now, self.free_at) + size / self.rate
        await asyncio.sleep(self.free_at - now)


class PacedLink:
    """A TCP proxy in front of one worker's endpoint, both directions paced: that worker's link."""

    def __init__(self, target_port: int, rate: float):
        self.target_port, self.down, self.up = target_port, Pacer(rate), Pacer(rate)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait()

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _connection(self, client_r, client_w) -> None:
        try:
            worker_r, worker_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(self._pump(client_r, worker_w, self.down),
                                 self._pump(worker_r, client_w, self.up))
        except asyncio.CancelledError:  # the link is shut down (end of the job)
            client_w.close()

    @staticmethod
    async def _pump(reader, writer, pacer: Pacer) -> None:
        try:
            while data := await reader.read(16384):
                await pacer.send(len(data))
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _shutdown(self) -> None:
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)


def network_job(tenant, spec, dataset, rate: float | None, workdir: Path) -> dict:
    """One DiLoCo job over real leases; links paced to `rate` bytes/s (None: plain loopback)."""
    from rich.console import Console as QuietConsole

    from tessera.tenant.bidding import lease_nodes
    from tessera.tenant.coordinator import DilocoCoordinator, WorkerLease
    from tessera.tenant.multinode import diloco_config, wait_started, worker_workload

    leasing = lease_nodes(tenant, spec, QuietConsole(quiet=True))
    leases = leasing.leases
    if len(leases) != spec.order.nodes:
        raise SystemExit(f"only {len(leases)} of {spec.order.nodes} providers bid")
    workers, links = [], []
    for index, (lease_id, verdict) in enumerate(leases):
        tenant.send_manifest(lease_id, worker_workload(spec, index, len(leases)), dataset)
        endpoint = verdict.offer.endpoint
        if rate is not None:
            links.append(PacedLink(int(endpoint.rsplit(":", 1)[1]), rate))
            endpoint = f"http://127.0.0.1:{links[-1].port}"
        workers.append(WorkerLease(lease_id, verdict.bid.provider, endpoint, index=index))
    wait_started(tenant, [w.lease_id for w in workers])
    for worker in workers:  # the worker process has loaded torch and its shard: not timed
        while not any(e.get("event") == "start" for e in tenant.logs(worker.lease_id)):
            time.sleep(0.1)
    coordinator = DilocoCoordinator.start(tenant, diloco_config(spec, len(workers)), dataset,
                                          workers, workdir, round_timeout_s=600,
                                          log=EventLog("coordinator", stream=io.StringIO()))
    t0 = time.perf_counter()
    reports = coordinator.run()
    wall = time.perf_counter() - t0
    for link in links:
        link.close()
    for worker in workers:
        tenant.close(worker.lease_id)
    if any(r.contributors != len(workers) for r in reports):
        raise SystemExit(f"a worker was dropped: {[r.dropped for r in reports]}")
    compute = sum(r.worker_compute_s for r in reports)
    return {"wall_s": wall, "worker_compute_s": compute,
            "compute_fraction": compute / (len(workers) * wall),
            "round_s": [r.seconds for r in reports],
            "bytes": sum(r.bytes_up + r.bytes_down for r in reports),
            "final_val_loss": reports[-1].val_loss}


def network_main(args) -> None:
    import tempfile

    from tessera.chain.accounts import devnet_account
    from tessera.chain.client import Chain
    from tessera.chain.devnet import Devnet, free_port
    from tessera.daemons import stop, wait_healthy
    from tessera.demo import DemoProvider, start_provider
    from tessera.protocol.jobspec import JobSpec
    from tessera.tenant.client import Tenant
    from tessera.tenant.flow import load_dataset

    load_before = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="tessera-bench-diloco-"))
    os.environ["TESSERA_HOME"] = str(home)
    console = Console(width=150)
    devnet = Devnet(home / "devnet")
    network = devnet.up(port=free_port())
    accounts = [2, 3, 4, 6, 7, 8, 9][:args.network_workers]
    procs = {}
    try:
        for i, account in enumerate(accounts):
            p = DemoProvider(f"w{i}", account, "1.00", 1)
            procs[p.name] = start_provider(p, home, devnet.network_file)
            wait_healthy({p.name: procs[p.name]})
        tenant = Tenant(Chain(network, devnet_account(5)))
        rate = args.mbit * 1e6 / 8
        rows, results = [], {}
        for h in (50, 250):
            spec = JobSpec.model_validate({
                "name": f"bench-h{h}", "mode": "diloco",
                "order": {"max_price_per_gpu_hour": "3.00", "duration": "30m",
                          "nodes": len(accounts), "bid_window": "3s"},
                "dataset": {"source": "builtin:stdlib", "max_bytes": 1 << 20},
                "workload": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32,
                             "batch_size": 8, "learning_rate": 3e-3, "eval_batches": 16,
                             "device": "cpu", "threads": 1, "seed": 1000},
                "diloco": {"inner_steps": h, "rounds": args.network_rounds,
                           "compression": "int8", "replace_dropped": False}})
            dataset = load_dataset(spec.dataset)
            for label, link in (("loopback", None), (f"{args.mbit:g} Mbit/s", rate)):
                console.print(f"H={h}, {label} ...")
                run = network_job(tenant, spec, dataset, link, home / f"h{h}-{label[:4]}")
                results[f"H={h} int8, {label}"] = run
                rows.append((f"H={h} int8", label, str(args.network_rounds),
                             f"{run['wall_s']:.1f}", f"{run['worker_compute_s']:.1f}",
                             f"{100 * run['compute_fraction']:.1f}%"))
                while any(httpx.get(f"{url}/healthz").json()["active_leases"]
                          for _, url in procs.values()):  # free for the next order
                    time.sleep(0.2)
    finally:
        for proc, _ in procs.values():
            stop(proc)
        devnet.down()
    load = {"before": load_before, "after": os.getloadavg()}
    table = Table(title=f"compute fraction measured over real leases, {len(accounts)} workers "
                        f"(1 thread each) on {os.cpu_count()} CPU cores; load average (1, 5, 15 "
                        f"min) {load['before']} before, {load['after']} after")
    for col in ("job", "links", "rounds", "wall s", "worker compute s (sum)", "compute fraction"):
        table.add_column(col, justify="left" if col in ("job", "links") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    saved["network"] = {"workers": len(accounts), "cpu_cores": os.cpu_count(),
                        "link_mbit": args.mbit, "rounds": args.network_rounds,
                        "load_average": load, "runs": results}
    args.out.write_text(json.dumps(saved, indent=2))
    console.print(f"wrote {args.out} (key \"network\")")


if __name__ == "__main__":
    main()
