"""DiLoCo against synchronous data parallelism at equal training tokens, both sides tuned.

Same corpus (builtin stdlib, 1 MiB), same model, 4 workers, 2,400 steps per worker:
  sync     each step, every worker's batch of 8 sequences; gradients averaged; ONE AdamW
  DiLoCo   H inner AdamW steps per worker between syncs, outer Nesterov SGD, pseudo-gradients
           and broadcasts int8 or int4 with error feedback (compute/compress.py)
The comparison is made fair before it is made: the held-out loss is the mean over the WHOLE
held-out split (104,832 bytes, every byte predicted once: train.whole_split_loss), not a few
random batches; each side gets the same sweep budget (2 seeds per configuration): sync over
learning rates x {constant, linear schedule}, each DiLoCo method over inner learning rates x
outer (lr, momentum), all with the linear schedule (100 warm-up steps, decay to 0.1x); the best
configuration of each (lowest mean over the tuning seeds) is then run on 3 FRESH seeds, so the
reported figures are not the maxima of a noisy sweep. Bytes: DiLoCo's as serialized through the
coordinator (up + down, every worker); sync's for a star (every worker sends its fp32 gradient
and receives the mean) and for a ring all-reduce (each worker sends 2 (M-1)/M gradients' worth);
the ratio a goal is judged by is against the ring, the smaller. No warm start: every run starts
from the seed's random init (a warm start's synchronous steps would count in the bytes).

    .venv/bin/python bench/diloco.py            # the tuned comparison (~20 min on 2 CPU cores)
    .venv/bin/python bench/diloco.py --quick    # a smoke run of the machinery (~30 s)
    .venv/bin/python bench/diloco.py --churn    # workers leaving / joining at mid-run (~6 min)
    .venv/bin/python bench/diloco.py --overlap  # overlap tuned, and its loss cost (~8 min)

Runs go two at a time on separate processes of one torch thread each: these are losses, which
do not depend on timing. The compute share over real, shaped links is bench/diloco_network.py.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tessera.compute.corpus import build_stdlib_corpus, sha256_hex
from tessera.compute.diloco import DilocoConfig
from tessera.compute.diloco_simulation import run_diloco, run_sync_baseline
from tessera.protocol.workload import TrainingWorkload

RESULTS = Path(__file__).parent / "results" / "diloco.json"
WORKERS = 4
STEPS = 2400   # divisible by each H below
BASE_WORKLOAD = TrainingWorkload(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8,
                                 learning_rate=3e-3, eval_batches=16, device="cpu", threads=1)
SCHEDULE = {"lr_schedule": "linear", "warmup_steps": 100, "final_lr_ratio": 0.1}
TUNE_SEEDS, REPORT_SEEDS = (1000, 1001), (2000, 2001, 2002)
SYNC_GRID = [(lr, sched) for lr in (3e-3, 5e-3, 1e-2, 2e-2) for sched in ("constant", "linear")]
INNER_LRS = (5e-3, 1e-2)
OUTER_GRID = ((0.7, 0.9), (0.9, 0.7), (1.0, 0.5), (0.8, 0.3), (1.0, 0.0))   # (0.7, 0.9): the paper's
# H = 150 and 400: the smallest H (dividing 2,400) at which int8 DiLoCo sends at least 400x and
# 1,000x fewer bytes than sync's ring all-reduce; int4 gets there at H = 100 and 200
METHODS = {"H=50 int8": (50, "int8"), "H=100 int8": (100, "int8"), "H=150 int8": (150, "int8"),
           "H=400 int8": (400, "int8"), "H=100 int4": (100, "int4"), "H=200 int4": (200, "int4")}
GOALS = ((400, 2.0), (1000, 3.0))        # (at least this many times fewer bytes, gap at most %)


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(m: float, s: float, digits: int = 3) -> str:
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def workload_of(run: dict) -> TrainingWorkload:
    """A run's workload: the base model (BASE_WORKLOAD unless the run names another, as
    bench/diloco_example.py does), its seed, learning rate and schedule over its steps."""
    base = TrainingWorkload.model_validate(run["base"]) if "base" in run else BASE_WORKLOAD
    update = {"seed": run["seed"], "learning_rate": run["lr"], "steps": run["steps"]}
    if run["schedule"] == "linear":
        update |= run.get("schedule_fields", SCHEDULE)
    return base.model_copy(update=update)


def run_one(run: dict) -> dict:
    """One training run (in a pool process): its whole-split held-out loss and bytes."""
    import torch

    from tessera.compute.diloco import load_parameters, new_model
    from tessera.compute.train import split, whole_split_loss

    torch.set_num_threads(1)
    w = workload_of(run)
    data = build_stdlib_corpus(1 << 20)
    started = time.perf_counter()
    if run["H"] is None:
        cfg = DilocoConfig(workload=w, workers=WORKERS, inner_steps=run["steps"], rounds=1)
        r = run_sync_baseline(cfg, data, steps=run["steps"])
        out = {"bytes": r.bytes_serialized, "bytes_analytic": r.bytes_analytic,
               "bytes_ring": r.bytes_serialized * (WORKERS - 1) // WORKERS,
               "syncs": run["steps"], "tokens": r.tokens}
    else:
        momentum = run["outer_momentum"]
        cfg = DilocoConfig(workload=w, workers=run.get("workers", WORKERS), inner_steps=run["H"],
                           rounds=run["steps"] // run["H"],
                           compression=run.get("compression", "int8"),
                           outer_lr=run["outer_lr"], outer_momentum=momentum,
                           nesterov=momentum > 0, **run.get("extra", {}))
        r = run_diloco(cfg, data, **simulation_of(run, cfg.rounds))
        out = {"bytes": r.bytes_up + r.bytes_down + r.bytes_join, "bytes_join": r.bytes_join,
               "bytes_analytic": r.bytes_up_analytic + r.bytes_down_analytic,
               "syncs": cfg.rounds, "tokens": r.tokens}
    model = new_model(w)
    load_parameters(model, r.global_state)
    _, val = split(data, w)
    out["loss"] = whole_split_loss(model, val, w, torch.device("cpu"))
    out["held_out_tokens"] = (len(val) - 1) // w.block_size * w.block_size
    return {**run, **out, "wall_s": time.perf_counter() - started}


def simulation_of(run: dict, rounds: int) -> dict:
    """run_diloco's membership for a churn run: "leave", a worker leaves at mid-run; "join-zero"
    / "join-skip", a fourth worker joins at mid-run (a zero first pseudo-gradient, or left out of
    its first round)."""
    half, event = rounds // 2, run.get("event")
    if event == "leave":
        return {"membership": lambda r: range(WORKERS) if r < half else range(WORKERS - 1)}
    if event in ("join-zero", "join-skip"):
        return {"membership": lambda r: range(WORKERS - 1) if r < half else range(WORKERS),
                "join_policy": event.removeprefix("join-")}
    return {}


def run_all(runs: list[dict], console: Console, label: str) -> list[dict]:
    """`runs` two at a time; prints each as it ends."""
    done = []
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        for i, r in enumerate(pool.imap_unordered(run_one, runs), 1):
            done.append(r)
            console.print(f"\\[{label} {i}/{len(runs)}] {r['method']} seed {r['seed']} lr {r['lr']:g} "
                          f"{r['schedule']} outer {r.get('outer_lr', '-')}/"
                          f"{r.get('outer_momentum', '-')}: loss {r['loss']:.4f} "
                          f"({r['wall_s']:.0f} s)")
    return done


def config_key(r: dict) -> tuple:
    return (r["method"], r["lr"], r["schedule"], r.get("outer_lr"), r.get("outer_momentum"))


def sweep_runs(steps: int, methods: dict, tune_seeds: tuple, quick: bool = False) -> list[dict]:
    """Every tuning run; `quick`: two configurations a side (a smoke run of the machinery)."""
    sync_grid, inner_lrs, outer_grid = ((SYNC_GRID[::5], INNER_LRS[-1:], OUTER_GRID[:2]) if quick
                                        else (SYNC_GRID, INNER_LRS, OUTER_GRID))
    runs = [{"method": "sync", "H": None, "lr": lr, "schedule": sched, "seed": s, "steps": steps}
            for lr, sched in sync_grid for s in tune_seeds]
    runs += [{"method": m, "H": h, "compression": c, "lr": lr, "schedule": "linear",
              "outer_lr": olr, "outer_momentum": om, "seed": s, "steps": steps}
             for m, (h, c) in methods.items() for lr in inner_lrs for olr, om in outer_grid
             for s in tune_seeds]
    return runs


def best_configs(sweep: list[dict]) -> dict[str, dict]:
    """Per method, the configuration with the lowest mean loss over the tuning seeds."""
    by_config: dict[tuple, list[dict]] = {}
    for r in sweep:
        by_config.setdefault(config_key(r), []).append(r)
    best: dict[str, dict] = {}
    for runs in by_config.values():
        mean = statistics.fmean(r["loss"] for r in runs)
        m = runs[0]["method"]
        if m not in best or mean < best[m]["tuning_loss"]:
            keys = ("method", "H", "compression", "lr", "schedule", "steps", "outer_lr",
                    "outer_momentum")
            best[m] = {k: runs[0][k] for k in keys if k in runs[0]} | {"tuning_loss": mean}
    return best


def rows_of(report: list[dict]) -> list[dict]:
    """The issue's rows: method, bytes, loss, loss_gap (% against the tuned sync, per seed),
    seeds, and the byte ratios against sync's star and ring."""
    by_method: dict[str, dict[int, dict]] = {}
    for r in report:
        by_method.setdefault(r["method"], {})[r["seed"]] = r
    sync = by_method["sync"]
    seeds = sorted(sync)
    rows = []
    for method, runs in by_method.items():
        losses = [runs[s]["loss"] for s in seeds]
        gaps = [100 * (runs[s]["loss"] - sync[s]["loss"]) / sync[s]["loss"] for s in seeds]
        first = runs[seeds[0]]
        row = {"method": method, "bytes": first["bytes"], "loss": statistics.fmean(losses),
               "loss_sd": mean_sd(losses)[1], "loss_gap": statistics.fmean(gaps),
               "loss_gap_sd": mean_sd(gaps)[1], "loss_gap_max": max(gaps), "seeds": seeds,
               "losses": losses, "syncs": first["syncs"], "tokens": first["tokens"],
               "held_out_tokens": first["held_out_tokens"],
               "config": {k: first[k] for k in ("H", "compression", "lr", "schedule", "outer_lr",
                                                "outer_momentum", "extra") if k in first}}
        if method == "sync":
            row |= {"bytes_ring": first["bytes_ring"], "ratio_star": 1.0,
                    "ratio_ring": 1.0}
        else:
            row |= {"ratio_star": sync[seeds[0]]["bytes"] / first["bytes"],
                    "ratio_ring": sync[seeds[0]]["bytes_ring"] / first["bytes"]}
        rows.append(row)
    return rows


