"""Every TEST-ONLY cheating strategy (tessera/testing/cheats.py) played on a job the size of
examples/diloco.toml, checked by every check the tenant has, then its catch rate over many
simulated jobs at the shipped p; plus what verification costs at the defaults.

Per strategy (one row):

1. Play. The job's H, rounds, k, p, workers, compression and model are read from
   examples/diloco.toml (parsed as a JobSpec: an unset field is its JobSpec default), never
   written here. The published parameters θ_r of every round come from one honest run of the
   whole job (every worker trains, the coordinator decodes the payloads and takes the outer
   step); the cheater is worker 1, a real `WorkerProcess` whose round hook is the cheat, played
   against those θ_r round after round with its own AdamW state and residual. (Its pseudo-
   gradient does not feed back into θ: what is checked is its own states against the θ it was
   sent.) "copy-worker" colludes with worker 0: it reads worker 0's job folder, which worker 0's
   own `WorkerProcess.keep_checkpoints` wrote (the cheat's TEST-ONLY collusion path).
2. Compute saved. ByteGPT.forward and Tensor.backward are counted while the cheat plays:
   step-equivalents = (forward tokens + 2 x backward tokens) / (3 x batch x block) (a backward
   pass costs about two forwards); honest = H per round. Wall and CPU time of the cheater's
   rounds against the honest worker 1's are reported separately (noisy on a shared machine;
   cheaper arithmetic such as lower precision shows there, not in the pass count).
3. Every check, every round, for real: the served states are written by the provider's own
   `WorkerProcess.keep_checkpoints` and served through an in-memory HTTP transport; the tenant's
   `check_commitment` (on an answer signed with a bench key), the coordinator's payload decode,
   `segment_check.spot_check` on the payload segment and on EVERY training segment (the
   tenant's own download + `verify_payload` / `verify_segment` path, which apply
   `replay.state_bounds` to the states they open), and `replay.state_bounds` on every served
   state again, to name it as the failing check. This gives the deterministic per-round
   failure pattern. A strategy that cannot be played at the defaults is a row with `error`.
4. Simulated jobs: random block hashes, job and lease ids -> the real `spot_check_seed` and
   `draw_spot_check` at the shipped p per round; a job is caught iff a cheap check (a drop
   as bad-commitment, without a challenge) or the payload check fails in some round, or the
   drawn segment is one that fails. detect_per_job
   = caught / jobs (95% Wilson interval); predicted = 1 - prod_r (1 - p m_r / n), or 1 when a
   cheap or payload check fails in any round.

Also: min_detect_per_job (strategies saving >= 10% of the compute), overhead_total (worker's
commitment + kept states, tenant's cheap checks, payload check every round, spot check at p,
download bytes with their time at a MODELLED link speed) on the default model and on a
10.8 M-parameter model, honest/heterogeneous figures copied from
bench/results/verification_heterogeneous.json, and the economics of each strategy.

Reproduce: .venv/bin/python bench/verification_adversary.py [--quick] [--e2e] [--update];
writes bench/results/verification_adversary.json (~20 min on a shared 2-core machine).
--quick: 2,000 simulated jobs, no 10 M model. --e2e: also runs `pytest
tests/e2e/test_cheaters.py -k NAME` per strategy (minutes each). --update: measure nothing,
refresh the copied heterogeneous figures (and with --e2e the e2e column) in the existing JSON.
"""

from __future__ import annotations

from tessera.compute import numerics

