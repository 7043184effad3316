"""Verifiable DiLoCo rounds end to end: commitments in every round, one root per round on chain,
the tenant's spot checks, and an on-chain challenge against a worker that cheats.

Everything is real: a fresh anvil with the deployed contracts, two `tessera provider run`
processes, real leases, signed rounds over HTTP, the provider-signed EIP-712 commitments, the
tenant's replay on this machine, real `post_root` and `open_challenge` transactions.

The one fault-injection: a real provider cannot be made to cheat, so the cheating provider is
started through the TEST-ONLY `python -m tessera.testing.cheating_provider --cheat skip-steps`: its
worker trains half of every committed segment's inner steps and commits those states as if it
had trained them all. The provider process itself is unchanged and signs what its worker
committed, as an honest node would.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_utils import keccak
from rich.console import Console
from tests.support.challenges import register_validators
from tests.support.jobs import VERIFIED_DILOCO_JOB as JOB
from tests.support.jobs import VERIFIED_ROUNDS as ROUNDS
from tests.support.processes import ProviderProcess, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.network import load_network
from tessera.chain.settlement import Settlement
from tessera.chain.verification import Outcome, Verification
from tessera.protocol.jobspec import JobSpec
from tessera.tenant.client import Tenant
from tessera.tenant.flow import load_dataset
from tessera.tenant.multinode import run_diloco_job

pytestmark = pytest.mark.e2e

TENANT, HONEST, CHEATER = 5, 1, 3
RACER = 6   # a second releaser of the honest lease's pay (anyone may release it)
VALIDATORS = (7, 8, 9)   # a challenge needs a quorum of 3 eligible validators to exist


@pytest.fixture(scope="module")
def chain_home(tmp_path_factory, private_devnet):
    """A devnet of its own: nothing another test did (jails, slashes, validators) leaks in."""
    home = tmp_path_factory.mktemp("verification-e2e")
    with private_devnet(home) as (devnet, _):
        yield devnet, home


@pytest.fixture(scope="module")
def nodes(chain_home):
    devnet, home = chain_home
    honest = ProviderProcess(home, devnet.network_file, HONEST, "0.60", "honest")
    cheater = ProviderProcess(home, devnet.network_file, CHEATER, "0.50", "cheater",
                              cheat="skip-steps")   # TEST ONLY fault injection, see the docstring
    for node in (honest, cheater):
        node.start()
    yield honest, cheater
    for node in (honest, cheater):
        node.stop()


def test_cheater_is_caught_by_a_spot_check_and_challenged_on_chain(chain_home, nodes, tmp_path):
    devnet, _ = chain_home
    honest, cheater = nodes
    network = load_network(devnet.network_file)
    register_validators(network, VALIDATORS)
    tenant = Tenant(Chain(network, devnet_account(TENANT)))
    spec = JobSpec.model_validate(JOB)
    out = io.StringIO()
    summary = run_diloco_job(tenant, spec, load_dataset(spec.dataset), Console(file=out, width=250),
                             tmp_path)
    job = summary["order_id"]
    leases = {w["provider"]: w["lease_id"] for w in summary["workers"]}
    assert set(leases) == {honest.address, cheater.address}
    rounds = summary["rounds"]
    assert [r["contributors"] for r in rounds] == [1, 1]

    # round 0: both commitments accepted and posted; both payloads derive from their last
    # committed states (the cheater sends what its states give); the cheater's segment did not
    # replay
    first = rounds[0]
    checks = {lease: [c for c in first["spot_checks"] if c["lease_id"] == lease]
              for lease in leases.values()}
    assert [c["reason"] for c in checks[leases[honest.address]]] == [
        "payload derives from the committed last state", "bitwise"]
    payload, replay = checks[leases[cheater.address]]
    assert payload["ok"] and not replay["ok"]
    assert "does not reach the committed end state" in replay["reason"]
    assert any(f"lease {leases[cheater.address]} (spot-check)" in line for line in first["dropped"])
    assert not tenant.market.lease(leases[cheater.address]).is_open   # dropped: stops paying

    # one root per round on chain, each the tree the round report names
    ver = Verification(tenant.chain)
    assert ver.rounds_posted(job) == ROUNDS
    for report, leaves in zip(rounds, (2, 1), strict=True):
        record = ver.round(job, report["round"])
        assert report["root_tx"] and record.posted_at > 0
        root = bytes.fromhex(report["root"][2:])
        assert record.tree == keccak(root + leaves.to_bytes(32, "big"))

    # the cheater's leaf is challenged on chain by the tenant; the honest worker never is
    [challenge] = first["challenges"]
    assert challenge["lease_id"] == leases[cheater.address] and "tx" in challenge
    record = ver.challenge(challenge["challenge_id"])
    assert (record.job, record.round_index, record.lease_id) == (job, 0, leases[cheater.address])
    assert record.provider == cheater.address and record.challenger == tenant.chain.address
    assert record.status == Outcome.OPEN and record.bond == ver.params().min_bond
    assert ver.chain.call(ver.contract.functions.next_challenge_id()) == 2   # only that one
    for r in range(ROUNDS):
        assert ver.chain.call(ver.contract.functions.open_challenge_of(
            job, r, leases[honest.address])) == 0
    second = rounds[1]
    assert [c["ok"] for c in second["spot_checks"]] == [True, True] and second["challenges"] == []
    assert "challenged" in out.getvalue() and "spot check" in out.getvalue()

    # the order is verified: the leases are closed, but their pay waits for final rounds
    market, chain = tenant.market, tenant.chain
    settlement = Settlement(chain)
    assert market.is_verified(job)
    honest_lease = leases[honest.address]
    assert all(market.withdrawable(lease) == 0 for lease in leases.values())
    assert settlement.releases(honest_lease).next_round == 0
    chain.w3.provider.make_request("evm_increaseTime", [ver.params().challenge_window + 1])
    chain.w3.provider.make_request("evm_mine", [])

    def release(lease_id: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tessera.cli", "job", "release", str(lease_id), "--network",
             str(devnet.network_file), "--account", f"devnet:{TENANT}"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "TESSERA_HOME": str(chain_home[1])})

    # round 0 has a challenge open (on the cheater's leaf): finality is per round, so no lease's
    # round 0 is final yet, the honest one's included; the command says so and moves nothing
    for lease_id in leases.values():
        waiting = release(lease_id)
        assert waiting.returncode == 0, waiting.stdout + waiting.stderr
        assert "nothing to release" in waiting.stdout, waiting.stdout
        assert settlement.releases(lease_id).next_round == 0
    # nobody votes here (the validators are only registered): after the vote period the
    # challenge ends without a verdict, the bond goes back, and both rounds are final
    chain.w3.provider.make_request("evm_increaseTime", [ver.params().vote_period + 1])
    chain.w3.provider.make_request("evm_mine", [])
    assert ver.resolve(challenge["challenge_id"]).outcome == Outcome.EXPIRED
    assert ver.round_finalized(job, 0) and ver.round_finalized(job, 1)
    # two releases of the same lease in one block (its provider's sweep and anyone else's race
    # for it): the second reverts on chain; `release_ready` then finds nothing left instead of
    # raising (before, the demo died of it). Two senders, automine off, one block.
    racers = [Settlement(Chain(network, devnet_account(a))) for a in (TENANT, RACER)]
    senders = {s.chain.address.lower() for s in racers}

    def both_pending() -> bool:   # (the provider's own sweep may be pending beside them)
        pending = chain.w3.provider.make_request("txpool_content", [])["result"]["pending"]
        return senders <= {address.lower() for address in pending}

    chain.w3.provider.make_request("evm_setAutomine", [False])
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            raced = [pool.submit(s.release_ready, honest_lease, job) for s in racers]
            wait_until(both_pending, timeout=90, what="both releases in the mempool")
            chain.w3.provider.make_request("evm_mine", [])
            block = chain.w3.eth.get_block("latest", full_transactions=True)
            outcomes = [f.result(timeout=60) for f in raced]
    finally:
        chain.w3.provider.make_request("evm_setAutomine", [True])
    statuses = sorted(chain.w3.eth.get_transaction_receipt(t["hash"])["status"]
                      for t in block["transactions"] if t["from"].lower() in senders)
    assert len(statuses) == 2 and statuses[0] == 0, statuses   # raced in one block: one reverted
    assert sum(o is not None for o in outcomes) <= 1   # at most one released; nobody raised
    # released by the race above (or the provider's own sweep); the command has nothing left
    done = release(honest_lease)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "released" in done.stdout or "nothing to release" in done.stdout, done.stdout
    assert settlement.releases(honest_lease).next_round == ROUNDS