def goals_of(rows: list[dict]) -> dict:
    goals = {}
    for ratio, gap in GOALS:
        ok = [r["method"] for r in rows if r["method"] != "sync"
              and min(r["ratio_star"], r["ratio_ring"]) >= ratio and r["loss_gap"] <= gap]
        goals[f">={ratio}x fewer bytes (against the ring), gap <={gap:g}%"] = {
            "met": bool(ok), "methods": ok}
    return goals


def save(out: Path, **keys) -> None:
    """Write `keys` into the results file, keeping the other modes' keys."""
    saved = json.loads(out.read_text()) if out.exists() else {}
    for stale in ("summary", "goals", "runs", "link_mbit", "inner_step_s", "seeds"):
        saved.pop(stale, None)   # the untuned, 4,096-token comparison this one replaced
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(saved | keys, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--churn", action="store_true", help="workers leaving and joining mid-run")
    ap.add_argument("--overlap", action="store_true",
                    help="the loss cost of the one-round-delayed outer update (overlap)")
    args = ap.parse_args()
    if args.churn:
        churn_main(args)
        return
    if args.overlap:
        overlap_main(args)
        return
    console = Console(width=170)
    steps, methods, tune, report_seeds = STEPS, METHODS, TUNE_SEEDS, REPORT_SEEDS
    if args.quick:
        steps, methods, tune, report_seeds = 300, {"H=30 int8": (30, "int8")}, (1000,), (2000,)
    started = time.perf_counter()
    sweep = run_all(sweep_runs(steps, methods, tune, args.quick), console, "tune")
    best = best_configs(sweep)
    defaults = {"method": "H=100 int8, untuned defaults", "H": min(100, steps // 2),
                "lr": BASE_WORKLOAD.learning_rate, "schedule": "constant", "outer_lr": 0.7,
                "outer_momentum": 0.9, "steps": steps}
    plan = [{**cfg, "seed": s} for cfg in [*best.values(), defaults] for s in report_seeds]
    for run in plan:
        run.pop("tuning_loss", None)
    report = run_all(plan, console, "report")
    rows = rows_of(report)
    goals = goals_of(rows)

    table = Table(title=f"DiLoCo vs sync, {WORKERS} workers, {steps} steps/worker, tuned on seeds "
                        f"{list(tune)}, reported on {list(report_seeds)}; whole held-out split")
    for col in ("method", "config (lr, schedule, outer lr/m)", "syncs", "held-out loss",
                "gap vs sync %", "MB", "x fewer (star)", "x fewer (ring)"):
        table.add_column(col, justify="left" if col.startswith(("method", "config")) else "right")
    for r in rows:
        c = r["config"]
        table.add_row(r["method"], f"{c['lr']:g}, {c['schedule']}"
                      + (f", {c['outer_lr']}/{c['outer_momentum']}" if "outer_lr" in c else ""),
                      str(r["syncs"]), fmt(r["loss"], r["loss_sd"]),
                      "—" if r["method"] == "sync" else fmt(r["loss_gap"], r["loss_gap_sd"], 2),
                      f"{r['bytes'] / 1e6:,.2f}", f"{r['ratio_star']:,.0f}", f"{r['ratio_ring']:,.0f}")
    console.print(table)
    console.print_json(json.dumps(goals))
    wall = time.perf_counter() - started
    console.print(f"total wall {wall:.0f} s")
    save(args.out, workload=BASE_WORKLOAD.model_dump(), schedule=SCHEDULE, workers=WORKERS,
         steps_per_worker=steps, tune_seeds=list(tune), report_seeds=list(report_seeds),
         dataset_sha256=sha256_hex(build_stdlib_corpus(1 << 20)), rows=rows, goals=goals,
         tuning=[{k: v for k, v in r.items() if k != "extra"} for r in sweep],
         best=best, wall_s=wall, quick=args.quick)
    console.print(f"wrote {args.out}")


# ---------------------------------------------------------------------------------------------
# --churn: workers leaving and joining at mid-run


def churn_main(args) -> None:
    """H = 100 int8 at the tuned configuration (the main run's "best", else the defaults), on
    the report seeds: all four workers throughout, one leaving at mid-run, one joining at mid-run
    (zero first pseudo-gradient, or skipped). Under "churn_and_join"."""
    console = Console(width=170)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    steps, seeds = (300, (2000,)) if args.quick else (STEPS, REPORT_SEEDS)
    cfg = saved.get("best", {}).get("H=100 int8") or {
        "lr": BASE_WORKLOAD.learning_rate, "schedule": "constant", "outer_lr": 0.7,
        "outer_momentum": 0.9}
    base = {"method": "H=100 int8", "H": 100 if not args.quick else 30, "steps": steps,
            **{k: cfg[k] for k in ("lr", "schedule", "outer_lr", "outer_momentum")}}
    events = ("all", "leave", "join-zero", "join-skip")
    runs = run_all([{**base, "method": e, "event": e, "seed": s} for e in events for s in seeds],
                   console, "churn")
    loss = {(r["event"], r["seed"]): r["loss"] for r in runs}
    out = {"config": base, "seeds": list(seeds)}
    for e in events:
        diffs = [100 * (loss[e, s] - loss["all", s]) / loss["all", s] for s in seeds]
        out[e] = {"loss": [loss[e, s] for s in seeds], "vs_all_pct": mean_sd(diffs),
                  "bytes_join": next(r["bytes_join"] for r in runs if r["event"] == e)}
        console.print(f"{e}: loss {fmt(*mean_sd(out[e]['loss']))}, against all four "
                      f"{fmt(*mean_sd(diffs), digits=2)} %")
    out["leave_within_3pct"] = abs(out["leave"]["vs_all_pct"][0]) <= 3.0
    saved["churn_and_join"] = out
    args.out.write_text(json.dumps(saved, indent=2))
    console.print(f"wrote {args.out} (key \"churn_and_join\")")


# ---------------------------------------------------------------------------------------------
# --overlap: what the one-round-delayed outer update costs in loss


OVERLAP_GRID = ((0.5, 0.3), (0.35, 0.5), (0.5, 0.0), (0.7, 0.0), (0.8, 0.3), (1.0, 0.0))
OVERLAP_HS = (50, 100)


def overlap_main(args) -> None:
    """What the one-round-delayed outer update (overlap) costs in held-out loss, measured the
    way the main comparison is: for H = 50 and 100 (int8), the in-step run's tuned inner lr and
    schedule (the main run's "best"), overlap's outer (lr, momentum) tuned over OVERLAP_GRID on
    the tuning seeds, its best then run on the report seeds beside the main run's rows of the
    same H and seeds. Under "overlap" in bench/results/diloco.json (run the main comparison
    first)."""
    console = Console(width=170)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    if "best" not in saved or "rows" not in saved:
        raise SystemExit(f"{args.out} has no tuned comparison: run bench/diloco.py first")
    in_step = {r["method"]: r for r in saved["rows"]}
    steps = saved["steps_per_worker"]
    tune, report_seeds = tuple(saved["tune_seeds"]), tuple(saved["report_seeds"])
    hs = [h for h in OVERLAP_HS if f"H={h} int8" in saved["best"]]
    base = {h: {k: saved["best"][f"H={h} int8"][k] for k in ("lr", "schedule")} for h in hs}
    sweep = run_all([{"method": f"H={h} int8 overlap", "H": h, "steps": steps, **base[h],
                      "outer_lr": olr, "outer_momentum": om, "seed": s,
                      "extra": {"overlap": True}}
                     for h in hs for olr, om in OVERLAP_GRID for s in tune], console, "tune")
    best = best_configs(sweep)
    plan = [{**{k: v for k, v in best[f"H={h} int8 overlap"].items() if k != "tuning_loss"},
             "extra": {"overlap": True}, "seed": s} for h in hs for s in report_seeds]
    report = run_all(plan, console, "report")
    rows = {}
    for h in hs:
        ref = in_step[f"H={h} int8"]
        losses = [next(r["loss"] for r in report if r["H"] == h and r["seed"] == s)
                  for s in report_seeds]
        costs = [100 * (a - b) / b for a, b in zip(losses, ref["losses"], strict=True)]
        rows[f"H={h} int8"] = {"H": h, "seeds": list(report_seeds), "loss_in_step": ref["losses"],
                               "loss_overlap": losses, "overlap_vs_in_step_pct": mean_sd(costs),
                               "in_step_config": ref["config"],
                               "overlap_config": best[f"H={h} int8 overlap"]}
        console.print(f"H={h}: overlap costs {fmt(*mean_sd(costs), digits=2)} % in held-out loss "
                      f"(outer {best[f'H={h} int8 overlap']['outer_lr']}/"
                      f"{best[f'H={h} int8 overlap']['outer_momentum']})")
    saved.pop("overlap_sweep", None)   # the untuned sweep this one replaced
    saved["overlap"] = {"steps_per_worker": steps, "tune_seeds": list(tune), "rows": rows,
                        "tuning": sweep}
    args.out.write_text(json.dumps(saved, indent=2))
    console.print(f"wrote {args.out} (key \"overlap\")")


if __name__ == "__main__":
    main()
