"""Verification overhead vs the chance of catching a worker that fakes 10% of its segments.

One DiLoCo worker's job as in bench/diloco.py (same model, 1 thread, H = 100 inner steps,
25 rounds = 2,500 inner steps; every worker's job is the same size, so one worker is measured).
For each commitment interval k the worker trains the whole job with CommittingWorker (hashing
parameters + AdamW state every k steps); then a verifier replays Q segments drawn over the
job (Q = the fewest that catch a 10% faker with probability >= 99%, exact without replacement)
and every replay is checked against the commitment (Merkle proofs, start hash, end hash).

  analytic overhead = replayed inner steps / inner steps trained
  measured overhead = verifier wall time (open + replay + hash + proofs) / worker's training wall
  commit overhead   = time spent copying + hashing states / the rest of the training time
                      (the wall-clock difference to a plain Worker run is in the JSON; it is
                      noisier on a shared machine)

Also measured: the honest replay distance (max |param difference|) at threads 1 vs 1,
1 vs 2 and 2 vs 2.

The sample is drawn before training only so that the worker can keep just the states the
verifier will ask for (memory); the protocol draws it after the commitment is posted.

Reproduce: .venv/bin/python bench/verification.py [--quick]; writes bench/results/verification.json.

`--replay-device cuda` (on a GPU machine) measures the honest replay distance of a CUDA trace
replayed on the same GPU and on the CPU: the figure a CUDA `replay_tolerance` needs. Writes
bench/results/verification_device.json.

`--honest-runs 100` checks the other half of the goal: no honest provider is ever failed. 100
honest jobs (own seed, worker index, 1 or 2 threads), every round spot-checked; any replay that
is not bitwise is a false guilty vote. Writes bench/results/verification_honest.json.

`--worker-overhead` measures instead what verification costs in the real job path, side by side
in one run: a DiLoCo worker process's round (bench model, H = 50 as in examples/diloco.toml)
plain vs committing every k steps AND writing every checkpoint's full state to disk as the
provider keeps it (`diloco_worker.WorkerProcess.keep_checkpoints`), rounds interleaved; and the
tenant's spot check of one segment (state decode + `verify_segment`). Writes
bench/results/verification_worker.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from eth_utils import keccak

from tessera.compute.checkpoints import decode_state, segment_bounds
from tessera.compute.corpus import build_stdlib_corpus
from tessera.compute.diloco import DilocoConfig, Worker, new_model, parameter_state
from tessera.compute.diloco_worker import WorkerProcess, checkpoint_path
from tessera.compute.replay import (
    CommittingWorker,
    SegmentOpening,
    open_segment,
    parameter_names,
    verify_segment,
)
from tessera.compute.train import configure_determinism, split
from tessera.protocol import sampling as smp
from tessera.protocol.workload import TrainingWorkload

F, TARGET = 0.10, 0.99
OVERHEAD_GOAL = 0.05


def workload(threads: int = 1) -> TrainingWorkload:
    return TrainingWorkload(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8,
                            learning_rate=3e-3, device="cpu", threads=threads, seed=1000)


def run_job(worker_cls, cfg, tokens, global_state, k=None, keep=None):
    """One worker's whole job (all rounds from the same global state: the outer step does not
    change the cost); returns traces (or None) and wall time."""
    w = worker_cls(cfg, 1, tokens)
    traces, started = [], time.perf_counter()
    for r in range(cfg.rounds):
        if k is None:
            w.run_round(global_state, r)
        else:
            traces.append(w.run_round_committed(global_state, r, k, keep_states=keep.get(r, ())))
    return traces, time.perf_counter() - started


def replay_distance(cfg, tokens, global_state, trace_threads, replay_threads, k, segments,
                    trace_device="cpu", replay_devices=("cpu",)):
    """One honest trace (on `trace_device`, `trace_threads`), its `segments` replayed on each of
    `replay_devices` with `replay_threads`: segments bitwise and the largest |difference|."""
    torch.set_num_threads(trace_threads)
    trace = CommittingWorker(cfg, 1, tokens, trace_device).run_round_committed(global_state, 0, k)
    torch.set_num_threads(replay_threads)
    c = trace.commitment
    rows = []
    for device in replay_devices:
        verdicts = [verify_segment(cfg, 1, 0, c.root, c.n_leaves, k, open_segment(trace, s),
                                   tokens, tolerance=1.0, device=device) for s in segments]
        rows.append({"trace_threads": trace_threads, "replay_threads": replay_threads,
                     "trace_device": trace_device, "replay_device": device, "k": k,
                     "segments": len(segments),
                     "bitwise": sum(v.reason == "bitwise" for v in verdicts),
                     "max_abs_diff": max(v.max_abs_diff for v in verdicts)})
    torch.set_num_threads(1)
    return rows


def worker_overhead(rounds: int) -> None:
    """Commit + keep overhead of the worker process and the tenant's spot-check cost."""
    from tessera.protocol.workload import DilocoWorkerWorkload

    wl = workload()
    h = 50
    data = build_stdlib_corpus(1 << 20)
    configure_determinism(wl)
    rows = []
    for k in (2, 5, 10, 25, 50):
        spec = DilocoWorkerWorkload(model=wl, inner_steps=h, worker=1, workers=4,
                                    compression="int8", checkpoint_every=k)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            proc = WorkerProcess(spec, data, folder)
            cfg, tokens = proc.config, proc.train_tokens
            plain, committing = Worker(cfg, 1, tokens), CommittingWorker(cfg, 1, tokens)
            global_state = parameter_state(new_model(wl))
            plain_s, commit_s, hash_s, checks = [], [], [], []
            for r in range(rounds):
                t0 = time.perf_counter()
                plain.encode(plain.run_round(global_state, r).tensors, r)
                plain_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                trace = proc.run_committed(committing, global_state, r, emit=lambda event: None)
                committing.encode(trace.pseudo_gradient.tensors, r)
                kept = proc.keep_checkpoints(folder, trace)
                commit_s.append(time.perf_counter() - t0)
                hash_s.append(kept["commit_s"])
                c = trace.commitment
                s = r % c.n_segments   # the tenant's check: decode the served state, replay
                t0 = time.perf_counter()
                params, opt = decode_state(checkpoint_path(folder, s).read_bytes(),
                                           parameter_names(cfg))
                opening = SegmentOpening(s, params, opt, c.proof(s),
                                         c.checkpoints[s + 1], c.proof(s + 1))
                v = verify_segment(cfg, 1, r, c.root, c.n_leaves, k, opening, tokens)
                checks.append(time.perf_counter() - t0)
                assert v.reason == "bitwise", v.reason
            per_round = [c / p - 1 for p, c in zip(plain_s, commit_s, strict=True)]
            n_leaves = len(segment_bounds(h, k))
            rows.append({
                "k": k, "inner_steps": h, "checkpoints": n_leaves, "rounds": rounds,
                "plain_round_s_median": statistics.median(plain_s),
                "committing_round_s_median": statistics.median(commit_s),
                "overhead_wall_median": statistics.median(per_round),
                "overhead_wall_min": min(per_round), "overhead_wall_max": max(per_round),
                "commit_and_keep_s_median": statistics.median(hash_s),
                "overhead_commit_share": statistics.median(hash_s) / statistics.median(plain_s),
                "kept_bytes_per_round": sum(checkpoint_path(folder, i).stat().st_size
                                            for i in range(n_leaves)),
                "spot_check_s_median": statistics.median(checks),
                "spot_check_over_round": statistics.median(checks) / statistics.median(plain_s),
            })
        print(f"k={k}: done", flush=True)
    print(f"\nworker round, bench model, H={h}, {rounds} rounds interleaved (median; min..max)")
    print("| k | checkpoints | plain round ms | committing round ms | overhead wall | "
          "hash+copy+write share | kept MB/round | spot check ms | spot check / round |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['k']} | {r['checkpoints']} | {r['plain_round_s_median'] * 1e3:.1f} | "
              f"{r['committing_round_s_median'] * 1e3:.1f} | {r['overhead_wall_median']:+.1%} "
              f"({r['overhead_wall_min']:+.1%}..{r['overhead_wall_max']:+.1%}) | "
              f"{r['overhead_commit_share']:.1%} | {r['kept_bytes_per_round'] / 1e6:.2f} | "
              f"{r['spot_check_s_median'] * 1e3:.1f} | {r['spot_check_over_round']:.1%} |")
    out = Path(__file__).parent / "results" / "verification_worker.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "workload": wl.model_dump(), "rows": rows,
        "machine": {"torch": torch.__version__, "python": platform.python_version(),
                    "cpu": platform.processor() or platform.machine()}}, indent=2))
    print(f"\nwrote {out}")


