"""The checks and the cost measurement of bench/verification_adversary.py (see its docstring):
every check the tenant runs on a played worker's round, from the states its provider serves,
and what verification costs per worker-round. Imported after `numerics.pin()`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from eth_account import Account

from tessera.compute import numerics, replay
from tessera.compute.checkpoints import decode_state, tensor_hash
from tessera.compute.diloco import (
    decode_tensors,
    load_parameters,
    new_model,
    parameter_state,
    validate_pseudo_gradient,
)
from tessera.compute.diloco_worker import WorkerProcess, checkpoint_path
from tessera.compute.replay import pseudo_gradient_of
from tessera.compute.segment_check import max_state_bytes, spot_check
from tessera.compute.train import batch, inner_step
from tessera.errors import CommitmentError
from tessera.protocol import commitment as cm
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.wire import CheckpointHashes, PayloadHashes, RoundResult
from tessera.tenant.multinode import diloco_config, worker_workload
from tessera.tenant.verify import FRESH, RoundLink, check_commitment

CHEATER = 1                      # the played worker; worker 0 is the sibling copy-worker copies
CHAIN_ID, VERIFICATION_ADDRESS = 31337, "0x" + "ab" * 20
JOB_ID, LEASE_ID, NOW = 1, 2, 1_900_000_000
KEY = Account.from_key(b"\x31" * 32)   # a bench-only key: signs the played worker's answers
ENDPOINT = "http://worker.bench"
LINK_MODEL_BPS = {"100 Mbit/s": 100e6 / 8, "1 Gbit/s": 1e9 / 8}   # MODELLED links, not measured



def signed_answer(trace, r: int) -> RoundResult:
    """The round answer a provider serves for this trace, its commitment signed with KEY."""
    c, sha = trace.commitment, hashlib.sha256(trace.payload).hexdigest()
    commitment = cm.Commitment(job=JOB_ID, round=r, lease_id=LEASE_ID, provider=KEY.address,
                               result_hash="0x" + sha, checkpoint_root=cm.hex32(c.root),
                               checkpoints=c.n_leaves, expiry=NOW + 7200)
    signature = KEY.sign_typed_data(full_message=cm.typed_data(CHAIN_ID, VERIFICATION_ADDRESS,
                                                               commitment)).signature
    pg = trace.pseudo_gradient
    return RoundResult(
        lease_id=LEASE_ID, round=r, params_sha256="0" * 64, sha256=sha, size=len(trace.payload),
        inner_loss=pg.mean_inner_loss, compute_s=pg.compute_s, signature="0x" + "00" * 65,
        commitment=cm.SignedCommitment(commitment=commitment,
                                       signature="0x" + bytes(signature).hex()),
        checkpoints=[CheckpointHashes(step=x.step, params_hash=x.params_hash.hex(),
                                      optimizer_hash=x.optimizer_hash.hex())
                     for x in c.checkpoints],
        payload=PayloadHashes(residual_in_hash=c.payload.residual_in_hash.hex(),
                              residual_out_hash=c.payload.residual_out_hash.hex(),
                              threads=c.payload.threads, profile=c.payload.profile))


def served(folder: Path) -> httpx.Client:
    """The provider's checkpoint route over an in-memory transport: the files its
    `keep_checkpoints` wrote, 404 for what it did not."""
    def handler(request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        if len(parts) == 6 and parts[0::2] == ["leases", "rounds", "checkpoints"]:
            path = checkpoint_path(folder / "rounds" / parts[3], int(parts[5]))
            if path.is_file():   # a stream, as a real server's body is (download reads it raw)
                return httpx.Response(200, stream=httpx.ByteStream(path.read_bytes()))
        return httpx.Response(404)
    return httpx.Client(transport=httpx.MockTransport(handler))


def cheap_checks(job, trace, theta, r: int, previous) -> tuple[list[str], object]:
    """The tenant's checks without replay: the signed commitment field by field
    (`check_commitment`) and the coordinator's decode and validation of the payload."""
    problems, commitment = [], trace.commitment
    try:
        commitment = check_commitment(
            signed_answer(trace, r), chain_id=CHAIN_ID, verification=VERIFICATION_ADDRESS,
            job=JOB_ID, round_index=r, lease_id=LEASE_ID, provider=KEY.address, worker=CHEATER,
            inner_steps=job.config.inner_steps, k=job.k, threads=job.spec.workload.threads,
            start_params_hash=tensor_hash(theta), min_expiry=NOW + 600,
            link=FRESH if previous is None else RoundLink.after(previous))
    except (CommitmentError, ValueError) as exc:
        problems.append(f"commitment: {exc}"[:300])
    try:
        pg = decode_tensors(trace.payload, theta, job.config.compression, job.config.chunk,
                            "pseudo_gradient")
        if reason := validate_pseudo_gradient(pg, theta):
            problems.append(f"payload refused: {reason}"[:300])
    except Exception as exc:  # the coordinator refuses what it cannot decode
        problems.append(f"payload refused: {exc}"[:300])
    return problems, commitment


