"""DiLoCo against synchronous data parallelism, side by side, at equal training tokens.

Same corpus (builtin stdlib), same model, 4 workers, several seeds:
  sync     gradients averaged every step, one AdamW state (true data parallelism)
  DiLoCo   H inner AdamW steps per worker between syncs, outer Nesterov SGD (lr 0.7, m 0.9),
           pseudo-gradients and broadcasts in fp32 or int8 (error feedback)
Bytes are counted analytically (syncs x workers x parameters x bytes per element, up + down)
and as serialized on the wire. Also: churn (a worker leaves at mid-run), a worker joining at
mid-run with a zero first pseudo-gradient (against leaving it out of that round), and a
bandwidth model (per-worker links at --mbit; compute time measured, communication time =
serialized bytes / rate, no overlap).

    .venv/bin/python bench/diloco.py            # the full run (~12 min on 2 CPU cores)
    .venv/bin/python bench/diloco.py --quick    # a smoke run (~1 min)
    .venv/bin/python bench/diloco.py --overlap  # the loss cost of overlap (~5 min)
    .venv/bin/python bench/diloco.py --overlap-sweep  # overlap's outer lr and momentum (~6 min)

The bandwidth model is a calculation; the compute share measured on the real lease path, over
shaped links, is bench/diloco_network.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tessera.compute.corpus import build_stdlib_corpus, sha256_hex
from tessera.compute.diloco import DilocoConfig
from tessera.compute.diloco_simulation import run_diloco, run_sync_baseline
from tessera.protocol.workload import TrainingWorkload

RESULTS = Path(__file__).parent / "results" / "diloco.json"
WORKERS = 4
BASE_WORKLOAD = TrainingWorkload(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8,
                                 learning_rate=3e-3, eval_batches=16, device="cpu", threads=1)


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(m: float, s: float, digits: int = 3) -> str:
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--mbit", type=float, default=100.0, help="per-worker link rate, Mbit/s")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--overlap", action="store_true",
                    help="the loss cost of the one-round-delayed outer update (overlap)")
    ap.add_argument("--overlap-sweep", action="store_true",
                    help="the outer lr and momentum sweep behind overlap's defaults")
    args = ap.parse_args()
    if args.overlap:
        overlap_main(args)
        return
    if args.overlap_sweep:
        overlap_sweep(args)
        return

    if args.quick:
        steps, hs, seeds, side_h = 300, [10, 30], args.seeds or 2, 30
    else:
        steps, hs, seeds, side_h = 2500, [10, 50, 100, 250], args.seeds or 3, 100
    base = BASE_WORKLOAD
    data = build_stdlib_corpus(1 << 20)
    rate = args.mbit * 1e6 / 8  # bytes per second
    console = Console(width=170)

    runs: dict[str, list[dict]] = {}
    plan = [("sync", None, "none")] + [(f"H={h} {c}", h, c) for h in hs for c in ("fp32", "int8")]
    side = [("churn", side_h, "int8"), ("join-zero", side_h, "int8"), ("join-skip", side_h, "int8")]
    t_all = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("runs", total=seeds * (len(plan) + len(side)))
        for seed in range(seeds):
            w = base.model_copy(update={"seed": 1000 + seed})
            for name, h, comp in plan + side:
                progress.update(task, description=f"seed {seed} {name}")
                cfg = DilocoConfig(workload=w, workers=WORKERS, inner_steps=h or 1,
                                   rounds=steps // (h or 1),
                                   compression="int8" if comp == "int8" else "none")
                t0 = time.perf_counter()
                if h is None:
                    r = run_sync_baseline(cfg, data, steps=steps)
                    rec = {"loss": r.final_val_loss, "syncs": steps, "tokens": r.tokens,
                           "bytes_analytic": r.bytes_analytic, "bytes_serialized": r.bytes_serialized,
                           "per_sync_worker_bytes": r.bytes_serialized // (steps * WORKERS)}
                else:
                    half = cfg.rounds // 2
                    kw = {}
                    if name == "churn":
                        kw["membership"] = lambda r_, half=half: range(4) if r_ < half else range(3)
                    elif name.startswith("join"):
                        kw["membership"] = lambda r_, half=half: range(3) if r_ < half else range(4)
                        kw["join_policy"] = "zero" if name == "join-zero" else "skip"
                    r = run_diloco(cfg, data, **kw)
                    rec = {"loss": r.final_val_loss, "syncs": cfg.rounds, "tokens": r.tokens,
                           "bytes_analytic": r.bytes_up_analytic + r.bytes_down_analytic,
                           "bytes_serialized": r.bytes_up + r.bytes_down, "bytes_join": r.bytes_join,
                           "compute_s": r.compute_s, "inner_step_s": r.inner_step_s,
                           "comm_s": sum(r.round_bytes_per_worker) / rate}
                rec["wall_s"] = time.perf_counter() - t0
                runs.setdefault(name, []).append(rec)
                progress.advance(task)
    wall_all = time.perf_counter() - t_all

    # bandwidth model for sync: per step, each worker computes one batch (the measured DiLoCo
    # inner-step time, same model and batch) and sends + receives one fp32 gradient
    step_s = statistics.fmean(x["inner_step_s"] for k, v in runs.items() if k.startswith("H=") for x in v)
    sync_comm_step = 2 * runs["sync"][0]["per_sync_worker_bytes"] / rate
    sync_fraction = step_s / (step_s + sync_comm_step)

    sync_loss = [x["loss"] for x in runs["sync"]]
    rows, summary = [], {}
    for name, _, _ in plan:
        v = runs[name]
        losses = [x["loss"] for x in v]
        gaps = [100 * (x["loss"] - s) / s for x, s in zip(v, sync_loss, strict=True)]
        ba, bs = v[0]["bytes_analytic"], v[0]["bytes_serialized"]
        ratio_a = runs["sync"][0]["bytes_analytic"] / ba
        ratio_s = runs["sync"][0]["bytes_serialized"] / bs
        frac = (sync_fraction if name == "sync" else
                statistics.fmean(x["compute_s"] / (x["compute_s"] + x["comm_s"]) for x in v))
        summary[name] = {"loss_mean": mean_sd(losses)[0], "loss_sd": mean_sd(losses)[1],
                         "gap_pct_mean": mean_sd(gaps)[0], "gap_pct_sd": mean_sd(gaps)[1],
                         "gap_pct_max": max(gaps), "syncs": v[0]["syncs"], "tokens": v[0]["tokens"],
                         "bytes_analytic": ba, "bytes_serialized": bs, "ratio_analytic": ratio_a,
                         "ratio_serialized": ratio_s, "compute_fraction": frac}
        rows.append((name, str(v[0]["syncs"]), fmt(*mean_sd(losses)),
                     "—" if name == "sync" else fmt(*mean_sd(gaps), digits=2),
                     f"{ba / 1e6:,.2f}", f"{bs / 1e6:,.2f}",
                     "1" if name == "sync" else f"{ratio_a:,.0f}",
                     "1" if name == "sync" else f"{ratio_s:,.0f}", f"{100 * frac:.1f}%"))

    table = Table(title=f"DiLoCo vs sync, {WORKERS} workers, {steps} steps/worker, {seeds} seeds, "
                        f"links {args.mbit:g} Mbit/s")
    for col in ("method", "syncs", "held-out loss", "gap vs sync %", "MB analytic", "MB serialized",
                "sync/this analytic", "sync/this serialized", "compute fraction"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)

    ref = f"H={side_h} int8"
    side_summary = {}
    side_table = Table(title=f"workers leaving and joining at mid-run (H={side_h}, int8)")
    for col in ("run", "held-out loss", "vs all 4 workers %", "join download MB"):
        side_table.add_column(col, justify="left" if col == "run" else "right")
    for name in [ref, "churn", "join-zero", "join-skip"]:
        v = runs[name]
        losses = [x["loss"] for x in v]
        diffs = [100 * (x["loss"] - y["loss"]) / y["loss"] for x, y in zip(v, runs[ref], strict=True)]
        side_summary[name] = {"loss_mean": mean_sd(losses)[0], "loss_sd": mean_sd(losses)[1],
                              "vs_full_pct_mean": mean_sd(diffs)[0], "vs_full_pct_sd": mean_sd(diffs)[1],
                              "bytes_join": v[0].get("bytes_join", 0)}
        side_table.add_row(name if name != ref else f"{ref} (all 4, no churn)", fmt(*mean_sd(losses)),
                           "—" if name == ref else fmt(*mean_sd(diffs), digits=2),
                           f"{v[0].get('bytes_join', 0) / 1e6:.3f}")
    console.print(side_table)
    zero_vs_skip = [100 * (x["loss"] - y["loss"]) / y["loss"]
                    for x, y in zip(runs["join-zero"], runs["join-skip"], strict=True)]
    side_summary["join_zero_vs_skip_pct"] = mean_sd(zero_vs_skip)

    def goal(min_ratio: float, max_gap: float) -> dict:
        ok = [n for n, s in summary.items() if n != "sync" and s["ratio_serialized"] >= min_ratio
              and s["gap_pct_mean"] <= max_gap]
        ok_a = [n for n, s in summary.items() if n != "sync" and s["ratio_analytic"] >= min_ratio
                and s["gap_pct_mean"] <= max_gap]
        return {"met_serialized": bool(ok), "configs_serialized": ok, "met_analytic": bool(ok_a),
                "configs_analytic": ok_a}

    goals = {
        ">=400x fewer bytes, gap <=2%": goal(400, 2.0),
        ">=1000x fewer bytes, gap <=3%": goal(1000, 3.0),
        "churn loss within 3%": {"met": abs(side_summary["churn"]["vs_full_pct_mean"]) <= 3.0},
        f"compute fraction >=90% at {args.mbit:g} Mbit/s": {
            "configs": [n for n, s in summary.items() if s["compute_fraction"] >= 0.9]},
    }
    console.print_json(json.dumps(goals))
    console.print(f"inner step {1e3 * step_s:.2f} ms/worker; sync compute fraction "
                  f"{100 * sync_fraction:.1f}%; total wall {wall_all:.0f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "workload": base.model_dump(), "workers": WORKERS, "steps_per_worker": steps,
        "seeds": [1000 + s for s in range(seeds)], "dataset_sha256": sha256_hex(data),
        "link_mbit": args.mbit, "inner_step_s": step_s, "summary": summary,
        "churn_and_join": side_summary, "goals": goals, "runs": runs, "wall_s": wall_all,
        "quick": args.quick}, indent=2))
    console.print(f"wrote {args.out}")


# ---------------------------------------------------------------------------------------------
# --overlap: what the one-round-delayed outer update costs in loss


def overlap_main(args) -> None:
    """The main table's model, workers, steps and seeds, int8, each H with and without overlap
    (round r + 1 starts from the parameters before round r's outer step), side by side.
    Written under "overlap" in bench/results/diloco.json, leaving the rest as it was."""
    steps, seeds = (300, args.seeds or 2) if args.quick else (2500, args.seeds or 3)
    hs = [30] if args.quick else [50, 100]
    data = build_stdlib_corpus(1 << 20)
    rows: dict[str, dict] = {}
    for h in hs:
        losses: dict[bool, list[float]] = {False: [], True: []}
        for seed in range(seeds):
            w = BASE_WORKLOAD.model_copy(update={"seed": 1000 + seed})
            for overlap in (False, True):
                cfg = DilocoConfig(workload=w, workers=WORKERS, inner_steps=h, rounds=steps // h,
                                   compression="int8", overlap=overlap)
                losses[overlap].append(run_diloco(cfg, data).final_val_loss)
                print(f"H={h} seed {seed} overlap={overlap}: {losses[overlap][-1]:.4f}", flush=True)
        gaps = [100 * (b - a) / a for a, b in zip(losses[False], losses[True], strict=True)]
        rows[f"H={h} int8"] = {"H": h, "seeds": [1000 + s for s in range(seeds)],
                               "loss": losses[False], "loss_overlap": losses[True],
                               "overlap_vs_in_step_pct": mean_sd(gaps)}
        print(f"H={h}: overlap costs {fmt(*mean_sd(gaps), digits=2)} % in held-out loss",
              flush=True)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    saved["overlap"] = {"workers": WORKERS, "steps_per_worker": steps, "quick": args.quick,
                        "rows": rows}
    args.out.write_text(json.dumps(saved, indent=2))
    print(f"wrote {args.out} (key \"overlap\")")


SWEEP = [(0.7, 0.9), (0.35, 0.9), (0.7, 0.5), (0.35, 0.5), (0.3, 0.6), (0.25, 0.7), (0.2, 0.8),
         (1.0, 0.0), (0.6, 0.0), (0.5, 0.0), (0.4, 0.0), (0.5, 0.3)]


def overlap_sweep(args) -> None:
    """Overlap's outer lr and momentum: H = 50, int8, one seed (1000), the main table's model and
    steps; the in-step run with the paper's (0.7, 0.9) beside them. Under "overlap_sweep"."""
    data = build_stdlib_corpus(1 << 20)
    w = BASE_WORKLOAD.model_copy(update={"seed": 1000})
    steps, h = (300, 30) if args.quick else (2500, 50)

    def loss(overlap: bool, lr: float, momentum: float) -> float:
        cfg = DilocoConfig(workload=w, workers=WORKERS, inner_steps=h, rounds=steps // h,
                           compression="int8", overlap=overlap, outer_lr=lr,
                           outer_momentum=momentum, nesterov=momentum > 0)
        return run_diloco(cfg, data).final_val_loss

    in_step = loss(False, 0.7, 0.9)
    rows = []
    for lr, momentum in SWEEP:
        value = loss(True, lr, momentum)
        rows.append({"outer_lr": lr, "outer_momentum": momentum, "loss": value,
                     "vs_in_step_pct": 100 * (value - in_step) / in_step})
        print(f"overlap, lr {lr}, momentum {momentum}: {value:.4f} "
              f"({rows[-1]['vs_in_step_pct']:+.1f} % against in-step {in_step:.4f})", flush=True)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    saved["overlap_sweep"] = {"H": h, "seed": 1000, "steps_per_worker": steps,
                              "in_step_loss": in_step, "rows": rows, "quick": args.quick}
    args.out.write_text(json.dumps(saved, indent=2))
    print(f"wrote {args.out} (key \"overlap_sweep\")")


if __name__ == "__main__":
    main()
