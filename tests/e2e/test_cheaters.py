"""The cheating strategies of docs/verification.md whose catch is certain, run as real
providers against the real protocol, and caught: a fresh anvil with the deployed contracts (one
chain for the whole file), an honest provider process and a cheating one per strategy, a tenant
DiLoCo job with verification on and `spot_check_probability = 1.0`, real leases, signed rounds
and commitments over HTTP, the tenant's checks, real `post_root` and `open_challenge`
transactions. The strategies run in groups (GROUPS): one job per group, whose workers are the
honest provider and one cheater per strategy of the group, all caught in the same round.

Every round the tenant checks every worker's payload segment (what it sent derives from its
committed last state, which must be in the AdamW bounds), then replays one drawn training
segment (p = 1: always). Its `spot_checks` list holds, per worker and round, first the payload
check, then the drawn segment; a worker whose payload check fails has only that entry.

Checked per strategy: the cheater's commitment passes every cheap check (it is dropped by the
checks, not as `bad-commitment`); its payload check (poisoned-payload; jump, whose last state
is out of bounds) or its drawn segment's replay (every other strategy here) fails in round 0;
its answer never counts in the outer step (round 0's is taken again without it once the
replay, run beside it, fails), its lease is closed and a challenge naming its lease and
that segment is open on chain; the honest worker passes both checks every round and is never
dropped nor challenged. Then the slash: three real `tessera validator run` processes
(`[challenges] vote = true`) receive the case the coordinator pushes, check the segment
themselves and vote it guilty; the cheater (a fresh staked account per strategy, since one
proven fault takes a minimum stake) is slashed and jailed on chain. Last, the money: the
job's order is verified, so once each round is final (a 20 s challenge window on this chain)
every cheater's bad round is refunded to the tenant (`RoundRefunded`), and with it the rest of
its pay, forfeited (issue 11): the cheater is paid nothing.

Here: every strategy caught with certainty at p = 1 in a 2-round job, i.e. one that fails
every training segment (random-pseudo-gradient, skip-steps, wrong-shard, wrong-round,
copy-worker, free-ride, lower-precision, half-batch, fewer-threads; jump-and-return, whose
segment 0 misses its replay and whose segments 1..n-1 start from an out-of-bounds AdamW state)
or the payload check (poisoned-payload; jump, whose last state is out of bounds). Not here: the
partial strategies (stop-half-way, fake-last-segment, fake-10-percent) fail only some of a
round's segments, so one drawn segment per round catches them with probability m/n < 1, not
with certainty in 2 rounds. Their per-round failure patterns are measured in
tests/compute/test_cheats.py, their catch rates over many jobs in
bench/verification_adversary.py.

Also: an honest pair run for several rounds at p = 1 is never caught, and at p < 1 the training
segments the tenant replayed are exactly those its randomness (the hash of the block that holds
each round's root) predicts, while every payload is checked every round.

The one fault-injection: a real provider cannot be made to cheat, so the cheating provider is
started through the TEST-ONLY entry point `python -m tessera.testing.cheating_provider --cheat
NAME` with an ordinary config; its worker process (tessera.testing.cheating_worker) plays the
named cheat (tessera/testing/cheats.py), and the provider signs what it committed as an honest
node would. "copy-worker" gets the honest sibling lease's answer and states by collusion
(`--collude-with` the honest provider's state directory on this machine: it reads that
lease's job folder): the provider's HTTP API serves a round's states only to the lease's tenant
and validators. "fewer-threads" needs a job with threads = 2, so that job's providers give
each job 2 threads (`[limits] threads`).

Claiming a GPU on a CPU is not repeated here: tests/e2e/test_hardware_challenge.py runs a real
provider registered as an H100 on a CPU against a real validator, which records it "late" in
every epoch; tests/e2e/test_hardware_slashing.py has three validators report it on chain
(HardwareReports), where it is slashed and jailed (docs/hardware.md).
"""

from __future__ import annotations

import io
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import tomli_w
from eth_account import Account
from rich.console import Console
from tests.support.challenges import decided_and_claimed
from tests.support.processes import ProviderProcess, VotingValidator, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.settlement import Settlement
from tessera.chain.verification import Outcome, Verification
from tessera.protocol.jobspec import JobSpec
from tessera.tenant.client import Tenant
from tessera.tenant.flow import load_dataset
from tessera.tenant.multinode import run_diloco_job
from tessera.tenant.verify import draw_spot_check, spot_check_seed