def bounds_problems(job, folder: Path, commitment) -> dict[int, str]:
    """`replay.state_bounds` on every served state (index -> why not), when it exists."""
    bounds = getattr(replay, "state_bounds", None)
    if bounds is None:
        return {}
    names, out = replay.parameter_names(job.config), {}
    for i in range(commitment.n_segments + 1):
        path = checkpoint_path(folder, i)
        if not path.is_file():
            continue
        params, optimizer = decode_state(path.read_bytes(), names)
        problem = bounds(optimizer, job.config.workload.max_grad_norm)
        if problem:
            out[i] = str(problem)[:300]
    return out


def check_round(job, process, trace, theta, r: int, previous, folder: Path):
    """Every check of one round, for real: (the round's record, the commitment its next
    round must link to)."""
    started = time.perf_counter()
    round_folder = folder / "rounds" / str(r)
    round_folder.mkdir(parents=True, exist_ok=True)
    reasons: dict = {}
    try:
        process.keep_checkpoints(round_folder, trace)
    except Exception as exc:   # what it cannot keep it cannot serve: those openings fail
        reasons["keep"] = f"{type(exc).__name__}: {exc}"[:300]
    cheap, commitment = cheap_checks(job, trace, theta, r, previous)
    limit = max_state_bytes(sum(t.numel() for t in theta.values()))
    tolerance = job.spec.verification.replay_tolerance
    with served(folder) as http:
        def check(segment):
            return spot_check(http, ENDPOINT, LEASE_ID, job.config, CHEATER, commitment, segment,
                              job.tokens, limit, tolerance, start_params=theta)
        payload = check(commitment.payload_segment)
        segments = [check(s) for s in range(commitment.n_segments)]
    bounded = bounds_problems(job, round_folder, commitment)
    failed = sorted({s for s, c in enumerate(segments) if c.ok is False}
                    | {i for i in bounded if i < commitment.n_segments})
    payload_ok = payload.ok is not False and commitment.payload_segment not in bounded
    reasons.update({"cheap": cheap} if cheap else {})
    if not payload_ok:
        reasons["payload"] = bounded.get(commitment.payload_segment) or payload.reason
    if failed:   # one line per kind of failure (numbers in the messages aside)
        kinds = {}
        for s in failed:
            why = segments[s].reason if segments[s].ok is False else f"state bounds: {bounded[s]}"
            kinds.setdefault(re.sub(r"\d[\d.e+-]*", "#", why), f"segment {s}: {why}")
        reasons["segments"] = list(kinds.values())
    unjudged = [s for s, c in enumerate(segments) if c.ok is None]
    checks = [name for name, bad in (("cheap", cheap), ("payload", not payload_ok),
                                     ("segment", failed), ("state_bounds", bounded)) if bad]
    record = {"round": r, "cheap_ok": not cheap, "payload_ok": payload_ok,
              "segments_failed": failed, "segments_unjudged": unjudged, "reasons": reasons,
              "failed_checks": checks, "check_s": round(time.perf_counter() - started, 3),
              "summary": f"cheap {'ok' if not cheap else 'FAIL'}, payload "
                         f"{'ok' if payload_ok else 'FAIL'}, segments failed {failed} of "
                         f"{commitment.n_segments}" + (f", unjudged {unjudged}" if unjudged else "")}
    return record, commitment


