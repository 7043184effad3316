"""Entry point run by the provider in a separate process:

    python -m tessera.compute.job --workload W.json --dataset PATH --dataset-sha256 HEX --out DIR

Writes one JSON line per event to DIR/progress.jsonl (and stdout); ends with a `done` line
carrying the result hash. Exit codes: 0 done, 2 bad input, 1 training failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from tessera.compute.corpus import sha256_hex
from tessera.compute.train import train
from tessera.protocol.workload import TrainingWorkload

PROGRESS_FILE = "progress.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera.compute.job")
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--dataset-sha256", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / PROGRESS_FILE, "a")

    def emit(event: dict) -> None:
        line = json.dumps(event)
        log.write(line + "\n")
        log.flush()
        print(line, flush=True)

    try:
        workload = TrainingWorkload.model_validate_json(args.workload.read_text())
    except (OSError, ValidationError) as exc:
        emit({"event": "error", "message": f"invalid workload {args.workload}: {exc}"})
        return 2
    data = args.dataset.read_bytes() if args.dataset.exists() else None
    if data is None or sha256_hex(data) != args.dataset_sha256:
        emit({"event": "error", "message": f"dataset {args.dataset} is missing or does not hash "
                                           f"to {args.dataset_sha256}"})
        return 2
    emit({"event": "start", "steps": workload.steps, "threads": workload.threads})
    try:
        result = train(workload, data, args.out, on_progress=lambda p: emit({"event": "progress", **p}))
    except Exception as exc:  # reported to the provider, which marks the lease's job failed
        emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    emit({"event": "done", "result_hash": result.result_hash, "metrics": result.metrics,
          "timing": result.timing})
    return 0


if __name__ == "__main__":
    sys.exit(main())
