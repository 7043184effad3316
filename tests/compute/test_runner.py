"""The provider's job runner: real child processes running the real job entry point."""

import json
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from tessera.compute.corpus import write_dataset
from tessera.compute.train import train
from tessera.protocol.workload import TrainingWorkload
from tessera.provider.runner import JobSupervisor, WorkloadRunner, read_progress

TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8, steps=20,
            eval_every=10, checkpoint_every=5, eval_batches=2, device="cpu")
LONG = {**TINY, "steps": 1_000_000}


@pytest.fixture
def dataset(tmp_path, corpus):
    return write_dataset(corpus, tmp_path / "blobs")


def wait_for(predicate, timeout=60):
    """Poll `predicate` until it is truthy, with a bounded deadline (no blind sleeps)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_runs_to_completion_reporting_progress(tmp_path, dataset):
    """Started from a short-lived thread on purpose: PR_SET_PDEATHSIG fires when the forking
    *thread* exits, so the runner forks from one long-lived thread; a request thread that starts
    a job and ends must not kill it. The memory cap is the one the next test shows biting."""
    runs = []
    starter = threading.Thread(target=lambda: runs.append(
        WorkloadRunner(timeout_s=120, memory_limit_mb=600).start(
            TrainingWorkload(**TINY), dataset, dataset.name, tmp_path / "out")))
    starter.start()
    starter.join()
    run = runs[0]
    status = run.wait(timeout=120)
    assert status.state == "succeeded", status
    assert status.exit_code == 0
    events = run.progress()
    assert [e["step"] for e in events if e["event"] == "progress"] == list(range(1, 21))
    last = [e for e in events if e["event"] == "progress"][-1]
    assert {"step", "steps", "train_loss", "val_loss", "tokens_per_s"} <= set(last)
    assert events[-1] == {**events[-1], "event": "done", "result_hash": status.result_hash}
    assert WorkloadRunner.attach(tmp_path / "out").poll().state == "succeeded"
    # what the child printed to stdout is the same stream
    assert '"event": "done"' in (tmp_path / "out" / "output.log").read_text()


def test_stop_kills_the_whole_process_group(tmp_path, dataset):
    run = WorkloadRunner(timeout_s=300).start(TrainingWorkload(**LONG), dataset, dataset.name,
                                              tmp_path / "out")
    wait_for(lambda: any(e["event"] == "progress" for e in run.progress()))
    status = run.stop()
    assert status.state == "killed" and "stopped" in status.detail
    assert run.proc.returncode is not None and group_gone(run.pid)
    assert run.stop().state == "killed"  # idempotent


def test_wall_clock_limit_is_enforced_without_polling(tmp_path, dataset):
    run = WorkloadRunner(timeout_s=1).start(TrainingWorkload(**LONG), dataset, dataset.name,
                                            tmp_path / "out")
    run.proc.wait(timeout=60)  # the watchdog, not a poll() call, ends it
    status = run.poll()
    assert status.state == "killed" and "wall-clock limit" in status.detail


def test_memory_limit_is_enforced_with_a_clear_reason(tmp_path, dataset):
    runner = WorkloadRunner(timeout_s=120, memory_limit_mb=600)
    big = runner.start(TrainingWorkload(**{**TINY, "batch_size": 4096, "steps": 2}), dataset,
                       dataset.name, tmp_path / "big").wait(120)
    assert big.state == "failed" and "memory limit of 600 MB exceeded" in big.detail, big


def test_restart_after_a_provider_crash_resumes_to_the_same_result(tmp_path, dataset, corpus):
    workload = TrainingWorkload(**{**TINY, "steps": 150, "checkpoint_every": 10})
    out = tmp_path / "out"
    run = WorkloadRunner(timeout_s=300).start(workload, dataset, dataset.name, out)
    wait_for(lambda: any(e.get("step", 0) > 10 for e in read_progress(out)))
    run.proc.kill()  # the provider dies; PR_SET_PDEATHSIG would take the child with it
    run.proc.wait()

    attached = WorkloadRunner.attach(out)  # a new provider process looks at the folder
    assert attached.poll().state == "interrupted"
    resumed = WorkloadRunner(timeout_s=300).restart(out)
    status = resumed.wait(timeout=120)
    assert status.state == "succeeded", status
    done = [e for e in read_progress(out) if e["event"] == "done"][-1]
    assert 0 < done["timing"]["steps_this_run"] < 150
    # bitwise the same result as one uninterrupted in-process run
    assert status.result_hash == train(workload, corpus, tmp_path / "whole").result_hash
    again = WorkloadRunner().restart(out)  # a finished run is not started again
    assert again.proc is None and again.poll().state == "succeeded"


def test_attach_sees_a_child_that_outlived_its_provider_and_can_stop_it(tmp_path, dataset):
    out = tmp_path / "out"
    run = WorkloadRunner(timeout_s=300).start(TrainingWorkload(**LONG), dataset, dataset.name,
                                              out)
    wait_for(lambda: read_progress(out))
    attached = WorkloadRunner.attach(out)
    assert attached.poll().state == "running"
    assert attached.stop().state in ("killed", "interrupted")
    assert run.proc.wait(timeout=30) is not None and group_gone(run.pid)


def test_supervisor_runs_leases_and_recovers_them(tmp_path, dataset):
    jobs = JobSupervisor(tmp_path, threads=1, memory_limit_mb=2048, timeout_s=300)
    jobs.start(7, {"workload": {**TINY, "steps": 60, "checkpoint_every": 10},
                   "dataset_sha256": dataset.name}, dataset)
    folder = tmp_path / "leases" / "7"
    wait_for(lambda: (folder / "checkpoint.pt").exists())
    jobs.runs[7].proc.kill()
    jobs.runs[7].proc.wait()
    again = JobSupervisor(tmp_path, threads=1, memory_limit_mb=2048, timeout_s=300)
    assert again.recover([SimpleNamespace(lease_id=7)]) == [7]
    outcome = wait_for(lambda: again.outcome(7), timeout=120)
    assert outcome.succeeded, outcome.detail
    assert again.recover([SimpleNamespace(lease_id=7)]) == []
    sha = again.artifacts(7)["model.pt"]["sha256"]
    assert again.find_artifact(sha) == folder / "model.pt"


def job(tmp_path, workload: dict, dataset, sha):
    (tmp_path / "w.json").write_text(json.dumps(workload))
    return subprocess.run([sys.executable, "-m", "tessera.compute.job", "--workload",
                           str(tmp_path / "w.json"), "--dataset", str(dataset),
                           "--dataset-sha256", sha, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)


def test_job_refuses_a_dataset_that_does_not_match_its_hash(tmp_path, dataset):
    result = job(tmp_path, TINY, dataset, "0" * 64)
    assert result.returncode == 2
    assert f"does not hash to {'0' * 64} (its sha256 is {dataset.name})" in result.stdout
    assert "does not hash" in (tmp_path / "out" / "progress.jsonl").read_text()


def test_job_refuses_an_invalid_workload_naming_the_field(tmp_path, dataset):
    result = job(tmp_path, {**TINY, "steps": 0, "colour": "red"}, dataset, dataset.name)
    assert result.returncode == 2
    message = json.loads(result.stdout.splitlines()[-1])["message"]
    assert "colour: Extra inputs are not permitted" in message
    assert "steps: Input should be greater than or equal to 1" in message


def test_the_provider_thread_limit_overrides_a_job_but_not_a_verified_workers(tmp_path, dataset):
    """A verified DiLoCo worker signs the thread count it trains with and its replays use the
    job's: the provider may not change it (it refuses the manifest instead when the job asks
    more than its limit); a plain job gets the provider's slice of the CPU."""
    from tessera.protocol.workload import DilocoWorkerWorkload

    runner = WorkloadRunner(timeout_s=5, threads=3)
    model = {**TINY, "threads": 2}
    for checkpoint_every, kept in ((0, 3), (2, 2)):
        worker = DilocoWorkerWorkload(model=TrainingWorkload(**model), worker=0, workers=2,
                                      checkpoint_every=checkpoint_every)
        out = tmp_path / f"k{checkpoint_every}"
        run = runner.start(worker.model_dump(), dataset, "0" * 64, out)   # (wrong hash: it stops)
        run.wait(60)
        assert json.loads((out / "workload.json").read_text())["model"]["threads"] == kept
