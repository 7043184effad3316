"""bench/diloco.py --quick end to end (about 30 s): the tuned comparison's machinery, sweep on
the tuning seeds, best configuration per side re-run on fresh seeds, the whole held-out split,
and the issue's row fields, written to a temporary file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_tunes_both_sides_and_reports_on_fresh_seeds(tmp_path):
    out = tmp_path / "diloco.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "diloco.py"), "--quick", "--out",
                          str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert not set(doc["tune_seeds"]) & set(doc["report_seeds"])
    assert {r["method"] for r in doc["tuning"]} == {"sync", "H=30 int8"}
    assert {r["seed"] for r in doc["tuning"]} == set(doc["tune_seeds"])
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"sync", "H=30 int8", "H=100 int8, untuned defaults"}
    for r in rows.values():
        assert {"method", "bytes", "loss", "loss_gap", "seeds"} <= set(r)
        assert r["seeds"] == doc["report_seeds"]
        assert r["held_out_tokens"] >= 100_000 and r["tokens"] == rows["sync"]["tokens"]
    sync, diloco = rows["sync"], rows["H=30 int8"]
    best = doc["best"]["H=30 int8"]
    assert (diloco["config"]["lr"], diloco["config"]["outer_lr"]) == (best["lr"], best["outer_lr"])
    assert sync["loss_gap"] == 0 and sync["bytes_ring"] == sync["bytes"] * 3 // 4
    assert diloco["bytes"] < sync["bytes"] / 50
    assert diloco["ratio_ring"] == pytest.approx(diloco["ratio_star"] * 3 / 4, rel=1e-6)
    assert diloco["loss_gap"] == pytest.approx(
        100 * (diloco["loss"] - sync["loss"]) / sync["loss"], rel=0.05)
    assert all(isinstance(g["met"], bool) for g in doc["goals"].values())
