"""DiLoCo's compute share, measured on the real lease path over shaped links (issue 16).

A local devnet; one provider process per worker, each in its own network namespace whose link
to the tenant (and to the chain) is shaped to --mbit and --rtt-ms (bench/netns_links.py: tc
netem where the kernel has it, else tc tbf for the rate and a delay line for the latency; the
results say which); the tenant's own process is the coordinator, as `tessera job submit` runs it,
with verification on at its defaults (k = 5, p = 0.4: a Merkle root on chain every round, every
payload checked, spot-check replays) or off, and with the one-round-delayed outer update
(`overlap`: workers start round r + 1 while round r is exchanged and checked) or without, side
by side. One thread per worker, and each worker process on a core of its own (pinned once it
has started); everything else on the other cores: this process (the tenant's coordinator: its
outer step, evaluation and replays), anvil, the delay lines (each a process of its own) and the
providers' daemons, as on a provider's machine with a core to spare for its daemon. By default
as many workers as CPU cores minus one.

compute_share = rounds x H x (one inner step's time, measured alone in a fresh process under the
numerics profile the workers train with, before and after the jobs: the faster) / the job's
wall time from the first round's start to the last round's end. The workers' own report of
their compute time over the same wall time is beside it (`reported_share`: it also counts the
worker's commitment hashing and checkpoint writes, which are not inner steps). The share's
noise is that of one step's time, a few per cent: an overlapped job can read slightly above 1.
Each row also has `phase_s`, per round, where the coordinator's time went (RoundReport.phase_s:
exchange = sending and collecting, verify = the checks when they finish before the step (or
starting them), outer_step, send_next = round r + 1's parameters sent right after the outer step
when overlap is off, checks = waiting for the checks that ran beside the step and the send,
evaluate = the held-out loss; the last three overlap the workers' next round), and
`overhead_s_per_round`: (wall time - the worker's own compute time) / rounds, what a round
costs beyond the worker's work in it. Rounds:
examples/diloco.toml's (10), the job a user gets.
Written to bench/results/diloco_network.json (needs root: namespaces).

    sudo .venv/bin/python bench/diloco_network.py           # ~6 min on 2 CPU cores
    sudo .venv/bin/python bench/diloco_network.py --quick   # ~2 min
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from tessera.compute import numerics

numerics.pin()   # as `tessera` does: this process is the tenant, whose replays must judge

import httpx  # noqa: E402
import tomli_w  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from netns_links import ShapedHost  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "diloco_network.json"
PROVIDER_PORT = 7000          # inside each namespace


def step_time(workload_json: str, inner_steps: int) -> float:
    """Seconds per inner step of one worker, alone, pinned as a worker pins (fresh process)."""
    code = (
        "import json,sys\n"
        "from tessera.compute import numerics\n"
        "numerics.pin()\n"
        "from tessera.compute.corpus import build_stdlib_corpus\n"
        "from tessera.compute.diloco import Coordinator, DilocoConfig, Worker\n"
        "from tessera.compute.train import configure_determinism, split\n"
        "from tessera.protocol.workload import TrainingWorkload\n"
        "w = TrainingWorkload.model_validate_json(sys.argv[1])\n"
        "cfg = DilocoConfig(workload=w, workers=2, inner_steps=int(sys.argv[2]), rounds=2)\n"
        "device = configure_determinism(w)\n"
        "train, _ = split(build_stdlib_corpus(1 << 20), w)\n"
        "worker = Worker(cfg, 0, train, device)\n"
        "state = Coordinator(cfg, device).global_state()\n"
        "times = [worker.run_round(state, r).compute_s for r in range(6)]\n"
        "print(json.dumps(min(times[1:]) / cfg.inner_steps))\n")
    out = subprocess.run([sys.executable, "-c", code, workload_json, str(inner_steps)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def pin_children(pid: int, core: int) -> list[int]:
    """Every thread of every child process of `pid` (a provider's workers) onto `core`."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    for child in children:
        for tid in Path(f"/proc/{child}/task").iterdir():
            os.sched_setaffinity(int(tid.name), {core})
    return children


def start_provider(host: ShapedHost, home: Path, network_file: Path, account: int,
                   anvil_port: int, cores: set[int]) -> tuple[subprocess.Popen, str]:
    from tessera.chain.network import load_network, save_network

    network = load_network(network_file)
    network.rpc_url = f"http://{host.here}:{host.forward(anvil_port)}"
    own_network = home / f"network-w{host.index}.json"
    save_network(network, own_network)
    url = host.expose(PROVIDER_PORT)
    config = {"provider": {"account": f"devnet:{account}", "network": str(own_network),
                           "host": host.there, "port": PROVIDER_PORT, "public_url": url,
                           "state_dir": str(home / f"provider-w{host.index}"), "stake": "100"},
              "pricing": {"price_per_gpu_hour": "1.00"},
              "limits": {"threads": 1, "memory_limit_mb": 4096, "max_job_seconds": 1800}}
    config_file = home / f"provider-w{host.index}.toml"
    config_file.write_text(tomli_w.dumps(config))
    proc = host.popen([sys.executable, "-m", "tessera.cli", "provider", "run", "--config",
                       str(config_file)], stdout=open(home / f"provider-w{host.index}.log", "wb"),
                      stderr=subprocess.STDOUT, env={**os.environ, "TESSERA_HOME": str(home)},
                      preexec_fn=lambda: os.sched_setaffinity(0, cores))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"provider w{host.index} exited; see {home}/provider-w{host.index}.log")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"provider w{host.index} not healthy in 120 s")


