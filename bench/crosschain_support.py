"""What bench/crosschain.py needs besides its measurements: how much CPU the bench's own
processes and everything else used (so a contended run says so), a head poller that records when
each block was first seen, and small waits over daemons' health and logs."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path

import httpx

WATCH_S = 0.05            # the block watcher's poll
CONTENTION_NOTE = ("'contended' is true when other work shared the machine: a 1-minute load "
                   "average above 1.0 just before the run, or processes other than the bench's "
                   "own (this process, its daemons, both anvils) using over 0.2 of a core on "
                   "average during the latency phase (cpu_during_latency). Gas is not timing: "
                   "load does not change it.")


# -- contention -----------------------------------------------------------------------------
def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, CPU clock ticks used so far, command name), from /proc."""
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        table[int(entry)] = (int(rest[1]), int(rest[11]) + int(rest[12]),
                             stat[stat.index("(") + 1:stat.rindex(")")])
    return table


def cpu_use(before: dict, after: dict, roots: list[int], wall_s: float) -> dict:
    """Core-seconds that the bench's own process trees (`roots`) and every other process used
    between two `processes()` reads; the heaviest others by command name."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in {**before, **after}.items():
        children.setdefault(ppid, []).append(pid)
    ours, todo = set(), [r for r in roots if r]
    while todo:
        pid = todo.pop()
        if pid not in ours:
            ours.add(pid)
            todo.extend(children.get(pid, []))
    tick = os.sysconf("SC_CLK_TCK")
    mine, others = 0.0, {}
    for pid, (_, ticks, name) in after.items():
        used = (ticks - before.get(pid, (0, 0))[1]) / tick
        if pid in ours:
            mine += used
        elif used > 0:
            others[name] = others.get(name, 0.0) + used
    top = sorted(others.items(), key=lambda kv: -kv[1])[:5]
    return {"wall_s": round(wall_s, 1), "bench_core_s": round(mine, 1),
            "other_core_s": round(sum(others.values()), 1),
            "other_cores_avg": round(sum(others.values()) / max(wall_s, 1e-9), 2),
            "other_heaviest_core_s": {k: round(v, 1) for k, v in top}}


# -- helpers --------------------------------------------------------------------------------
def say(text: str) -> None:
    print(text, flush=True)


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]   # nearest rank
    return {"n": len(values), "p50": round(statistics.median(values), 2), "p95": round(p95, 2),
            "max": round(ordered[-1], 2), "min": round(ordered[0], 2),
            "mean": round(statistics.fmean(values), 2)}


def log_events(path: Path, *names: str) -> list[dict]:
    """The JSON event lines (EventLog) of a daemon's log with one of these event names."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line) if line.startswith("{") else {}
        except json.JSONDecodeError:
            continue
        if doc.get("event") in names:
            found.append(doc)
    return found


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return value


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class BlockWatcher(threading.Thread):
    """When each block number was first seen on each chain (wall clock, a head poll)."""

    def __init__(self, urls: dict[int, str]):
        super().__init__(daemon=True)
        self.urls, self.halt = urls, threading.Event()
        self.seen: dict[int, dict[int, float]] = {cid: {} for cid in urls}

    def run(self) -> None:
        last: dict[int, int] = {}
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
        with httpx.Client(timeout=5) as http:
            while not self.halt.wait(WATCH_S):
                for cid, url in self.urls.items():
                    try:
                        head = int(http.post(url, json=body).json()["result"], 16)
                    except (httpx.HTTPError, ValueError, KeyError):
                        continue
                    now = time.time()
                    for block in range(last.get(cid, head - 1) + 1, head + 1):
                        self.seen[cid].setdefault(block, now)
                    last[cid] = max(last.get(cid, head), head)