numerics.pin()  # before the first torch op: the profile verified jobs train and replay under

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from tessera.compute.diloco import Coordinator, parameter_state  # noqa: E402
from tessera.compute.diloco_worker import WorkerProcess, honest_round  # noqa: E402
from tessera.compute.model import ByteGPT  # noqa: E402
from tessera.compute.replay import CommittingWorker  # noqa: E402
from tessera.compute.train import split  # noqa: E402
from tessera.protocol.jobspec import JobSpec, VerificationSpec, parse_job_spec  # noqa: E402
from tessera.tenant.flow import load_dataset  # noqa: E402
from tessera.tenant.multinode import diloco_config, worker_workload  # noqa: E402
from tessera.tenant.verify import draw_spot_check, spot_check_seed  # noqa: E402
from tessera.testing import cheats  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from verification_economics import GOAL, SAVING_FLOOR, economics  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verification_adversary_checks import (  # noqa: E402
    CHEATER,
    LEASE_ID,
    check_round,
    measure_overhead,
    profile_cost,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "diloco.toml"
RESULTS = ROOT / "bench" / "results"
OUT = RESULTS / "verification_adversary.json"
HETERO = RESULTS / "verification_heterogeneous.json"
BRIEF = ("skip-steps", "random-pseudo-gradient", "wrong-shard", "wrong-round", "copy-worker",
         "poisoned-payload", "jump", "jump-and-return", "fewer-threads", "stop-half-way",
         "fake-last-segment", "lower-precision", "half-batch", "free-ride", "fake-10-percent")
BIG_MODEL = {"n_layer": 6, "n_embd": 384, "n_head": 6, "block_size": 64, "batch_size": 16}
# rounds of the 10 M model measured (median): single rounds differed by up to 2x per part
# between two runs of the same code on 2026-12-07 (payload check 0.76 s / 1.68 s, keep 0.64 s /
# 1.69 s, spot check 9.4 s / 13.0 s)
BIG_REPEATS = 3


class PassCounter:
    """Counts ByteGPT forward passes (and their tokens) and Tensor.backward calls while on; a
    backward is charged the tokens of the last forward that built a graph."""

    def __init__(self):
        self.on = False
        self.start()
        self.on = False

    def install(self) -> None:
        counter, forward, backward = self, ByteGPT.forward, torch.Tensor.backward

        def counted_forward(model, idx, *args, **kwargs):
            if counter.on:
                counter.counts["forward"] += 1
                counter.counts["forward_tokens"] += idx.numel()
                if torch.is_grad_enabled():
                    counter.graph_tokens = idx.numel()
            return forward(model, idx, *args, **kwargs)

        def counted_backward(tensor, *args, **kwargs):
            if counter.on:
                counter.counts["backward"] += 1
                counter.counts["backward_tokens"] += counter.graph_tokens
            return backward(tensor, *args, **kwargs)

        ByteGPT.forward, torch.Tensor.backward = counted_forward, counted_backward

    def start(self) -> None:
        self.counts = dict.fromkeys(("forward", "backward", "forward_tokens", "backward_tokens"), 0)
        self.graph_tokens, self.on = 0, True

    def stop(self) -> dict:
        self.on = False
        return dict(self.counts)


def wilson(caught: int, n: int, z: float = 1.959963984540054) -> list[float]:
    """95% Wilson score interval of a binomial proportion."""
    ph, d = caught / n, 1 + z * z / n
    centre, half = (ph + z * z / (2 * n)) / d, z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, centre - half), 5), round(min(1.0, centre + half), 5)]


def play_for(name: str, job):
    """Worker 1's round hook for `name`: `cheats.CHEATS[name](worker, start, round, k, ctx)`,
    with copy-worker colluding with worker 0 (its job folder, as the TEST-ONLY cheat reads it)."""
    strategy = cheats.CHEATS[name]

    def play(process, worker, start, r, emit):
        ctx = cheats.CheatContext(train_tokens=process.train_tokens,
                                  threads=job.spec.workload.threads, emit=emit,
                                  siblings=[{"lease_id": LEASE_ID - 1, "folder": job.sibling}],
                                  copy_wait_s=0.0)
        return strategy(worker, start, r, process.k, ctx)
    return play


def load_spec() -> JobSpec:
    return parse_job_spec(EXAMPLE.read_text(), EXAMPLE)


