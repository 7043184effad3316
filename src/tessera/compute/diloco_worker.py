"""A DiLoCo worker process, run by the provider for a `diloco-worker` lease:

    python -m tessera.compute.diloco_worker --workload W.json --dataset PATH --dataset-sha256 HEX --out DIR

It serves rounds through files in DIR (the provider writes them from the tenant's signed
requests): for round r it waits for `rounds/r/request.json`, reads `rounds/r/params.bin` (the
full global state, or the coordinator's outer-step broadcast to apply to the state it holds),
takes H inner steps on its shard and writes `rounds/r/pseudo_gradient.bin`, then
`rounds/r/result.json` naming the parameters it answered.

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
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tessera.compute.compress import deserialize
from tessera.compute.corpus import sha256_hex
from tessera.compute.diloco import (
    DilocoConfig,
    State,
    Worker,
    apply_broadcast,
    decode_tensors,
    new_model,
    parameter_state,
)
from tessera.compute.job import PROGRESS_FILE
from tessera.compute.train import configure_determinism, split
from tessera.protocol.workload import DilocoWorkerWorkload

STATE_DIR = "state"
GLOBAL_STATE_KIND = "global_state"
POLL_S = 0.02


def config_of(workload: DilocoWorkerWorkload) -> DilocoConfig:
    """The job-wide settings a worker and its coordinator must share."""
    return DilocoConfig(workload=workload.model, workers=workload.workers,
                        inner_steps=workload.inner_steps, compression=workload.compression)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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


@dataclass
class Held:
    """A worker's state between rounds: the parameters it holds and its optimizer/residual."""
    round: int          # the last round this state includes; -1 before the first
    params: State
    worker: Worker


class WorkerProcess:
    """One lease's worker: serves its rounds from `out` (see the module docstring)."""

    def __init__(self, workload: DilocoWorkerWorkload, data: bytes, out: Path):
        self.workload, self.out = workload, out
        self.config = config_of(workload)
        self.device = configure_determinism(workload.model)
        self.train_tokens, _ = split(data, workload.model)
        self.states = out / STATE_DIR
        self.states.mkdir(exist_ok=True)
        self.held = self._load(self.saved_rounds()[-1]) if self.saved_rounds() else self._fresh()

    def saved_rounds(self) -> list[int]:
        return sorted(int(p.stem.removeprefix("after-")) for p in self.states.glob("after-*.pt"))

    def _fresh(self) -> Held:
        return Held(-1, parameter_state(new_model(self.workload.model)),
                    Worker(self.config, self.workload.worker, self.train_tokens, self.device))

    def _load(self, round_index: int) -> Held:
        saved = torch.load(self.states / f"after-{round_index}.pt", weights_only=True)
        worker = Worker(self.config, self.workload.worker, self.train_tokens, self.device)
        worker.load_state_dict(saved["worker"])
        return Held(round_index, saved["held"], worker)

    def _save(self, held: Held) -> None:
        buffer = io.BytesIO()
        torch.save({"held": held.params, "worker": held.worker.state_dict(), "round": held.round},
                   buffer)
        _write_atomic(self.states / f"after-{held.round}.pt", buffer.getvalue())
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
                _write_atomic(folder / "result.json", json.dumps(
                    {"error": message, "params_sha256": params_sha256}).encode())
                emit({"event": "error", "message": message})
                continue
            pg = base.worker.run_round(start, r)   # advances base.worker's AdamW state
            payload = base.worker.encode(pg.tensors, r)
            current = _read_json(folder / "request.json")
            if current is None or current.get("params_sha256") != params_sha256:
                # re-sent with other parameters while we computed: forget this answer
                emit({"event": "round-superseded", "round": r})
                self.held = self.stored_before(r)
                continue
            _write_atomic(folder / "pseudo_gradient.bin", payload)
            self.held = Held(r, start, base.worker)
            self._save(self.held)
            _write_atomic(folder / "result.json", json.dumps({
                "params_sha256": params_sha256, "sha256": sha256_hex(payload),
                "size": len(payload), "inner_loss": pg.mean_inner_loss,
                "compute_s": pg.compute_s}).encode())
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
