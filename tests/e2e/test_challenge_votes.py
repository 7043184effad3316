"""Validators decide challenges by themselves, end to end.

Real parts: a fresh anvil with the deployed contracts, two `tessera provider run` processes (one
honest, one cheating), three `tessera validator run` processes with `[challenges] vote = true`,
the tenant's DiLoCo job with its spot checks and on-chain challenge (tenant/multinode.py), which
pushes the case over HTTP to the validators' published endpoints right after opening it
(`publish_case`). Each validator fetches the provider's signed round answer, the manifest the
provider accepted and the segment's start state over HTTP, replays it with PyTorch, votes,
resolves and claims. The later challenges are opened and their cases pushed by the test itself.

The one fault-injection: the cheating provider runs through the TEST-ONLY
`python -m tessera.testing.cheating_provider --cheat skip-steps` (as in test_verification.py):
its worker trains half of every segment's steps and commits those states as if it had trained
them all.
"""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import httpx
import pytest
from rich.console import Console
from tests.support.challenges import decided_and_claimed, signed_manifest
from tests.support.jobs import VERIFIED_DILOCO_JOB as JOB
from tests.support.processes import ProviderProcess, VotingValidator, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.market import Market
from tessera.chain.registry import ProviderRegistry
from tessera.chain.validators import Validators
from tessera.chain.verification import Outcome, Verification
from tessera.protocol import commitment as cm
from tessera.protocol import messages
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.wire import ChallengeCase, SignedManifest
from tessera.tenant.client import Tenant
from tessera.tenant.flow import load_dataset
from tessera.tenant.multinode import run_diloco_job
from tessera.tenant.verify import publish_case
from tessera.validator.challenges import why_not_vote
from tessera.validator.config import ValidatorConfig

pytestmark = pytest.mark.e2e

TENANT, HONEST, CHEATER = 5, 1, 3
VALIDATORS = (7, 8, 9)


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    """Devnet, two providers, three voting validators, and the tenant's finished job."""
    home = tmp_path_factory.mktemp("challenge-votes")
    with private_devnet(home) as (devnet, network):
        honest = ProviderProcess(home, devnet.network_file, HONEST, "0.60", "honest")
        cheater = ProviderProcess(home, devnet.network_file, CHEATER, "0.50", "cheater",
                                  cheat="skip-steps")   # TEST ONLY fault injection, see the docstring
        validators = []
        for account in VALIDATORS:
            folder = home / f"validator-{account}"
            folder.mkdir()
            validators.append(VotingValidator(folder, devnet.network_file, account))
        started = []
        try:
            for process in (honest, cheater, *validators):
                process.start()
                started.append(process)
            tenant = Tenant(Chain(network, devnet_account(TENANT)))
            spec = JobSpec.model_validate(JOB)
            out = io.StringIO()
            results = home / "results"
            chain = tenant.chain
            before = {"supply": chain.call(chain.stake_token.functions.totalSupply()),
                      "tenant": stake_balance(chain, chain.address),
                      "voters": [stake_balance(chain, v.address) for v in validators],
                      "cheater_stake": ProviderRegistry(chain).provider_record(cheater.address)["stake"]}
            summary = run_diloco_job(tenant, spec, load_dataset(spec.dataset),
                                     Console(file=out, width=250), results)
            yield {"tenant": tenant, "spec": spec, "summary": summary, "honest": honest,
                   "cheater": cheater, "validators": validators, "results": results,
                   "before": before, "console": out.getvalue()}
        finally:
            for process in reversed(started):
                process.stop()


def case_for(world, provider: str) -> ChallengeCase:
    workers = world["summary"]["workers"]
    [w] = [w for w in workers if w["provider"] == provider]
    return ChallengeCase(spec=world["spec"], manifest=signed_manifest(
        world["tenant"], world["spec"], w["lease_id"], w["worker"], len(workers)))


def stake_balance(chain: Chain, who: str) -> int:
    return chain.call(chain.stake_token.functions.balanceOf(who))


def logged(v: VotingValidator, event: str, cid: int) -> list[dict]:
    lines = (json.loads(line) for line in v.log.read_text().splitlines() if line.startswith("{"))
    return [x for x in lines if x.get("event") == event and x.get("challenge_id") == cid]