pytestmark = pytest.mark.e2e

TENANT, HONEST, CHEATER = 5, 1, 3
VALIDATORS = (7, 8, 9)   # a challenge needs a quorum of 3 eligible validators to exist
STAKE = 100 * 10**18
WINDOW = 20              # seconds: this chain's challenge window, so that rounds become final
H, K = 8, 2
N_SEGMENTS = H // K      # training segments 0..3; the payload segment is index 4
PAYLOAD = N_SEGMENTS
# The strategies, a group per job: each cheater of a group is its own provider process with a
# lease in the same job (one job per strategy would double this file's time). No group holds
# two names one of which contains the other, so `pytest -k NAME` selects NAME's group.
GROUPS = (("random-pseudo-gradient", "skip-steps", "wrong-shard", "wrong-round"),
          ("copy-worker", "free-ride", "lower-precision", "half-batch"),
          ("poisoned-payload", "jump-and-return"),
          ("jump", "fewer-threads"))
STRATEGIES = tuple(cheat for group in GROUPS for cheat in group)
THREADS = {"fewer-threads": 2}   # a job's (and its providers') thread count; else 1
FAILS = "replay does not reach the committed end state"
OUT_OF_BOUNDS = "start state out of bounds: AdamW"   # a drawn segment that starts degenerate
PAYLOAD_OK = "payload derives from the committed last state"
# strategies the payload check catches, and how its reason begins
CAUGHT_BY_PAYLOAD = {"poisoned-payload": "the payload sent is not the one its committed last "
                                         "state gives",
                     "jump": "last state out of bounds: AdamW"}


def job(rounds: int, p: float, threads: int = 1, nodes: int = 2) -> JobSpec:
    """A verified DiLoCo job. Its round timeout is generous: round 0 includes the start of every
    worker process (up to 5 here, on a 2-core CI machine), and nothing here is meant to be late."""
    return JobSpec.model_validate({
        "name": "cheaters", "mode": "diloco",
        "order": {"max_price_per_gpu_hour": "3.00", "duration": "10m", "nodes": nodes,
                  "bid_window": "2s"},
        "dataset": {"source": "builtin:stdlib", "max_bytes": 65536},
        "workload": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
                     "eval_batches": 2, "threads": threads},
        "diloco": {"inner_steps": H, "rounds": rounds, "compression": "int8",
                   "round_timeout": "180s", "replace_dropped": False},
        "verification": {"checkpoint_every": K, "spot_check_probability": p}})


class Nodes:
    """The honest provider (always up), a second provider that runs honestly for the honest
    tests, and one cheating provider per strategy, each with a fresh funded account."""

    def __init__(self, home, network):
        self.home, self.network = home, network
        network_file = home / "devnet" / "network.json"
        self.honest = ProviderProcess(home, network_file, HONEST, "0.60", "honest")
        self.other = ProviderProcess(home, network_file, CHEATER, "0.50", "other")
        for node in (self.honest, self.other):  # one job after the other: never at capacity
            self._configure(node, threads=1)
        self.cheaters: list[ProviderProcess] = []

    @staticmethod
    def _configure(node: ProviderProcess, threads: int) -> bool:
        """Room for one job after the other, and `threads` per job; whether it changed."""
        config = tomllib.loads(node.config.read_text())
        before = dict(config)
        config["pricing"] = {**config["pricing"], "max_concurrent_leases": 8}
        config["limits"] = {**config["limits"], "threads": threads}
        node.config.write_text(tomli_w.dumps(config))
        return config != before

    @staticmethod
    def state_dir(node: ProviderProcess) -> str:
        return tomllib.loads(node.config.read_text())["provider"]["state_dir"]

    def play(self, cheats: tuple[str, ...], threads: int) -> list[ProviderProcess]:
        """New providers that cheat as named, one each (the honest second provider stops: the
        job's cheapest are then the cheaters and the honest one), all giving a job `threads`
        (the honest one restarts when that changes)."""
        self.other.stop()
        for node in self.cheaters:
            node.stop()
        if self._configure(self.honest, threads):
            self.honest.stop()
            self.honest.start()
        self.cheaters = []
        for cheat in cheats:
            key = fund_fresh_account(self.network)
            args = ["--collude-with", self.state_dir(self.honest)] if cheat == "copy-worker" \
                else []
            node = ProviderProcess(self.home, self.home / "devnet" / "network.json", key,
                                   "0.50", f"cheater-{cheat}", cheat=cheat,
                                   cheat_args=args)  # see the module docstring
            self._configure(node, threads)
            self.cheaters.append(node)
        with ThreadPoolExecutor(len(self.cheaters)) as pool:   # each waits for its health
            list(pool.map(ProviderProcess.start, self.cheaters))
        return self.cheaters

    def stop(self) -> None:
        for node in (self.honest, self.other, *self.cheaters):
            node.stop()


