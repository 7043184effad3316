"""Review 8: a tenant that stops while a round's checks run beside its outer step.

Without overlap, before the last round, the coordinator sends round r + 1's parameters to the
workers right after the outer step (`_send_next`), and only then settles round r's checks,
evaluates and commits (issue 16: the checks now run beside the step, so this window holds the
root, every payload check and the drawn replays, and the challenges `settle` opens). A tenant
process that dies in that window (a crash, Ctrl-C, a machine that reboots, an exception out of
`settle`: tests/tenant/test_review8_case_push.py shows a validator can cause one) has committed
round r - 1 only; `tessera job resume` runs round r again and sends every worker the full
state for it. The honest workers have by then finished round r + 1 (the parameters were sent
to them), and a worker only ever runs rounds from the one it last finished
(`compute.diloco_worker.pending_round(since=held.round)`), so the re-sent round r is never run:
the resumed coordinator waits out the round's timeout and drops every honest worker as late.
Fixed: a worker runs a round re-sent with other parameters up to the one before the last it
answered (`pending_round(since=held.round - 1)`), from the state it kept from before it (three
kept now), so the resumed job goes on with both workers.

Real parts: a private anvil, two real provider processes, real leases, real signed rounds,
real roots and replays. The one fault injected: the tenant's death. It is simulated in process
by replacing this coordinator's verifier's `settle` (in round r = 1; round 0 is committed) with
one that waits until the checks are done and both workers have answered round r + 1, then
raises (the object is then abandoned, as a dead process's state is); its committed state on
disk is exactly what a killed process leaves. (Round 0 would not show it: it is sent as the
full state both times, the same bytes, so the worker's answer still stands.)

The module's providers also meet the opposite re-send (review 30, finding 1): a tenant that
re-sends a committed round with other parameters, to have the states behind the commitment it
holds replaced, and then challenges that commitment
(`test_a_resent_round_leaves_the_commitment_the_tenant_holds_openable`).
"""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
from prometheus_client import CollectorRegistry
from rich.console import Console
from tests.support.challenges import register_validators, signed_manifest
from tests.support.jobs import VERIFIED_DILOCO_JOB, leased_workers
from tests.support.processes import ProviderProcess, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.verification import Verification
from tessera.errors import TenantError
from tessera.logs import EventLog
from tessera.protocol import commitment as cm
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.wire import ChallengeCase, RoundResult
from tessera.tenant.client import Tenant
from tessera.tenant.coordinator import DilocoCoordinator
from tessera.tenant.flow import load_dataset
from tessera.tenant.multinode import diloco_config
from tessera.tenant.verify import VerifyTerms
from tessera.validator.challenges import ChallengeVoter, Tracked

pytestmark = pytest.mark.e2e

TENANT, VALIDATORS = 5, (7, 8, 9)
SPEC = {**VERIFIED_DILOCO_JOB, "name": "review8-resume",
        "diloco": {**VERIFIED_DILOCO_JOB["diloco"], "rounds": 3}}   # round 1 is not the last
RESUMED_TIMEOUT_S = 30


class TenantDied(Exception):
    """The simulated death of the tenant's process."""


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("review8-resume")
    with private_devnet(home) as (devnet, network):
        nodes = [ProviderProcess(home, devnet.network_file, account, price, name)
                 for account, price, name in ((1, "0.60", "r8-one"), (3, "0.50", "r8-two"))]
        try:
            for node in nodes:
                node.start()
            yield network, {node.address: node for node in nodes}
        finally:
            for node in nodes:
                node.stop()


def result_of(node: ProviderProcess, lease_id: int, round_index: int) -> dict | None:
    path = node.home / node.name / "leases" / str(lease_id) / "rounds" / str(round_index) \
        / "result.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_idle(nodes: dict) -> None:
    """Until every provider has followed the close of its earlier leases (a provider still
    running one does not bid for the next test's order)."""
    def idle(node: ProviderProcess) -> bool:
        leases = node.home / node.name / "leases"
        ids = [p.name for p in leases.iterdir() if p.name.isdecimal()] if leases.is_dir() else []
        return all(httpx.get(f"{node.url}/leases/{i}", timeout=5).json()["status"] != "running"
                   for i in ids)
    for node in nodes.values():
        wait_until(lambda node=node: idle(node), timeout=60, what=f"{node.name} idle")


def started_job(network, job_dir) -> tuple:
    """The tenant's verified job (p = 1) on both providers, its coordinator started: (tenant,
    spec, workers, coordinator)."""
    tenant = Tenant(Chain(network, devnet_account(TENANT)))
    spec = JobSpec.model_validate(SPEC)
    dataset = load_dataset(spec.dataset)
    leasing, workers = leased_workers(tenant, spec, dataset, Console(file=io.StringIO()))
    terms = VerifyTerms(job=leasing.order_id, checkpoint_every=2, spot_check_probability=1.0)
    coordinator = DilocoCoordinator.start(tenant, diloco_config(spec, 2), dataset, workers,
                                          job_dir, round_timeout_s=60, verify=terms,
                                          log=EventLog("coordinator", stream=io.StringIO()))
    return tenant, spec, workers, coordinator


