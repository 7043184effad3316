"""bench/scale.py --quick end to end (issue 15): one run on a CI-sized market writes every figure
the issue asks for, each with a sane value (about 35 s: anvil, two farm processes, the explorer's
indexer and one provider daemon)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

FIELDS = ("providers", "gas_per_epoch_liveness", "liveness_gas_per_provider_day",
          "blocks_per_epoch_liveness", "bid_collect_s_p95", "orders_per_block",
          "inclusion_latency_s_p95", "idle_rpc_per_s_per_provider", "indexer_lag_blocks_max",
          "indexer_lag_s_p95", "heartbeat_gas_per_provider_epoch",
          "liveness_gas_per_provider_day_heartbeats", "liveness_gain",
          "epoch_length_s_for_day_figures", "model")


def test_quick_run_measures_every_figure(tmp_path):
    out = tmp_path / "scale_quick.json"
    run = subprocess.run([sys.executable, "bench/scale.py", "--quick", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    r = json.loads(out.read_text())
    assert [f for f in FIELDS if r.get(f) is None] == []
    assert r["quick"] and r["providers"] == r["config"]["providers"] > 256   # a report of 2+ words
    live = r["liveness"]
    assert live["bitmap_stored_as_reported"] and live["providers_in_reports"] == r["providers"]
    assert len(live["reports"]) == r["config"]["validators"] == 3
    assert r["gas_per_epoch_liveness"] == live["open_epoch_gas"] + sum(
        x["gas_used"] for x in live["reports"])
    # One epoch of reports for every provider costs less than one heartbeat per provider.
    assert 0 < r["gas_per_epoch_liveness"] < r["heartbeat_gas_per_provider_epoch"] * r["providers"]
    assert r["liveness_gain"] > 1
    assert r["epoch_length_s_for_day_figures"] == 3600
    assert r["liveness_gas_per_provider_day_heartbeats"] == r["heartbeat_gas_per_provider_epoch"] * 24
    assert 0 < r["blocks_per_epoch_liveness"] < 1
    assert r["orders_per_block"] > 0 and r["orders"]["orders"] == r["config"]["orders"]
    assert 0 < r["inclusion_latency_s_p95"] < 60
    assert 0 < r["bid_collect_s_p95"] < r["config"]["window_s"] + 5
    assert r["bids"]["all_live_bids_valid_every_time"]
    assert 0 < r["idle_rpc_per_s_per_provider"] < 20
    # measured while the provider beat to a validator over HTTP (no heartbeat transactions)
    idle = r["idle"]["beats_to_a_validator"]
    assert idle["beat_epochs_receipted"] >= 1 and idle["heartbeat_epochs_held"] == 0
    assert 0 <= r["indexer_lag_blocks_max"] < 100 and r["indexer_lag_s_p95"] >= 0
    model = r["model"]
    assert "MODEL" in model["label"] and set(model["at"]) == {"1000", "10000", "100000"}
    assert model["breaks_first"] in model["limits_in_providers"]
