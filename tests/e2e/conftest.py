"""End-to-end fixtures: a real anvil with deployed contracts, and real provider processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import tomli_w
from eth_account import Account

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import Devnet, free_port
from tessera.chain.network import Network
from tessera.daemons import stop

TENANT = 5


@pytest.fixture(scope="session")
def tessera_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("tessera-home")
    previous = os.environ.get("TESSERA_HOME")
    os.environ["TESSERA_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("TESSERA_HOME", None)
    else:
        os.environ["TESSERA_HOME"] = previous


@pytest.fixture(scope="session")
def devnet(tessera_home) -> Devnet:
    devnet = Devnet(tessera_home / "devnet")
    devnet.up(port=free_port())
    yield devnet
    devnet.down()


@pytest.fixture(scope="session")
def network(devnet) -> Network:
    from tessera.chain.network import load_network

    return load_network(devnet.network_file)


@pytest.fixture
def tenant_chain(network) -> Chain:
    return Chain(network, devnet_account(TENANT))


class ProviderProcess:
    """One `tessera provider run` process; restartable with the same state directory."""

    def __init__(self, home: Path, network_file: Path, account: int | str, price: str,
                 name: str):
        """`account`: a devnet account index, or a raw 0x private key."""
        self.home, self.name = home, name
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
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "provider", "run", "--config", str(self.config)],
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


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def provider(tessera_home, devnet) -> ProviderProcess:
    node = ProviderProcess(tessera_home, devnet.network_file, account=2, price="1.00", name="p-one")
    node.start()
    yield node
    node.stop()
