"""Runs each workload in its own process, with limits, and survives provider restarts.

`WorkloadRunner` starts `python -m tessera.compute.job` for one output folder and returns a
`WorkloadRun` handle (poll / wait / progress / stop). The folder, not the process handle, is
the source of truth: it holds the workload, the inputs, the child's `progress.jsonl`, its
output log and the artifacts, so after a provider restart `WorkloadRunner.attach(out_dir)` tells
whether the run finished (a `done` line whose result hash matches `artifacts.json`) and
`WorkloadRunner.restart(out_dir)` starts an unfinished one again, which resumes from its
checkpoint.

Limits applied to the child (see docs/workload.md):
- its own process group (`stop()` signals the whole group: SIGTERM, then SIGKILL);
- a memory cap through `RLIMIT_DATA` (default) or `RLIMIT_AS`. Both refuse a too-large
  PyTorch CPU allocation cleanly (measured; torch raises "can't allocate memory" and the job
  reports it). `RLIMIT_AS` also counts shared libraries (~500 MB of address space for torch
  before any tensor) and the address-space reservations of the CUDA driver, which are
  far larger than physical memory and make CUDA initialisation fail; `RLIMIT_DATA` counts only
  writable private memory (heap, anonymous mappings, thread stacks), so the number means
  roughly "host RAM the job may dirty". `RLIMIT_RSS` is not enforced by Linux at all.
- thread-count environment (`OMP_NUM_THREADS`, `MKL_NUM_THREADS`, ...) equal to the
  workload's `threads`, which the job also fixes with `torch.set_num_threads`;
- a wall-clock limit enforced by a watchdog thread (no polling needed);
- `PR_SET_PDEATHSIG = SIGKILL`, so a provider that dies takes its children with it. The kernel
  ties that signal to the *thread* that forked, so every child is forked from one long-lived
  spawner thread rather than from whichever (possibly short-lived) request thread asked.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tessera.compute.job import PROGRESS_FILE
from tessera.compute.train import MANIFEST, result_hash_of
from tessera.files import write_atomic
from tessera.protocol.workload import TrainingWorkload

PR_SET_PDEATHSIG = 1
WORKLOAD_FILE, INPUTS_FILE, PID_FILE, LOG_FILE = (
    "workload.json", "inputs.json", "runner.json", "output.log")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
# The process each workload kind runs in: a one-shot training job, or a DiLoCo worker that
# serves rounds (all take --workload/--dataset/--dataset-sha256/--out). A runner may be given
# other modules for some kinds (`modules`); only the test-only cheating provider does that.
JOB_MODULES = {"train-charlm": "tessera.compute.job",
               "diloco-worker": "tessera.compute.diloco_worker"}
State = Literal["running", "succeeded", "failed", "killed", "interrupted"]

# One long-lived thread forks every child (see PR_SET_PDEATHSIG above).
_spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-spawner")


@dataclass(frozen=True)
class RunStatus:
    """`running`; `succeeded` (done line, artifacts verified by hash); `failed` (the job
    reported an error or exited non-zero); `killed` (stopped, timed out, or killed by a signal);
    `interrupted` (found after a restart: no process, no result; `restart()` resumes it)."""
    state: State
    exit_code: int | None = None
    result_hash: str | None = None
    detail: str = ""

    @property
    def finished(self) -> bool:
        return self.state != "running"


def read_progress(out_dir: Path) -> list[dict]:
    """Every complete JSON line of `out_dir/progress.jsonl` (a torn line is skipped)."""
    path = Path(out_dir) / PROGRESS_FILE
    if not path.exists():
        return []
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # being written right now, or cut by a kill
            continue
    return events


def finished_result(out_dir: Path) -> str | None:
    """The result hash of a finished run in `out_dir`, or None: finished means a `done` line
    whose result hash is the hash of the `artifacts.json` on disk."""
    done = next((e for e in reversed(read_progress(out_dir)) if e.get("event") == "done"), None)
    manifest = Path(out_dir) / MANIFEST
    if done is None or not manifest.exists():
        return None
    try:
        listing = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return None
    return done["result_hash"] if result_hash_of(listing) == done.get("result_hash") else None


def _preexec(memory_limit_mb: int | None, rlimit: str):
    """Runs in the child between fork and exec."""
    def setup() -> None:
        parent = os.getppid()
        if memory_limit_mb is not None:
            limit = memory_limit_mb * 2**20
            kind = resource.RLIMIT_DATA if rlimit == "data" else resource.RLIMIT_AS
            resource.setrlimit(kind, (limit, limit))
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the provider died before prctl took effect
            os._exit(1)
    return setup


def _alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class WorkloadRun:
    """One run of the job in one folder. Created by `WorkloadRunner.start/attach/restart`."""

    def __init__(self, out_dir: Path, proc: subprocess.Popen | None = None,
                 timeout_s: float | None = None, grace_s: float = 5.0,
                 memory_limit_mb: int | None = None, orphan_pgid: int | None = None):
        self.out_dir = Path(out_dir)
        self.proc = proc
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.memory_limit_mb = memory_limit_mb
        self.started = time.monotonic()
        self._orphan_pgid = orphan_pgid  # a child of a previous provider, still running
        self._killed_reason: str | None = None
        self._lock = threading.Lock()
        self._watchdog: threading.Timer | None = None
        if proc is not None and timeout_s is not None:
            self._watchdog = threading.Timer(timeout_s, self._time_out)
            self._watchdog.daemon = True
            self._watchdog.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else self._orphan_pgid

    def _time_out(self) -> None:
        self.stop(reason=f"wall-clock limit of {self.timeout_s:g} s reached")

    def progress(self) -> list[dict]:
        return read_progress(self.out_dir)

    def poll(self) -> RunStatus:
        if self.proc is None:
            if self._orphan_pgid is not None and _alive(self._orphan_pgid):
                return RunStatus("running", detail="started by a previous provider process")
            result = finished_result(self.out_dir)
            if result is not None:
                return RunStatus("succeeded", 0, result)
            if self._killed_reason:
                return RunStatus("killed", None, None, self._killed_reason)
            return RunStatus("interrupted", None, None,
                             "no process and no result; restart() resumes from the checkpoint")
        code = self.proc.poll()
        if code is None:
            return RunStatus("running")
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._killed_reason:
            return RunStatus("killed", code, None, self._killed_reason)
        if code < 0:
            return RunStatus("killed", code, None, f"killed by signal {signal.Signals(-code).name}")
        result = finished_result(self.out_dir)
        if code == 0 and result is not None:
            return RunStatus("succeeded", 0, result)
        return RunStatus("failed", code, None, self._failure_detail(code))

    def _failure_detail(self, code: int) -> str:
        errors = [e["message"] for e in self.progress() if e.get("event") == "error"]
        detail = errors[-1] if errors else self._log_tail() or "the job ended without a result"
        if self.memory_limit_mb and ("can't allocate" in detail or "MemoryError" in detail):
            detail = f"memory limit of {self.memory_limit_mb} MB exceeded: {detail}"
        return f"exit code {code}: {detail}"

    def _log_tail(self) -> str:
        path = self.out_dir / LOG_FILE
        return path.read_text(errors="replace")[-500:].strip() if path.exists() else ""

    def wait(self, timeout: float | None = None, poll_s: float = 0.05) -> RunStatus:
        """Poll until the run ends or `timeout` seconds pass; returns the last status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (status := self.poll()).finished:
            if deadline is not None and time.monotonic() >= deadline:
                return status
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=poll_s)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(poll_s)
        return status

    def stop(self, reason: str = "stopped by the provider") -> RunStatus:
        """SIGTERM to the child's process group, SIGKILL after `grace_s`; idempotent."""
        with self._lock:
            if self._watchdog is not None:
                self._watchdog.cancel()
            pgid = self.proc.pid if self.proc is not None else self._orphan_pgid
            running = (self.proc.poll() is None) if self.proc is not None else (
                pgid is not None and _alive(pgid))
            if not running:
                return self.poll()
            self._killed_reason = reason
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=self.grace_s)
                except subprocess.TimeoutExpired:
                    os.killpg(pgid, signal.SIGKILL)
                    self.proc.wait()
            else:
                deadline = time.monotonic() + self.grace_s
                while _alive(pgid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _alive(pgid):
                    os.killpg(pgid, signal.SIGKILL)
            return self.poll()


class WorkloadRunner:
    """Starts jobs in separate, limited processes. `threads`, when given, overrides the
    workload's own (the provider sells a slice of its CPU), except a verified DiLoCo worker's;
    `memory_rlimit` is "data" (default, see the module docstring) or "as"; `modules` overrides
    JOB_MODULES per kind."""

    def __init__(self, *, timeout_s: float | None = None, memory_limit_mb: int | None = None,
                 memory_rlimit: Literal["data", "as"] = "data", threads: int | None = None,
                 grace_s: float = 5.0, modules: Mapping[str, str] | None = None):
        self.modules = {**JOB_MODULES, **(modules or {})}
        self.timeout_s = timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.memory_rlimit = memory_rlimit
        self.threads = threads
        self.grace_s = grace_s

    def start(self, workload: TrainingWorkload | dict, dataset_path: Path, dataset_sha256: str,
              out_dir: Path) -> WorkloadRun:
        """Write the workload and inputs into `out_dir` and start the job. A dict workload is
        written as given, so that the child, not the provider, reports what is wrong with it."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fields = workload.model_dump() if isinstance(workload, TrainingWorkload) else \
            json.loads(json.dumps(workload))
        verified = fields.get("kind") == "diloco-worker" and fields.get("checkpoint_every")
        if self.threads is not None and not verified:
            # a verified job keeps its own: its worker signs them and replays use them (the
            # manifest was refused if they exceed the provider's limit)
            _model_fields(fields)["threads"] = self.threads
        (out_dir / WORKLOAD_FILE).write_text(json.dumps(fields))
        module = self.modules.get(fields.get("kind", "train-charlm"), self.modules["train-charlm"])
        (out_dir / INPUTS_FILE).write_text(json.dumps(
            {"dataset": str(Path(dataset_path).resolve()), "dataset_sha256": dataset_sha256,
             "module": module}))
        return self._spawn(out_dir)

    def _spawn(self, out_dir: Path) -> WorkloadRun:
        inputs = json.loads((out_dir / INPUTS_FILE).read_text())
        threads = _model_fields(json.loads((out_dir / WORKLOAD_FILE).read_text())).get("threads", 1)
        env = {**os.environ, **{name: str(threads) for name in THREAD_ENV}}
        with open(out_dir / LOG_FILE, "ab") as log:
            proc = _spawner.submit(
                subprocess.Popen,
                [sys.executable, "-m", inputs.get("module", JOB_MODULES["train-charlm"]),
                 "--workload", str(out_dir / WORKLOAD_FILE), "--dataset", inputs["dataset"],
                 "--dataset-sha256", inputs["dataset_sha256"], "--out", str(out_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                process_group=0, preexec_fn=_preexec(self.memory_limit_mb, self.memory_rlimit),
            ).result()
        (out_dir / PID_FILE).write_text(json.dumps({"pid": proc.pid}))
        return WorkloadRun(out_dir, proc, self.timeout_s, self.grace_s, self.memory_limit_mb)

    @staticmethod
    def attach(out_dir: Path, grace_s: float = 5.0) -> WorkloadRun:
        """A handle on a run some earlier provider process started in `out_dir`. Its `poll()`
        says `succeeded` if it finished, `running` if its child somehow outlived that provider,
        and otherwise `interrupted`."""
        out_dir = Path(out_dir)
        orphan = None
        pid_file = out_dir / PID_FILE
        if pid_file.exists():
            pid = json.loads(pid_file.read_text())["pid"]
            if _alive(pid) and _is_job_in(pid, out_dir):
                orphan = pid
        return WorkloadRun(out_dir, None, grace_s=grace_s, orphan_pgid=orphan)

    def restart(self, out_dir: Path) -> WorkloadRun:
        """Start an unfinished run in `out_dir` again (it resumes from its latest checkpoint);
        a finished one is left alone and returned attached. A child of a previous provider
        that is still running is stopped first, so that two processes never share a folder."""
        out_dir = Path(out_dir)
        attached = self.attach(out_dir, self.grace_s)
        if attached.poll().state == "succeeded":
            return attached
        if attached.pid is not None:
            attached.stop(reason="replaced by a restart")
        if not (out_dir / INPUTS_FILE).exists():
            raise FileNotFoundError(f"{out_dir} holds no run to restart (no {INPUTS_FILE})")
        return self._spawn(out_dir)


def _model_fields(workload: dict) -> dict:
    """The part of a workload that says how the model trains (a DiLoCo worker nests it)."""
    model = workload.get("model") if workload.get("kind") == "diloco-worker" else None
    return model if isinstance(model, dict) else workload


def _is_job_in(pid: int, out_dir: Path) -> bool:
    """Whether `pid` is a job process writing into `out_dir` (pids get reused)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    modules = set(JOB_MODULES.values())
    try:  # the module this folder's run was started in (a runner may be given others)
        modules.add(json.loads((out_dir / INPUTS_FILE).read_text())["module"])
    except (OSError, ValueError, KeyError):
        pass
    return any(m.encode() in argv for m in modules) and str(out_dir).encode() in argv


# -- the provider node's per-lease view --------------------------------------------------------

@dataclass(frozen=True)
class JobOutcome:
    succeeded: bool
    result_hash: str | None
    detail: str


class JobSupervisor:
    """The provider node's jobs, one folder `leases/<id>/` per lease under its state dir."""

    def __init__(self, state_dir: Path, threads: int, memory_limit_mb: int, timeout_s: int,
                 memory_rlimit: Literal["data", "as"] = "data",
                 modules: Mapping[str, str] | None = None):
        self.root = Path(state_dir) / "leases"
        self.runner = WorkloadRunner(timeout_s=timeout_s, memory_limit_mb=memory_limit_mb,
                                     memory_rlimit=memory_rlimit, threads=threads, modules=modules)
        self.runs: dict[int, WorkloadRun] = {}

    def folder(self, lease_id: int) -> Path:
        return self.root / str(lease_id)

    def start(self, lease_id: int, manifest: dict, dataset: Path) -> None:
        self.runs[lease_id] = self.runner.start(manifest["workload"], dataset,
                                                manifest["dataset_sha256"], self.folder(lease_id))

    def recover(self, leases) -> list[int]:
        """Restart the jobs of leases recorded as running whose output is not finished."""
        restarted = []
        for record in leases:
            folder = self.folder(record.lease_id)
            if finished_result(folder) is None and (folder / INPUTS_FILE).exists():
                self.runs[record.lease_id] = self.runner.restart(folder)
                restarted.append(record.lease_id)
        return restarted

    def progress(self, lease_id: int) -> list[dict]:
        return read_progress(self.folder(lease_id))

    def outcome(self, lease_id: int) -> JobOutcome | None:
        """None while the job runs; its outcome once it has ended (or was found ended)."""
        run = self.runs.get(lease_id) or WorkloadRunner.attach(self.folder(lease_id))
        status = run.poll()
        if status.state == "running":
            return None
        self.runs.pop(lease_id, None)
        if status.state == "succeeded":
            return JobOutcome(True, status.result_hash, "")
        if status.state == "interrupted":
            return JobOutcome(False, None, "the job ended without a result")
        return JobOutcome(False, None, status.detail)

    def artifacts(self, lease_id: int) -> dict:
        return json.loads((self.folder(lease_id) / MANIFEST).read_text())

    def find_artifact(self, sha256: str) -> Path | None:
        if not self.root.exists():
            return None
        for listing in self.root.glob(f"*/{MANIFEST}"):
            for name, meta in json.loads(listing.read_text()).items():
                if meta["sha256"] == sha256:
                    return listing.parent / name
        return None

    # -- DiLoCo rounds: the coordinator's requests and the worker's answers, as files ---------
    def round_folder(self, lease_id: int, round_index: int) -> Path:
        return self.folder(lease_id) / "rounds" / str(round_index)

    def submit_round(self, lease_id: int, round_index: int, params: bytes, params_sha256: str) -> bool:
        """Queue a round for the worker; False if that round was already queued with other params."""
        folder = self.round_folder(lease_id, round_index)
        request = folder / "request.json"
        if request.exists():
            return json.loads(request.read_text())["params_sha256"] == params_sha256
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "params.bin", params)
        # written last: the worker starts on its appearance
        write_atomic(request, json.dumps({"params_sha256": params_sha256}))
        return True

    def round_result(self, lease_id: int, round_index: int) -> dict | None:
        path = self.round_folder(lease_id, round_index) / "result.json"
        return json.loads(path.read_text()) if path.exists() else None

    def round_payload(self, lease_id: int, round_index: int) -> Path:
        return self.round_folder(lease_id, round_index) / "pseudo_gradient.bin"

    def stop(self, lease_id: int) -> None:
        run = self.runs.pop(lease_id, None)
        if run is not None:
            run.stop()

    def stop_all(self) -> None:
        for lease_id in list(self.runs):
            self.stop(lease_id)