def timed(fn, *args):
    """(fn(*args), wall seconds, CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def overhead_round(proc: WorkerProcess, theta: dict, job, folder: Path, r: int = 1) -> dict:
    """One committed round and every verification cost around it, one part after another."""
    worker, n_params = proc.held.worker, sum(t.numel() for t in theta.values())
    commit_cpu, checkpoint = [0.0], worker._checkpoint

    def counted(*args):   # the CPU time of each checkpoint (commit_s is its wall time)
        started = time.process_time()
        try:
            return checkpoint(*args)
        finally:
            commit_cpu[0] += time.process_time() - started
    worker._checkpoint = counted
    try:
        trace, wall, cpu = timed(worker.run_round_committed, theta, r, job.k)
    finally:
        del worker._checkpoint
    round_folder = folder / "rounds" / str(r)
    round_folder.mkdir(parents=True, exist_ok=True)
    _, keep_wall, keep_cpu = timed(proc.keep_checkpoints, round_folder, trace)
    kept = sum(f.stat().st_size for f in (round_folder / "checkpoints").iterdir())
    _, cheap_wall, cheap_cpu = timed(cheap_checks, job, trace, theta, r, None)
    c = trace.commitment
    with served(folder) as http:
        def check(segment):
            return spot_check(http, ENDPOINT, LEASE_ID, job.config, CHEATER, c, segment,
                              job.tokens, max_state_bytes(n_params), start_params=theta)
        payload, pay_wall, pay_cpu = timed(check, c.payload_segment)
        seg, seg_wall, seg_cpu = timed(check, min(1, c.n_segments - 1))
    if not (payload.ok and seg.ok):
        raise RuntimeError(f"an honest round failed its checks: {payload.reason}, {seg.reason}")
    return {"train_s": wall - trace.commit_s, "train_cpu_s": cpu - commit_cpu[0],
            "commit_s": trace.commit_s, "commit_cpu_s": commit_cpu[0],
            "keep_s": keep_wall, "keep_cpu_s": keep_cpu, "kept_bytes": kept,
            "tenant_cheap_s": cheap_wall, "tenant_cheap_cpu_s": cheap_cpu,
            "tenant_payload_check_s": pay_wall, "tenant_payload_check_cpu_s": pay_cpu,
            "payload_check_bytes": payload.bytes, "spot_check_s": seg_wall,
            "spot_check_cpu_s": seg_cpu, "spot_check_bytes": seg.bytes}


def measure_overhead(spec: JobSpec, model, job, repeats: int = 1) -> dict:
    """What verification costs per worker-round at the defaults, the parts one after another:
    the worker's commitment (hash + copy of every checkpoint: `commit_s`) and its kept states
    (`keep_checkpoints`: encode + write), the tenant's cheap checks (the signed commitment, θ's
    hash, the payload's decode), its payload check (every round) and one spot check (x p), each
    as the tenant runs it (served bytes, decode, verify). A warm-up step and one encoded payload
    first fill the AdamW state and the residual, so the measured round hashes, keeps and serves
    full states like every round after the first. Job compute = the round's training time
    without the commitment (wall - commit_s)."""
    spec = spec.model_copy(update={"workload": model})
    job = job_for(job, spec)
    p = job.p
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc = WorkerProcess(worker_workload(spec, CHEATER, job.workers), job.data, folder)
        worker = proc.held.worker
        theta = parameter_state(new_model(model))
        n_params = sum(t.numel() for t in theta.values())
        load_parameters(worker.model, theta)
        gen = torch.Generator().manual_seed(model.seed)
        inner_step(worker.model, worker.optimizer, *batch(worker.shard, model, gen, worker.device),
                   model.max_grad_norm, model.learning_rate_at(0))
        worker.encode(pseudo_gradient_of(theta, parameter_state(worker.model)), 0)
        runs = [overhead_round(proc, theta, job, folder) for _ in range(repeats)]
    m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    parts = {"worker_commit": m["commit_s"], "worker_keep_states": m["keep_s"],
             "tenant_cheap_checks": m["tenant_cheap_s"],
             "tenant_payload_check": m["tenant_payload_check_s"],
             "tenant_spot_check_times_p": p * m["spot_check_s"]}
    total = sum(parts.values())
    cpu = (m["commit_cpu_s"] + m["keep_cpu_s"] + m["tenant_cheap_cpu_s"]
           + m["tenant_payload_check_cpu_s"] + p * m["spot_check_cpu_s"])
    down = m["payload_check_bytes"] + p * m["spot_check_bytes"]
    return {
        "model": {f: getattr(model, f) for f in ("n_layer", "n_head", "n_embd", "block_size",
                                                  "batch_size")} | {"parameters": n_params},
        "measured": f"{repeats} round(s) of H={job.config.inner_steps}, k={job.k}, one worker, "
                    f"{torch.get_num_threads()} thread(s), median; extrapolated: the same "
                    f"fraction for each of the job's {spec.diloco.rounds} rounds (every round "
                    "after the first has the same shape), the spot check at its expected p "
                    "x one segment's cost",
        "overhead_total": round(total / m["train_s"], 4),
        "overhead_total_cpu_time": round(cpu / m["train_cpu_s"], 4),
        "parts_fraction": {key: round(v / m["train_s"], 4) for key, v in parts.items()},
        "per_worker_round_s": {key: round(v, 4) for key, v in m.items() if key.endswith("_s")},
        "download_bytes_per_worker_round": round(down),
        "kept_bytes_per_worker_round": round(m["kept_bytes"]),
        "download_time_model": {name: {"seconds": round(down / bps, 4),
                                       "fraction_of_compute": round(down / bps / m["train_s"], 4),
                                       "overhead_total_with_it": round(
                                           (total + down / bps) / m["train_s"], 4)}
                                for name, bps in LINK_MODEL_BPS.items()},
        "download_note": "MODEL, not measured: bytes / link speed, no latency, the tenant's "
                         "link to one worker; the checks' own times include reading the served "
                         "bytes in memory",
        "gas_note": "not included: one post_root per round per order (bench/results/"
                    "verification_gas.json)",
    }


def job_for(job, spec: JobSpec):
    """`job` with another model (what cheap_checks reads: config, k, spec)."""
    clone = object.__new__(type(job))
    clone.__dict__.update(job.__dict__, spec=spec, config=diloco_config(spec, job.workers))
    return clone


PROFILE_SPEED_SNIPPET = """
import json, sys, time, torch
from tessera.compute.corpus import build_stdlib_corpus
from tessera.compute.diloco import DilocoConfig, Worker, new_model, parameter_state
from tessera.compute.train import configure_determinism, split
from tessera.protocol.workload import TrainingWorkload
w = TrainingWorkload.model_validate_json(sys.argv[1])
configure_determinism(w)
tokens, _ = split(build_stdlib_corpus(1 << 20), w)
cfg = DilocoConfig(workload=w, workers=3, inner_steps=int(sys.argv[2]))
start, worker = parameter_state(new_model(w)), None
worker = Worker(cfg, 0, tokens)
worker.run_round(start, 0)
t = time.perf_counter()
worker.run_round(start, 1)
print(json.dumps({"tokens_per_s": cfg.inner_steps * w.batch_size * w.block_size
                  / (time.perf_counter() - t)}))
