"""Runs each lease's workload in its own process, with limits, and survives provider restarts.

Every lease gets a folder `leases/<id>/` under the provider's state directory holding the
workload, the child's progress.jsonl, its output log and the artifacts. The folder, not the
process handle, is the source of truth: after a restart, a job whose `done` line is on disk is
finished; one without it is started again and resumes from its checkpoint.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tessera.compute.job import PROGRESS_FILE

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class JobOutcome:
    succeeded: bool
    result_hash: str | None
    detail: str


def _child_setup(memory_limit_mb: int):
    """Runs in the child before exec: its own process group, a memory cap, and death with the
    provider (so a killed provider leaves no orphan writing into the lease folder)."""
    def setup() -> None:
        os.setpgrp()
        limit = memory_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    return setup


class JobSupervisor:
    def __init__(self, state_dir: Path, threads: int, memory_limit_mb: int, timeout_s: int):
        self.root = Path(state_dir) / "leases"
        self.threads = threads
        self.memory_limit_mb = memory_limit_mb
        self.timeout_s = timeout_s
        self._procs: dict[int, tuple[subprocess.Popen, float]] = {}

    def folder(self, lease_id: int) -> Path:
        return self.root / str(lease_id)

    def start(self, lease_id: int, manifest: dict, dataset: Path) -> None:
        folder = self.folder(lease_id)
        folder.mkdir(parents=True, exist_ok=True)
        workload = {**manifest["workload"], "threads": self.threads}
        (folder / "workload.json").write_text(json.dumps(workload))
        (folder / "inputs.json").write_text(json.dumps(
            {"dataset": str(dataset), "dataset_sha256": manifest["dataset_sha256"]}))
        self._spawn(lease_id)

    def _spawn(self, lease_id: int) -> None:
        folder = self.folder(lease_id)
        inputs = json.loads((folder / "inputs.json").read_text())
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads),
               "MKL_NUM_THREADS": str(self.threads)}
        log = open(folder / "output.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tessera.compute.job", "--workload", str(folder / "workload.json"),
             "--dataset", inputs["dataset"], "--dataset-sha256", inputs["dataset_sha256"],
             "--out", str(folder)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=_child_setup(self.memory_limit_mb))
        self._procs[lease_id] = (proc, time.monotonic())

    def recover(self, leases) -> list[int]:
        """Restart the jobs of leases recorded as running whose output is not finished."""
        restarted = []
        for record in leases:
            if self._done_line(record.lease_id) is None and (
                    self.folder(record.lease_id) / "inputs.json").exists():
                self._spawn(record.lease_id)
                restarted.append(record.lease_id)
        return restarted

    def progress(self, lease_id: int) -> list[dict]:
        path = self.folder(lease_id) / PROGRESS_FILE
        if not path.exists():
            return []
        lines = []
        for line in path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                break
        return lines

    def _done_line(self, lease_id: int) -> dict | None:
        return next((p for p in reversed(self.progress(lease_id)) if p.get("event") == "done"), None)

    def outcome(self, lease_id: int) -> JobOutcome | None:
        """None while the job runs; its outcome once it has ended (or was found ended)."""
        entry = self._procs.get(lease_id)
        if entry is not None:
            proc, started = entry
            if proc.poll() is None:
                if time.monotonic() - started <= self.timeout_s:
                    return None
                self.stop(lease_id)
                return JobOutcome(False, None, f"killed after the {self.timeout_s} s limit")
            del self._procs[lease_id]
            if proc.returncode != 0:
                errors = [p["message"] for p in self.progress(lease_id) if p.get("event") == "error"]
                detail = errors[-1] if errors else self._log_tail(lease_id)
                return JobOutcome(False, None, f"exit code {proc.returncode}: {detail}")
        done = self._done_line(lease_id)
        if done is None:
            return JobOutcome(False, None, "the job ended without a result")
        return JobOutcome(True, done["result_hash"], "")

    def _log_tail(self, lease_id: int) -> str:
        path = self.folder(lease_id) / "output.log"
        return path.read_text(errors="replace")[-500:].strip() if path.exists() else ""

    def artifacts(self, lease_id: int) -> dict:
        return json.loads((self.folder(lease_id) / "artifacts.json").read_text())

    def find_artifact(self, sha256: str) -> Path | None:
        if not self.root.exists():
            return None
        for listing in self.root.glob("*/artifacts.json"):
            for name, meta in json.loads(listing.read_text()).items():
                if meta["sha256"] == sha256:
                    return listing.parent / name
        return None

    def stop(self, lease_id: int) -> None:
        entry = self._procs.pop(lease_id, None)
        if entry is None:
            return
        proc, _ = entry
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        for lease_id in list(self._procs):
            self.stop(lease_id)
