"""Bitwise replay across hosts whose CPUs pick other kernels, without and with the numerics
profile (compute/numerics.py).

A host is emulated on this machine by the kernel choices its CPU would make on its own:

  default  ATen's scalar kernels, oneDNN at SSE4.1, MKL asked for SSE4.2 (a CPU without AVX2)
  avx2     ATen AVX2, oneDNN AVX2, MKL AVX2 (what an AVX2 CPU picks)
  avx512   ATen AVX512, oneDNN AVX512, MKL AVX512 (an AVX-512 CPU; this host has none, so each
           library does what it does when asked for more than the CPU has: recorded)

Every training and every replay is its own process with its host's environment; "pinned" means
the process called `numerics.pin()` before its first torch op. Measured:

1. heterogeneous: for every (train host, replay host) pair, unpinned and pinned, one round of
   the bench model (bench/verification.py's `workload()`, H = 20, k = 2: 10 segments) trained
   in one process and every segment replayed in another (`replay.replay_segment`, compared
   with the committed checkpoint: parameter and AdamW hashes). A replay that is not bitwise is
   a false failure (an honest worker would be challenged and slashed).
2. --honest-runs N (default 100): N honest jobs under the profile, each with its own seed,
   worker index (0-3) and thread count (1 or 2, alternating: the job's `threads`), 2 rounds of
   H = 20 at k = 2, 2 segments per round drawn from fresh randomness; trained in a process
   emulating one host and replayed in a process emulating another.
3. speed: tokens/s of the same training (plain DiLoCo rounds, after one warm-up round),
   unpinned vs pinned (and pinned with MKL's AVX2 branch instead of COMPATIBLE: what the
   COMPATIBLE branch costs), processes interleaved, on the bench model and on the default
   workload (the one examples/diloco.toml trains).
4. probes: what each setting actually ran (ATen capability, MKL_VERBOSE's CNR branch,
   ONEDNN_VERBOSE's ISA for the model's GELU).

Reproduce: .venv/bin/python bench/verification_hetero.py [--quick] [--honest-runs N];
writes bench/results/verification_heterogeneous.json; exits non-zero on a pinned false failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tessera.compute import numerics

HOSTS = {
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
               "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
}
H, K, WORKER, WORKERS, SEED = 20, 2, 1, 4, 1000
# speed: 1 thread (this 2-core VM is shared: 2 threads measure the contention, not the profile)
SPEED_H, SPEED_ROUNDS = 20, 3
RESULT = Path(__file__).parent / "results" / "verification_heterogeneous.json"
HERE = Path(__file__).resolve()


# ---------------------------------------------------------------------------------------------
# the parent: runs every child process with its host's environment


def child_env(host: str | None, extra: dict | None = None) -> dict[str, str]:
    """This process's environment without any kernel setting, plus what `host` would pick."""
    drop = set(numerics.PROFILE_ENV) | {name for env in HOSTS.values() for name in env}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, **(HOSTS[host] if host else {}), **(extra or {})}