"""


def profile_cost(model, inner_steps: int, repeats: int = 2) -> dict:
    """Training speed under the pinned numerics profile against the same training unpinned, in
    fresh processes one after another (uncontended: run nothing else meanwhile), interleaved.
    The profile is what every verified job trains under, so its slowdown is a cost of
    verification the per-round parts above do not include."""
    runs: dict[str, list[float]] = {"unpinned": [], "pinned": []}
    clean = {k: v for k, v in os.environ.items() if k not in numerics.PROFILE_ENV}
    for _ in range(repeats):
        for name, env in (("unpinned", clean), ("pinned", {**clean, **numerics.PROFILE_ENV})):
            out = subprocess.run([sys.executable, "-c", PROFILE_SPEED_SNIPPET,
                                  model.model_dump_json(), str(inner_steps)],
                                 capture_output=True, text=True, env=env, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"])
    speed = {k: statistics.median(v) for k, v in runs.items()}
    return {"tokens_per_s": {k: round(v) for k, v in speed.items()},
            "samples": {k: [round(x) for x in v] for k, v in runs.items()},
            "pinned_vs_unpinned": round(speed["pinned"] / speed["unpinned"], 3),
            "extra_compute_fraction": round(speed["unpinned"] / speed["pinned"] - 1, 3),
            "method": f"one warm-up round then one timed round of {inner_steps} inner steps, "
                      f"1 worker, the model's threads, median of {repeats}, processes run one "
                      "after another"}
