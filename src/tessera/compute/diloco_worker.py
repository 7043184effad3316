"""A DiLoCo worker process, run by the provider for a `diloco-worker` lease:

    python -m tessera.compute.diloco_worker --workload W.json --dataset PATH --dataset-sha256 HEX --out DIR

It serves rounds through files in DIR (the provider writes them from the tenant's signed
requests): for round r it waits for `rounds/r/request.json`, reads `rounds/r/params.bin` (the
full global state, or the coordinator's outer-step broadcast to apply to the state it holds),
takes H inner steps on its shard and writes `rounds/r/pseudo_gradient.bin`, then
`rounds/r/result.json` naming the parameters it answered.

With `checkpoint_every = k` in the workload (verification on), the worker commits to its state
every k inner steps (`compute.replay.CommittingWorker`): `result.json` also carries the
checkpoint hashes, their Merkle root and the payload leaf's fields (residual hashes, threads,
numerics profile), and the full state behind every checkpoint is kept in
`rounds/r/checkpoints/{i}.bin` (parameters + AdamW state in the tensor wire format,
`checkpoints.encode_state`: what a verifier needs to replay segment i; after the last one, the
residual the round started with, which the payload segment needs) for `RETAIN_S`;
the provider signs the commitment and serves those files (docs/verification.md).

A round is pending while its request has no result for exactly the requested parameters, so a
round the tenant re-sends with other parameters (a restarted coordinator) is run again. Every
round starts from the worker's state after the round before (`state/after-{r}.pt`: the
parameters it holds, AdamW, the int8 residual; the last three are kept), so a re-run gives the
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tessera.compute import numerics
from tessera.compute.checkpoints import encode_residual, state_parts
from tessera.compute.compress import deserialize
from tessera.compute.corpus import sha256_hex
from tessera.compute.diloco import (
    DilocoConfig,
    State,
    apply_broadcast,
    decode_tensors,
    new_model,
    parameter_state,
)
from tessera.compute.job import PROGRESS_FILE
from tessera.compute.replay import CommittingWorker, RoundTrace
from tessera.compute.train import configure_determinism, split
from tessera.files import write_atomic
from tessera.protocol.commitment import VALIDITY_S
from tessera.protocol.workload import DilocoWorkerWorkload

STATE_DIR = "state"
CHECKPOINT_DIR = "checkpoints"
# answers the provider committed to, set aside under their roots when the tenant re-sent the
# round (provider/superseded_answers.py): `rounds/r/superseded/{root}/checkpoints/`
SUPERSEDED_DIR = "superseded"
GLOBAL_STATE_KIND = "global_state"
POLL_S = 0.02
# How long a round's checkpoint states are kept: a commitment may be posted up to 2 h after it
# is signed (provider), then challenged for 1 h and voted on for 1 h (Verification defaults).
RETAIN_S = 8 * 3600
# ... and at least this long past the expiry of the commitment to them: the provider signs a
# commitment again, for VALIDITY_S more, when a tenant asks hours later (review 31, finding 2)
RETAIN_AFTER_EXPIRY_S = RETAIN_S - VALIDITY_S


def config_of(workload: DilocoWorkerWorkload) -> DilocoConfig:
    """The job-wide settings a worker and its coordinator must share."""
    return DilocoConfig(workload=workload.model, workers=workload.workers,
                        inner_steps=workload.inner_steps, compression=workload.compression)


def read_json(path: Path) -> dict | None:
    """A JSON file's object; None while it is missing or half written."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def current_answer(folder: Path) -> dict | None:
    """A round's `result.json` if it answers exactly the parameters its `request.json` names
    (None while the worker works, or while only an answer to replaced parameters is there).
    The one test of an answer, for the worker (`pending_round`) and the provider serving the
    rounds (provider/diloco_rounds.py)."""
    request = read_json(folder / "request.json")
    result = read_json(folder / "result.json")
    if request is None or result is None or \
            result.get("params_sha256") != request.get("params_sha256"):
        return None
    return result


def round_answered(folder: Path) -> bool | None:
    """Whether a round is answered (`current_answer`); None while no request is queued there."""
    if read_json(folder / "request.json") is None:
        return None
    return current_answer(folder) is not None


def pending_round(out: Path, since: int = 0) -> int | None:
    """The lowest round >= `since` whose request has no answer for exactly its parameters."""
    rounds = out / "rounds"
    if not rounds.exists():
        return None
    waiting = [int(folder.name) for folder in rounds.iterdir()
               if folder.name.isdigit() and int(folder.name) >= since
               and round_answered(folder) is False]
    return min(waiting) if waiting else None


def read_request(folder: Path) -> tuple[str, bytes] | None:
    """(params_sha256, params) when the request and the parameters on disk agree; None while
    the provider is replacing them (the caller polls again)."""
    request = read_json(folder / "request.json")
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


def committed_until(answer_folder: Path) -> int:
    """The expiry of the commitment the provider signed to the folder's answer (0: none)."""
    signed = read_json(answer_folder / "commitment.json") or {}
    expiry = signed.get("commitment", {}).get("expiry", 0) if isinstance(signed, dict) else 0
    return expiry if isinstance(expiry, int) else 0


def states_kept_until(answer_folder: Path, retain_s: float = RETAIN_S) -> float:
    """When the checkpoint states of the folder's answer may go: `retain_s` after the answer
    and RETAIN_AFTER_EXPIRY_S after the latest commitment to it expired, whichever is later
    (the provider signs no commitment to states this close to going: review 32)."""
    answered = (answer_folder / "result.json").stat().st_mtime
    return max(answered + retain_s, committed_until(answer_folder) + RETAIN_AFTER_EXPIRY_S)