def fund_fresh_account(network) -> str:
    """A new key with gas (anvil_setBalance) and the minimum stake (minted by the deployer)."""
    account = Account.create()
    deployer = Chain(network, devnet_account(0))
    deployer.w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
    deployer.send(deployer.stake_token.functions.transfer(account.address, STAKE))
    return "0x" + account.key.hex().removeprefix("0x")


@pytest.fixture(scope="module")
def cheaters_devnet(tmp_path_factory, private_devnet):
    """One devnet for the file with a 20 s challenge window (each job is its own order)."""
    home = tmp_path_factory.mktemp("cheaters-e2e")
    with private_devnet(home, challenge_window=WINDOW) as (devnet, network):
        yield home, devnet, network


@pytest.fixture(scope="module")
def world(cheaters_devnet):
    """On the file's devnet: three voting validators, the providers, and the bad rounds the
    strategy tests leave behind."""
    home, devnet, network = cheaters_devnet
    validators = []
    nodes = Nodes(home, network)
    try:
        for account in VALIDATORS:
            folder = home / f"validator-{account}"
            folder.mkdir()
            validators.append(VotingValidator(folder, devnet.network_file, account))
            validators[-1].start()
        nodes.honest.start()
        nodes.other.start()   # honest; the strategy tests replace it with a cheater
        yield {"network": network, "nodes": nodes, "validators": validators, "bad_rounds": []}
    finally:
        nodes.stop()
        for v in validators:
            v.stop()


def run_job(network, spec: JobSpec, results) -> tuple[Tenant, dict, str]:
    tenant = Tenant(Chain(network, devnet_account(TENANT)))
    out = io.StringIO()
    summary = run_diloco_job(tenant, spec, load_dataset(spec.dataset),
                             Console(file=out, width=250), results)
    return tenant, summary, out.getvalue()


def assert_honest_never_caught(summary: dict, lease: int, ver: Verification) -> None:
    """Every round: its payload check, then its drawn segment's replay (p = 1), both passed."""
    for report in summary["rounds"]:
        payload, check = [c for c in report["spot_checks"] if c["lease_id"] == lease]
        assert payload["ok"] and payload["reason"] == PAYLOAD_OK, payload
        assert payload["segment"] == PAYLOAD and 0 <= check["segment"] < N_SEGMENTS, check
        assert check["ok"] and check["reason"] == "bitwise", check
        assert not any(f"lease {lease} " in line for line in report["dropped"])
        assert all(c["lease_id"] != lease for c in report["challenges"])
        assert ver.chain.call(ver.contract.functions.open_challenge_of(
            summary["order_id"], report["round"], lease)) == 0


def test_honest_providers_are_never_caught_over_many_rounds(world, tmp_path):
    network, nodes = world["network"], world["nodes"]
    other = nodes.other
    rounds = 5
    tenant, summary, _ = run_job(network, job(rounds=rounds, p=1.0), tmp_path)
    ver = Verification(tenant.chain)
    assert [r["contributors"] for r in summary["rounds"]] == [2] * rounds
    for provider in (nodes.honest, other):
        lease = next(w["lease_id"] for w in summary["workers"] if w["provider"] == provider.address)
        assert_honest_never_caught(summary, lease, ver)
    assert sum(len(r["spot_checks"]) for r in summary["rounds"]) == 2 * 2 * rounds


