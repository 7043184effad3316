"""A DiLoCo worker process, run by the provider for a `diloco-worker` lease:

    python -m tessera.compute.diloco_worker --workload W.json --dataset PATH --dataset-sha256 HEX --out DIR

It serves rounds through files in DIR (the provider writes them from the tenant's signed
requests): for round r it waits for `rounds/r/request.json`, reads `rounds/r/params.bin` (the
full global state, or the coordinator's outer-step broadcast to apply to the state it holds),
takes H inner steps on its shard and writes `rounds/r/pseudo_gradient.bin`, then
`rounds/r/result.json` naming the parameters it answered.

With `checkpoint_every = k` in the workload (verification on), the worker commits to its state
every k inner steps (`compute.replay.CommittingWorker`): `result.json` also carries the
checkpoint hashes, their Merkle root and the thread count, and the full state behind every
checkpoint is kept in `rounds/r/checkpoints/{i}.bin` (parameters + AdamW state in the tensor
wire format, `replay.encode_state`: what a verifier needs to replay segment i) for `RETAIN_S`;
the provider signs the commitment and serves those files (docs/verification.md).

A round is pending while its request has no result for exactly the requested parameters, so a
round the tenant re-sends with other parameters (a restarted coordinator) is run again. Every
round starts from the worker's state after the round before (`state/after-{r}.pt`: the
parameters it holds, AdamW, the int8 residual; the last two are kept), so a re-run gives the
answer a worker that only ever saw the new parameters would give, and a restarted worker
carries on where it was.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from tessera.compute.compress import deserialize
from tessera.compute.corpus import sha256_hex
from tessera.compute.diloco import (
    DilocoConfig,
    PseudoGradient,
    State,
    apply_broadcast,
    decode_tensors,
    derive_seed,
    load_parameters,
    new_model,
    parameter_state,
    shard_for,
)
from tessera.compute.job import PROGRESS_FILE
from tessera.compute.replay import (
    Checkpoint,
    CommittingWorker,
    RoundCommitment,
    RoundTrace,
    clone_optimizer_state,
    commitment_from_states,
    decode_state,
    encode_state,
    segment_bounds,
    tensor_hash,
)
from tessera.compute.train import batch, configure_determinism, split
from tessera.files import write_atomic
from tessera.protocol.workload import DilocoWorkerWorkload

STATE_DIR = "state"
CHECKPOINT_DIR = "checkpoints"
GLOBAL_STATE_KIND = "global_state"
POLL_S = 0.02
# How long a round's checkpoint states are kept: a commitment may be posted up to 2 h after it
# is signed (provider), then challenged for 1 h and voted on for 1 h (Verification defaults).
RETAIN_S = 8 * 3600
# TEST ONLY: written by a provider whose config has `[testing] cheat = ...` (never in production)
TESTING_FILE = "testing.json"
CHEATS = ("skip-steps", "random-pseudo-gradient", "wrong-shard", "wrong-round", "copy-worker")
# TEST ONLY: how long the copy-worker cheat waits for a sibling's answer (a sibling's first
# round includes its worker's start; inside a job's usual round_timeout)
COPY_WAIT_S = 30.0


def config_of(workload: DilocoWorkerWorkload) -> DilocoConfig:
    """The job-wide settings a worker and its coordinator must share."""
    return DilocoConfig(workload=workload.model, workers=workload.workers,
                        inner_steps=workload.inner_steps, compression=workload.compression)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def pending_round(out: Path, since: int = 0) -> int | None:
    """The lowest round >= `since` whose request has no answer for exactly its parameters."""
    rounds = out / "rounds"
    if not rounds.exists():
        return None
    waiting = []
    for folder in rounds.iterdir():
        if not folder.name.isdigit() or int(folder.name) < since:
            continue
        request = _read_json(folder / "request.json")
        if request is None:
            continue
        result = _read_json(folder / "result.json")
        if result is None or result.get("params_sha256") != request.get("params_sha256"):
            waiting.append(int(folder.name))
    return min(waiting) if waiting else None


def read_request(folder: Path) -> tuple[str, bytes] | None:
    """(params_sha256, params) when the request and the parameters on disk agree; None while
    the provider is replacing them (the caller polls again)."""
    request = _read_json(folder / "request.json")
    try:
        params = (folder / "params.bin").read_bytes()
    except FileNotFoundError:
        return None
    if request is None or hashlib.sha256(params).hexdigest() != request.get("params_sha256"):
        return None
    return request["params_sha256"], params


def checkpoint_path(round_folder: Path, index: int) -> Path:
    """Where the full state behind checkpoint `index` of a round is kept."""
    return round_folder / CHECKPOINT_DIR / f"{index}.bin"


def prune_checkpoints(out: Path, retain_s: float = RETAIN_S) -> None:
    """Drop the checkpoint states of rounds answered more than `retain_s` ago."""
    cutoff = time.time() - retain_s
    for folder in (out / "rounds").glob(f"*/{CHECKPOINT_DIR}"):
        result = folder.parent / "result.json"
        if result.exists() and result.stat().st_mtime < cutoff:
            for f in folder.iterdir():
                f.unlink(missing_ok=True)
            folder.rmdir()


def skip_steps_round(worker: CommittingWorker, start: State, round_index: int,
                     k: int) -> RoundTrace:
    """TEST ONLY (`[testing] cheat = "skip-steps"` in the provider's config): train half of
    every segment's steps and commit those states as if every step had been taken, so that a
    replay of any segment misses its committed end. Needs an even k that divides H."""
    honest = worker.config
    h = honest.inner_steps
    if k % 2 or h % k:
        raise ValueError(f"the skip-steps cheat needs an even k dividing H (k={k}, H={h})")
    worker.config = honest.model_copy(update={"inner_steps": h // 2})
    try:
        trace = worker.run_round_committed(start, round_index, k // 2)
    finally:
        worker.config = honest
    claimed = [Checkpoint(step, c.params_hash, c.optimizer_hash) for step, c in
               zip(segment_bounds(h, k), trace.commitment.checkpoints, strict=True)]
    trace.commitment = RoundCommitment(round_index, worker.worker, h, k, claimed)
    return trace


def random_pseudo_gradient_round(worker: CommittingWorker, start: State, round_index: int,
                                 k: int, scale: float = 1e-3) -> RoundTrace:
    """TEST ONLY (`cheat = "random-pseudo-gradient"`): train nothing; make up an end state
    θ_H = θ − Δ (Δ random), send θ − θ_H and commit states interpolated from θ to θ_H, each with
    the AdamW state the round started with. The hashes are real hashes of the made-up states,
    so every check without a replay passes (leaf 0 is θ and the previous round's AdamW state);
    the replay of any segment misses its committed end."""
    started = time.perf_counter()
    w, h = worker.config.workload, worker.config.inner_steps
    gen = torch.Generator().manual_seed(derive_seed(w.seed, round_index, worker.worker, "cheat"))
    end = {n: t - scale * torch.randn(t.shape, generator=gen) for n, t in start.items()}
    states = [{n: start[n] + (end[n] - start[n]) * (step / h) for n in start}
              for step in segment_bounds(h, k)]
    states[0], states[-1] = start, end
    opts = [clone_optimizer_state(worker.optimizer.state_dict())] * len(states)
    commitment = commitment_from_states(round_index, worker.worker, h, k, states, opts,
                                        worker.parameter_names())
    load_parameters(worker.model, start)
    with torch.no_grad():  # one forward pass, so the reported loss looks like a real one
        _, loss = worker.model(*batch(worker.shard, w, gen, worker.device))
    pg = PseudoGradient(worker.worker, round_index, {n: start[n] - end[n] for n in start},
                        loss.item(), loss.item(), h, h * w.batch_size * w.block_size,
                        time.perf_counter() - started)
    return RoundTrace(pg, commitment, states, opts, 0.0)


def wrong_shard_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                      train_tokens: torch.Tensor) -> RoundTrace:
    """TEST ONLY (`cheat = "wrong-shard"`): train every step, but on the next worker's shard,
    and commit the real trajectory under this worker's index."""
    workers = worker.config.workers
    if workers < 2:
        raise ValueError("the wrong-shard cheat needs another worker's shard (workers >= 2)")
    own = worker.shard
    worker.shard = shard_for(train_tokens, (worker.worker + 1) % workers, workers)
    try:
        return worker.run_round_committed(start, round_index, k)
    finally:
        worker.shard = own


def wrong_round_round(worker: CommittingWorker, start: State, round_index: int,
                      k: int) -> RoundTrace:
    """TEST ONLY (`cheat = "wrong-round"`): train every step on its own shard, but with the
    batches of the next round's generator, and commit the real trajectory as this round's."""
    trace = worker.run_round_committed(start, round_index + 1, k)
    trace.commitment = RoundCommitment(round_index, worker.worker, worker.config.inner_steps, k,
                                       trace.commitment.checkpoints)
    trace.pseudo_gradient.round = round_index
    return trace


def fetch_sibling_round(siblings: list[dict], round_index: int, n_checkpoints: int,
                        wait_s: float) -> tuple[dict, list[bytes]] | None:
    """TEST ONLY (copy-worker cheat): the first sibling worker's signed round answer and every
    checkpoint state behind it, from its provider's public endpoints; None if no sibling has
    a complete answer within `wait_s`."""
    deadline = time.monotonic() + wait_s
    with httpx.Client(timeout=5) as http:
        while True:
            for sibling in siblings:
                base = f"{sibling['endpoint']}/leases/{sibling['lease_id']}/rounds/{round_index}"
                try:
                    answer = http.get(base)
                    if answer.status_code != 200 or \
                            len(answer.json().get("checkpoints") or []) != n_checkpoints:
                        continue
                    states = [http.get(f"{base}/checkpoints/{i}") for i in range(n_checkpoints)]
                except httpx.HTTPError:
                    continue
                if all(r.status_code == 200 for r in states):
                    return answer.json(), [r.content for r in states]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


def copied_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                 answer: dict, states: list[bytes]) -> RoundTrace | None:
    """TEST ONLY (`cheat = "copy-worker"`): a sibling's round presented as this worker's: its
    checkpoint states committed under this worker's index and its pseudo-gradient θ − θ_H
    (with fp32 compression bitwise the sibling's payload; int8 uses this worker's residual).
    The AdamW state carried into the next round is the copied end state, so the next round's
    links hold too. None if the sibling's round does not start from `start`."""
    names = worker.parameter_names()
    decoded = [decode_state(data, names) for data in states]
    params, opts = [p for p, _ in decoded], [o for _, o in decoded]
    if tensor_hash(params[0]) != tensor_hash(start):
        return None
    h, w = worker.config.inner_steps, worker.config.workload
    commitment = commitment_from_states(round_index, worker.worker, h, k, params, opts, names)
    optimizer = worker.optimizer.state_dict()
    worker.optimizer.load_state_dict({**optimizer, "state": opts[-1]["state"]})
    pg = PseudoGradient(worker.worker, round_index,
                        {n: start[n] - params[-1][n] for n in start}, answer["inner_loss"],
                        answer["inner_loss"], h, h * w.batch_size * w.block_size,
                        answer["compute_s"])
    return RoundTrace(pg, commitment, params, opts, 0.0)


@dataclass
class Held:
    """A worker's state between rounds: the parameters it holds and its optimizer/residual."""
    round: int          # the last round this state includes; -1 before the first
    params: State
    worker: CommittingWorker


class WorkerProcess:
    """One lease's worker: serves its rounds from `out` (see the module docstring)."""

    def __init__(self, workload: DilocoWorkerWorkload, data: bytes, out: Path):
        self.workload, self.out = workload, out
        self.config = config_of(workload)
        self.device = configure_determinism(workload.model)
        self.train_tokens, _ = split(data, workload.model)
        self.testing = _read_json(out / TESTING_FILE) or {}   # TEST ONLY
        self.cheat = self.testing.get("cheat")
        if self.cheat is not None and self.cheat not in CHEATS:
            raise ValueError(f"unknown test-only cheat {self.cheat!r}; known: {CHEATS}")
        self.states = out / STATE_DIR
        self.states.mkdir(exist_ok=True)
        self.held = self._load(self.saved_rounds()[-1]) if self.saved_rounds() else self._fresh()

    def saved_rounds(self) -> list[int]:
        return sorted(int(p.stem.removeprefix("after-")) for p in self.states.glob("after-*.pt"))

    def _fresh(self) -> Held:
        return Held(-1, parameter_state(new_model(self.workload.model)),
                    CommittingWorker(self.config, self.workload.worker, self.train_tokens,
                                     self.device))

    def _load(self, round_index: int) -> Held:
        saved = torch.load(self.states / f"after-{round_index}.pt", weights_only=True)
        worker = CommittingWorker(self.config, self.workload.worker, self.train_tokens,
                                  self.device)
        worker.load_state_dict(saved["worker"])
        return Held(round_index, saved["held"], worker)

    def _save(self, held: Held) -> None:
        buffer = io.BytesIO()
        torch.save({"held": held.params, "worker": held.worker.state_dict(), "round": held.round},
                   buffer)
        write_atomic(self.states / f"after-{held.round}.pt", buffer.getvalue())
        for r in self.saved_rounds():
            if r < held.round - 1:
                (self.states / f"after-{r}.pt").unlink(missing_ok=True)

    def stored_before(self, round_index: int) -> Held:
        """The newest saved state from before `round_index` (fresh if there is none)."""
        earlier = [r for r in self.saved_rounds() if r < round_index]
        return self._load(earlier[-1]) if earlier else self._fresh()

    def state_before(self, round_index: int) -> Held:
        return self.held if self.held.round < round_index else self.stored_before(round_index)

    def start_params(self, base: Held, round_index: int, params: bytes) -> State:
        """The parameters round `round_index` starts from; ValueError if `params` are refused."""
        _, meta = deserialize(params)
        if meta.get("kind") == GLOBAL_STATE_KIND:
            return decode_tensors(params, base.params, "none", self.config.chunk, GLOBAL_STATE_KIND)
        if base.round != round_index - 1:
            raise ValueError(f"an outer-step broadcast needs the state after round "
                             f"{round_index - 1}, and this worker has none: send the full state")
        return apply_broadcast(base.params, params, self.config)

    @property
    def k(self) -> int:
        return self.workload.checkpoint_every

    def run_committed(self, worker: CommittingWorker, start: State, round_index: int,
                      emit) -> RoundTrace:
        if self.cheat is not None:
            return self.cheat_round(worker, start, round_index, emit)
        return worker.run_round_committed(start, round_index, self.k)

    def cheat_round(self, worker: CommittingWorker, start: State, round_index: int,
                    emit) -> RoundTrace:
        """TEST ONLY: the round as this lease's `[testing] cheat` plays it."""
        if self.cheat == "skip-steps":
            return skip_steps_round(worker, start, round_index, self.k)
        if self.cheat == "random-pseudo-gradient":
            return random_pseudo_gradient_round(worker, start, round_index, self.k)
        if self.cheat == "wrong-shard":
            return wrong_shard_round(worker, start, round_index, self.k, self.train_tokens)
        if self.cheat == "wrong-round":
            return wrong_round_round(worker, start, round_index, self.k)
        n = len(segment_bounds(self.config.inner_steps, self.k))
        fetched = fetch_sibling_round(self.testing.get("siblings", []), round_index, n,
                                      self.testing.get("copy_wait_s", COPY_WAIT_S))
        trace = copied_round(worker, start, round_index, self.k, *fetched) if fetched else None
        if trace is None:
            emit({"event": "cheat-copy-fallback", "round": round_index,
                  "reason": "no sibling answer from these parameters in time: trains honestly"})
            return worker.run_round_committed(start, round_index, self.k)
        emit({"event": "cheat-copied", "round": round_index,
              "from_lease": fetched[0]["lease_id"]})
        return trace

    def keep_checkpoints(self, folder: Path, trace: RoundTrace) -> dict:
        """Write every checkpoint's full state; what result.json says about the commitment."""
        started = time.perf_counter()
        (folder / CHECKPOINT_DIR).mkdir(exist_ok=True)
        names = self.held.worker.parameter_names()
        for i, (params, opt) in enumerate(zip(trace.params, trace.optimizer_states, strict=True)):
            write_atomic(checkpoint_path(folder, i), encode_state(params, opt, names))
        c = trace.commitment
        return {"checkpoint_every": c.k, "checkpoint_root": c.root.hex(),
                "checkpoints": [{"step": cp.step, "params_hash": cp.params_hash.hex(),
                                 "optimizer_hash": cp.optimizer_hash.hex()}
                                for cp in c.checkpoints],
                "threads": torch.get_num_threads(),
                "commit_s": trace.commit_s + time.perf_counter() - started}

    def serve(self, emit) -> None:
        while True:
            r = pending_round(self.out, since=max(self.held.round, 0))
            request = read_request(self.out / "rounds" / str(r)) if r is not None else None
            if request is None:
                time.sleep(POLL_S)
                continue
            folder = self.out / "rounds" / str(r)
            params_sha256, params = request
            base = self.state_before(r)
            try:
                start = self.start_params(base, r, params)
            except ValueError as exc:
                message = f"round {r} parameters refused: {exc}"
                write_atomic(folder / "result.json", json.dumps(
                    {"error": message, "params_sha256": params_sha256}).encode())
                emit({"event": "error", "message": message})
                continue
            trace = self.run_committed(base.worker, start, r, emit) if self.k else None
            pg = trace.pseudo_gradient if trace else base.worker.run_round(start, r)
            payload = base.worker.encode(pg.tensors, r)   # (both advance the AdamW state)
            current = _read_json(folder / "request.json")
            if current is None or current.get("params_sha256") != params_sha256:
                # re-sent with other parameters while we computed: forget this answer
                emit({"event": "round-superseded", "round": r})
                self.held = self.stored_before(r)
                continue
            write_atomic(folder / "pseudo_gradient.bin", payload)
            result = {"params_sha256": params_sha256, "sha256": sha256_hex(payload),
                      "size": len(payload), "inner_loss": pg.mean_inner_loss,
                      "compute_s": pg.compute_s}
            if trace is not None:
                result.update(self.keep_checkpoints(folder, trace))
            self.held = Held(r, start, base.worker)
            self._save(self.held)
            write_atomic(folder / "result.json", json.dumps(result).encode())
            if trace is not None:
                prune_checkpoints(self.out)
            emit({"event": "progress", "round": r, "step": r + 1,
                  "train_loss": pg.last_inner_loss,
                  "tokens_per_s": pg.tokens / max(pg.compute_s, 1e-9)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera.compute.diloco_worker")
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--dataset-sha256", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    log = open(args.out / PROGRESS_FILE, "a")

    def emit(event: dict) -> None:
        log.write(json.dumps(event) + "\n")
        log.flush()

    workload = DilocoWorkerWorkload.model_validate_json(args.workload.read_text())
    data = args.dataset.read_bytes()
    if sha256_hex(data) != args.dataset_sha256:
        emit({"event": "error", "message": "dataset does not hash to its name"})
        return 2
    process = WorkerProcess(workload, data, args.out)
    emit({"event": "start", "worker": workload.worker, "workers": workload.workers,
          "inner_steps": workload.inner_steps, "resumed_after_round": process.held.round})
    process.serve(emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