def defaults_of(spec: JobSpec, n_params: int) -> dict:
    v, shipped = spec.verification, VerificationSpec()
    return {"source": "examples/diloco.toml parsed as a JobSpec (unset fields: JobSpec defaults)",
            "k": v.checkpoint_every, "p": v.spot_check_probability,
            "H": spec.diloco.inner_steps, "rounds": spec.diloco.rounds, "workers": spec.order.nodes,
            "compression": spec.diloco.compression, "threads": spec.workload.threads,
            "model": {**{f: getattr(spec.workload, f) for f in
                         ("n_layer", "n_head", "n_embd", "block_size", "batch_size")},
                      "parameters": n_params},
            "jobspec_default_k": shipped.checkpoint_every,
            "jobspec_default_p": shipped.spot_check_probability,
            "example_matches_jobspec_defaults": (v.checkpoint_every, v.spot_check_probability)
            == (shipped.checkpoint_every, shipped.spot_check_probability),
            "max_price_per_gpu_hour_base_units": spec.order.max_price_per_gpu_hour,
            "duration_s": spec.order.duration, "min_gpus": spec.order.min_gpus}


class Job:
    """The job of examples/diloco.toml: its config, data, and the honest run's θ_r."""

    def __init__(self, spec: JobSpec):
        self.spec, self.workers = spec, spec.order.nodes
        self.config = diloco_config(spec, self.workers)
        self.k = spec.verification.checkpoint_every
        self.p = spec.verification.spot_check_probability
        self.data = load_dataset(spec.dataset)
        self.tokens = split(self.data, spec.workload)[0]
        self.thetas: list[dict] = []
        self._sibling = tempfile.TemporaryDirectory()   # worker 0's job folder (copy-worker's)
        self.sibling = Path(self._sibling.name)

    def honest_run(self, play, counter: PassCounter, log) -> dict:
        """The whole job with every worker honest; worker 1 is played (and checked) exactly as
        a cheater would be. Gives θ_r for every round and the honest row."""
        coordinator = Coordinator(self.config)
        sibling = WorkerProcess(worker_workload(self.spec, 0, self.workers), self.data,
                                self.sibling)
        others = {i: CommittingWorker(self.config, i, self.tokens)
                  for i in range(self.workers) if i not in (0, CHEATER)}
        others[0] = sibling.held.worker
        with tempfile.TemporaryDirectory() as tmp:
            player = Player(self, play, Path(tmp), counter)
            for r in range(self.spec.diloco.rounds):
                theta = coordinator.global_state()
                self.thetas.append(theta)
                payloads = {}
                for i, w in sorted(others.items()):
                    trace = w.run_round_committed(theta, r, self.k, keep_states=i == 0)
                    payloads[i] = trace.payload
                    if i == 0:   # served as its provider keeps it (what copy-worker copies)
                        folder = self.sibling / "rounds" / str(r)
                        folder.mkdir(parents=True)
                        answer = sibling.keep_checkpoints(folder, trace)
                        pg = trace.pseudo_gradient
                        (folder / "result.json").write_text(json.dumps(
                            {**answer, "inner_loss": pg.mean_inner_loss, "compute_s": pg.compute_s}))
                payloads[CHEATER] = player.round(r)
                coordinator.apply([coordinator.decode(payloads[i]) for i in sorted(payloads)])
                log(f"  honest round {r}: {player.rounds[-1]['summary']}")
            return player.result()


class Player:
    """One strategy played as worker 1 over the job's rounds, each round checked in full."""

    def __init__(self, job: Job, play, folder: Path, counter: PassCounter):
        self.job, self.folder, self.counter = job, folder, counter
        self.events: list[dict] = []
        self.process = WorkerProcess(worker_workload(job.spec, CHEATER, job.workers), job.data,
                                     folder, play)
        self.worker = self.process.held.worker
        self.previous = None
        self.rounds: list[dict] = []

    def round(self, r: int) -> bytes:
        theta = self.job.thetas[r]
        self.counter.start()
        wall, cpu = time.perf_counter(), time.process_time()
        trace = self.process.run_committed(self.worker, theta, r, self.events.append)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        passes = self.counter.stop()
        record, self.previous = check_round(self.job, self.process, trace, theta, r,
                                            self.previous, self.folder)
        record.update(wall_s=round(wall, 4), cpu_s=round(cpu, 4), passes=passes)
        self.rounds.append(record)
        return trace.payload

    def result(self) -> dict:
        return {"rounds": self.rounds, "events": self.events[:20]}