def test_spot_checks_at_p_below_one_are_the_ones_the_randomness_draws(world, tmp_path):
    network = world["network"]
    p, rounds = 0.5, 8
    tenant, summary, _ = run_job(network, job(rounds=rounds, p=p), tmp_path)
    leases = [w["lease_id"] for w in summary["workers"]]
    w3 = tenant.chain.w3
    predicted, ran = [], []
    for report in summary["rounds"]:
        block_hash = bytes(w3.eth.get_transaction_receipt(report["root_tx"])["blockHash"])
        for lease in leases:
            seed = spot_check_seed(block_hash, summary["order_id"], report["round"], lease)
            segment = draw_spot_check(seed, p, N_SEGMENTS)
            if segment is not None:
                predicted.append((report["round"], lease, segment))
        payloads = [c for c in report["spot_checks"] if c["segment"] == PAYLOAD]
        assert sorted(c["lease_id"] for c in payloads) == sorted(leases)   # every round, all
        ran += [(report["round"], c["lease_id"], c["segment"]) for c in report["spot_checks"]
                if c["segment"] != PAYLOAD]
        assert all(c["ok"] for c in report["spot_checks"])
    assert ran == predicted


@pytest.mark.parametrize("group", GROUPS, ids="+".join)
def test_cheating_providers_are_caught_challenged_and_slashed(world, group, tmp_path):
    network, nodes, validators = world["network"], world["nodes"], world["validators"]
    threads = max(THREADS.get(cheat, 1) for cheat in group)
    cheaters = nodes.play(group, threads)
    tenant, summary, console = run_job(
        network, job(rounds=2, p=1.0, threads=threads, nodes=len(group) + 1), tmp_path)
    leases = {w["provider"]: w["lease_id"] for w in summary["workers"]}
    assert set(leases) == {nodes.honest.address} | {c.address for c in cheaters}
    good = leases[nodes.honest.address]
    first, second = summary["rounds"]
    assert first["contributors"] == 1 and second["workers"] == 1   # no cheater's update counted
    # round 0's checks ran beside its outer step, which was taken again without the cheaters;
    # round 1 (the last) was checked before its step
    assert (first["stepped_again"], second["stepped_again"]) == (True, False)
    ver = Verification(tenant.chain)
    assert "challenged" in console
    challenges = {c["lease_id"]: c for c in first["challenges"]}
    assert len(challenges) == len(group)
    for cheat, cheater in zip(group, cheaters, strict=True):
        bad = leases[cheater.address]
        challenge = challenges[bad]
        assert_caught(cheat, cheater, bad, good, first, challenge)
        # a challenge against the cheater's leaf is open on chain, opened by the tenant
        record = ver.challenge(challenge["challenge_id"])
        assert (record.job, record.round_index, record.lease_id) == (summary["order_id"], 0, bad)
        assert record.provider == cheater.address and record.challenger == tenant.chain.address
        assert record.bond == ver.params().min_bond
        assert set(challenge["case"].values()) == {"accepted"}   # pushed to the 3 validators
        assert not tenant.market.lease(bad).is_open

    assert_honest_never_caught(summary, good, ver)

    # the validators check each segment themselves and vote it guilty: slashed and jailed
    for cheat, cheater in zip(group, cheaters, strict=True):
        bad = leases[cheater.address]
        challenge_id = challenges[bad]["challenge_id"]
        wait_until(lambda c=challenge_id: decided_and_claimed(ver, c, validators, Outcome.UPHELD),
                   timeout=120, what=f"guilty verdict on {cheat}")
        record = ver.challenge(challenge_id)
        assert (record.guilty_votes, record.innocent_votes) == (len(VALIDATORS), 0), cheat
        provider = tenant.market.registry.provider_record(cheater.address)
        assert provider["slashed_total"] == STAKE and provider["stake"] == 0, cheat
        assert provider["jailed_until"] > tenant.chain.block_timestamp(), cheat
        assert ver.proven(summary["order_id"], 0, bad), cheat
        world["bad_rounds"].append((cheat, summary["order_id"], bad))
    assert tenant.market.registry.provider_record(nodes.honest.address)["slashed_total"] == 0