def job_spec(workers: int, inner_steps: int, rounds: int, verification: bool, overlap: bool):
    from tessera.protocol.jobspec import JobSpec

    raw = tomllib.loads((ROOT / "examples" / "diloco.toml").read_text())
    raw["name"] = (f"bench-h{inner_steps}-{'verified' if verification else 'plain'}"
                   f"{'-overlap' if overlap else ''}")
    raw["order"].update({"nodes": workers, "bid_window": "3s"})
    raw["diloco"].update({"inner_steps": inner_steps, "rounds": rounds,
                          "replace_dropped": False, "overlap": overlap})
    raw["verification"]["enabled"] = verification
    return JobSpec.model_validate(raw)


def timed_job(tenant, spec, dataset: bytes, workdir: Path, pin) -> dict:
    """`tessera job submit`'s DiLoCo path (tenant/multinode.py), timed from round 0's start."""
    from rich.console import Console

    from tessera.logs import EventLog
    from tessera.tenant.bidding import lease_nodes
    from tessera.tenant.coordinator import DilocoCoordinator, WorkerLease
    from tessera.tenant.multinode import (
        MANIFESTS_DIR,
        coordinator_options,
        diloco_config,
        wait_started,
        watch_escrow,
        worker_workload,
    )

    quiet = Console(file=io.StringIO())
    leasing = lease_nodes(tenant, spec, quiet)
    if len(leasing.leases) != spec.order.nodes:
        raise SystemExit(f"only {len(leasing.leases)} of {spec.order.nodes} providers bid")
    workdir.mkdir(parents=True)
    workers = [WorkerLease(lease_id, verdict.bid.provider, verdict.offer.endpoint, index=i,
                           order_id=leasing.order_id)
               for i, (lease_id, verdict) in enumerate(leasing.leases)]
    options = coordinator_options(tenant, spec, dataset, len(workers), workdir, quiet,
                                  leasing.order_id)
    options["log"] = EventLog("coordinator", stream=io.StringIO())
    coordinator = DilocoCoordinator.start(tenant, diloco_config(spec, len(workers)), dataset,
                                          workers, workdir, **options)
    for w in workers:
        tenant.send_manifest(w.lease_id, worker_workload(spec, w.index, len(workers)), dataset,
                             keep_in=workdir / MANIFESTS_DIR)
    wait_started(tenant, [w.lease_id for w in workers])
    for w in workers:   # the worker process has loaded torch and its shard: not timed
        while not any(e.get("event") == "start" for e in tenant.logs(w.lease_id)):
            time.sleep(0.1)
    pin()       # each worker's process on a core of its own
    watch_escrow(tenant, spec, coordinator, quiet)
    started = time.perf_counter()
    reports = coordinator.run()
    wall = time.perf_counter() - started
    for w in workers:
        tenant.close(w.lease_id)
    if any(r.contributors != len(workers) for r in reports):
        raise SystemExit(f"a worker was dropped: {[r.dropped for r in reports]}")
    return {"wall_s": round(wall, 2), "round_s": [round(r.seconds, 2) for r in reports],
            "worker_compute_s": round(sum(r.worker_compute_s for r in reports), 2),
            "spot_checks": sum(len(r.spot_checks) for r in reports),
            "phase_s": {phase: [r.phase_s.get(phase) for r in reports]
                        for phase in reports[0].phase_s},
            "final_val_loss": round(reports[-1].val_loss, 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mbit", type=float, default=100.0)
    ap.add_argument("--rtt-ms", type=float, default=50.0)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds per job (default: examples/diloco.toml's, the job a user gets)")
    ap.add_argument("--no-pin", action="store_true",
                    help="leave every process to the scheduler (for comparison)")
    ap.add_argument("--h", type=int, action="append", help="only these H (repeatable)")
    ap.add_argument("--verification-only", action="store_true",
                    help="only the rows with verification on")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: it creates network namespaces")

    from tessera.chain.accounts import devnet_account
    from tessera.chain.client import Chain
    from tessera.chain.devnet import Devnet, free_port
    from tessera.daemons import stop
    from tessera.tenant.client import Tenant
    from tessera.tenant.flow import load_dataset

    # a core for each worker process; the rest for everything else: this process (the tenant:
    # coordinator, replays), anvil, the delay lines and the providers' daemons
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < args.workers + 1:
        raise SystemExit(f"{args.workers} workers need {args.workers + 1} cores, "
                         f"this process may use {len(cores)}")
    tenant_cores, worker_cores = set(cores[:len(cores) - args.workers]), cores[-args.workers:]
    if args.no_pin:
        tenant_cores = set(cores)
    os.sched_setaffinity(0, tenant_cores)

    def pin() -> None:
        if args.no_pin:
            return
        pinned = [pin_children(proc.pid, core) for (proc, _), core in zip(procs, worker_cores, strict=True)]
        if not all(pinned):
            raise SystemExit(f"a provider has no worker process to pin: {pinned}")

    hs = args.h or ([50] if args.quick else [50, 250])
    example_rounds = tomllib.loads((ROOT / "examples" / "diloco.toml").read_text())["diloco"]["rounds"]
    rounds = 3 if args.quick else (args.rounds or example_rounds)
    first = job_spec(args.workers, hs[0], rounds, True, False)
    step_before = step_time(first.workload.model_dump_json(), 50)
    print(f"one inner step alone: {step_before * 1e3:.2f} ms", flush=True)
    home = Path(tempfile.mkdtemp(prefix="tessera-bench-netns-"))
    os.environ["TESSERA_HOME"] = str(home)
    devnet = Devnet(home / "devnet")
    anvil_port = free_port()
    network = devnet.up(port=anvil_port)
    hosts, procs, rows = [], [], []
    try:
        for i in range(args.workers):
            hosts.append(ShapedHost(i + 1, args.mbit, args.rtt_ms))
            procs.append(start_provider(hosts[-1], home, devnet.network_file, 2 + i, anvil_port,
                                        tenant_cores))
        print(f"{args.workers} providers up, links: {hosts[0].mode}", flush=True)
        tenant = Tenant(Chain(network, devnet_account(5)))
        plan = [(h, verification, overlap) for h in hs for overlap in (False, True)
                for verification in ((True, False) if h == hs[0] and not args.verification_only
                                     else (True,))]
        for h, verification, overlap in plan:
            spec = job_spec(args.workers, h, rounds, verification, overlap)
            run = timed_job(tenant, spec, load_dataset(spec.dataset),
                            home / f"job-h{h}-{verification}-{overlap}", pin)
            row = {"H": h, "workers": args.workers, "rounds": rounds,
                   "verification": ({"k": spec.verification.checkpoint_every,
                                     "p": spec.verification.spot_check_probability}
                                    if verification else None),
                   "overlap": overlap,
                   "link_mbit": args.mbit, "rtt_ms": args.rtt_ms,
                   "reported_share": round(run["worker_compute_s"]
                                           / (args.workers * run["wall_s"]), 4), **run}
            rows.append(row)
            print(f"H={h} verification={'on' if verification else 'off'} overlap="
                  f"{'on' if overlap else 'off'}: wall {run['wall_s']} s (workers' own report of "
                  f"compute {100 * row['reported_share']:.1f} %), rounds {run['round_s']}",
                  flush=True)
            while any(httpx.get(f"{url}/healthz").json()["active_leases"]
                      for _, url in procs):  # free for the next order
                time.sleep(0.2)
    finally:
        for proc, _ in procs:
            stop(proc)
        for host in hosts:
            host.close()
        devnet.down()
    # alone again, with nothing else running: the faster of the two is the step's time
    step_s = min(step_before, step_time(first.workload.model_dump_json(), 50))
    for row in rows:
        row["inner_step_s_alone"] = round(step_s, 5)
        row["compute_share"] = round(rounds * row["H"] * step_s / row["wall_s"], 4)
        # what a round costs beyond the worker's own time in it (the exchange's round trips,
        # what the coordinator does on the critical path): the part no faster CPU removes
        row["overhead_s_per_round"] = round(
            (row["wall_s"] - row["worker_compute_s"] / row["workers"]) / rounds, 3)
        print(f"H={row['H']} verification={'on' if row['verification'] else 'off'} overlap="
              f"{'on' if row['overlap'] else 'off'}: compute share "
              f"{100 * row['compute_share']:.1f} %", flush=True)
    out = {"about": __doc__.split("\n\n    sudo")[0], "quick": args.quick,
           "links": hosts[0].mode if hosts else None, "cpu_cores": os.cpu_count(),
           "cores": (None if args.no_pin else
                     {"tenant": sorted(tenant_cores), "workers": worker_cores}),
           "load_average_after": os.getloadavg(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