def play_strategy(job: Job, name: str, counter: PassCounter, log) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        player = Player(job, play_for(name, job), Path(tmp), counter)
        for r in range(job.spec.diloco.rounds):
            player.round(r)
            log(f"  {name} round {r}: {player.rounds[-1]['summary']}")
        return player.result()


def draws(job: Job, n_jobs: int, seed: int) -> list[list[int | None]]:
    """The segment the real draw replays in each round of each simulated job (None: none)."""
    rng = random.Random(seed)
    n = len(range(0, job.config.inner_steps, job.k))
    out = []
    for _ in range(n_jobs):
        job_id, lease = rng.randrange(1, 2**64), rng.randrange(1, 2**64)
        out.append([draw_spot_check(spot_check_seed(rng.randbytes(32), job_id, r, lease), job.p, n)
                    for r in range(job.spec.diloco.rounds)])
    return out


def detection(job: Job, rounds: list[dict], drawn: list[list[int | None]]) -> dict:
    n = len(range(0, job.config.inner_steps, job.k))
    always = [r["cheap_ok"] is False or r["payload_ok"] is False for r in rounds]
    failing = [set(r["segments_failed"]) for r in rounds]
    caught = sum(any(always[r] or (d[r] is not None and d[r] in failing[r])
                     for r in range(len(rounds))) for d in drawn)
    miss = 1.0
    for r in range(len(rounds)):
        miss *= 0.0 if always[r] else 1 - job.p * len(failing[r]) / n
    return {"detect_per_job": caught / len(drawn), "detect_ci95": wilson(caught, len(drawn)),
            "predicted": 1 - miss, "simulated_jobs": len(drawn)}


def row_of(name: str, played: dict, honest: dict, job: Job, drawn) -> dict:
    rounds = played["rounds"]
    w = job.spec.workload
    honest_units = 3 * job.config.inner_steps * w.batch_size * w.block_size * len(rounds)
    fwd = sum(r["passes"]["forward_tokens"] for r in rounds)
    bwd = sum(r["passes"]["backward_tokens"] for r in rounds)

    def saved(key):
        return 1 - sum(r[key] for r in rounds) / sum(r[key] for r in honest["rounds"])
    row = {"name": name, "compute_saved": round(1 - (fwd + 2 * bwd) / honest_units, 4),
           "compute": {"forward_passes": sum(r["passes"]["forward"] for r in rounds),
                       "backward_passes": sum(r["passes"]["backward"] for r in rounds),
                       "honest_forward_backward_passes": job.config.inner_steps * len(rounds),
                       "step_equivalents": round((fwd + 2 * bwd) / honest_units * 3
                                                 * job.config.inner_steps * len(rounds), 2)},
           "wall_time_saved": round(saved("wall_s"), 4),
           "cpu_time_saved": round(saved("cpu_s"), 4),
           **detection(job, rounds, drawn), "slashed_end_to_end": None,
           "caught_by": sorted({c for r in rounds for c in r["failed_checks"]}),
           "failure_pattern": [{k: r[k] for k in ("round", "cheap_ok", "payload_ok",
                                                   "segments_failed", "reasons")}
                               for r in rounds]}
    if played.get("events"):
        row["events"] = played["events"]
    return row


def time_noise(rows: list[dict]) -> dict:
    """How far the measured time savings stray where the pass count says none: the strategies
    that do every honest pass in fp32 (lower precision aside)."""
    full = [r for r in rows if r.get("compute_saved") == 0 and r["name"] != "lower-precision"]
    spread = {key: [min(r[key] for r in full), max(r[key] for r in full)] if full else None
              for key in ("wall_time_saved", "cpu_time_saved")}
    return {"full_work_strategies": [r["name"] for r in full], **spread,
            "note": "single runs on a shared machine: read wall_time_saved and cpu_time_saved "
                    "of every row with this spread in mind; compute_saved (pass count) is exact"}