def challenge_gas(ver: Verification, challenge_id: int) -> dict[str, list[int]]:
    """Gas of every validator transaction on the challenge, read from the receipts."""
    chain = ver.chain
    gas: dict[str, list[int]] = {}
    for name, event in (("vote", "Voted"), ("resolve", "ChallengeResolved"),
                        ("claim_reward", "RewardClaimed")):
        for log in chain.events("Verification", event, chain.network.deploy_block,
                                argument_filters={"challenge_id": challenge_id}):
            receipt = chain.w3.eth.get_transaction_receipt(log["transactionHash"])
            gas.setdefault(name, []).append(receipt["gasUsed"])
    return gas


def test_validators_replay_and_slash_the_cheater(world):
    tenant, summary, validators = world["tenant"], world["summary"], world["validators"]
    cheater, honest = world["cheater"], world["honest"]
    chain, ver, market = tenant.chain, Verification(tenant.chain), Market(tenant.chain)
    params = ver.params()
    [challenge] = summary["rounds"][0]["challenges"]
    cid = challenge["challenge_id"]
    assert ver.challenge(cid).status == Outcome.OPEN
    # the quorum: 2/3 of the three validators' stake at the block before the challenge opened
    opened = ver.challenge(cid)
    stakes = [Validators(chain).stake_at(v.address, opened.snapshot) for v in validators]
    assert opened.quorum == (sum(stakes) * params.quorum_bps + 9_999) // 10_000 > 2 * max(stakes)

    # the coordinator pushed the case to every validator right after opening the challenge
    assert sorted(challenge["case"]) == sorted(v.url for v in validators)
    assert set(challenge["case"].values()) == {"accepted"}

    # a case that does not bind to the chain is refused and names why
    good = case_for(world, cheater.address)
    other_lease = case_for(world, honest.address)
    other_spec = good.model_copy(update={"spec": good.spec.model_copy(update={"name": "other"})})
    manifest = good.manifest.manifest
    forged = good.model_copy(update={"manifest": SignedManifest(
        manifest=manifest, nonce=1, expiry=2, signature=messages.sign(devnet_account(CHEATER),
        messages.manifest_typed_data(chain.network.chain_id, tenant.market.address,
                                     manifest.lease_id, manifest.digest(), 1, 2)))})
    for bad, words in ((other_lease, "names lease"), (other_spec, "spec_hash"),
                       (forged, "not by lease")):
        reply = httpx.post(f"{validators[0].url}/challenges/{cid}/case",
                           json=json.loads(bad.model_dump_json()), timeout=10)
        assert reply.status_code == 400 and words in reply.json()["detail"], reply.text
    reply = httpx.post(f"{validators[0].url}/challenges/999/case",
                       json=json.loads(good.model_dump_json()), timeout=10)
    assert reply.status_code == 400 and "does not exist" in reply.json()["detail"]

    wait_until(lambda: decided_and_claimed(ver, cid, validators, Outcome.UPHELD), timeout=120,
               what="guilty verdict and claimed rewards")
    record = ver.challenge(cid)
    assert (record.guilty_votes, record.innocent_votes) == (len(VALIDATORS), 0)
    [resolved] = chain.events("Verification", "ChallengeResolved", chain.network.deploy_block,
                              argument_filters={"challenge_id": cid})
    r = resolved["args"]

    # the provider: slashed and jailed; the round is proven against its lease
    before = world["before"]
    supply_before, tenant_before = before["supply"], before["tenant"]
    voters_before, stake_before = before["voters"], before["cheater_stake"]
    after = market.registry.provider_record(cheater.address)
    assert r["slashed"] == min(params.slash_amount, stake_before) > 0
    assert after["stake"] == stake_before - r["slashed"]
    assert after["jailed_until"] > chain.block_timestamp()
    assert ver.proven(summary["order_id"], 0, challenge["lease_id"])
    # the split: voters first, then challenger and tenant shares, the rest burned
    assert r["to_voters"] == record.voter_pool == min(params.voter_reward, r["slashed"])
    per_voter = r["to_voters"] // len(validators)   # equal stakes, equal shares
    rest = r["slashed"] - r["to_voters"]
    assert r["to_challenger"] == rest * params.challenger_bps // 10_000
    assert r["to_tenant"] == rest * params.tenant_bps // 10_000
    assert r["burned"] == rest - r["to_challenger"] - r["to_tenant"] > 0
    # the tenant is the challenger here: its bond (paid during the job) back plus both shares
    assert r["bond_returned"] == params.min_bond
    assert stake_balance(chain, tenant.chain.address) - tenant_before == \
        r["to_challenger"] + r["to_tenant"]
    # equal stakes: a third each, to the base unit; rounded on the running total of claimed
    # weight, so together they are the whole pool (no dust left in Verification)
    shares = [stake_balance(chain, v.address) - b
              for v, b in zip(validators, voters_before, strict=True)]
    assert all(per_voter <= share <= per_voter + 1 for share in shares), shares
    assert sum(shares) == r["to_voters"]
    assert chain.call(chain.stake_token.functions.totalSupply()) == supply_before - r["burned"]
    assert market.registry.provider_record(honest.address)["slashed_total"] == 0

    # every validator logged and counted its guilty vote and its claim; one of them resolved
    for v in validators:
        assert v.metric('tessera_validator_challenge_votes_total{vote="guilty"}') == 1
        assert v.metric("tessera_validator_challenge_claims_total") == 1
        assert v.metric("tessera_validator_challenge_cases_total") >= 1
    assert sum(v.metric("tessera_validator_challenges_resolved_total") for v in validators) == 1
    assert validators[0].metric('tessera_validator_challenge_cases_total{outcome="refused"}') == 4
    for v in validators:   # each replayed the segment itself
        [vote] = logged(v, "challenge-voted", cid)
        assert vote["guilty"] and vote["reason"] == "replay does not reach the committed end state"
    gas = challenge_gas(ver, cid)
    assert len(gas["vote"]) == 3 and len(gas["resolve"]) == 1 and len(gas["claim_reward"]) == 3
    print("gas, upheld challenge:", json.dumps(gas))


