"""Every cheating strategy of docs/verification.md run as a real provider against the real
protocol, and caught: a fresh anvil with the deployed contracts (one chain for the whole file),
one honest and one cheating `tessera provider run` process, a tenant DiLoCo job with
verification on and `spot_check_probability = 1.0` (so the catch is certain), real leases,
signed rounds and commitments over HTTP, the tenant's replay, real `post_root` and
`open_challenge` transactions. Checked per strategy: the cheater's commitment passes every
cheap check (it is dropped by the spot check, not as `bad-commitment`), its segment does not
replay, it is dropped before the outer step, its lease is closed and a challenge naming its
lease is open on chain; the honest worker is checked every round, always passes bitwise and is
never dropped nor challenged. Then the slash: three real `tessera validator run` processes
(`[challenges] vote = true`) receive the case the coordinator pushes, replay the segment
themselves and vote it guilty; the cheater (a fresh staked account per strategy, since one
proven fault takes a minimum stake) is slashed and jailed on chain. Last, the money: the
job's order is verified, so once each round is final (a 20 s challenge window on this chain)
every cheater's bad round is refunded to the tenant (`RoundRefunded`).

Also: an honest pair run for several rounds at p = 1 is never caught, and at p < 1 the spot
checks the tenant ran are exactly those its randomness (the hash of the block that holds each
round's root) predicts.

The one fault-injection: a real provider cannot be made to cheat, so the cheating provider is
started through the TEST-ONLY entry point `python -m tessera.testing.cheating_provider --cheat
NAME` with an ordinary config; its worker process (tessera.testing.cheating_worker) plays the
named cheat (tessera/testing/cheats.py), and the provider signs what it committed as an honest
node would. "copy-worker" fetches the honest sibling lease's answer and states from the
honest provider's public endpoints (found on chain) and submits them as its own.

Claiming a GPU on a CPU is not repeated here: tests/e2e/test_hardware_challenge.py runs a real
provider registered as an H100 on a CPU against a real validator, which records it "late" in
every epoch; tests/e2e/test_hardware_slashing.py has three validators report it on chain
(HardwareReports), where it is slashed and jailed (docs/hardware.md).
"""

from __future__ import annotations

import io
import time
import tomllib

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
STRATEGIES = ("random-pseudo-gradient", "skip-steps", "wrong-shard", "wrong-round", "copy-worker")
FAILS = "replay does not reach the committed end state"


