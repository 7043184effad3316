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
    # The verification act, at the default verification settings: the cheating provider (it
    # trains honestly and sends a poisoned update) is caught by the payload check, challenged,
    # voted guilty by the three validators after their own checks, slashed and jailed; the
    # honest worker finishes.
    act = summary["verification"]
    [challenge] = act["challenges"]
    assert challenge["outcome"] == "UPHELD" and challenge["kind"] == "payload"
    assert set(challenge["case"].values()) == {"accepted"} and len(challenge["case"]) == 3
    assert len(challenge["vote_txs"]) == 3 and challenge["resolve_tx"].startswith("0x")
    assert challenge["slashed"] > 0
    assert act["stake_after"] == act["stake_before"] - challenge["slashed"]
    assert act["jailed_until"] > 0
    # the verified job's pay waited for its rounds to be final: the cheater's bad round went
    # back to the tenant, and with it all the rest of its pay (issue 11: a proven cheat
    # forfeits every round still held, flagged `forfeited`), so it was paid nothing; the honest
    # worker was paid for its rounds
    pay = {p["provider"]: p for p in act["pay"]}
    cheat = pay[act["cheater"]]
    assert cheat["proven_rounds"] == [0] and cheat["released"] == 0 and cheat["refunded"] > 0
    assert cheat["refunded_rounds"] == [0, *cheat["forfeited_rounds"]]
    assert cheat["money"]["provider_paid"] == 0 and cheat["money"]["held_for_settlement"] == 0
    assert cheat["money"]["round_forfeited"] == cheat["forfeited"]
    assert [(p["released"] > 0, p["refunded"]) for who, p in pay.items()
            if who != act["cheater"]] == [(True, 0)]
    workers = {w["provider"]: w for w in act["job"]["workers"]}
    assert workers[act["cheater"]]["fault"] == "spot-check"
    assert [w["finished"] for p, w in workers.items() if p != act["cheater"]] == [True]
    # The agent act: an agent holding only a session key buys three completions from the demo's
    # model, served by the winning provider, each settled on chain from its owner's budget; a
    # request priced over its cap is refused before signing, and nothing moves.
    agent = summary["agent"]
    price = agent["prices"]["per_request"] + 32 * agent["prices"]["per_token"]
    assert agent["provider"] == summary["winner"]["provider"]
    assert [(p["tokens"], p["amount"]) for p in agent["payments"]] == [(32, price)] * 3
    assert all(p["tx"].startswith("0x") for p in agent["payments"])
    assert len({p["tx"] for p in agent["payments"]}) == 3
    assert agent["spent"] == 3 * price <= agent["budget"]
    refusal = agent["refusal"]
    assert refusal["limit"] == "over cap" and refusal["signatures"] == 0
    assert refusal["price"] > agent["cap"] >= price
    assert refusal["nothing_moved"] and refusal["balances_before"] == refusal["balances_after"]
    assert refusal["balances_after"]["spent_in_period"] == agent["spent"]
    # The run as the explorer sees it: indexed, audited against the chain's logs, kept on disk.
    explorer = summary["explorer"]
    assert explorer["audit_agrees"], explorer["audit_problems"]
    assert explorer["tenant_paid"] == summary["tenant_spent"] + act["tenant_spent"]
    assert explorer["protocol_fees"] == fee + act["treasury_received"]
    assert 0 < explorer["utilization"] <= 1
    # the agent's three payments are provider revenue beside the leases', each its transaction
    assert explorer["agent_payments"]["count"] == 3
    assert explorer["agent_payments"]["amount_base_units"] == agent["spent"]
    assert set(explorer["uptime"]) == {p["account"] for p in summary["providers"].values()} | \
        {act["cheater"]}
    assert all(u["up"] + u["pending"] >= 1 for u in explorer["uptime"].values())
    assert os.path.exists(explorer["database"])
    assert all("reliability" in b for b in summary["bids"])
