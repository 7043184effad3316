"""bench/crosschain.py --quick end to end: a two-chain devnet, three `tessera validator run`
processes, a `tessera bridge relay` process, a few transfers and the gas rows, into a temporary
file; then the JSON's shape and the facts a reader relies on (gas grows with signatures, the
latency is at the default confirmations, the bucket is BridgeParams' defaults, the model is
labelled as one). About a minute on a quiet 2-core machine."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from tessera.chain.bridge_deploy import BridgeParams
from tessera.protocol.bridge import DEFAULT_CONFIRMATIONS

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_the_figures(tmp_path):
    out = tmp_path / "crosschain.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "crosschain.py"), "--quick",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick"
    assert isinstance(doc["contended"], bool)
    for key in ("loadavg_before", "loadavg_after"):
        assert len(doc["load"][key]) == 3
    assert doc["load"]["cpu_during_latency"]["wall_s"] > 0

    gas = doc["deliver_gas"]
    rows = gas["rows"]
    assert [r["signatures"] for r in rows] == sorted(r["signatures"] for r in rows)
    assert len(rows) >= 3 and rows[-1]["signatures"] == 32
    for key in ("gas", "gas_on_peer", "calldata_bytes"):
        values = [r[key] for r in rows]
        assert all(b > a for a, b in zip(values, values[1:], strict=False)), (key, values)
    assert rows[0]["gas"] > 21_000
    funding = gas["order_funding"]   # an order opened by its deposit's delivery costs more
    assert funding["deliver_opening_the_order"] > funding["deliver_plain_transfer"] > 21_000
    assert funding["send_call_on_peer"] > 21_000 and funding["send_back_on_home"] > 21_000
    for route in ("31338->31337", "31337->31338"):
        queued = gas["queued"][route]
        assert queued["deliver"] > 21_000 and queued["execute"] > 21_000
        assert queued["total"] == queued["deliver"] + queued["execute"]
    send = gas["send"]
    assert send["TokenBridge.send lock (on peer)"] > 21_000
    assert send["TokenBridge.send burn (on home)"] > 21_000
    assert {r["members"] for r in gas["rotate"]["rows"]} == {4, 32}
    by_size = {r["members"]: r["gas"] for r in gas["rotate"]["rows"]}
    assert by_size[32] > by_size[4]

    staking = doc["stake_and_forgery_gas"]
    assert all(g > 21_000 for g in staking["stake"].values()), staking["stake"]
    forgery = staking["forgery"]
    assert forgery["taken_tstk"] == 100   # a devnet validator's whole stake
    assert forgery["deliver the report on home, slash"] > 21_000
    assert forgery["prove_forgery on peer, report sent"] > 21_000
    assert forgery["prove_forgery on home, slash in the same tx"] > 21_000

    latency = doc["latency_s"]
    assert latency["config"]["confirmations"] == DEFAULT_CONFIRMATIONS
    assert latency["n"] == len(latency["transfers"]) >= 4
    assert 0 < latency["p50"] <= latency["p95"] <= latency["max"]
    assert set(latency["by_route"]) == {"31338->31337", "31337->31338"}
    for part in ("confirmations_s", "signatures_s", "delivery_s"):
        assert latency["breakdown"][part]["n"] == latency["n"], part
    for t in latency["transfers"]:
        assert t["delivery_s"] > 0 and t["confirmations_s"] > 0
        total = t["confirmations_s"] + t["signatures_s"] + t["delivery_s"]
        assert abs(total - t["total_s"]) < 0.01

    defaults = {f.name: f.default for f in dataclasses.fields(BridgeParams)
                if f.default is not dataclasses.MISSING}
    bucket = doc["bucket"]
    for key in ("capacity", "refill_per_s", "large_threshold", "delay", "max_transfer"):
        assert bucket[key] == defaults[key], key
        for deployed in bucket["deployed"].values():
            assert deployed[key] == defaults[key], key
    explained = bucket["reasoning"]["BridgeParams"]   # BridgeParams' bullets, one per field
    for key in ("capacity", "refill_per_s", "large_threshold", "delay", "max_transfer"):
        assert any(line.startswith(f"`{key}`") for line in explained), key
    assert bucket["reasoning"]["arithmetic"]["refill_from_empty_s"] > 0

    model = doc["model"]
    assert "not a measurement" in model["label"]
    fit = model["fits"]["gas"]
    assert fit["b_per_signature"] > 0 and fit["a"] > 21_000
    cost = model["per_delivery"]["32 signatures (delivered on home)"]
    assert cost["gas_from"] == "measured row" and cost["eth_at_30_gwei"] > cost["eth_at_1_gwei"] > 0
