"""bench/liveness_challenge_gas.py --quick end to end: one run on anvil (256 providers, about
10 s) measures every row of Uptime's set challenge and derives the per-provider figures and the
griefing model from them.

What a wrong bench could hide, and what is checked against it: rows silently missing a size
(every size is present); a model that is not the measured gas (it is recomputed here from the
rows); a "measured" answer row that settled the challenge or paid a first write (the answer
rows must all come from one challenge left open, the steady ones cheaper than the first); an
unanswered challenge that slashed nothing (each slash row records the stake taken)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_quick_run_measures_every_row(tmp_path):
    out = tmp_path / "liveness_challenge_gas_quick.json"
    run = subprocess.run([sys.executable, "bench/liveness_challenge_gas.py", "--quick",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    r = json.loads(out.read_text())
    sizes = r["config"]["sizes"]
    assert r["quick"] and r["config"]["providers"] == max(sizes["challenge"]) == 256
    rows = r["rows"]
    for row in rows:
        per = row["answers"] if row["call"] == "answer_challenge" else row["named"]
        assert row["gas"] > 0 and row["gas_per_provider"] == round(row["gas"] / per)

    def gas(call, case_start, key="named"):
        return {x[key]: x["gas"] for x in rows
                if x["call"] == call and x["case"].startswith(case_start)}

    first = gas("challenge_inclusions", "first challenge")
    later = gas("challenge_inclusions", "second challenge")
    assert sorted(first) == sorted(later) == sizes["challenge"]
    assert all(later[n] < first[n] for n in first)   # dispute words already written
    steady = gas("answer_challenge", "proven word already", "answers")
    assert sorted(steady) == sizes["answer"]
    assert steady[1] < gas("answer_challenge", "the challenge's first answer", "answers")[1]
    assert steady[1] > steady[16] / 16 > steady[64] / 64    # the call's fixed cost spreads
    slash = [x for x in rows if x["case"] == "all unanswered: slash"]
    assert sorted(x["named"] for x in slash) == sizes["resolve"] and all(x["slashed"] > 0 for x in slash)
    assert sorted(gas("resolve_challenge", "all answered elsewhere")) == sizes["resolve"]
    assert [x["named"] for x in r["answered_in_full"]] == sizes["resolve"]
    per = r["per_provider"]
    assert per["gas_per_beat_answered"] == round(steady[64] / 64)
    assert per["challenge_marginal_gas_per_word"] is None          # one word in --quick
    model = r["model"]
    assert "MODEL" in model["label"] and model["named_per_bond"] == 32
    assert model["griefer_forced_gas_per_challenge_bond"] == 32 * per["gas_per_beat_answered"]
    # the model against the measured answer of a 32-named challenge in full (1 call): within a
    # fifth (the epoch's first proven write and the settlement weigh on 32 beats)
    check = model["measured_check_answer_in_full_gas"]
    assert abs(check - model["griefer_forced_gas_per_challenge_bond"]) < 0.2 * check
    # own answers (G2, review 4): every case paid at least its gas, at most a tenth more
    own = r["own_answers"]
    assert len(own) == 5 and all(1 <= x["paid_over_gas"] <= 1.1 for x in own), own
    assert r["own_answer"]["paid_over_gas_min"] == min(x["paid_over_gas"] for x in own)
