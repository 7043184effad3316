"""The daemons as real processes, for end-to-end tests: `tessera provider run` and
`tessera validator run`, each with its config, state and log under a test folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import tomli_w
from eth_account import Account

from tessera.chain.accounts import devnet_account
from tessera.chain.devnet import free_port
from tessera.daemons import stop

# Probes once per epoch with short timeouts: what a validator in a test runs unless told otherwise.
QUICK_PROBES = {"probes": {"per_epoch": 1, "timeout_s": 3.0, "max_delay_s": 0.5}}


@contextmanager
def tessera_home(home: Path) -> Iterator[Path]:
    """TESSERA_HOME set to `home` for what runs inside (the CLI and daemons this process starts
    read it), then put back as it was."""
    previous = os.environ.get("TESSERA_HOME")
    os.environ["TESSERA_HOME"] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("TESSERA_HOME", None)
        else:
            os.environ["TESSERA_HOME"] = previous


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class ProviderProcess:
    """One `tessera provider run` process; restartable with the same state directory."""

    def __init__(self, home: Path, network_file: Path, account: int | str, price: str,
                 name: str, cheat: str | None = None, cheat_args: Sequence[str] = ()):
        """`account`: a devnet account index, or a raw 0x private key. `cheat`: TEST ONLY, run
        it as `python -m tessera.testing.cheating_provider --cheat CHEAT *cheat_args` instead."""
        self.home, self.name, self.cheat, self.cheat_args = home, name, cheat, list(cheat_args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = home / f"{name}.toml"
        self.config.write_text(tomli_w.dumps({
            "provider": {"account": account if isinstance(account, str) else f"devnet:{account}",
                         "network": str(network_file),
                         "port": self.port, "state_dir": str(home / name), "stake": "100"},
            "pricing": {"price_per_gpu_hour": price},
            "limits": {"threads": 1, "memory_limit_mb": 4096, "max_job_seconds": 600},
        }))
        self.address = (Account.from_key(account) if isinstance(account, str)
                        else devnet_account(account)).address
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.home / f"{self.name}.log", "ab")
        entry = ["tessera.cli", "provider", "run"] if self.cheat is None else \
            ["tessera.testing.cheating_provider", "--cheat", self.cheat, *self.cheat_args]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *entry, "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TESSERA_HOME": str(self.home)})
        wait_until(self.healthy, timeout=120, what=f"provider {self.name} healthy")

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"provider {self.name} exited {self.proc.returncode}: "
                               + (self.home / f"{self.name}.log").read_text()[-3000:])
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


class ValidatorProcess:
    """One `tessera validator run` process. Its config, log and state folder are `name`.toml,
    `name`.log and `name`/ under `home`; `tables` are the config's tables besides
    `[validator]` (by default QUICK_PROBES)."""

    def __init__(self, home: Path, network_file: Path, account: int, *, name: str = "validator",
                 tables: dict | None = None):
        self.home, self.name = home, name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / f"{name}.log"
        self.config = home / f"{name}.toml"
        self.state_dir = home / name
        self.address = devnet_account(account).address
        self.config.write_text(tomli_w.dumps({
            "validator": {"account": f"devnet:{account}", "network": str(network_file),
                          "port": self.port, "state_dir": str(self.state_dir), "stake": "100"},
            **(QUICK_PROBES if tables is None else tables),
        }))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "validator", "run", "--config", str(self.config)],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "TESSERA_HOME": str(self.home)})
        wait_until(lambda: self.health() is not None, timeout=timeout, what=f"{self.name} healthy")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def health(self) -> dict | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}: "
                               + self.log.read_text()[-3000:])
        try:
            reply = httpx.get(f"{self.url}/healthz", timeout=1)
        except httpx.HTTPError:
            return None
        return reply.json() if reply.status_code == 200 else None

    def receipts(self, epoch: int) -> dict | None:
        reply = httpx.get(f"{self.url}/receipts/{epoch}", timeout=5)
        return reply.json() if reply.status_code == 200 else None

    def metric(self, name: str) -> float:
        """The sum of every sample of metric `name` (all label sets) on /metrics."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + " ") or line.startswith(name + "{"))


class VotingValidator(ValidatorProcess):
    """A validator process that decides challenges (and, for a quiet test, reports no outages
    and runs no hardware challenges: neither is what the challenge tests are about)."""

    def __init__(self, home: Path, network_file: Path, account: int):
        super().__init__(home, network_file, account, tables={
            **QUICK_PROBES, "challenges": {"vote": True}, "outages": {"report": False},
            "hardware": {"enabled": False}})