def test_a_false_challenge_is_rejected_and_the_bond_goes_to_the_provider(world):
    tenant, summary, validators = world["tenant"], world["summary"], world["validators"]
    honest = world["honest"]
    chain, ver, market = tenant.chain, Verification(tenant.chain), Market(tenant.chain)
    params = ver.params()
    # the round-0 commitments as the coordinator posted them
    [job_dir] = world["results"].glob(f"diloco-order-{summary['order_id']}*")
    saved = json.loads((job_dir / "verification" / "round-0.json").read_text())
    signed = [cm.SignedCommitment.model_validate(s) for s in saved["commitments"]]
    tree = ver.round_tree(signed)
    [honest_commitment] = [s for s in signed if s.commitment.provider == honest.address]
    # a challenge without a case: the honest segment replays
    cid, _ = ver.open_challenge(honest_commitment, tree, segment=1, evidence=b"\x00" * 32)
    tenant_before = stake_balance(chain, chain.address)
    provider_before = stake_balance(chain, honest.address)
    stake_before = market.registry.provider_record(honest.address)["stake"]
    with httpx.Client(timeout=30) as http:
        answers = publish_case(chain, cid, case_for(world, honest.address), http)
    assert set(answers.values()) == {"accepted"}

    wait_until(lambda: decided_and_claimed(ver, cid, validators, Outcome.REJECTED), timeout=120,
               what="innocent verdict and claimed rewards")
    record = ver.challenge(cid)
    assert (record.guilty_votes, record.innocent_votes) == (0, len(VALIDATORS))
    assert stake_balance(chain, honest.address) - provider_before == \
        params.min_bond - params.voter_reward
    assert stake_balance(chain, chain.address) == tenant_before   # the bond is gone
    after = market.registry.provider_record(honest.address)
    assert after["stake"] == stake_before and after["slashed_total"] == 0
    assert after["jailed_until"] <= chain.block_timestamp()
    assert not ver.proven(summary["order_id"], 0, honest_commitment.commitment.lease_id)
    for v in validators:
        assert v.metric('tessera_validator_challenge_votes_total{vote="innocent"}') == 1
        [vote] = logged(v, "challenge-voted", cid)
        assert not vote["guilty"] and vote["reason"] == "bitwise"
    print("gas, rejected challenge:", json.dumps(challenge_gas(ver, cid)))