def e2e(names: list[str]) -> dict:
    """What `pytest tests/e2e/test_cheaters.py -k NAME` says per strategy (a longer name that
    contains NAME excluded): True passed (caught, challenged, slashed), False failed, None no
    test. The file plays strategies in groups (one job per group), so the selected tests are
    collected first and each one runs once; a strategy passes when every test selecting it
    passed. Returns that per name, and the summary for the JSON under "_summary"."""

    def pytest(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *args], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    selected = {}
    for name in names:
        expr = " and ".join([name] + [f"not {o}" for o in names if o != name and name in o])
        found = pytest("--collect-only", "tests/e2e/test_cheaters.py", "-k", expr).stdout
        selected[name] = [line for line in found.splitlines() if "::" in line]
    runs = {}
    for test in sorted({t for tests in selected.values() for t in tests}):
        run = pytest(test)
        runs[test] = {"passed": run.returncode == 0,
                      "last_line": (run.stdout.strip().splitlines() or [""])[-1][:300]}
        print(f"e2e {test}: {runs[test]}", flush=True)
    out = {name: all(runs[t]["passed"] for t in tests) if tests else None
           for name, tests in selected.items()}
    return out | {"_summary": {
        "ran": True, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "passed": [n for n in names if out[n] is True],
        "failed": [n for n in names if out[n] is False],
        "no_test": [n for n in names if out[n] is None],
        "tests": {name: tests for name, tests in selected.items() if tests}, "runs": runs}}


def hetero() -> dict:
    """honest_runs, false_failures and heterogeneous, copied (never re-measured)."""
    keys = ("honest_runs", "false_failures", "heterogeneous")
    source = HETERO.relative_to(ROOT)
    if not HETERO.is_file():
        return dict.fromkeys(keys) | {"honest_source": f"{source} not present when this ran"}
    data = json.loads(HETERO.read_text())
    lacking = [k for k in keys if k not in data]
    return {k: data.get(k) for k in keys} | {
        "honest_source": f"copied from {source} (bench/verification_hetero.py, another bench), "
                         "not re-measured here" + (f"; that file has no {lacking}" if lacking
                                                   else "")}