def honest_runs(n: int, q_per_round: int = 2, k: int = 2) -> None:
    """No false slash: n honest jobs, each with its own seed, worker index and thread count
    (1 or 2), 2 rounds of H = 20; in every round q segments are drawn from fresh randomness and
    replayed exactly as the tenant's spot check and each validator's vote replay them
    (`verify_segment`, bitwise, same thread count). A failed replay would be a false guilty
    vote; the bench counts them and exits non-zero if there is one."""
    tokens, _ = split(build_stdlib_corpus(1 << 20), workload())   # the seed does not enter
    checks = failures = 0
    started = time.perf_counter()
    for run in range(n):
        wl = workload(threads=1 + run % 2).model_copy(update={"seed": 2000 + run})
        cfg = DilocoConfig(workload=wl, workers=4, inner_steps=20, rounds=2)
        configure_determinism(wl)
        worker, global_state = run % 4, parameter_state(new_model(wl))
        committing = CommittingWorker(cfg, worker, tokens)
        n_round = len(segment_bounds(cfg.inner_steps, k)) - 1
        for r in range(cfg.rounds):
            picks = smp.select_segments(keccak(f"bench/honest/{run}/{r}".encode()), n_round,
                                        q_per_round)
            trace = committing.run_round_committed(global_state, r, k,
                                                   keep_states={p + d for p in picks for d in (0, 1)})
            c = trace.commitment
            for segment in picks:
                verdict = verify_segment(cfg, worker, r, c.root, c.n_leaves, k,
                                         open_segment(trace, segment), tokens)
                checks += 1
                if not (verdict.ok and verdict.reason == "bitwise"):
                    failures += 1
                    print(f"run {run} round {r} segment {segment}: {verdict.reason}", flush=True)
    seconds = time.perf_counter() - started
    torch.set_num_threads(1)
    print(f"| honest runs | rounds | replays (q = {q_per_round}, k = {k}) | failed replays "
          "(false guilty votes) | wall s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {n} | {2 * n} | {checks} | {failures} | {seconds:.1f} |")
    out = Path(__file__).parent / "results" / "verification_honest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": n, "rounds_per_run": 2, "inner_steps": 20, "k": k,
                               "q_per_round": q_per_round, "replays": checks,
                               "failures": failures, "seconds": seconds,
                               "torch": torch.__version__}, indent=2))
    print(f"wrote {out}")
    if failures:
        raise SystemExit(f"{failures} honest replays failed: an honest provider could be slashed")


