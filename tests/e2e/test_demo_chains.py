"""`tessera demo --chains 2` (and with `--nodes 3`) as a user runs it (a separate process, JSON
on stdout), lean: the verification and agent acts are skipped (test_demo.py covers them on one
chain). The bidding providers' stake and the tenant's TUSD are on chain 31338: the stake crosses
to 31337 and is staked there; the order is funded from 31338 in one message (its delivery,
through real validator and relayer processes, opens the order at home), the lease is paid
there, and the relayer sends the order's refunds back to 31338 with no transaction of the
tenant's."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_two_chain_demo_pays_a_lease_from_the_second_chain(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tessera.cli", "demo", "--chains", "2",
                             "--json", "--steps", "60", "--no-cheater", "--no-agent"],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["job_status"] == "succeeded" and len(summary["checks"]) == 3
    assert "verification" not in summary and "agent" not in summary
    cc = summary["cross_chain"]
    home, peer = cc["home_chain"], cc["peer_chain"]
    assert (home, peer) == (31337, 31338) and cc["tenant"] == summary["tenant"]
    # the escrow no lease took comes back at once, the lease's unspent budget at its close: the
    # relayer sends each refund back as it finds it owed
    deposit, returns = cc["transfers"]["deposit"], cc["transfers"]["returns"]
    assert deposit["direction"] == f"{peer}->{home}" and 1 <= len(returns) <= 2
    assert all(t["direction"] == f"{home}->{peer}" for t in returns)
    back = sum(t["amount"] for t in returns)
    for t in (deposit, *returns):
        assert t["delivered"] and t["message_id"] != "0x" + "0" * 64
        assert t["source_tx"].startswith("0x") and t["delivery_tx"].startswith("0x")
        assert t["source_tx"] != t["delivery_tx"]
        # signed by the committee (2 of 3 equal stakes reach the 66.66 % threshold), and the
        # delivery carried only committee signatures, ascending
        assert {a["signer"] for a in t["attested_by"]} <= set(cc["committee"])
        assert len(t["attested_by"]) >= 2
        assert len(t["delivered_with"]) >= 2 and set(t["delivered_with"]) <= set(cc["committee"])
        assert t["delivered_with"] == sorted(t["delivered_with"], key=lambda a: int(a, 16))
        assert t["bucket"]["left_after_delivery"] <= t["bucket"]["capacity"] - t["amount"]
        assert t["bucket"]["available"] <= t["bucket"]["capacity"]
    # the lease's cost on chain A, from its settlement: what the provider got plus the fee
    settlement = summary["settlement"]
    cost = (settlement["provider"] + settlement["provider_withdrawn_earlier"]["amount"]
            + settlement["fee"] + settlement["provider_withdrawn_earlier"]["fee"])
    assert cost == summary["tenant_spent"] > 0
    ledger, balances = cc["ledger"], cc["balances"]
    assert ledger["locked_on_peer"] == ledger["minted_on_home"] == deposit["amount"]
    # the deposit is exactly the order's escrow, and the order was opened by its delivery
    order = cc["order"]
    assert order["funding_message_id"] == deposit["message_id"] and order["order_id"] >= 1
    assert summary["paid_from_chain"]["deposit"] == deposit["amount"]
    assert summary["paid_from_chain"]["refunded"] == back
    assert ledger["paid_for_compute"] == cost
    assert ledger["returned_to_peer"] == back == deposit["amount"] - cost
    assert balances["peer_after"] == balances["peer_before"] - cost
    assert balances["home_after"] == balances["home_before"]
    assert cc["adds_up"] and cc["conserved"]
    # conservation at every step: locked on B = minted on A and outstanding + in flight
    steps = cc["conservation"]
    assert [s["step"] for s in steps] == [
        "before", f"deposit sent ({peer} -> {home})", "deposit delivered",
        f"return sent ({home} -> {peer})", "return delivered"]
    assert all(s["locked_on_peer"] == s["minted_on_home"] + s["in_flight"] for s in steps)
    # the last return is read when seen sent (in flight, unless already delivered by then)
    assert [s["in_flight"] for s in steps][:3] == [0, deposit["amount"], 0]
    assert steps[3]["in_flight"] in (0, returns[-1]["amount"]) and steps[4]["in_flight"] == 0
    assert steps[-1]["locked_on_peer"] == steps[-1]["minted_on_home"] == cost
    assert cc["units"].startswith("integer base units of TUSD")
    # the bidding providers' stake is on chain B: locked there, minted at home and staked; the
    # lease's provider is one of them
    stake = cc["stake"]
    assert len(stake["providers"]) == 2 and stake["conserved"] and stake["in_flight"] == 0
    assert stake["locked_on_peer"] == stake["minted_on_home"] == 2 * stake["amount"] > 0
    for row in stake["providers"]:
        t = row["transfer"]
        assert (t["direction"], t["amount"], t["delivered"]) == (f"{peer}->{home}", stake["amount"], True)
        assert len(t["delivered_with"]) >= 2 and set(t["delivered_with"]) <= set(cc["committee"])
        assert row["staked_at_home"] == stake["amount"]
        assert row["peer_after"] == row["peer_before"] - stake["amount"]
        assert row["home_after"] == row["home_before"] and row["adds_up"]
    assert summary["winner"]["provider"].lower() in {r["provider"].lower() for r in stake["providers"]}
    # the home chain's own audit still agrees to the base unit with the bridge's mints on it
    explorer = summary["explorer"]
    assert explorer["audit_agrees"], explorer["audit_problems"]
    assert explorer["tenant_paid"] == summary["tenant_spent"]
    # the explorer indexed both chains' bridges: each transfer with its transactions on both
    # sides, and conservation per direction recomputed from the logs of both chains
    bridge = explorer["bridge"]
    assert bridge["problems"] == [] and bridge["transfers"]
    indexed = {t["message_id"].lower(): t for t in bridge["transfers"]}
    moved = [(t, "TUSD") for t in (deposit, *returns)] + \
        [(r["transfer"], "TSTK") for r in stake["providers"]]
    for t, token in moved:
        row = indexed[t["message_id"].lower()]
        assert (row["state"], row["amount"], row["token"]) == ("delivered", t["amount"], token)
        assert (row["source_tx"].lower(), row["delivery_tx"].lower()) == \
            (t["source_tx"].lower(), t["delivery_tx"].lower())
    # per direction and token: TUSD both ways, TSTK both ways (none back yet), each adding up
    assert {(d["source"], d["destination"], d["token"]) for d in bridge["directions"]} == \
        {(a, b, token) for a, b in ((peer, home), (home, peer)) for token in ("TUSD", "TSTK")}
    assert all(d["adds_up"] for d in bridge["directions"])


def test_two_chain_demo_pays_a_diloco_job_from_the_second_chain(tmp_path):
    """`--chains 2 --nodes 3`: the DiLoCo job's one order (three leases) is funded from 31338 in
    one message; the escrow no lease took and each lease's unspent budget go back there; the
    verified rounds' held pay is released at home; the tenant's TUSD on 31337 never moves."""
    result = subprocess.run([sys.executable, "-m", "tessera.cli", "demo", "--chains", "2",
                             "--nodes", "3", "--json", "--no-cheater", "--no-agent"],
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["mode"] == "diloco" and len(summary["workers"]) == 3
    assert all(w["finished"] for w in summary["workers"])
    assert summary["rounds"][-1]["val_loss"] < summary["rounds"][0]["val_loss"]
    cc, paid = summary["cross_chain"], summary["paid_from_chain"]
    order_id = cc["order"]["order_id"]
    # one funding opened the job's one order, and every worker leased from it
    assert {w["order_id"] for w in summary["workers"]} == {order_id} == {summary["order_id"]}
    assert paid["chain_id"] == cc["peer_chain"] and [o["order_id"] for o in paid["orders"]] == [order_id]
    deposit, returns = cc["transfers"]["deposit"], cc["transfers"]["returns"]
    assert deposit["amount"] == paid["orders"][0]["deposit"] and deposit["delivered"]
    assert cc["order"]["funding_message_id"] == deposit["message_id"]
    # what came back is what the Market refunded: the unallocated escrow, then the leases' rest
    assert summary["unallocated_refund"] > 0 and 2 <= len(returns) <= 4
    assert all(t["delivered"] and t["direction"] == f"{cc['home_chain']}->{cc['peer_chain']}"
               for t in returns)
    assert sum(t["amount"] for t in returns) == paid["orders"][0]["refunded"]
    # the job's cost, three ways: the order's books, the indexer's revenue, the tenant's balance
    cost = paid["spent"]
    assert cost == summary["tenant_spent"] == cc["ledger"]["paid_for_compute"] > 0
    assert summary["explorer"]["tenant_paid"] == cost and summary["explorer"]["audit_agrees"]
    assert sum(p["released"] for p in summary["pay"]) == cost   # all held pay released
    balances = cc["balances"]
    assert balances["peer_after"] == balances["peer_before"] - cost
    assert balances["home_after"] == balances["home_before"]
    assert cc["conserved"] and cc["adds_up"]


def test_demo_refuses_other_chain_counts_before_starting_anything():
    from typer.testing import CliRunner

    from tessera.cli import app

    for args, said in ((["--chains", "3"], "--chains must be 1 or 2"),
                       (["--chains", "0"], "--chains must be 1 or 2")):
        result = CliRunner().invoke(app, ["demo", *args])
        assert result.exit_code == 1 and said in " ".join(result.stderr.split()), args
        assert "Traceback" not in result.stderr
