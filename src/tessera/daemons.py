"""Start, watch and stop `tessera provider run` / `tessera validator run` processes on one
machine (the demo and the benchmarks): each gets its config file and log in a home folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import tomli_w

from tessera.errors import DaemonError

Daemons = dict[str, tuple[subprocess.Popen, str]]   # name -> (process, its endpoint URL)


def spawn(home: Path, name: str, kind: str, config: dict,
          command: list[str] | None = None) -> tuple[subprocess.Popen, str]:
    """Write `config` to `home/<name>.toml` and run `tessera <kind> run` on it (or `python
    -m <command...>`, which takes the same --config), logging to `home/<name>.log`; returns
    the process and its endpoint (config[kind]["port"])."""
    config_file = home / f"{name}.toml"
    config_file.write_text(tomli_w.dumps(config))
    command = command or ["tessera.cli", kind, "run"]
    proc = subprocess.Popen([sys.executable, "-m", *command, "--config",
                             str(config_file)], stdout=open(home / f"{name}.log", "wb"),
                            stderr=subprocess.STDOUT, env={**os.environ, "TESSERA_HOME": str(home)})
    return proc, f"http://127.0.0.1:{config[kind]['port']}"


def raise_if_exited(procs: Daemons) -> None:
    for name, (proc, _) in procs.items():
        if proc.poll() is not None:
            raise DaemonError(f"{name} exited with {proc.returncode}; see its log")


def wait_healthy(procs: Daemons, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(procs)
    while pending:
        raise_if_exited(pending)
        for name, (_, url) in list(pending.items()):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            raise DaemonError(f"{', '.join(pending)} did not come up in {timeout:.0f} s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