def checkpoint_folders(out: Path) -> list[Path]:
    """Every folder of checkpoint states under a lease's `out`: its rounds' own, and those of
    answers the provider set aside."""
    rounds = out / "rounds"
    return [*rounds.glob(f"*/{CHECKPOINT_DIR}"),
            *rounds.glob(f"*/{SUPERSEDED_DIR}/*/{CHECKPOINT_DIR}")]


def prune_checkpoints(out: Path, retain_s: float = RETAIN_S) -> None:
    """Drop the checkpoint states of answers past `states_kept_until` (answers set aside by
    the provider too: their result.json and commitment.json go with them)."""
    now = time.time()
    for folder in checkpoint_folders(out):
        try:   # (the provider may be setting an answer aside meanwhile: it moves folders)
            if states_kept_until(folder.parent, retain_s) < now:
                for f in folder.iterdir():
                    f.unlink(missing_ok=True)
                folder.rmdir()
        except FileNotFoundError:
            continue


Emit = Callable[[dict], None]   # writes one event to the worker's progress log
# How a worker process plays a committed round: (process, worker, start, round, emit) -> its
# trace. `honest_round` unless `main(play_round=...)` says otherwise, which only the TEST-ONLY
# cheating worker of tessera.testing does (a production provider cannot reach it).
PlayRound = Callable[["WorkerProcess", CommittingWorker, State, int, Emit], RoundTrace]


def honest_round(process: WorkerProcess, worker: CommittingWorker, start: State,
                 round_index: int, emit: Emit) -> RoundTrace:
    """A committed round as the workload asks: H inner steps, a checkpoint every k."""
    return worker.run_round_committed(start, round_index, process.k)


@dataclass
class Held:
    """A worker's state between rounds: the parameters it holds and its optimizer/residual."""
    round: int          # the last round this state includes; -1 before the first
    params: State
    worker: CommittingWorker


class WorkerProcess:
    """One lease's worker: serves its rounds from `out` (see the module docstring)."""

    def __init__(self, workload: DilocoWorkerWorkload, data: bytes, out: Path,
                 play_round: PlayRound | None = None):
        self.workload, self.out = workload, out
        self.config = config_of(workload)
        self.device = configure_determinism(workload.model)
        self.train_tokens, _ = split(data, workload.model)
        self.play_round = play_round or honest_round
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
        for r in self.saved_rounds():   # three kept: round held.round - 1 may be run again
            if r < held.round - 2:
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
                      emit: Emit) -> RoundTrace:
        return self.play_round(self, worker, start, round_index, emit)

    def keep_checkpoints(self, folder: Path, trace: RoundTrace) -> dict:
        """Write every checkpoint's full state, then (at index `payload_segment + 1`) the
        residual the round started with; what result.json says about the commitment."""
        started = time.perf_counter()
        (folder / CHECKPOINT_DIR).mkdir(exist_ok=True)
        names = self.held.worker.parameter_names()
        for i, (params, opt) in enumerate(zip(trace.params, trace.optimizer_states, strict=True)):
            write_atomic(checkpoint_path(folder, i), state_parts(params, opt, names))
        c = trace.commitment
        write_atomic(checkpoint_path(folder, c.payload_segment + 1), encode_residual(trace.residual_in))
        return {"checkpoint_every": c.k, "checkpoint_root": c.root.hex(),
                "checkpoints": [{"step": cp.step, "params_hash": cp.params_hash.hex(),
                                 "optimizer_hash": cp.optimizer_hash.hex()}
                                for cp in c.checkpoints],
                "payload": {"residual_in_hash": c.payload.residual_in_hash.hex(),
                            "residual_out_hash": c.payload.residual_out_hash.hex(),
                            "threads": c.payload.threads, "profile": c.payload.profile},
                "commit_s": trace.commit_s + time.perf_counter() - started}

    def serve(self, emit) -> None:
        while True:
            # a round re-sent with other parameters is run again, up to the one before the last
            # answered: a tenant that stopped after sending round r + 1, before committing round
            # r, re-sends round r when it resumes (tenant/coordinator.py `_send_next`)
            r = pending_round(self.out, since=max(self.held.round - 1, 0))
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
            if self.k:   # (both paths advance the AdamW state and the residual)
                trace = self.run_committed(base.worker, start, r, emit)
                pg, payload = trace.pseudo_gradient, trace.payload
            else:
                trace, pg = None, base.worker.run_round(start, r)
                payload = base.worker.encode(pg.tensors, r)
            current = read_json(folder / "request.json")
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


def main(argv: list[str] | None = None, play_round: PlayRound | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera.compute.diloco_worker")
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--dataset-sha256", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    numerics.pin()   # before the first torch op: the kernels a verifier's replay uses too
    log = open(args.out / PROGRESS_FILE, "a")

    def emit(event: dict) -> None:
        log.write(json.dumps(event) + "\n")
        log.flush()

    workload = DilocoWorkerWorkload.model_validate_json(args.workload.read_text())
    data = args.dataset.read_bytes()
    if sha256_hex(data) != args.dataset_sha256:
        emit({"event": "error", "message": "dataset does not hash to its name"})
        return 2
    process = WorkerProcess(workload, data, args.out, play_round)
    emit({"event": "start", "worker": workload.worker, "workers": workload.workers,
          "inner_steps": workload.inner_steps, "resumed_after_round": process.held.round})
    process.serve(emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