def test_a_tenant_dead_while_checks_run_beside_the_step_resumes_with_its_workers(world, tmp_path):
    network, nodes = world
    job_dir = tmp_path / "job"
    tenant, spec, workers, first = started_job(network, job_dir)
    terms, dataset = first.verify, load_dataset(spec.dataset)

    def die(checks, accepted, answers, drop):
        checks.work.result()                   # the round's checks are done...
        wait_until(lambda: all(result_of(nodes[w.provider], w.lease_id, 2) for w in workers),
                   timeout=60, what="both workers answered round 2")   # ...round 2 is too
        raise TenantDied

    assert first.step().contributors == 2      # round 0, committed
    first.verifier.settle = die
    with pytest.raises(TenantDied):
        first.step()                           # round 1: stepped, round 2 sent, not committed
    assert len(json.loads((job_dir / "job.json").read_text())["reports"]) == 1

    # a restart takes seconds: the re-sent round's signature then expires later than the first
    # (within the same second the provider refuses it, 409 "signed later": another way to lose
    # the workers, which a supervisor restarting the tenant at once would meet)
    time.sleep(2)
    log = io.StringIO()
    resumed = DilocoCoordinator.resume(tenant, job_dir, dataset, verify=terms,
                                       round_timeout_s=RESUMED_TIMEOUT_S,
                                       log=EventLog("coordinator", stream=log))
    try:
        reports = resumed.run()
    except TenantError as exc:                 # every worker dropped
        reports = exc
    finally:
        for w in workers:
            if tenant.market.lease(w.lease_id).is_open:
                tenant.close(w.lease_id)
    dropped = [(e["lease_id"], e["kind"], e["round"], e["reason"]) for e in map(json.loads, log.getvalue()
               .splitlines()) if e["event"] == "worker-dropped"]
    # the hole: [(lease, "late", 1), (lease, "late", 1)]: both honest workers, and the job
    assert dropped == [], dropped
    assert [r.contributors for r in reports] == [2, 2, 2]   # rounds 0 (committed), 1, 2


def test_a_resent_round_leaves_the_commitment_the_tenant_holds_openable(world, tmp_path):
    """Review 30, finding 1 (HIGH): the tenant takes round 0's signed commitments (its root is
    posted), then re-sends round 0 to a worker with other parameters, as a restarted
    coordinator may. The worker runs it again and answers another commitment. The tenant
    challenges the one it holds: the states behind it were gone, the provider could not open
    it, and the validators voted an honest provider guilty after the grace. The provider now
    sets a committed answer aside before the re-run and serves it by root: a validator's own
    judgement (`ChallengeVoter._judge`, in process: it is what a voting validator runs)
    opens it and replays the challenged segment innocent.

    Real parts: the module's two provider processes and their worker processes (the re-run is
    real), the tenant's coordinator, the root and the challenge on chain, HTTP throughout."""
    network, nodes = world
    register_validators(network, VALIDATORS)    # a challenge needs a quorum to exist
    wait_idle(nodes)
    job_dir = tmp_path / "job"
    tenant, spec, workers, coordinator = started_job(network, job_dir)
    try:
        assert coordinator.step().contributors == 2     # round 0 posted; round 1 sent
        record = json.loads((job_dir / "verification" / "round-0.json").read_text())
        signed = [cm.SignedCommitment.model_validate(s) for s in record["commitments"]]
        worker = workers[0]
        [held] = [s for s in signed if s.commitment.lease_id == worker.lease_id]
        held_root = held.commitment.checkpoint_root.removeprefix("0x")

        # the attack: round 0 again, from other parameters (round 1's start)
        other = coordinator._full_state(coordinator.coordinator.published)
        coordinator.channel.send(worker, 0, other, time.monotonic() + 30)
        wait_until(lambda: (result_of(nodes[worker.provider], worker.lease_id, 0) or {})
                   .get("checkpoint_root", held_root) != held_root,
                   timeout=90, what="the worker answered round 0 again")
        url = f"{worker.endpoint}/leases/{worker.lease_id}/rounds/0"
        with httpx.Client(timeout=30) as http:
            now = RoundResult.model_validate_json(http.get(url).content).commitment.commitment
            assert now.checkpoint_root != held.commitment.checkpoint_root   # replaced
            kept = RoundResult.model_validate_json(http.get(f"{url}?root=0x{held_root}").content)
            assert kept.commitment == held                   # served as it was signed
            assert http.get(f"{url}?root=0x{'ab' * 32}").status_code == 404
            assert http.get(f"{url}?root=junk").status_code == 400

        ver = Verification(tenant.chain)
        tree = ver.round_tree(signed)
        assert "0x" + tree.root.hex() == record["root"]
        cid, _ = ver.open_challenge(held, tree, segment=0, evidence=b"\x00" * 32)
        [opened] = tenant.chain.events("Verification", "ChallengeOpened", network.deploy_block,
                                       argument_filters={"challenge_id": cid})
        voter = ChallengeVoter(Chain(network, devnet_account(VALIDATORS[0])),
                               EventLog("validator", stream=io.StringIO()), CollectorRegistry(),
                               tmp_path / "validator")
        case = ChallengeCase(spec=spec, manifest=signed_manifest(tenant, spec, worker.lease_id,
                                                                 worker.index, len(workers)))
        try:
            guilty, reason, detail = voter._judge(Tracked(cid, dict(opened["args"]), case))
        finally:
            voter.close()
        assert guilty is False, reason                       # opened, replayed, innocent
        assert detail["segment"] == 0 and detail["bytes"] > 0
    finally:
        coordinator.http.close()
        for w in workers:
            if tenant.market.lease(w.lease_id).is_open:
                tenant.close(w.lease_id)