def assert_caught(cheat: str, cheater: ProviderProcess, bad: int, good: int, first: dict,
                  challenge: dict) -> None:
    """Round 0 of one cheater: its commitment passed every cheap check (else it would be
    `bad-commitment`, without any check); its payload check failed, or it passed and the
    replay of its drawn segment did not reach its committed end; it was dropped and its lease
    challenged on the segment that failed."""
    if cheat == "copy-worker":  # it did copy, by collusion (a fallback trains honestly)
        # (round 1's parameters reach it too, sent while its round 0 replay ran: it may copy
        # again before it is dropped; that answer is never collected)
        logs = httpx.get(f"{cheater.url}/leases/{bad}/logs", timeout=5).json()
        assert [(e["from_lease"], e["source"]) for e in logs
                if e.get("event") == "cheat-copied" and e["round"] == 0] == [(good, "folder")], logs
    checks = [c for c in first["spot_checks"] if c["lease_id"] == bad]
    if cheat in CAUGHT_BY_PAYLOAD:
        [check] = checks
        assert check["segment"] == PAYLOAD and not check["ok"], (cheat, check)
        assert check["reason"].startswith(CAUGHT_BY_PAYLOAD[cheat]), (cheat, check)
    else:
        payload, check = checks
        assert payload["ok"] and payload["reason"] == PAYLOAD_OK, (cheat, payload)
        assert check["segment"] < N_SEGMENTS and not check["ok"], (cheat, check)
        # jump-and-return: segment 0 jumps, segments 1..3 start from the jumped state
        bounded = cheat == "jump-and-return" and check["segment"] > 0
        assert check["reason"] == FAILS or bounded and check["reason"].startswith(
            OUT_OF_BOUNDS), (cheat, check)
    [drop] = [line for line in first["dropped"] if f"lease {bad} " in line]
    assert "(spot-check)" in drop, (cheat, drop)
    assert challenge["segment"] == check["segment"], (cheat, challenge)


def test_the_tenant_gets_its_money_back_for_every_bad_round(world):
    """Runs after the strategies: once each job's rounds are final, releasing a cheater's lease
    sends all of its pay back to the tenant (issue 11): its proven round 0, and the rest of its
    pay up to its close, which falls in round 1 (`forfeited`: a cheat was proven for the lease in
    another round), so the cheater is paid nothing (released by the tenant here; the jailed
    cheater's own sweep may come first, which changes nothing but the sender).

    The cheater's way round a one-round penalty, keeping the pay of a round it was not proven
    to cheat in (here the time from round 0's root to its close), is what this checks: that
    round goes back too, and nothing is released or withdrawable."""
    assert [cheat for cheat, _, _ in world["bad_rounds"]] == list(STRATEGIES)
    tenant = Tenant(Chain(world["network"], devnet_account(TENANT)))
    ver, settlement = Verification(tenant.chain), Settlement(tenant.chain)
    since = tenant.chain.network.deploy_block
    for cheat, order_id, lease_id in world["bad_rounds"]:
        deadline = time.monotonic() + 3 * WINDOW + 30
        while not all(ver.round_finalized(order_id, r) for r in range(ver.rounds_posted(order_id))):
            assert time.monotonic() < deadline, f"{cheat}: the job's rounds never became final"
            tenant.chain.w3.provider.make_request("evm_mine", [])  # a block carries the time
            time.sleep(1)
        settlement.release_ready(lease_id, order_id)
        lease = tenant.market.lease(lease_id)
        refunds = [e["args"] for e in tenant.chain.events(
            "Settlement", "RoundRefunded", since, argument_filters={"lease_id": lease_id})]
        proven, *forfeited = refunds
        assert (proven["round_index"], proven["forfeited"], proven["tenant"]) == (
            0, False, tenant.chain.address), cheat
        assert all(r["refund"] == r["amount"] > 0 for r in refunds), cheat
        # the time from round 0's root to the close is round 1's: forfeited (none if the lease
        # closed in round 0's root's second)
        closed_after_root = lease.closed_at > ver.round(order_id, 0).posted_at
        assert [(r["round_index"], r["forfeited"]) for r in forfeited] == (
            [(1, True)] if closed_after_root else []), cheat
        release = settlement.releases(lease_id)
        assert release.until == lease.closed_at, cheat
        assert release.proven == sum(r["amount"] for r in refunds), cheat
        released = tenant.chain.events("Settlement", "PayReleased", since,
                                       argument_filters={"lease_id": lease_id})
        assert sum(e["args"]["amount"] for e in released) == 0, cheat
        assert lease.paid == 0 and tenant.market.withdrawable(lease_id) == 0, cheat
