"""Every cheating strategy of docs/verification.md run as a real provider against the real
protocol, and caught: a fresh anvil with the deployed contracts (one chain for the whole file),
one honest and one cheating `tessera provider run` process, a tenant DiLoCo job with
verification on and `spot_check_probability = 1.0` (so the catch is certain), real leases,
signed rounds and commitments over HTTP, the tenant's replay, real `post_root` and
`open_challenge` transactions. Checked per strategy: the cheater's commitment passes every
cheap check (it is dropped by the spot check, not as `bad-commitment`), its segment does not
replay, it is dropped before the outer step, its lease is closed and a challenge naming its
lease is open on chain; the honest worker is checked every round, always passes bitwise and is
never dropped nor challenged. The slash itself (validators voting) is test_challenge_votes.py's.

Also: an honest pair run for several rounds at p = 1 is never caught, and at p < 1 the spot
checks the tenant ran are exactly those its randomness (the hash of the block that holds each
round's root) predicts.

The one fault-injection: a real provider cannot be made to cheat, so the cheating provider's
config carries the TEST-ONLY `[testing] cheat` table (provider/config.py); its worker process
(compute/diloco_worker.py) plays the named cheat, and the provider signs what it committed as an
honest node would. "copy-worker" fetches the honest sibling lease's answer and states from the
honest provider's public endpoints (found on chain) and submits them as its own.

Claiming a GPU on a CPU is not repeated here: tests/e2e/test_hardware_challenge.py runs a real
provider registered as an H100 on a CPU against a real validator, which records it "late" in
every epoch; tests/e2e/test_hardware_slashing.py has three validators report it on chain
(HardwareReports), where it is slashed and jailed (docs/hardware.md).
"""

from __future__ import annotations

import io
import tomllib

import httpx
import pytest
import tomli_w
from rich.console import Console

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import Devnet, free_port
from tessera.chain.market import Market
from tessera.chain.network import load_network
from tessera.chain.verification import Outcome, Verification
from tessera.protocol.jobspec import JobSpec
from tessera.tenant.client import Tenant
from tessera.tenant.flow import load_dataset
from tessera.tenant.multinode import run_diloco_job
from tessera.tenant.verify import draw_spot_check, spot_check_seed

from .conftest import ProviderProcess

pytestmark = pytest.mark.e2e

TENANT, HONEST, CHEATER = 5, 1, 3
VALIDATORS = (7, 8, 9)   # a challenge needs a quorum of 3 eligible validators to exist
STAKE = 100 * 10**18
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
    """The honest provider (always up) and the second provider, restarted whenever the test
    asks it for another cheat (None: it runs honestly)."""

    def __init__(self, home, network_file):
        self.honest = ProviderProcess(home, network_file, HONEST, "0.60", "honest")
        self.other = ProviderProcess(home, network_file, CHEATER, "0.50", "cheater")
        for node in (self.honest, self.other):  # one job after the other: never at capacity
            config = tomllib.loads(node.config.read_text())
            config["pricing"]["max_concurrent_leases"] = 8
            node.config.write_text(tomli_w.dumps(config))
        self.cheat: str | None = None

    def play(self, cheat: str | None) -> ProviderProcess:
        if cheat != self.cheat:
            self.other.stop()
            config = tomllib.loads(self.other.config.read_text())
            config.pop("testing", None)
            if cheat is not None:
                config["testing"] = {"cheat": cheat}   # TEST ONLY fault injection, see above
            self.other.config.write_text(tomli_w.dumps(config))
            self.other.start()
            self.cheat = cheat
        return self.other


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One devnet for the file (each job is its own order; the cheater's challenges stay open
    and unvoted, which touches nothing a later job uses), three registered validators."""
    home = tmp_path_factory.mktemp("cheaters-e2e")
    devnet = Devnet(home / "devnet")
    devnet.up(port=free_port())
    network = load_network(devnet.network_file)
    for account in VALIDATORS:
        chain = Chain(network, devnet_account(account))
        Market(chain).ensure_allowance(chain.stake_token, chain.validators.address, STAKE)
        chain.send(chain.validators.functions.register(STAKE))
    nodes = Nodes(home, devnet.network_file)
    nodes.honest.start()
    nodes.other.start()   # honest until a test asks it to cheat (the honest tests come first)
    try:
        yield network, nodes
    finally:
        nodes.honest.stop()
        nodes.other.stop()
        devnet.down()


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
    network, nodes = world
    other = nodes.play(None)
    rounds = 5
    tenant, summary, _ = run_job(network, job(rounds=rounds, p=1.0), tmp_path)
    ver = Verification(tenant.chain)
    assert [r["contributors"] for r in summary["rounds"]] == [2] * rounds
    for provider in (nodes.honest, other):
        lease = next(w["lease_id"] for w in summary["workers"] if w["provider"] == provider.address)
        assert_honest_never_caught(summary, lease, ver)
    assert sum(len(r["spot_checks"]) for r in summary["rounds"]) == 2 * rounds


def test_spot_checks_at_p_below_one_are_the_ones_the_randomness_draws(world, tmp_path):
    network, nodes = world
    nodes.play(None)
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
def test_a_cheating_provider_is_caught_dropped_and_challenged(world, cheat, tmp_path):
    network, nodes = world
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
    assert record.status == Outcome.OPEN and record.bond == ver.params().min_bond
    assert "challenged" in console

    assert_honest_never_caught(summary, good, ver)
