"""The demo's verification act: a cheating provider is caught by the payload check and slashed by a
quorum of staked validators, every transaction shown.

Real parts: three `tessera validator run` processes that stake and vote, a fourth provider
process whose DiLoCo workers cheat, a verified two-node DiLoCo job run by the tenant with the
real coordinator (commitments, one root per round, spot-check replays, an on-chain challenge,
its case pushed to the validators), and the validators' own replays, votes, resolve and claims.

The cheater is an ordinary provider config run through the TEST-ONLY entry point
`python -m tessera.testing.cheating_provider --cheat poisoned-payload` (a production provider has
no such setting): its worker trains honestly, so every committed segment replays, and sends
-10 times its real update, the model-poisoning attack that a check of the segments alone never
caught. The job runs with the verification defaults a user gets (`[verification]` left out):
the payload of every worker is checked against its last committed state every round, so the
catch is certain in the first round; docs/verification.md gives the odds of the sampled
segment replays (p = 0.4) for cheats that fake the training instead.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain, tx_hash
from tessera.chain.devnet import TREASURY, free_port
from tessera.chain.market import Market
from tessera.chain.settlement import Settlement
from tessera.chain.verification import Outcome, Verification
from tessera.daemons import Daemons, raise_if_exited, spawn, wait_healthy
from tessera.errors import TenantError
from tessera.protocol.figures import format_time
from tessera.protocol.jobspec import JobSpec
from tessera.tenant.bidding import money, tstk
from tessera.tenant.client import Tenant
from tessera.tenant.flow import load_dataset
from tessera.tenant.lease_money import job_cost_line, lease_money, money_json, short_line
from tessera.tenant.multinode import run_diloco_job

CHEATER_ACCOUNT, CHEATER_PRICE = 6, "0.90"   # cheaper than every honest provider: it wins a seat
VALIDATOR_ACCOUNTS = (7, 8, 9)               # three equal stakes: a verdict needs all of them
VERDICT_TIMEOUT_S = 180.0

VERIFIED_JOB = {
    "name": "demo-verified", "mode": "diloco",
    "order": {"max_price_per_gpu_hour": "3.00", "duration": "10m", "nodes": 2, "bid_window": "4s"},
    "dataset": {"source": "builtin:stdlib", "max_bytes": 65536},
    "workload": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
                 "eval_batches": 2},
    "diloco": {"inner_steps": 8, "rounds": 2, "compression": "int8", "round_timeout": "60s",
               "replace_dropped": False},
}   # [verification]: the defaults (on, k = 5, p = 0.4, every payload checked every round)


def start_validators(home: Path, network_file: Path) -> dict:
    """Three validator processes that stake on start and vote on challenges. Hardware challenges
    are off here: the demo's CPU providers share one machine with everything else, and a timed
    challenge measured under that load is not what this act shows."""
    procs = {}
    for account in VALIDATOR_ACCOUNTS:
        name = f"validator-{account}"
        procs[name] = spawn(home, name, "validator", {
            "validator": {"account": f"devnet:{account}", "network": str(network_file),
                          "port": free_port(), "state_dir": str(home / name), "stake": "100"},
            "probes": {"per_epoch": 1, "timeout_s": 3.0, "max_delay_s": 2.0},
            "challenges": {"vote": True},
            "hardware": {"enabled": False},
        })
    return procs


def start_cheater(home: Path, network_file: Path) -> dict:
    name = "provider-delta"
    return {name: spawn(home, name, "provider", {
        "provider": {"account": f"devnet:{CHEATER_ACCOUNT}", "network": str(network_file),
                     "port": free_port(), "state_dir": str(home / name), "stake": "100"},
        "pricing": {"price_per_gpu_hour": CHEATER_PRICE},
        "limits": {"threads": 1, "memory_limit_mb": 4096, "max_job_seconds": 1800},
        "payouts": {"sweep_every": 5},
    }, command=["tessera.testing.cheating_provider", "--cheat", "poisoned-payload"])}


def wait_verdict(verification: Verification, challenge_id: int, procs: Daemons) -> Outcome:
    deadline = time.monotonic() + VERDICT_TIMEOUT_S
    while (status := verification.challenge(challenge_id).status) == Outcome.OPEN:
        raise_if_exited(procs)
        if time.monotonic() > deadline:
            raise TenantError(f"challenge {challenge_id} has no verdict after "
                              f"{VERDICT_TIMEOUT_S:.0f} s; see the validator logs")
        time.sleep(0.5)
    return status


def wait_claims(verification: Verification, challenge_id: int, timeout: float = 20.0) -> None:
    """Give the winning voters a moment to claim their rewards (they do it on their own)."""
    chain, deadline = verification.chain, time.monotonic() + timeout
    record = verification.challenge(challenge_id)
    winners = record.guilty_votes if record.status == Outcome.UPHELD else record.innocent_votes
    while time.monotonic() < deadline and len(chain.events(
            "Verification", "RewardClaimed", chain.network.deploy_block,
            argument_filters={"challenge_id": challenge_id})) < winners:
        time.sleep(0.5)


def run_cheater_act(console: Console, chain: Chain, home: Path, procs: Daemons) -> dict:
    """Run the act; `procs` (name -> (process, url)) gains the new processes, which the caller
    stops. Returns what happened, transactions included."""
    network_file = home / "devnet" / "network.json"
    console.rule("[bold]verification: a cheating provider")
    running = any(name.startswith("validator-") for name in procs)   # started with the providers
    console.print(("the 3 validators (stake 100 TSTK each) replay challenged work and vote; "
                   if running else "starting 3 validators (stake 100 TSTK each, replay challenged "
                   "work and vote) and ") + f"provider delta at {CHEATER_PRICE} TUSD/GPU-h, which "
                  "[red]cheats[/]: it trains honestly but sends -10x its update, to poison the "
                  "model ...")
    new = {**({} if running else start_validators(home, network_file)),
           **start_cheater(home, network_file)}
    procs.update(new)
    wait_healthy(new)
    tenant = Tenant(chain)
    market, verification = Market(chain), Verification(chain)
    cheater = devnet_account(CHEATER_ACCOUNT).address
    stake_before = market.registry.provider_record(cheater)["stake"]
    spec = JobSpec.model_validate(VERIFIED_JOB)
    v = spec.verification
    console.print("the tenant runs a verified 2-node DiLoCo job with the default checks: each "
                  f"worker signs a commitment to its states every {v.checkpoint_every} steps and "
                  "to the update it sends, one Merkle root per round goes on chain, the tenant "
                  "recomputes every worker's update from its last committed state every round, "
                  f"and replays one committed segment with probability {v.spot_check_probability}")
    rounds = spec.diloco.rounds
    console.print(f"at these defaults, over this job's {rounds} rounds: a poisoned or copied "
                  "update is caught in the round it is sent (probability 1); a worker that "
                  "fakes every segment is caught in "
                  f"{1 - (1 - v.spot_check_probability) ** rounds:.0%} of such jobs "
                  "(docs/verification.md has the odds for partial fakes)")
    treasury = devnet_account(TREASURY).address
    treasury_before = market.payment_token.balance_of(treasury)
    tenant_before = market.payment_token.balance_of(chain.address)
    summary = run_diloco_job(tenant, spec, load_dataset(spec.dataset), console,
                             results_dir=home / "results")
    challenges = [c for r in summary["rounds"] for c in r["challenges"] if "challenge_id" in c]
    act = {"job": summary, "cheater": cheater, "stake_before": stake_before, "challenges": []}
    if not challenges:
        console.print("[red]the cheater was not challenged[/]: see the coordinator log in "
                      f"{summary['job_dir']}")
        return act
    for c in challenges:
        outcome = wait_verdict(verification, c["challenge_id"], procs)
        wait_claims(verification, c["challenge_id"])
        act["challenges"].append(_challenge_record(chain, verification, c, outcome))
    act["stake_after"] = market.registry.provider_record(cheater)["stake"]
    act["jailed_until"] = market.registry.provider_record(cheater)["jailed_until"]
    print_act(console, act)
    act["pay"] = settle_held_pay(console, chain, summary, procs)
    act["tenant_spent"] = tenant_before - market.payment_token.balance_of(chain.address)
    act["treasury_received"] = market.payment_token.balance_of(treasury) - treasury_before
    moneys = [lease_money(chain, w["lease_id"]) for w in summary["workers"]]
    console.print(job_cost_line(moneys) + " (its order's escrow less the unallocated part, "
                  "each lease's refund at close and the cheater's refunded rounds: the proven "
                  "one and every other one it forfeited)",
                  markup=False, highlight=False)
    ledger_cost = sum(m.tenant_cost for m in moneys)
    if ledger_cost != act["tenant_spent"]:   # the tenant's TUSD moved for something else too
        console.print(f"[red]the tenant's balance moved by {money(act['tenant_spent'])}, "
                      f"{money(act['tenant_spent'] - ledger_cost)} more than its leases "
                      "account for[/]")
    return act


def settle_held_pay(console: Console, chain: Chain, job: dict, procs: Daemons) -> list[dict]:
    """Wait for the job's rounds to be final, release every lease's held pay (anyone may; the
    providers' own sweeps race for it, harmlessly), let the providers withdraw, and list per
    lease what was released to the provider and what went back to the tenant: the pay of a
    round proven to cheat and, once a cheat is proven for a lease, the pay of every other round
    of it still held and of the time after the last root (`forfeited`, issue 11)."""
    market, verification = Market(chain), Verification(chain)
    order_id, since = job["order_id"], chain.network.deploy_block
    rounds = verification.rounds_posted(order_id)
    window = verification.params().challenge_window
    console.print(f"the job's pay is held until each round is final ({window} s challenge "
                  "window on this demo chain, 1 h by default, and no challenge open) ...")
    deadline = time.monotonic() + window + VERDICT_TIMEOUT_S
    while not all(verification.round_finalized(order_id, r) for r in range(rounds)):
        if time.monotonic() > deadline:
            raise TenantError(f"the rounds of job {order_id} are not final after {window} s")
        chain.w3.provider.make_request("evm_mine", [])   # devnet: a block carries the time
        time.sleep(1.0)
    leases = [w for w in job["workers"] if w["order_id"] == order_id]
    # Release each lease up to its close: the rounds' pay, then the time after the last root
    # (releasable once it is older than the window plus the chain's root grace).
    settlement = Settlement(chain)
    deadline = time.monotonic() + settlement.release_delay() + VERDICT_TIMEOUT_S
    while True:
        for w in leases:
            settlement.release_ready(w["lease_id"], order_id)
        if all(settlement.releases(w["lease_id"]).until >= market.lease(w["lease_id"]).closed_at
               for w in leases):
            break
        if time.monotonic() > deadline:
            raise TenantError(f"the pay of job {order_id} is not released up to its leases' close")
        chain.w3.provider.make_request("evm_mine", [])   # devnet: a block carries the time
        time.sleep(1.0)
    deadline = time.monotonic() + 60
    while any(market.withdrawable(w["lease_id"]) for w in leases):
        if time.monotonic() > deadline:
            raise TenantError("providers did not withdraw their released pay within 60 s")
        raise_if_exited(procs)
        time.sleep(0.5)
    out = []
    for w in leases:
        lease_filter = {"lease_id": w["lease_id"]}
        released = chain.events("Settlement", "PayReleased", since, argument_filters=lease_filter)
        refunded = chain.events("Settlement", "RoundRefunded", since, argument_filters=lease_filter)
        forfeited = [e for e in refunded if e["args"]["forfeited"]]
        m = lease_money(chain, w["lease_id"])
        out.append({"lease_id": w["lease_id"], "provider": w["provider"],
                    "released": sum(e["args"]["amount"] for e in released),
                    "refunded_rounds": [e["args"]["round_index"] for e in refunded],
                    "proven_rounds": [e["args"]["round_index"] for e in refunded
                                      if not e["args"]["forfeited"]],
                    "forfeited_rounds": [e["args"]["round_index"] for e in forfeited],
                    "refunded": sum(e["args"]["refund"] for e in refunded),
                    "forfeited": sum(e["args"]["refund"] for e in forfeited),
                    "txs": sorted({tx_hash(e) for e in released + refunded}),
                    "money": money_json(m)})
        console.print(_pay_line(out[-1], rounds), markup=False, highlight=False)
        console.print("  " + short_line(m), markup=False, highlight=False)
    return out


def _pay_line(pay: dict, rounds: int) -> str:
    """One lease's settled pay in words: released, proven rounds, forfeited ones (a round index
    equal to the rounds posted is the time after the last root)."""
    line = f"lease {pay['lease_id']} ({pay['provider']}): {money(pay['released'])} released to the provider"
    if pay["proven_rounds"]:
        line += f"; round(s) {pay['proven_rounds']} proven bad"
    if pay["forfeited_rounds"]:
        named = [str(r) for r in pay["forfeited_rounds"] if r < rounds]
        named += ["the time after the last root"] * (rounds in pay["forfeited_rounds"])
        line += (f"; forfeited, as a cheat was proven for the lease: {', '.join(named)} "
                 f"({money(pay['forfeited'])})")
    if pay["refunded_rounds"]:
        line += f": {money(pay['refunded'])} back to the tenant"
    return line + f" (tx {', '.join(pay['txs'])})"


def _challenge_record(chain: Chain, verification: Verification, opened: dict,
                      outcome: Outcome) -> dict:
    cid = opened["challenge_id"]
    since = chain.network.deploy_block

    def txs(event: str) -> list[str]:
        return [tx_hash(log) for log in chain.events(
            "Verification", event, since, argument_filters={"challenge_id": cid})]

    [resolved] = chain.events("Verification", "ChallengeResolved", since,
                              argument_filters={"challenge_id": cid})
    r = dict(resolved["args"])
    return {"challenge_id": cid, "lease_id": opened["lease_id"], "segment": opened["segment"],
            "kind": opened.get("kind", "replay"),
            "outcome": outcome.name, "open_tx": opened["tx"], "vote_txs": txs("Voted"),
            "resolve_tx": tx_hash(resolved),
            "claim_txs": txs("RewardClaimed"), "case": opened.get("case", {}),
            **{k: r[k] for k in ("slashed", "to_challenger", "to_tenant", "to_voters", "burned")}}


def print_act(console: Console, act: dict) -> None:
    for c in act["challenges"]:
        what = "its payload" if c["kind"] == "payload" else f"segment {c['segment']}"
        table = Table(title=f"challenge {c['challenge_id']}: lease {c['lease_id']}, {what} "
                            f"-> [bold]{c['outcome']}[/]")
        table.add_column("step")
        table.add_column("transaction(s)", overflow="fold")
        table.add_row("opened by the tenant (bond 10 TSTK)", c["open_tx"])
        accepted = sum(v == "accepted" for v in c["case"].values())
        table.add_row("case pushed to validators", f"{accepted}/{len(c['case'])} accepted (HTTP)")
        table.add_row(f"votes ({len(c['vote_txs'])}, each after its own check)",
                      "\n".join(c["vote_txs"]))
        table.add_row("resolved", c["resolve_tx"])
        table.add_row("voters' rewards claimed", "\n".join(c["claim_txs"]))
        console.print(table)
        console.print(f"slashed {tstk(c['slashed'])} from provider {act['cheater']}: "
                      f"{tstk(c['to_voters'])} to the voters, {tstk(c['to_challenger'])} to "
                      f"the challenger, {tstk(c['to_tenant'])} to the tenant, "
                      f"{tstk(c['burned'])} burned")
    if "stake_after" in act:
        console.print(f"cheater's stake {tstk(act['stake_before'])} -> "
                      f"{tstk(act['stake_after'])}; jailed until "
                      f"{format_time(act['jailed_until'])} (no new leases for 7 days)")