def overheads(spec, job: Job, quick: bool, log=print) -> dict:
    """overhead_total: what verification costs on the default model and (not `quick`) the
    10 M one, each with the numerics profile's cost, and when it was measured. One home for a
    full run and `--overhead-only`."""
    load = [round(x, 2) for x in os.getloadavg()]
    log("overhead: default model")
    overhead = {"default_model": measure_overhead(spec, spec.workload, job, repeats=3)}
    overhead["default_model"]["numerics_profile_cost"] = profile_cost(
        spec.workload, spec.diloco.inner_steps)
    overhead["model_10m"] = None
    if not quick:
        log("overhead: 10 M model")
        big = spec.workload.model_copy(update=BIG_MODEL)
        overhead["model_10m"] = measure_overhead(spec, big, job, repeats=BIG_REPEATS)
        overhead["model_10m"]["numerics_profile_cost"] = profile_cost(big, 5, repeats=1)
    overhead["measured_at"] = {"when": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "load_average_start": load,
                               "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    return overhead


def overhead_only(quick: bool) -> None:
    """Re-measure only overhead_total (and the profile's cost) into the existing JSON, with
    nothing else running: the strategy rows take long and their figures do not depend on
    timing."""
    data = json.loads(OUT.read_text())
    spec = load_spec()
    data["overhead_total"] = overheads(spec, Job(spec), quick)
    OUT.write_text(json.dumps(data, indent=1))


def update(e2e_too: bool) -> None:
    """Without re-measuring: refresh the copied heterogeneous figures, the economics (a model of
    the measured rows, recomputed) and, with --e2e, the e2e column of the existing JSON."""
    data = json.loads(OUT.read_text())
    data.update(hetero())
    data["economics"] = economics(load_spec(), [r for r in data["strategies"] if "error" not in r])
    if e2e_too:
        result = e2e([r["name"] for r in data["strategies"]])
        for row in data["strategies"]:
            row["slashed_end_to_end"] = result.get(row["name"])
        data["e2e"] = result["_summary"]
    OUT.write_text(json.dumps(data, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 simulated jobs, no 10 M model")
    ap.add_argument("--jobs", type=int, help="simulated jobs (default 20,000; --quick 2,000)")
    ap.add_argument("--e2e", action="store_true", help="also run tests/e2e/test_cheaters.py")
    ap.add_argument("--update", action="store_true", help="no re-measuring: refresh the copied "
                    "heterogeneous figures, the economics (a model of the measured rows) and, "
                    "with --e2e, the e2e column of the existing JSON")
    ap.add_argument("--only", nargs="*", help="(development) play only these strategies")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--overhead-only", action="store_true", help="re-measure only "
                    "overhead_total and the numerics profile's cost into the existing JSON")
    args = ap.parse_args()
    names = [n for n in cheats.CHEATS if not args.only or n in args.only]
    if args.update:
        return update(args.e2e)
    if args.overhead_only:
        return overhead_only(args.quick)
    started, load_start = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    spec = load_spec()
    job = Job(spec)
    n_params = sum(t.numel() for t in parameter_state(Coordinator(job.config).model).values())
    counter = PassCounter()
    counter.install()
    log(f"job: {job.workers} workers, H={job.config.inner_steps}, rounds={spec.diloco.rounds}, "
        f"k={job.k}, p={job.p}, {n_params} parameters; strategies: {names}")
    honest = job.honest_run(honest_round, counter, log)
    n_jobs = args.jobs or (2_000 if args.quick else 20_000)
    drawn = draws(job, n_jobs, args.seed)
    log(f"{n_jobs} simulated jobs drawn")
    rows = [row_of("honest", honest, honest, job, drawn)]
    for name in names:
        try:
            rows.append(row_of(name, play_strategy(job, name, counter, log), honest, job, drawn))
        except Exception as exc:  # a cheat that cannot run at the defaults is a finding
            rows.append({"name": name, "error": f"{type(exc).__name__}: {exc}"[:400]})
            log(f"  {name}: {rows[-1]['error']}")
    e2e_summary = {"ran": False, "note": "slashed_end_to_end is null: not run (run with --e2e, "
                                         "or --update --e2e afterwards)"}
    if args.e2e:
        result = e2e([r["name"] for r in rows[1:]])
        for row in rows[1:]:
            row["slashed_end_to_end"] = result.get(row["name"])
        e2e_summary = result["_summary"]
    eligible = [r for r in rows[1:] if "error" not in r and r["compute_saved"] >= SAVING_FLOOR]
    worst = min(eligible, key=lambda r: r["detect_per_job"]) if eligible else None
    overhead = overheads(spec, job, args.quick, log)
    result = {
        "bench": "verification_adversary", "quick": args.quick,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": None, "cpu_s": None,
        "load_average_start": load_start,
        "machine": {"torch": torch.__version__, "python": platform.python_version(),
                    "cpu": platform.processor() or platform.machine(),
                    "profile": numerics.active_profile(), "threads": torch.get_num_threads()},
        "defaults": defaults_of(spec, n_params),
        "method": __doc__.split("\n\n", 1)[1].split("Reproduce:")[0].strip(),
        "strategies": [r for r in rows[1:]], "honest_row": rows[0],
        "missing_strategies": [n for n in BRIEF if n not in cheats.CHEATS],
        "extra_strategies": [n for n in cheats.CHEATS if n not in BRIEF],
        "min_detect_per_job": {
            "value": worst["detect_per_job"] if worst else None,
            "strategy": worst["name"] if worst else None,
            "over": [r["name"] for r in eligible], "compute_saved_at_least": SAVING_FLOOR,
            "goal": GOAL, "met": worst["detect_per_job"] >= GOAL if worst else None},
        "time_saved_noise": time_noise(rows[1:]),
        "overhead_total": overhead,
        **hetero(),
        "economics": economics(spec, [r for r in rows[1:] if "error" not in r]),
        "e2e": e2e_summary,
    }
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["cpu_s"] = round(time.process_time(), 1)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    log(f"wrote {OUT}")


if __name__ == "__main__":
    main()
