"""The job a user gets (`examples/diloco.toml`): its DiLoCo settings against tuned ones.

bench/diloco.py tunes a small model (1 layer, 32 wide) over 2,400 steps and finds the shipped
optimizer settings (inner lr 3e-3 constant; outer lr 0.7, Nesterov 0.9, the DiLoCo paper's) the
worst it tried. This bench asks the same of the example's own job before anything is changed:
its model (JobSpec defaults: 2 layers, 64 wide), workers (`order.nodes`), H, rounds and
compression, all read from the file. Inner lr x {constant, linear schedule (5 % warm-up, decay to
0.1x)} x outer (lr, momentum) are swept on tuning seeds 1000-1001; the best, and the example as
shipped, are then run on fresh seeds 2000-2002 (whole held-out split, as bench/diloco.py).
Written under "example" in bench/results/diloco.json.

    .venv/bin/python bench/diloco_example.py            # ~25 min on 2 CPU cores
    .venv/bin/python bench/diloco_example.py --quick    # two configurations, one seed (~2 min)
    .venv/bin/python bench/diloco_example.py --double-h # H and 2H, shipped settings (~7 min)

`--double-h` asks what a default of twice the example's H would cost: the example as shipped at
its H and at 2H (half the rounds' bytes per step), each for the example's number of inner steps
and for twice as many, on the report seeds. Written under "example_double_h".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from diloco import (  # noqa: E402
    REPORT_SEEDS,
    RESULTS,
    TUNE_SEEDS,
    best_configs,
    fmt,
    mean_sd,
    run_all,
)

from tessera.protocol.jobspec import JobSpec  # noqa: E402
from tessera.tenant.multinode import diloco_config  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "diloco.toml"
INNER_LRS = (3e-3, 5e-3, 1e-2)
SCHEDULES = ("constant", "linear")
OUTER_GRID = ((0.7, 0.9), (1.0, 0.5), (0.8, 0.3), (1.0, 0.0))   # (0.7, 0.9): the paper's


def example_job() -> tuple[dict, dict]:
    """(the runs' common fields, the example as shipped) from examples/diloco.toml."""
    spec = JobSpec.model_validate(tomllib.loads(EXAMPLE.read_text()))
    d, w = spec.diloco, spec.workload
    steps = d.inner_steps * d.rounds
    job = {"method": f"example H={d.inner_steps} {d.compression}", "H": d.inner_steps,
           "compression": d.compression, "steps": steps, "workers": spec.order.nodes,
           "base": w.model_dump(mode="json"),
           "schedule_fields": {"lr_schedule": "linear", "warmup_steps": max(1, steps // 20),
                               "final_lr_ratio": 0.1}}
    effective = diloco_config(spec, spec.order.nodes)   # unset outer settings: the defaults
    shipped = {"lr": w.learning_rate, "schedule": w.lr_schedule,
               "outer_lr": effective.outer_lr, "outer_momentum": effective.outer_momentum}
    return job, shipped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--double-h", action="store_true", help="the example at H and 2H only")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    console = Console(width=170)
    job, shipped = example_job()
    if args.double_h:
        double_h(job, shipped, args.out, console)
        return
    tune, report_seeds = ((1000,), (2000,)) if args.quick else (TUNE_SEEDS, REPORT_SEEDS)
    grid = ([(INNER_LRS[-1], "linear", *OUTER_GRID[1])] if args.quick else
            [(lr, s, *o) for lr in INNER_LRS for s in SCHEDULES for o in OUTER_GRID])
    started = time.perf_counter()
    sweep = run_all([{**job, "lr": lr, "schedule": s, "outer_lr": olr, "outer_momentum": om,
                      "seed": seed} for lr, s, olr, om in grid for seed in tune], console, "tune")
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    saved["example"] = {"partial": "tuning only: the report did not finish", "tuning": sweep}
    args.out.write_text(json.dumps(saved, indent=2))
    best = best_configs(sweep)[job["method"]]
    tuned = {k: best[k] for k in shipped}
    report = run_all([{**job, **cfg, "method": name, "seed": seed}
                      for name, cfg in (("shipped", shipped), ("tuned", tuned))
                      for seed in report_seeds], console, "report")
    loss = {(r["method"], r["seed"]): r["loss"] for r in report}
    gains = [100 * (loss["shipped", s] - loss["tuned", s]) / loss["shipped", s]
             for s in report_seeds]
    out = {"job": {k: v for k, v in job.items() if k != "method"}, "shipped": shipped,
           "tuned": tuned, "tune_seeds": list(tune), "report_seeds": list(report_seeds),
           "loss_shipped": [loss["shipped", s] for s in report_seeds],
           "loss_tuned": [loss["tuned", s] for s in report_seeds],
           "tuned_better_pct": mean_sd(gains),
           "tuning": [{k: v for k, v in r.items() if k not in job or k == "method"}
                      for r in sweep],
           "wall_s": time.perf_counter() - started, "quick": args.quick}
    for name in ("shipped", "tuned"):
        console.print(f"{name} {out[name]}: held-out loss "
                      f"{fmt(*mean_sd(out['loss_' + name]))}")
    console.print(f"tuned is {fmt(*mean_sd(gains), digits=2)} % lower "
                  f"(mean over seeds {list(report_seeds)}, "
                  f"{statistics.fmean(r['wall_s'] for r in sweep):.0f} s a run)")
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    saved["example"] = out
    args.out.write_text(json.dumps(saved, indent=2))
    console.print(f"wrote {args.out} (key \"example\")")


def double_h(job: dict, shipped: dict, out: Path, console: Console) -> None:
    """The example as shipped at H and 2H, for its steps and twice them (report seeds)."""
    h, steps = job["H"], job["steps"]
    shapes = [(hh, n) for n in (steps, 2 * steps) for hh in (h, 2 * h)]
    runs = run_all([{**job, **shipped, "method": f"H={hh} steps={n}", "H": hh, "steps": n,
                     "seed": seed} for hh, n in shapes for seed in REPORT_SEEDS],
                   console, "double-h")
    loss = {(r["H"], r["steps"], r["seed"]): r["loss"] for r in runs}
    rows = []
    for hh, n in shapes:
        losses = [loss[hh, n, s] for s in REPORT_SEEDS]
        row = {"H": hh, "steps": n, "rounds": n // hh, "seeds": list(REPORT_SEEDS),
               "loss": losses, "loss_mean_sd": mean_sd(losses),
               "bytes": next(r["bytes"] for r in runs if (r["H"], r["steps"]) == (hh, n))}
        if hh != h:   # per seed against the same seed at the example's H and the same steps
            row["loss_vs_example_h_pct"] = mean_sd(
                [100 * (loss[hh, n, s] - loss[h, n, s]) / loss[h, n, s] for s in REPORT_SEEDS])
        rows.append(row)
        console.print(f"H={hh} steps={n}: held-out loss {fmt(*row['loss_mean_sd'])}, "
                      f"{row['bytes']:,} bytes"
                      + (f", {fmt(*row['loss_vs_example_h_pct'], digits=2)} % against H={h}"
                         if hh != h else ""))
    saved = json.loads(out.read_text()) if out.exists() else {}
    saved["example_double_h"] = {"job": {k: v for k, v in job.items() if k != "method"},
                                 "shipped": shipped, "rows": rows}
    out.write_text(json.dumps(saved, indent=2))
    console.print(f"wrote {out} (key \"example_double_h\")")


if __name__ == "__main__":
    main()