def job(rounds: int, p: float) -> JobSpec:
    return JobSpec.model_validate({
        "name": "cheaters", "mode": "diloco",
        "order": {"max_price_per_gpu_hour": "3.00", "duration": "10m", "nodes": 2,
                  "bid_window": "2s"},
        "dataset": {"source": "builtin:stdlib", "max_bytes": 65536},
        "workload": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
                     "eval_batches": 2},
        "diloco": {"inner_steps": H, "rounds": rounds, "compression": "int8",
                   "round_timeout": "60s", "replace_dropped": False},
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
            self._more_leases(node)
        self.cheater: ProviderProcess | None = None

    @staticmethod
    def _more_leases(node: ProviderProcess) -> None:
        config = tomllib.loads(node.config.read_text())
        config["pricing"]["max_concurrent_leases"] = 8
        node.config.write_text(tomli_w.dumps(config))

    def play(self, cheat: str) -> ProviderProcess:
        """A new provider that cheats as named (the honest second provider stops: the job's two
        cheapest are then the cheater and the honest one)."""
        self.other.stop()
        if self.cheater is not None:
            self.cheater.stop()
        key = fund_fresh_account(self.network)
        self.cheater = ProviderProcess(self.home, self.home / "devnet" / "network.json", key,
                                       "0.50", f"cheater-{cheat}", cheat=cheat)  # see above
        self.cheater.start()
        return self.cheater

    def stop(self) -> None:
        for node in (self.honest, self.other, self.cheater):
            if node is not None:
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
    for report in summary["rounds"]:
        [check] = [c for c in report["spot_checks"] if c["lease_id"] == lease]
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
    assert sum(len(r["spot_checks"]) for r in summary["rounds"]) == 2 * rounds


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
            segment = draw_spot_check(seed, p, H // K)
            if segment is not None:
                predicted.append((report["round"], lease, segment))
        ran += [(report["round"], c["lease_id"], c["segment"]) for c in report["spot_checks"]]
        assert all(c["ok"] for c in report["spot_checks"])
    assert ran == predicted


@pytest.mark.parametrize("cheat", STRATEGIES)
def test_a_cheating_provider_is_caught_challenged_and_slashed(world, cheat, tmp_path):
    network, nodes, validators = world["network"], world["nodes"], world["validators"]
    cheater = nodes.play(cheat)
    tenant, summary, console = run_job(network, job(rounds=2, p=1.0), tmp_path)
    leases = {w["provider"]: w["lease_id"] for w in summary["workers"]}
    assert set(leases) == {nodes.honest.address, cheater.address}
    bad, good = leases[cheater.address], leases[nodes.honest.address]
    first, second = summary["rounds"]
    if cheat == "copy-worker":  # it did copy (a fallback would have trained honestly)
        logs = httpx.get(f"{cheater.url}/leases/{bad}/logs", timeout=5).json()
        assert [e["from_lease"] for e in logs if e.get("event") == "cheat-copied"] == [good], logs

    # round 0: the commitment passed every cheap check (else it would be `bad-commitment`,
    # without a spot check); the replay of its drawn segment did not reach its committed end
    [check] = [c for c in first["spot_checks"] if c["lease_id"] == bad]
    assert not check["ok"] and check["reason"] == FAILS, check
    [drop] = [line for line in first["dropped"] if f"lease {bad} " in line]
    assert "(spot-check)" in drop, drop
    assert first["contributors"] == 1 and second["workers"] == 1   # its update never counted
    assert not tenant.market.lease(bad).is_open

    # a challenge against the cheater's leaf is open on chain, opened by the tenant
    ver = Verification(tenant.chain)
    [challenge] = first["challenges"]
    assert challenge["lease_id"] == bad and challenge["segment"] == check["segment"]
    record = ver.challenge(challenge["challenge_id"])
    assert (record.job, record.round_index, record.lease_id) == (summary["order_id"], 0, bad)
    assert record.provider == cheater.address and record.challenger == tenant.chain.address
    assert record.bond == ver.params().min_bond
    assert "challenged" in console
    assert set(challenge["case"].values()) == {"accepted"}   # pushed to the three validators

    assert_honest_never_caught(summary, good, ver)

    # the validators replay the segment themselves and vote it guilty: slashed and jailed
    wait_until(lambda: decided_and_claimed(ver, challenge["challenge_id"], validators,
                                           Outcome.UPHELD), timeout=120, what="guilty verdict")
    record = ver.challenge(challenge["challenge_id"])
    assert (record.guilty_votes, record.innocent_votes) == (len(VALIDATORS), 0)
    provider = tenant.market.registry.provider_record(cheater.address)
    assert provider["slashed_total"] == STAKE and provider["stake"] == 0
    assert provider["jailed_until"] > tenant.chain.block_timestamp()
    assert ver.proven(summary["order_id"], 0, bad)
    assert tenant.market.registry.provider_record(nodes.honest.address)["slashed_total"] == 0
    world["bad_rounds"].append((cheat, summary["order_id"], bad))


def test_the_tenant_gets_its_money_back_for_every_bad_round(world):
    """Runs after the strategies: once each job's rounds are final, releasing a cheater's lease
    refunds its proven round 0 to the tenant (by the tenant here; the jailed cheater's own
    sweep may come first, which changes nothing but the sender)."""
    assert [cheat for cheat, _, _ in world["bad_rounds"]] == list(STRATEGIES)
    tenant = Tenant(Chain(world["network"], devnet_account(TENANT)))
    ver, settlement = Verification(tenant.chain), Settlement(tenant.chain)
    for cheat, order_id, lease_id in world["bad_rounds"]:
        deadline = time.monotonic() + 3 * WINDOW + 30
        while not ver.round_finalized(order_id, 0):
            assert time.monotonic() < deadline, f"{cheat}: round 0 never became final"
            tenant.chain.w3.provider.make_request("evm_mine", [])  # a block carries the time
            time.sleep(1)
        settlement.release_ready(lease_id, order_id)
        [refund] = tenant.chain.events("Settlement", "RoundRefunded", tenant.chain.network.deploy_block,
                                       argument_filters={"lease_id": lease_id})
        assert refund["args"]["round_index"] == 0 and refund["args"]["tenant"] == tenant.chain.address
        assert refund["args"]["refund"] == refund["args"]["amount"] > 0, cheat
        assert settlement.releases(lease_id).proven == refund["args"]["amount"]
