"""`tessera demo` itself, as a user runs it: a separate process, JSON summary on stdout."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_json_reports_a_verified_settled_rental(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tessera.cli", "demo", "--json",
                             "--steps", "60"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    prices = {b["provider"]: b["price_per_gpu_hour"] for b in summary["bids"]}
    assert len(prices) == 2  # gamma's floor is above the order's maximum: it does not bid
    assert summary["winner"]["price_per_gpu_hour"] == min(prices.values())
    assert summary["job_status"] == "succeeded"
    assert len(summary["checks"]) == 3
    settlement = summary["settlement"]
    paid = settlement["provider"] + settlement["provider_withdrawn_earlier"]["amount"]
    fee = settlement["fee"] + settlement["provider_withdrawn_earlier"]["fee"]
    assert paid > 0 and settlement["refund"] > 0
    assert summary["tenant_spent"] == paid + fee
    assert summary["treasury_received"] == fee
    history = [h["train_loss"] for h in summary["loss_history"]]
    assert history[-1] < history[0]
    assert all(tx.startswith("0x") for tx in (summary["transactions"]["accept"],
                                              summary["transactions"]["close"]))
    # The run as the explorer sees it: indexed, audited against the chain's logs, kept on disk.
    explorer = summary["explorer"]
    assert explorer["audit_agrees"], explorer["audit_problems"]
    assert explorer["tenant_paid"] == summary["tenant_spent"]
    assert explorer["protocol_fees"] == fee
    assert 0 < explorer["utilization"] <= 1
    assert set(explorer["uptime"]) == {p["account"] for p in summary["providers"].values()}
    assert all(u["heartbeats"] >= 1 for u in explorer["uptime"].values())
    assert os.path.exists(explorer["database"])
    assert all("reliability" in b for b in summary["bids"])
