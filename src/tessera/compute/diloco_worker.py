"""A DiLoCo worker process, run by the provider for a `diloco-worker` lease:

    python -m tessera.compute.diloco_worker --workload W.json --dataset PATH --dataset-sha256 HEX --out DIR

It serves rounds through files in DIR (the provider writes them from the tenant's signed
requests): for round r it waits for `rounds/r/request.json`, reads `rounds/r/params.bin` (the
full global state, or the coordinator's outer-step broadcast to apply to the state it holds),
takes H inner steps on its shard and writes `rounds/r/pseudo_gradient.bin`, then
`rounds/r/result.json`. Its state (the parameters it holds, AdamW, quantization residual) is
saved after every round, so a restarted worker carries on where it was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from tessera.compute.compress import deserialize
from tessera.compute.corpus import sha256_hex
from tessera.compute.diloco import (
    DilocoConfig,
    Worker,
    apply_broadcast,
    decode_tensors,
    new_model,
    parameter_state,
)
from tessera.compute.job import PROGRESS_FILE
from tessera.compute.train import configure_determinism, split
from tessera.protocol.workload import DilocoWorkerWorkload

STATE_FILE = "worker_state.pt"
GLOBAL_STATE_KIND = "global_state"
POLL_S = 0.02


def config_of(workload: DilocoWorkerWorkload) -> DilocoConfig:
    """The job-wide settings a worker and its coordinator must share."""
    return DilocoConfig(workload=workload.model, workers=workload.workers,
                        inner_steps=workload.inner_steps, compression=workload.compression)


def pending_round(out: Path) -> int | None:
    rounds = out / "rounds"
    if not rounds.exists():
        return None
    waiting = [int(d.name) for d in rounds.iterdir() if d.name.isdigit()
               and (d / "request.json").exists() and not (d / "result.json").exists()]
    return min(waiting) if waiting else None


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


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
    config = config_of(workload)
    device = configure_determinism(workload.model)
    train_tokens, _ = split(data, workload.model)
    worker = Worker(config, workload.worker, train_tokens, device)
    held = parameter_state(new_model(workload.model))
    state_path = args.out / STATE_FILE
    if state_path.exists():
        saved = torch.load(state_path, weights_only=False)
        held = saved["held"]
        worker.load_state_dict(saved["worker"])
    emit({"event": "start", "worker": workload.worker, "workers": workload.workers,
          "inner_steps": workload.inner_steps})
    while True:
        r = pending_round(args.out)
        if r is None:
            time.sleep(POLL_S)
            continue
        folder = args.out / "rounds" / str(r)
        request = json.loads((folder / "request.json").read_text())
        params = (folder / "params.bin").read_bytes()
        try:
            _, meta = deserialize(params)
            if meta.get("kind") == GLOBAL_STATE_KIND:
                held = decode_tensors(params, held, "none", config.chunk, GLOBAL_STATE_KIND)
            else:
                held = apply_broadcast(held, params, config)
        except ValueError as exc:
            _write_json(folder / "result.json", {"error": f"round {r} parameters refused: {exc}",
                                                 "params_sha256": request["params_sha256"]})
            emit({"event": "error", "message": f"round {r}: {exc}"})
            continue
        pg = worker.run_round(held, r)
        payload = worker.encode(pg.tensors, r)
        tmp = folder / "pseudo_gradient.bin.tmp"
        tmp.write_bytes(payload)
        os.replace(tmp, folder / "pseudo_gradient.bin")
        torch.save({"held": held, "worker": worker.state_dict(), "round": r}, str(state_path) + ".tmp")
        os.replace(str(state_path) + ".tmp", state_path)
        _write_json(folder / "result.json", {
            "params_sha256": request["params_sha256"], "sha256": sha256_hex(payload),
            "size": len(payload), "inner_loss": pg.mean_inner_loss, "compute_s": pg.compute_s})
        emit({"event": "progress", "round": r, "step": r + 1, "train_loss": pg.last_inner_loss,
              "tokens_per_s": pg.tokens / max(pg.compute_s, 1e-9)})


if __name__ == "__main__":
    sys.exit(main())
