"""DiLoCo's coordinator at many workers: memory per parameter and time per round.

Two measurements:

  coordinator  One round as the tenant's coordinator takes it (`tenant/round_intake.py`): n int8
               pseudo-gradients of a ~1 M-parameter model read one at a time (as they arrive),
               decoded, validated and folded in, then the outer step. n = 4, 16, 100, for the
               mean (streamed: an exact sum, `compute/exact_sum.py`) and the median (it needs
               every answer at once, so it holds them). Each row runs twice, each time in a fresh
               process, alone: `coordinator_bytes_per_param` is that process's peak resident
               memory during the round minus its memory before it (the model, the outer
               optimizer and the published parameters are already there), over the parameters:
               measured, not counted, with glibc told to give freed pages back (else freed
               tensors stay resident and hide what a round holds); the times come from the
               other run, with the allocator a user gets. `round_s` is the coordinator's time
               for the whole round (every answer and the outer step, as if all arrived at once:
               an upper bound of its share of a round); `last_answer_to_step_s` is what
               streaming leaves on the round's critical path (folding the last answer, the
               outer step). The payloads are random int8
               pseudo-gradients at a trained model's magnitudes (the coordinator's work does not
               depend on what they hold beyond their range).
  hundred      100 workers of the default small model trained with DiLoCo (int8, mean) on this
               machine: the real `Worker` and `Coordinator` in one process (`run_diloco`), the
               workers one after another, so the round's wall time here is their summed compute
               and says nothing of a distributed round; what it shows is that the job learns at
               100 workers and what the coordinator holds and spends per round.

  tree         The same payloads through a tree of aggregators whose partial sums are checked
               (`compute/aggregation_tree.py`, bench/diloco_tree.py): bytes into the root's link
               against the flat coordinator's, each level's work and check, the root's round,
               and how often a lying aggregator is caught per round (measured with fresh
               sample seeds, next to the prediction). `hundred` is run a second time through
               a tree of fan-in 10 (`hundred_tree`): the held-out loss with the partials'
               re-quantization.

What is not here: the tree runs in one process (no aggregator is a leased node yet, and the
broadcast is not relayed down it: `down_*` fields are a model).

    .venv/bin/python bench/diloco_scale.py           # ~10 min on 2 CPU cores
    .venv/bin/python bench/diloco_scale.py --quick   # a smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tessera.compute import numerics

numerics.pin()   # as `tessera` does (the tenant's process is pinned before any torch op)

import torch  # noqa: E402

from tessera.compute.corpus import build_stdlib_corpus  # noqa: E402
from tessera.compute.diloco import Coordinator, DilocoConfig, encode_tensors  # noqa: E402
from tessera.compute.diloco_simulation import run_diloco  # noqa: E402
from tessera.compute.train import configure_determinism, held_out_loss, split  # noqa: E402
from tessera.protocol.workload import TrainingWorkload  # noqa: E402
from tessera.tenant.round_intake import RoundIntake  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from diloco_tree import detection_rows, root_round, tree_round  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "diloco_scale.json"
# ~1 M parameters: large enough that tensors, not the allocator, decide the resident memory
COORDINATOR_MODEL = TrainingWorkload(n_layer=2, n_embd=192, n_head=4, block_size=64, threads=1)
PSEUDO_GRADIENT_SCALE = 1e-3   # |pseudo-gradient| of the default model after 50 inner steps
# glibc serves every allocation over 128 KiB with its own pages and gives them back when freed
# (by default the threshold grows, and freed tensors stay resident, hiding what a round holds)
FRESH_PAGES = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def peak_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")   # Linux: VmHWM := the current VmRSS


def current_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def write_payloads(config: DilocoConfig, folder: Path, n: int) -> list[Path]:
    reference = Coordinator(config).published
    paths = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        pg = {k: torch.randn(v.shape, generator=g) * PSEUDO_GRADIENT_SCALE
              for k, v in reference.items()}
        path = folder / f"worker-{i}.bin"
        path.write_bytes(encode_tensors(pg, "int8", config.chunk,
                                        {"kind": "pseudo_gradient", "round": 0, "worker": i}))
        paths.append(path)
    return paths


def coordinator_round(aggregation: str, payloads: list[Path], spool: Path) -> dict:
    """One round in this process (run in a fresh one per row)."""
    torch.set_num_threads(1)
    config = DilocoConfig(workload=COORDINATOR_MODEL, workers=len(payloads), compression="int8",
                          aggregation=aggregation)
    coordinator = Coordinator(config)
    params = sum(t.numel() for t in coordinator.published.values())
    intake = RoundIntake(coordinator, spool)
    kept = [intake.take(payloads[0].read_bytes())]     # warm the allocator and the code paths
    intake.apply(kept)
    del kept
    ctypes.CDLL("libc.so.6").malloc_trim(0)            # freed memory leaves the process
    intake = RoundIntake(coordinator, spool)
    before = current_rss_bytes()
    reset_peak_rss()
    started = time.perf_counter()
    kept = [intake.take(p.read_bytes()) for p in payloads[:-1]]
    last = time.perf_counter()
    kept.append(intake.take(payloads[-1].read_bytes()))
    update = intake.apply(kept)
    ended = time.perf_counter()
    held = peak_rss_bytes() - before
    assert update.contributors == len(payloads)
    return {"workers": len(payloads), "aggregation": aggregation,
            "streamed": intake.stream is not None, "params": params,
            "payload_bytes": payloads[0].stat().st_size,
            "coordinator_bytes_per_param": round(held / params, 2),
            "sum_bytes_per_param": (round(intake.stream.bytes() / params, 2)
                                    if intake.stream is not None else None),
            "round_s": round(ended - started, 3),
            "last_answer_to_step_s": round(ended - last, 3)}


MEMORY_FIELDS = ("coordinator_bytes_per_param", "sum_bytes_per_param")


def tree_root_memory(spec_path: Path, workers: int) -> dict:
    """The tree's root in this process (a fresh one per row): its resident memory while it
    takes its children's partials (each checked, then folded into the exact sum) and the outer
    step, measured as `coordinator_round` measures the flat coordinator's."""
    torch.set_num_threads(1)
    spec = json.loads(spec_path.read_text())
    config = DilocoConfig(workload=COORDINATOR_MODEL, workers=workers, compression="int8")
    coordinator = Coordinator(config)
    params = sum(t.numel() for t in coordinator.published.values())
    root_round(coordinator, {**spec, "children": spec["children"][:1]})   # warm the code paths
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = current_rss_bytes()
    reset_peak_rss()
    started = time.perf_counter()
    assert root_round(coordinator, spec) == workers
    ended = time.perf_counter()
    return {"coordinator_bytes_per_param": round((peak_rss_bytes() - before) / params, 2),
            "root_round_s": round(ended - started, 3)}