def test_a_tenant_that_signed_two_manifests_gets_no_vote(world):
    """The tenant signs a second manifest for the honest lease (another worker index, so an
    honest replay of it fails) and pushes only that one: without the provider's copy the
    validators would vote the honest provider guilty. They fetch the manifest the provider
    accepted, see two tenant-signed manifests for one lease, and abstain."""
    tenant, summary, validators = world["tenant"], world["summary"], world["validators"]
    honest = world["honest"]
    chain, ver, market = tenant.chain, Verification(tenant.chain), Market(tenant.chain)
    [job_dir] = world["results"].glob(f"diloco-order-{summary['order_id']}*")
    saved = json.loads((job_dir / "verification" / "round-0.json").read_text())
    [signed] = [cm.SignedCommitment.model_validate(s) for s in saved["commitments"]
                if s["commitment"]["provider"] == honest.address]
    tree = ver.round_tree([cm.SignedCommitment.model_validate(s) for s in saved["commitments"]])
    workers = summary["workers"]
    [mine] = [w for w in workers if w["provider"] == honest.address]
    [other] = [w for w in workers if w["provider"] != honest.address]
    served = httpx.get(f"{honest.url}/leases/{mine['lease_id']}/manifest", timeout=10).json()
    assert served["manifest"]["workload"]["worker"] == mine["worker"]
    cid, _ = ver.open_challenge(signed, tree, segment=0, evidence=b"\x00" * 32)
    forged = ChallengeCase(spec=world["spec"], manifest=signed_manifest(
        tenant, world["spec"], mine["lease_id"], other["worker"], len(workers)))
    with httpx.Client(timeout=30) as http:
        assert set(publish_case(chain, cid, forged, http).values()) == {"accepted"}
    wait_until(lambda: all(logged(v, "challenge-abstained", cid) for v in validators),
               timeout=60, what="validators abstaining")
    for v in validators:
        [line] = logged(v, "challenge-abstained", cid)
        assert line["reason"].startswith("tenant equivocated"), line
    record = ver.challenge(cid)
    assert (record.guilty_votes, record.innocent_votes) == (0, 0)
    assert record.status == Outcome.OPEN
    assert market.registry.provider_record(honest.address)["slashed_total"] == 0


def test_a_provider_that_does_not_open_its_commitment_is_voted_guilty_after_the_grace(world):
    """Runs last: it stops the honest provider and slashes it (it does not serve its states)."""
    tenant, summary, validators = world["tenant"], world["summary"], world["validators"]
    honest = world["honest"]
    chain, ver, market = tenant.chain, Verification(tenant.chain), Market(tenant.chain)
    [job_dir] = world["results"].glob(f"diloco-order-{summary['order_id']}*")
    saved = json.loads((job_dir / "verification" / "round-1.json").read_text())
    [signed] = [cm.SignedCommitment.model_validate(s) for s in saved["commitments"]]
    assert signed.commitment.provider == honest.address
    cid, _ = ver.open_challenge(signed, ver.round_tree([signed]), segment=0,
                                evidence=b"\x00" * 32)
    honest.stop()
    with httpx.Client(timeout=30) as http:   # the case checks need the chain, not the provider
        assert set(publish_case(chain, cid, case_for(world, honest.address), http).values()) \
            == {"accepted"}
    wait_until(lambda: all(logged(v, "challenge-open-pending", cid) for v in validators),
               timeout=60, what="validators waiting for the provider to open")
    assert ver.challenge(cid).guilty_votes == 0     # no vote inside the grace period
    grace = ValidatorConfig.model_fields["challenges"].default.open_grace_s
    chain.w3.provider.make_request("evm_increaseTime", [grace + 1])
    chain.w3.provider.make_request("evm_mine", [])
    wait_until(lambda: decided_and_claimed(ver, cid, validators, Outcome.UPHELD), timeout=120,
               what="guilty verdict for an unopened commitment")
    for v in validators:
        [vote] = logged(v, "challenge-voted", cid)
        assert vote["guilty"] and vote["reason"].startswith("provider did not open its commitment")
    assert market.registry.provider_record(honest.address)["slashed_total"] > 0


def test_parties_and_late_validators_never_vote():
    me, other = "0x" + "aa" * 20, "0x" + "bb" * 20
    record = SimpleNamespace(challenger=other, provider=other, tenant=other, snapshot=3)
    assert why_not_vote(me, record, 100 * 10**18) == ""
    for role in ("challenger", "provider", "tenant"):
        party = SimpleNamespace(**{**vars(record), role: me.upper().replace("0X", "0x")})
        assert why_not_vote(me, party, 100 * 10**18).startswith("party")
    assert why_not_vote(me, record, 0).startswith("late")  # no stake at the snapshot block
