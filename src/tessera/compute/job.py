"""Entry point run by the provider in a separate process:

    python -m tessera.compute.job --workload W.json --dataset PATH --dataset-sha256 HEX --out DIR

Writes one JSON line per event to DIR/progress.jsonl (and stdout); ends with a `done` line
carrying the result hash. Exit codes: 0 done, 2 bad input, 1 training failed.
"""

from __future__ import annotations

import os

# before torch is imported, so that cuBLAS can never start without it (determinism on CUDA)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from pydantic import ValidationError  # noqa: E402

from tessera.compute.corpus import sha256_hex  # noqa: E402
from tessera.compute.train import train  # noqa: E402
from tessera.protocol.workload import TrainingWorkload  # noqa: E402

PROGRESS_FILE = "progress.jsonl"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def describe(exc: ValidationError) -> str:
    """One line per problem, each naming its field: `n_embd: must be divisible by n_head`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'workload'}: {e['msg']}"
                     for e in exc.errors())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera.compute.job")
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--dataset-sha256", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / PROGRESS_FILE
    log = open(path, "a")
    if path.stat().st_size:
        with open(path, "rb") as previous:
            previous.seek(-1, os.SEEK_END)
            if previous.read(1) != b"\n":
                log.write("\n")  # a previous run was killed mid-line: end its line first

    def emit(event: dict) -> None:
        line = json.dumps(event)
        log.write(line + "\n")
        log.flush()
        print(line, flush=True)

    try:
        workload = TrainingWorkload.model_validate_json(args.workload.read_text())
    except OSError as exc:
        emit({"event": "error", "message": f"cannot read workload {args.workload}: {exc}"})
        return EXIT_BAD_INPUT
    except ValidationError as exc:
        emit({"event": "error", "message": f"invalid workload {args.workload}: {describe(exc)}"})
        return EXIT_BAD_INPUT
    if not args.dataset.is_file():
        emit({"event": "error", "message": f"dataset {args.dataset} is missing"})
        return EXIT_BAD_INPUT
    data = args.dataset.read_bytes()
    if (actual := sha256_hex(data)) != args.dataset_sha256.lower().removeprefix("0x"):
        emit({"event": "error", "message": f"dataset {args.dataset} does not hash to "
                                           f"{args.dataset_sha256} (its sha256 is {actual})"})
        return EXIT_BAD_INPUT
    emit({"event": "start", "steps": workload.steps, "threads": workload.threads})
    try:
        result = train(workload, data, args.out, on_progress=lambda p: emit({"event": "progress", **p}))
    except Exception as exc:  # reported to the provider, which marks the lease's job failed
        emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        return EXIT_FAILED
    emit({"event": "done", "result_hash": result.result_hash, "metrics": result.metrics,
          "timing": result.timing})
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