def one_round(spec: str, env: dict, flag: str = "--one-round") -> dict:
    out = subprocess.run([sys.executable, __file__, flag, spec], capture_output=True,
                         text=True, check=True, env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def coordinator_rows(counts: list[int], paths: list[Path], folder: Path) -> list[dict]:
    rows = []
    for aggregation in ("mean", "median"):
        for n in counts:
            spec = json.dumps({"aggregation": aggregation, "payloads": [str(p) for p in paths[:n]],
                               "spool": str(folder / "spool")})
            timed = one_round(spec, {})                     # the allocator a user gets
            row = {**timed, **{k: v for k, v in one_round(spec, FRESH_PAGES).items()
                               if k in MEMORY_FIELDS}}
            print(f"coordinator {aggregation:6} {n:4} workers: "
                  f"{row['coordinator_bytes_per_param']:7.1f} B/param, "
                  f"round {row['round_s']:.2f} s, last answer to step "
                  f"{row['last_answer_to_step_s']:.3f} s", flush=True)
            rows.append(row)
    return rows


TREE_SAMPLES = 8


def tree_rows(shapes: list[tuple[int, int]], config: DilocoConfig, paths: list[Path],
              flat: list[dict], trials: int, folder: Path) -> dict:
    payloads = [p.read_bytes() for p in paths]
    flat_s = {r["workers"]: r["round_s"] for r in flat if r["aggregation"] == "mean"}
    rows = []
    for n, fanout in shapes:
        row = tree_round(config, payloads[:n], fanout, TREE_SAMPLES, flat_s.get(n),
                         root_inputs=folder / f"root-{n}-{fanout}")
        # the root's resident memory, in a fresh process, as the flat rows' is measured
        spec = json.dumps({"spec": row.pop("root_spec"), "workers": n})
        row["coordinator_bytes_per_param"] = one_round(
            spec, FRESH_PAGES, "--one-tree-root")["coordinator_bytes_per_param"]
        print(f"tree {n:4} workers, fan-in {fanout:3}: root link {row['root_link_in_bytes']:,} B "
              f"({row['root_link_in_ratio']}x less than flat), root round {row['round_s']:.2f} s "
              f"(flat {row['flat_round_s']}), root memory {row['coordinator_bytes_per_param']} "
              "B/param", flush=True)
        rows.append(row)
    detection = detection_rows(config, payloads, 10, TREE_SAMPLES, trials)
    for d in detection:
        print(f"tree lie {d['lie']:22}: caught {d['caught_per_round']:.3f} per round "
              f"(predicted {d['predicted_per_round']:.3f})", flush=True)
    return {"rows": rows, "detection": detection}


def hundred_workers(workers: int, rounds: int, inner_steps: int, tree_fanout: int = 0) -> dict:
    workload = TrainingWorkload(threads=1)
    config = DilocoConfig(workload=workload, workers=workers, inner_steps=inner_steps,
                          rounds=rounds, compression="int8")
    data = build_stdlib_corpus(1 << 20)
    history = []
    started = time.perf_counter()

    def on_round(record: dict) -> None:
        record = {**record, "wall_s": round(time.perf_counter() - started, 1)}
        history.append(record)
        print(f"hundred{' tree' if tree_fanout else ''}: round {record['round']}: "
              f"{record['contributors']} contributors, "
              f"val loss {record.get('val_loss', float('nan')):.3f}, {record['wall_s']} s", flush=True)

    device = configure_determinism(workload)
    start_loss = held_out_loss(Coordinator(config, device).eval_model(), split(data, workload)[1],
                               workload, device)
    result = run_diloco(config, data, eval_every_rounds=1, on_round=on_round,
                        tree_fanout=tree_fanout)
    return {"val_loss_start": round(start_loss, 4), "workers": workers, "rounds": rounds,
            "inner_steps": inner_steps, "tree_fanout": tree_fanout or None,
            "params": result.parameters, "compression": "int8", "aggregation": "mean",
            "val_loss": [h["val_loss"] for h in history],
            "contributors": [h["contributors"] for h in history],
            "bytes_up_per_round": result.bytes_up // rounds,
            "inner_step_s": round(result.inner_step_s, 4),
            "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--coordinator-only", action="store_true", help="print the rows, write nothing")
    ap.add_argument("--one-round", help=argparse.SUPPRESS)   # a row's own process
    ap.add_argument("--one-tree-root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_tree_root:
        spec = json.loads(args.one_tree_root)
        print(json.dumps(tree_root_memory(Path(spec["spec"]), spec["workers"])))
        return
    if args.one_round:
        spec = json.loads(args.one_round)
        print(json.dumps(coordinator_round(spec["aggregation"], [Path(p) for p in spec["payloads"]],
                                           Path(spec["spool"]))))
        return
    counts = [4, 16] if args.quick else [4, 16, 100]
    config = DilocoConfig(workload=COORDINATOR_MODEL, workers=max(counts), compression="int8")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_payloads(config, Path(tmp), max(counts))
        rows = coordinator_rows(counts, paths, Path(tmp))
        if args.coordinator_only:
            return
        shapes = [(16, 4)] if args.quick else [(16, 4), (100, 10), (100, 4)]
        tree = tree_rows(shapes, config, paths, rows, 50 if args.quick else 400, Path(tmp))
    sizes = (20, 2, 5) if args.quick else (100, 3, 20)
    hundred = hundred_workers(*sizes)
    hundred_tree = hundred_workers(*sizes, tree_fanout=10)
    out = {"about": __doc__.split("\n\n    .venv")[0], "quick": args.quick,
           "machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}",
           "coordinator": rows, "tree": tree, "hundred": hundred, "hundred_tree": hundred_tree}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