def device_replay(device: str, segments: int = 10, k: int = 20) -> None:
    """Honest replay distance for a trace trained on `device` (cuda on a GPU machine): replayed
    on the same device (bitwise expected with `configure_determinism`) and on the CPU (not
    bitwise: other kernels; the distance is what a cross-hardware `replay_tolerance` must
    cover). Writes bench/results/verification_device.json."""
    wl = workload().model_copy(update={"device": device})
    configure_determinism(wl)
    cfg = DilocoConfig(workload=wl, workers=4, inner_steps=segments * k, rounds=1)
    tokens, _ = split(build_stdlib_corpus(1 << 20), wl)
    global_state = parameter_state(new_model(wl))
    rows = replay_distance(cfg, tokens, global_state, 1, 1, k, range(segments), device,
                           tuple(dict.fromkeys((device, "cpu"))))
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor()
    print(f"device: {name or device}; torch {torch.__version__}")
    print("| trace device | replay device | segments bitwise | max abs diff |")
    print("| --- | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['trace_device']} | {r['replay_device']} | {r['bitwise']}/{r['segments']} | "
              f"{r['max_abs_diff']:.3g} |")
    out = Path(__file__).parent / "results" / "verification_device.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows},
                              indent=2))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="5 rounds instead of 25")
    ap.add_argument("--worker-overhead", action="store_true",
                    help="the worker process's commit overhead and the tenant's spot check")
    ap.add_argument("--honest-runs", type=int, metavar="N",
                    help="N honest jobs, every sampled replay must be bitwise (no false slash)")
    ap.add_argument("--replay-device", choices=("cpu", "cuda"),
                    help="only the honest replay distance of a trace trained on this device "
                         "(same device and CPU); run with cuda on a GPU machine")
    args = ap.parse_args()
    if args.replay_device:
        device_replay(args.replay_device)
        return
    if args.worker_overhead:
        worker_overhead(rounds=6 if args.quick else 20)
        return
    if args.honest_runs:
        honest_runs(args.honest_runs)
        return
    rounds = 5 if args.quick else 25
    wl = workload()
    cfg = DilocoConfig(workload=wl, workers=4, inner_steps=100, rounds=rounds)
    configure_determinism(wl)
    tokens, _ = split(build_stdlib_corpus(1 << 20), wl)
    global_state = parameter_state(new_model(wl))
    n_params = sum(t.numel() for t in global_state.values())
    steps = cfg.rounds * cfg.inner_steps

    _, plain_s = run_job(Worker, cfg, tokens, global_state)
    print(f"plain worker: {steps} inner steps in {plain_s:.2f} s ({plain_s / steps * 1e3:.2f} ms/step), "
          f"{n_params:,} parameters")

    rows = []
    for k in (1, 2, 4, 10, 25, 100):
        n_round = len(segment_bounds(cfg.inner_steps, k)) - 1
        n_job = n_round * cfg.rounds
        q = smp.segments_needed(F, TARGET, n_job)
        picks = smp.select_segments(keccak(f"bench/{k}".encode()), n_job, q)
        keep: dict[int, set[int]] = {}
        for g in picks:
            keep.setdefault(g // n_round, set()).update({g % n_round, g % n_round + 1})
        traces, train_s = run_job(CommittingWorker, cfg, tokens, global_state, k, keep)
        commit_s = sum(t.commit_s for t in traces)
        verify_started = time.perf_counter()
        ok = 0
        for g in picks:
            r, s = divmod(g, n_round)
            c = traces[r].commitment
            v = verify_segment(cfg, 1, r, c.root, c.n_leaves, k, open_segment(traces[r], s), tokens)
            ok += v.ok and v.reason == "bitwise"
        verify_s = time.perf_counter() - verify_started
        replayed_steps = sum(min(k, cfg.inner_steps - (g % n_round) * k) for g in picks)
        q_round = next(q for q in range(1, n_round + 1)
                       if smp.job_detection_probability(F, q, n_round, cfg.rounds) >= TARGET)
        row = {
            "k": k, "segments_per_round": n_round, "segments_per_job": n_job, "Q": q,
            "detection_exact": smp.detection_probability(F, q, n_job),
            "detection_1_minus_1_minus_f_to_Q": smp.detection_probability(F, q),
            "replayed_steps": replayed_steps, "all_honest_replays_bitwise": ok == q,
            "overhead_analytic": replayed_steps / steps,
            "overhead_measured": verify_s / train_s,
            "verify_s": verify_s, "train_s": train_s, "commit_s": commit_s,
            "commit_overhead": commit_s / (train_s - commit_s),
            "commit_overhead_wall_vs_plain": (train_s - plain_s) / plain_s,
            "bytes_opened": q * 3 * n_params * 4,
            "per_round_q": q_round,
            "per_round_detection": smp.job_detection_probability(F, q_round, n_round, cfg.rounds),
            "per_round_overhead_analytic": q_round * k / cfg.inner_steps if k <= cfg.inner_steps else 1.0,
        }
        rows.append(row)
        print(f"k={k}: Q={q} replayed in {verify_s:.2f} s vs {train_s:.2f} s training", flush=True)

    # honest replay distance: same and different thread counts
    seg = list(range(5))
    distances = [row for a, b in ((1, 1), (1, 2), (2, 1), (2, 2))
                 for row in replay_distance(cfg, tokens, global_state, a, b, 20, seg)]
    torch.set_num_threads(1)

    # a Q sweep at k = 2 (analytic; the per-step replay cost is measured above)
    n2 = (cfg.inner_steps // 2) * cfg.rounds
    sweep = [{"Q": q, "overhead_analytic": q * 2 / steps,
              "detection_exact": smp.detection_probability(F, q, n2),
              "detection_approx": smp.detection_probability(F, q)}
             for q in (1, 5, 10, 22, 30, 44, 66, 100)]

    print()
    print(f"worker job: {cfg.rounds} rounds x H={cfg.inner_steps} = {steps} inner steps; faker share "
          f"f={F}; Q = fewest checks over the job for >= {TARGET:.0%} (exact, without replacement)")
    hdr = ("| k | segments/job | Q | P(catch) exact | 1-(1-f)^Q | replayed steps | overhead analytic "
           "| overhead measured | commit overhead | bitwise | per-round q | its overhead |")
    print(hdr)
    print("|" + " ---: |" * 12)
    for r in rows:
        print(f"| {r['k']} | {r['segments_per_job']} | {r['Q']} | {r['detection_exact']:.4f} | "
              f"{r['detection_1_minus_1_minus_f_to_Q']:.4f} | {r['replayed_steps']} | "
              f"{r['overhead_analytic']:.2%} | {r['overhead_measured']:.2%} | {r['commit_overhead']:+.1%} | "
              f"{'yes' if r['all_honest_replays_bitwise'] else 'NO'} | {r['per_round_q']} | "
              f"{r['per_round_overhead_analytic']:.1%} |")
    print()
    print("| trace threads | replay threads | segments bitwise | max abs diff |")
    print("| ---: | ---: | ---: | ---: |")
    for d in distances:
        print(f"| {d['trace_threads']} | {d['replay_threads']} | {d['bitwise']}/{d['segments']} | "
              f"{d['max_abs_diff']:.3g} |")
    print()
    print("| Q (k=2) | overhead | P(catch) exact | 1-(1-f)^Q |")
    print("| ---: | ---: | ---: | ---: |")
    for s in sweep:
        print(f"| {s['Q']} | {s['overhead_analytic']:.2%} | {s['detection_exact']:.4f} | "
              f"{s['detection_approx']:.4f} |")

    out = Path(__file__).parent / "results" / "verification.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "config": {"rounds": cfg.rounds, "inner_steps": cfg.inner_steps, "f": F, "target": TARGET,
                   "workload": wl.model_dump(), "parameters": n_params},
        "machine": {"torch": torch.__version__, "python": platform.python_version(),
                    "cpu": platform.processor() or platform.machine()},
        "plain_train_s": plain_s, "rows": rows, "replay_distance": distances, "q_sweep_k2": sweep,
    }, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