def run_child(spec: dict, host: str | None, extra: dict | None = None,
              timeout: float = 900) -> tuple[dict | None, str | None]:
    """Run `spec` in a fresh process; (its JSON answer, None) or (None, why it gave none)."""
    proc = subprocess.run([sys.executable, str(HERE), "--child", json.dumps(spec)],
                          env=child_env(host, extra), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        why = (f"died of {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
        return None, why
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


def probes() -> list[dict]:
    """What each setting ran: ATen's capability, MKL's CNR branch, oneDNN's ISA for GELU."""
    rows = []
    for host in (None, *HOSTS):
        for pinned in (False, True):
            spec = {"role": "probe", "pinned": pinned}
            proc = subprocess.run([sys.executable, str(HERE), "--child", json.dumps(spec)],
                                  env=child_env(host, {"MKL_VERBOSE": "1", "ONEDNN_VERBOSE": "1"}),
                                  capture_output=True, text=True, timeout=300)
            out = proc.stdout
            cap = re.search(r"^capability (\w+)", out, re.M)
            cnr = re.search(r"CNR:(\w+)", out)
            isa = re.search(r"eltwise,(jit:\w+)", out)
            rows.append({"host": host or "this host, no emulation", "pinned": pinned,
                         "capability": cap.group(1) if cap else None,
                         "mkl_branch": cnr.group(1) if cnr else None,
                         "onednn_gelu": isa.group(1) if isa else None,
                         "error": None if proc.returncode == 0 else
                         (f"died of {signal.Signals(-proc.returncode).name}"
                          if proc.returncode < 0 else f"exit {proc.returncode}")})
    return rows


def heterogeneous(tmp: Path) -> tuple[list[dict], dict]:
    import torch
    from verification import workload

    from tessera.compute.diloco import new_model, parameter_state

    start = tmp / "start.pt"
    torch.save(parameter_state(new_model(workload())), start)
    rows, trained = [], {}
    for pinned in (False, True):
        files = {}
        for host in HOSTS:
            out = tmp / f"train-{host}-{int(pinned)}.pt"
            answer, err = run_child({"role": "train", "pinned": pinned, "start": str(start),
                                     "out": str(out)}, host)
            trained[f"{host}/{'pinned' if pinned else 'unpinned'}"] = answer or {"error": err}
            if answer:
                files[host] = str(out)
        for replay_host in HOSTS:
            answer, err = run_child({"role": "replay", "pinned": pinned, "files": files}, replay_host)
            for train_host in HOSTS:
                row = {"train": train_host, "replay": replay_host, "pinned": pinned,
                       "runs": H // K, "false_failures": None, "max_abs_diff": None,
                       "train_capability": (trained[f"{train_host}/{'pinned' if pinned else 'unpinned'}"]
                                            .get("capability")),
                       "replay_capability": answer["capability"] if answer else None,
                       "error": None}
                if train_host not in files:
                    row["error"] = "training process " + trained[
                        f"{train_host}/{'pinned' if pinned else 'unpinned'}"]["error"]
                elif answer is None:
                    row["error"] = f"replay process {err}"
                else:
                    r = answer["results"][train_host]
                    row.update(runs=r["runs"], false_failures=r["runs"] - r["bitwise"],
                               max_abs_diff=r["max_abs_diff"])
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows, trained


def honest(n: int, tmp: Path) -> dict:
    """n honest jobs, pinned; job j trains on host j % 3 and replays on host (j + 1) % 3."""
    hosts = list(HOSTS)
    jobs = {host: [j for j in range(n) if hosts[j % 3] == host] for host in hosts}
    files: dict[str, list[str]] = {host: [] for host in hosts}
    for host, js in jobs.items():
        if not js:
            continue
        folder = tmp / f"honest-{host}"
        answer, err = run_child({"role": "honest-train", "pinned": True, "jobs": js,
                                 "out": str(folder)}, host)
        if answer is None:
            raise SystemExit(f"honest training on emulated host {host}: {err}")
        for j in js:
            files[hosts[(j + 1) % 3]].append(str(folder / f"job-{j}.pt"))
    replays = failures = 0
    pairs: dict[str, dict] = {}
    for host, fs in files.items():
        if not fs:
            continue
        answer, err = run_child({"role": "honest-replay", "pinned": True, "files": fs}, host)
        if answer is None:
            raise SystemExit(f"honest replay on emulated host {host}: {err}")
        for r in answer["results"]:
            key = f"{r['train_host']}->{host}, {r['threads']} thread(s)"
            p = pairs.setdefault(key, {"jobs": 0, "replays": 0, "false_failures": 0})
            p["jobs"] += 1
            p["replays"] += r["replays"]
            p["false_failures"] += r["replays"] - r["bitwise"]
            replays += r["replays"]
            failures += r["replays"] - r["bitwise"]
    return {"runs": n, "rounds_per_run": 2, "inner_steps": H, "k": K, "segments_per_round": 2,
            "replays": replays, "false_failures": failures, "pairs": pairs}


def speed(reps: int, rounds: int) -> list[dict]:
    """tokens/s of plain DiLoCo rounds, unpinned vs pinned: one process per variant and
    repetition (the profile is per process), variants interleaved; in each, both workloads."""
    variants = {"unpinned": (False, None), "pinned": (True, None),
                "pinned, MKL_CBWR=AVX2": (True, "AVX2")}
    samples: dict[tuple, list[float]] = {}
    loads = []
    for rep in range(reps):
        for name, (pinned, cbwr) in variants.items():
            loads.append(os.getloadavg()[0])
            answer, err = run_child({"role": "speed", "pinned": pinned, "cbwr": cbwr,
                                     "rounds": rounds}, None)
            if answer is None:
                raise SystemExit(f"speed run {name}: {err}")
            for m in answer["runs"]:
                samples.setdefault((m["workload"], m["threads"], name), []).append(
                    m["tokens_per_s"])
        print(f"speed: repetition {rep + 1}/{reps} done", flush=True)
    rows = []
    for (wl, threads, name), s in samples.items():
        base = statistics.median(samples[wl, threads, "unpinned"])
        rows.append({"workload": wl, "threads": threads, "variant": name,
                     "tokens_per_s_median": statistics.median(s), "samples": s,
                     "vs_unpinned": statistics.median(s) / base,
                     "load_avg_1min_range": [min(loads), max(loads)]})
    return rows


def host_info() -> dict:
    import torch

    caps = torch.cpu.get_capabilities()
    return {"cpu": caps.get("cpu_name") or platform.processor(), "machine": platform.machine(),
            "cores": os.cpu_count(), "avx2": caps.get("avx2"), "fma": caps.get("fma3"),
            "avx512f": caps.get("avx512_f"), "torch": torch.__version__,
            "mkl_dnn": torch.backends.mkldnn.is_available(), "load_avg_start": os.getloadavg()}


PHASES = ("probes", "heterogeneous", "honest", "speed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="6 honest runs, 1 speed repetition")
    parser.add_argument("--honest-runs", type=int, default=None)
    parser.add_argument("--only", action="append", choices=PHASES,
                        help="run only this phase (repeatable); the others' results are kept "
                             "from the existing JSON")
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    n = args.honest_runs if args.honest_runs is not None else (6 if args.quick else 100)
    run = args.only or PHASES
    result = json.loads(RESULT.read_text()) if args.only and RESULT.exists() else {}
    result.update(profile=numerics.PROFILE, profile_env=numerics.PROFILE_ENV,
                  emulated_hosts=HOSTS, notes=NOTES)
    result.setdefault("phase_seconds", {})
    result["host"] = {**result.get("host", {}), **host_info()}

    def done(phase: str, t0: float, **fields) -> None:     # written after every phase
        result.update(fields)
        result["phase_seconds"][phase] = time.perf_counter() - t0
        result["host"]["load_avg_end"] = os.getloadavg()
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(result, indent=2))
        print(f"{phase}: {result['phase_seconds'][phase]:.0f} s; wrote {RESULT}", flush=True)

    if "probes" in run:
        t0 = time.perf_counter()
        rows = probes()
        for row in rows:
            print(json.dumps(row), flush=True)
        done("probes", t0, probes=rows)
    with tempfile.TemporaryDirectory() as tmp:
        if "heterogeneous" in run:
            t0 = time.perf_counter()
            rows, trained = heterogeneous(Path(tmp))
            done("heterogeneous", t0, heterogeneous=rows, trained=trained, round={
                "workload": "bench/verification.py workload()", "inner_steps": H, "k": K,
                "segments": H // K, "threads": 1, "worker": WORKER, "workers": WORKERS})
        if "honest" in run:
            t0 = time.perf_counter()
            honest_result = honest(n, Path(tmp))
            print(json.dumps(honest_result), flush=True)
            done("honest", t0, honest=honest_result, honest_runs=n,
                 false_failures=honest_result["false_failures"])
    if "speed" in run:
        t0 = time.perf_counter()
        done("speed", t0, speed=speed(1 if args.quick else 3, SPEED_ROUNDS),
             speed_setup={"inner_steps": SPEED_H, "timed_rounds": SPEED_ROUNDS, "threads": 1,
                          "warm_up_rounds": 1})
    pinned_fail = sum(r["false_failures"] or 0 for r in result.get("heterogeneous", [])
                      if r["pinned"])
    if pinned_fail or result.get("false_failures"):
        raise SystemExit(f"pinned false failures: {pinned_fail} heterogeneous, "
                         f"{result.get('false_failures')} honest")


NOTES = [
    "One host: the other hosts are emulated by the kernel choices their CPUs would make "
    "(ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS); no real AVX-512 or "
    "Intel CPU was measured.",
    "MKL cannot be emulated here: on this AMD CPU MKL_ENABLE_INSTRUCTIONS changed no bits, and "
    "MKL_CBWR=AVX2 falls back to AUTO (MKL_VERBOSE: CNR:AUTO; Intel documents branches other "
    "than AUTO and COMPATIBLE as Intel-only). The profile takes COMPATIBLE, the one branch "
    "documented to run the same code on Intel and AMD; that this gives the same bits on an "
    "Intel CPU is documented, not measured.",
    "avx512 on a CPU without AVX-512: ATen believes ATEN_CPU_CAPABILITY (reports AVX512) and "
    "the training and replay processes die of SIGILL (unpinned rows: no result; the probe's one "
    "matmul and GELU, run by MKL and oneDNN, survive); oneDNN caps itself at what the CPU has.",
    "CUDA: no GPU was lent; verified jobs train on the CPU (protocol/jobspec.py).",
    "Speed: one shared 2-core VM with other sessions' jobs running (load averages recorded), so "
    "not uncontended; measured at 1 thread only: at 2 threads on 2 busy cores OpenMP/MKL "
    "threads wait on each other and the figure measures the contention.",
    "OMP_DYNAMIC=FALSE matters: measured aside (not in this file), with OMP_DYNAMIC=TRUE a "
    "2-thread job on this loaded host got fewer threads from libgomp and other bits.",
]


# ---------------------------------------------------------------------------------------------
# the children (each a fresh process: pin first, then torch)


def child(spec: dict) -> None:
    if spec.get("pinned"):
        numerics.pin()
        if spec.get("cbwr"):
            os.environ["MKL_CBWR"] = spec["cbwr"]
    import torch

    role = spec["role"]
    if role == "probe":
        x = torch.randn(64, 64)
        y = torch.nn.functional.gelu(x @ x)
        print(f"capability {torch.backends.cpu.get_cpu_capability()} {float(y.sum())}")
        return
    answer = {"train": train_round, "replay": replay_rounds, "honest-train": honest_train,
              "honest-replay": honest_replay, "speed": speed_run}[role](spec)
    answer.update(capability=torch.backends.cpu.get_cpu_capability(),
                  profile=numerics.active_profile("cpu"))
    print(json.dumps(answer))


def _setup(threads: int = 1, seed: int = SEED, workers: int = WORKERS, h: int = H, wl=None):
    from verification import workload

    from tessera.compute.corpus import build_stdlib_corpus
    from tessera.compute.diloco import DilocoConfig
    from tessera.compute.train import configure_determinism, split

    wl = (wl or workload(threads)).model_copy(update={"seed": seed, "threads": threads})
    configure_determinism(wl)
    tokens, _ = split(build_stdlib_corpus(1 << 20), wl)   # the seed does not enter
    return DilocoConfig(workload=wl, workers=workers, inner_steps=h, rounds=2), tokens


def _hashes(commitment) -> list[list]:
    return [[c.step, c.params_hash.hex(), c.optimizer_hash.hex()] for c in commitment.checkpoints]


def train_round(spec: dict) -> dict:
    import torch

    from tessera.compute.replay import CommittingWorker

    cfg, tokens = _setup()
    trace = CommittingWorker(cfg, WORKER, tokens).run_round_committed(
        torch.load(spec["start"]), 0, K, keep_states=True)
    torch.save({"params": trace.params, "opts": trace.optimizer_states,
                "checkpoints": _hashes(trace.commitment)}, spec["out"])
    return {"end": _hashes(trace.commitment)[-1]}


def _replay(cfg, tokens, worker, round, saved, segments) -> tuple[int, float]:
    """(segments bitwise, largest |parameter difference|) of replaying `segments`."""
    from tessera.compute.replay import replay_segment

    bitwise, worst = 0, 0.0
    for s in segments:
        rep = replay_segment(cfg, worker, round, saved["params"][s], saved["opts"][s], s, k=K,
                             train_tokens=tokens, claimed_end_state=saved["params"][s + 1])
        c = rep.checkpoint
        bitwise += [c.step, c.params_hash.hex(), c.optimizer_hash.hex()] == saved["checkpoints"][s + 1]
        worst = max(worst, rep.max_abs_diff)
    return bitwise, worst


def replay_rounds(spec: dict) -> dict:
    import torch

    cfg, tokens = _setup()
    results = {}
    for host, path in spec["files"].items():
        saved = torch.load(path, weights_only=False)
        segments = range(len(saved["checkpoints"]) - 1)
        bitwise, worst = _replay(cfg, tokens, WORKER, 0, saved, segments)
        results[host] = {"runs": len(segments), "bitwise": bitwise, "max_abs_diff": worst}
    return {"results": results}


def _honest_job(j: int) -> dict:
    return {"seed": 2000 + j, "threads": 1 + j % 2, "worker": j % 4}


def honest_train(spec: dict) -> dict:
    import torch
    from eth_utils import keccak

    from tessera.compute.diloco import new_model, parameter_state
    from tessera.compute.replay import CommittingWorker
    from tessera.protocol import sampling

    folder = Path(spec["out"])
    folder.mkdir(parents=True, exist_ok=True)
    for j in spec["jobs"]:
        job = _honest_job(j)
        cfg, tokens = _setup(job["threads"], job["seed"])
        global_state = parameter_state(new_model(cfg.workload))
        worker = CommittingWorker(cfg, job["worker"], tokens)
        n_segments = H // K
        rounds = []
        for r in range(cfg.rounds):
            picks = sampling.select_segments(keccak(f"bench/hetero/{j}/{r}".encode()), n_segments, 2)
            keep = {p + d for p in picks for d in (0, 1)}
            trace = worker.run_round_committed(global_state, r, K, keep_states=keep)
            rounds.append({"round": r, "picks": picks, "params": trace.params,
                           "opts": trace.optimizer_states, "checkpoints": _hashes(trace.commitment)})
        torch.save({"job": j, "rounds": rounds},
                   folder / f"job-{j}.pt")
    return {"jobs": len(spec["jobs"])}


def honest_replay(spec: dict) -> dict:
    import torch

    results = []
    for path in spec["files"]:
        saved = torch.load(path, weights_only=False)
        job = _honest_job(saved["job"])
        cfg, tokens = _setup(job["threads"], job["seed"])
        replays = bitwise = 0
        for rnd in saved["rounds"]:
            ok, _ = _replay(cfg, tokens, job["worker"], rnd["round"], rnd, rnd["picks"])
            replays += len(rnd["picks"])
            bitwise += ok
        results.append({"job": saved["job"], "threads": job["threads"], "replays": replays,
                        "bitwise": bitwise, "train_host": list(HOSTS)[saved["job"] % 3]})
    return {"results": results}


def speed_run(spec: dict) -> dict:
    """tokens/s of plain rounds (H = SPEED_H, after a warm-up round) of the bench model and of
    the default workload, at 1 thread."""
    from tessera.compute.diloco import Worker, new_model, parameter_state
    from tessera.protocol.workload import TrainingWorkload

    runs = []
    for name, wl in (("bench", None), ("default", TrainingWorkload(device="cpu"))):
        cfg, tokens = _setup(1, h=SPEED_H, wl=wl)
        start = parameter_state(new_model(cfg.workload))
        worker = Worker(cfg, WORKER, tokens)
        worker.run_round(start, 0)                                       # warm-up
        timed = [worker.run_round(start, r) for r in range(1, 1 + spec["rounds"])]
        runs.append({"workload": name, "threads": 1,
                     "tokens_per_s": sum(pg.tokens for pg in timed)
                     / sum(pg.compute_s for pg in timed)})
    return {"runs": runs}


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()
