"""One model trained by DiLoCo across real provider processes: a worker dies and is replaced; the
tenant's coordinator is killed and resumed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest
import tomli_w
from rich.console import Console
from tests.support.jobs import leased_workers
from tests.support.processes import ProviderProcess, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.verification import Verification
from tessera.logs import EventLog
from tessera.protocol.jobspec import JobSpec
from tessera.tenant.client import Tenant
from tessera.tenant.coordinator import DilocoCoordinator
from tessera.tenant.flow import load_dataset
from tessera.tenant.multinode import Replacer, diloco_config
from tessera.tenant.verify import VerifyTerms

pytestmark = pytest.mark.e2e

JOB = {
    "name": "diloco-e2e", "mode": "diloco",
    "order": {"max_price_per_gpu_hour": "3.00", "duration": "10m", "nodes": 2, "bid_window": "2s"},
    "dataset": {"source": "builtin:stdlib", "max_bytes": 65536},
    "workload": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
                 "eval_batches": 2},
    "diloco": {"inner_steps": 10, "rounds": 4, "compression": "int8", "round_timeout": "60s"},
}


@pytest.fixture(scope="module")
def providers(tessera_home, devnet, provider) -> dict[str, ProviderProcess]:
    """Three live providers: the two cheapest win a 2-node order, the third is spare."""
    extra = [ProviderProcess(tessera_home, devnet.network_file, account=a, price=p, name=n)
             for a, p, n in ((4, "0.80", "w-two"), (7, "0.90", "w-three"))]
    for node in extra:
        node.start()
    yield {node.address: node for node in (provider, *extra)}
    for node in extra:
        node.stop()


@pytest.mark.parametrize("overlap", [False, True], ids=["in-step", "overlap"])
def test_a_killed_worker_is_replaced_and_the_replacement_trains(network, providers, tmp_path,
                                                               overlap, request):
    """With `overlap` (a one-round-delayed outer update) every round's parameters reach the
    workers before the round before it is reported; the killed worker, the replacement (which
    joins from the parameters the others start that round from) and the checks work the same."""
    tenant = Tenant(Chain(network, devnet_account(6)))
    spec = JobSpec.model_validate({**JOB, "diloco": {**JOB["diloco"], "overlap": overlap}})
    dataset = load_dataset(spec.dataset)
    out = io.StringIO()
    console = Console(file=out, width=250)
    leasing, workers = leased_workers(tenant, spec, dataset, console)
    dead = workers[0]
    victim = providers[dead.provider]
    # the next test of this module needs all three providers again
    request.addfinalizer(lambda: victim.proc.poll() is None or victim.start())

    reported_at = []

    def kill_after_first_round(report) -> None:
        reported_at.append(time.time())
        if report.round == 0:
            victim.kill()

    coordinator = DilocoCoordinator.start(
        tenant, diloco_config(spec, 2), dataset, workers, tmp_path / "job", round_timeout_s=60,
        on_round=kill_after_first_round, log=EventLog("coordinator", stream=io.StringIO()),
        replace=Replacer(tenant, spec, dataset, 2, console, tmp_path / "job"),
        max_replacements=2,
        verify=VerifyTerms(job=leasing.order_id,
                           checkpoint_every=spec.verification.checkpoint_every,
                           spot_check_probability=1.0))
    reports = coordinator.run()
    assert [r.contributors for r in reports] == [2, 1, 2, 2]
    assert not dead.active and dead.fault == "unreachable"
    assert not tenant.market.lease(dead.lease_id).is_open   # dropped: it stops costing money
    replacement = coordinator.workers[2]
    assert replacement.index == dead.index and replacement.active
    assert replacement.provider not in {w.provider for w in workers[:2]}
    line = (f"lease {dead.lease_id} replaced by lease {replacement.lease_id} "
            f"(provider {replacement.provider})")
    assert reports[2].replaced == [line] and line in out.getvalue()
    # the replacement trained the dead worker's shard in rounds 2 and 3
    logs = tenant.logs(replacement.lease_id)
    assert next(e for e in logs if e["event"] == "start")["worker"] == dead.index
    assert [e["round"] for e in logs if e["event"] == "progress"] == [2, 3]
    assert reports[-1].val_loss < reports[0].val_loss
    # round r + 1's parameters were queued at the worker before round r was reported: with
    # overlap they go with round r's (the worker goes on from round r to r + 1 without
    # waiting); without, they are round r's outer step, sent right after it (after the
    # worker's answer), so that the worker computes while the coordinator evaluates and saves
    alive = workers[1]
    rounds = providers[alive.provider].home / providers[alive.provider].name / "leases" / \
        str(alive.lease_id) / "rounds"
    queued = [(rounds / str(r) / "request.json").stat().st_mtime for r in range(4)]
    answered = [(rounds / str(r) / "result.json").stat().st_mtime for r in range(4)]
    assert all(queued[r + 1] < reported_at[r] for r in range(3))
    if not overlap:
        assert all(answered[r] < queued[r + 1] for r in range(3))
    # verified: every answer was checked (its payload, and at p = 1 one replayed segment); the
    # replacement's lease sits in its own order, whose rounds get their own root, so its work is
    # challengeable like the others'
    assert [len(r.spot_checks) for r in reports] == [4, 2, 4, 4]   # payload + drawn segment
    assert all(c["ok"] for r in reports for c in r.spot_checks)
    assert not any(r.stepped_again for r in reports)      # honest workers: one step a round
    ver = Verification(tenant.chain)
    assert ver.rounds_posted(leasing.order_id) == 4
    assert [[x["order_id"] for x in r.replacement_roots] for r in reports] == \
        [[], [], [replacement.order_id], [replacement.order_id]]
    assert ver.rounds_posted(replacement.order_id) == 4   # rounds 2 and 3: its first is round 2
    assert tenant.market.is_verified(replacement.order_id)
    for worker in coordinator.workers:
        if worker.active:
            tenant.close(worker.lease_id)


def _read_state(job_dir) -> dict | None:
    try:
        return json.loads((job_dir / "job.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_a_killed_coordinator_resumes_and_loses_no_finished_round(
        tessera_home, devnet, providers, network, tmp_path):
    job = {**JOB, "diloco": {**JOB["diloco"], "inner_steps": 150}}  # rounds long enough to kill in
    (tmp_path / "job.toml").write_text(tomli_w.dumps(job))
    cli = [sys.executable, "-m", "tessera.cli"]
    where = ["--network", str(devnet.network_file), "--account", "devnet:8"]
    env = {**os.environ, "TESSERA_HOME": str(tessera_home)}
    results = tessera_home / "jobs" / "results"
    before = set(results.glob("diloco-order-*"))
    with open(tmp_path / "submit.log", "wb") as log:
        submit = subprocess.Popen([*cli, "job", "submit", str(tmp_path / "job.toml"), *where],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        job_dir = wait_until(lambda: next(iter(set(results.glob("diloco-order-*")) - before),
                                          None), timeout=120, what="the job folder")

        def round_two_sent() -> dict | None:
            """After round 1 is committed, the coordinator sends round 2 to every worker."""
            state = _read_state(job_dir)
            if submit.poll() is not None:
                pytest.fail((tmp_path / "submit.log").read_text())
            if state is None or len(state["reports"]) < 2:
                return None
            requests = {w["lease_id"]: providers[w["provider"]].home / providers[w["provider"]].name
                        / "leases" / str(w["lease_id"]) / "rounds" / "2" / "request.json"
                        for w in state["workers"]}
            if not all(path.exists() for path in requests.values()):
                return None
            return {lease: json.loads(path.read_text()) for lease, path in requests.items()}

        sent = wait_until(round_two_sent, timeout=180, what="round 2 sent", interval=0.01)
        submit.kill()
        submit.wait()
    finally:
        if submit.poll() is None:
            submit.kill()
    at_kill = _read_state(job_dir)
    finished_rounds = len(at_kill["reports"])
    assert not at_kill["finished"] and finished_rounds >= 2

    resumed = subprocess.run([*cli, "job", "resume", str(job_dir), *where], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"at round {finished_rounds + 1}/4" in resumed.stdout
    final = _read_state(job_dir)
    assert final["finished"] and len(final["reports"]) == 4
    assert final["reports"][:finished_rounds] == at_kill["reports"]   # no finished round lost
    assert [r["contributors"] for r in final["reports"]] == [2, 2, 2, 2]  # nobody wedged
    if finished_rounds == 2:  # round 2 was in flight: the workers ran it again from the full state
        for lease_id, request in sent.items():
            worker = next(w for w in final["workers"] if w["lease_id"] == lease_id)
            node = providers[worker["provider"]]
            now = json.loads((node.home / node.name / "leases" / str(lease_id) / "rounds" / "2"
                              / "request.json").read_text())
            assert now["params_sha256"] != request["params_sha256"]
    tenant = Tenant(Chain(network, devnet_account(8)))
    assert all(not tenant.market.lease(w["lease_id"]).is_open for w in final["workers"])
    assert (job_dir / "model.pt").exists()
    again = subprocess.run([*cli, "job", "resume", str(job_dir), *where], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "has finished" in " ".join((again.stdout + again.stderr).split())
