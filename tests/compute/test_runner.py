"""The provider's job runner: real child processes running the real job entry point."""

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from tessera.compute.corpus import build_stdlib_corpus, write_dataset
from tessera.provider.runner import JobSupervisor

WORKLOAD = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8, steps=20,
                eval_every=10, checkpoint_every=5, eval_batches=2, device="cpu")


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(build_stdlib_corpus(64 * 1024), tmp_path / "blobs")


def manifest(dataset, **workload):
    return {"workload": {**WORKLOAD, **workload}, "dataset_sha256": dataset.name}


def wait_for(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while (value := predicate()) is None or value is False:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def test_job_runs_to_completion_with_progress(tmp_path, dataset):
    jobs = JobSupervisor(tmp_path, threads=1, memory_limit_mb=4096, timeout_s=300)
    jobs.start(1, manifest(dataset), dataset)
    outcome = wait_for(lambda: jobs.outcome(1))
    assert outcome.succeeded, outcome.detail
    steps = [p["step"] for p in jobs.progress(1) if p.get("event") == "progress"]
    assert steps == list(range(1, 21))
    assert "model.pt" in jobs.artifacts(1)
    sha = jobs.artifacts(1)["model.pt"]["sha256"]
    assert jobs.find_artifact(sha) == tmp_path / "leases" / "1" / "model.pt"


def test_stop_kills_a_running_job(tmp_path, dataset):
    jobs = JobSupervisor(tmp_path, threads=1, memory_limit_mb=4096, timeout_s=300)
    jobs.start(2, manifest(dataset, steps=100_000), dataset)
    wait_for(lambda: any(p.get("event") == "progress" for p in jobs.progress(2)) or None)
    proc = jobs._procs[2][0]
    jobs.stop(2)
    assert proc.poll() is not None


def test_wall_clock_limit_is_enforced(tmp_path, dataset):
    jobs = JobSupervisor(tmp_path, threads=1, memory_limit_mb=4096, timeout_s=1)
    jobs.start(3, manifest(dataset, steps=100_000), dataset)
    outcome = wait_for(lambda: jobs.outcome(3), timeout=60)
    assert not outcome.succeeded and "limit" in outcome.detail


def test_memory_limit_is_enforced(tmp_path, dataset):
    jobs = JobSupervisor(tmp_path, threads=1, memory_limit_mb=300, timeout_s=120)
    jobs.start(4, manifest(dataset), dataset)
    outcome = wait_for(lambda: jobs.outcome(4), timeout=60)
    assert not outcome.succeeded


def test_restarted_supervisor_resumes_from_checkpoint(tmp_path, dataset):
    jobs = JobSupervisor(tmp_path, threads=1, memory_limit_mb=4096, timeout_s=300)
    jobs.start(5, manifest(dataset, steps=400, checkpoint_every=10), dataset)
    folder = tmp_path / "leases" / "5"
    wait_for(lambda: (folder / "checkpoint.pt").exists() or None)
    jobs._procs[5][0].kill()  # the provider dies; PR_SET_PDEATHSIG would take the child with it
    jobs._procs[5][0].wait()
    again = JobSupervisor(tmp_path, threads=1, memory_limit_mb=4096, timeout_s=300)
    assert again.recover([SimpleNamespace(lease_id=5)]) == [5]
    outcome = wait_for(lambda: again.outcome(5))
    assert outcome.succeeded, outcome.detail
    done = [p for p in again.progress(5) if p.get("event") == "done"][-1]
    assert done["timing"]["steps_this_run"] < 400


def test_job_entry_refuses_a_dataset_that_does_not_match_its_hash(tmp_path, dataset):
    (tmp_path / "w.json").write_text(json.dumps(WORKLOAD))
    result = subprocess.run([sys.executable, "-m", "tessera.compute.job", "--workload",
                             str(tmp_path / "w.json"), "--dataset", str(dataset),
                             "--dataset-sha256", "0" * 64, "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "does not hash" in result.stdout
