"""A local chain for development: anvil plus freshly deployed contracts and funded test accounts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from web3 import Web3

from tessera.chain.accounts import DEVNET_ACCOUNT_COUNT, devnet_account
from tessera.chain.client import Chain
from tessera.chain.deploy import DeployParams, deploy_all
from tessera.chain.network import Network, devnet_network_file, save_network
from tessera.errors import DevnetError
from tessera.protocol.money import PAYMENT_DECIMALS, STAKE_DECIMALS

DEVNET_CHAIN_ID = 31337
FUND_PAYMENT = 100_000 * 10**PAYMENT_DECIMALS
FUND_STAKE = 10_000 * 10**STAKE_DECIMALS
# Who is who on the devnet (indexes into anvil's published test keys).
DEPLOYER, TREASURY = 0, 1


def find_anvil() -> str:
    """Locate anvil: $TESSERA_ANVIL, the project-local npm install, then PATH."""
    explicit = os.environ.get("TESSERA_ANVIL")
    if explicit:
        return explicit
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *Path.cwd().parents, *here.parents]:
        candidate = base / ".tools" / "node_modules" / ".bin" / "anvil"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("anvil")
    if found:
        return found
    raise DevnetError(
        "anvil not found: run `./scripts/setup.sh` (installs @foundry-rs/anvil into .tools/) "
        "or set TESSERA_ANVIL to its path"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Devnet:
    """Files of one devnet live under `home`: anvil.pid, anvil.log and network.json."""

    home: Path

    @classmethod
    def default(cls) -> Devnet:
        return cls(devnet_network_file().parent)

    @property
    def network_file(self) -> Path:
        return self.home / "network.json"

    @property
    def pid_file(self) -> Path:
        return self.home / "anvil.pid"

    def pid(self) -> int | None:
        if not self.pid_file.exists():
            return None
        pid = int(self.pid_file.read_text())
        return pid if _alive(pid) else None

    def up(self, port: int = 8545, block_time: int | None = None,
           epoch_length: int | None = None, jail_after: int | None = None,
           challenge_window: int | None = None, root_grace: int | None = None) -> Network:
        """Start anvil and deploy. `epoch_length` (uptime epoch, seconds) defaults to
        $TESSERA_EPOCH_LENGTH, else DeployParams' default (60 s); `jail_after` (epochs without a
        heartbeat before an outage can be reported) and `challenge_window` (seconds a round root
        can be challenged, so also how long verified pay waits) and `root_grace` (seconds after
        the window before pay for time no root covers is released) to DeployParams' defaults."""
        if self.pid() is not None:
            raise DevnetError(f"a devnet is already running (pid {self.pid()}); `tessera devnet down` first")
        self.home.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                raise DevnetError(f"port {port} is already in use; pick another with --port")
        cmd = [find_anvil(), "--host", "127.0.0.1", "--port", str(port),
               "--chain-id", str(DEVNET_CHAIN_ID), "--accounts", str(DEVNET_ACCOUNT_COUNT)]
        if block_time:   # a block every N s besides one per transaction (which lands at once)
            cmd += ["--block-time", str(block_time), "--mixed-mining"]
        log = open(self.home / "anvil.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        rpc_url = f"http://127.0.0.1:{port}"
        w3 = Web3(Web3.HTTPProvider(rpc_url))
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise DevnetError(f"anvil exited with {proc.returncode}; see {self.home / 'anvil.log'}")
            try:
                if w3.is_connected():
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise DevnetError("anvil did not answer within 30 s")
            time.sleep(0.05)
        deployer = devnet_account(DEPLOYER)
        params = DeployParams(treasury=devnet_account(TREASURY).address)
        epoch_length = epoch_length or int(os.environ.get("TESSERA_EPOCH_LENGTH") or 0)
        if epoch_length:
            params = replace(params, epoch_length=epoch_length)
        if jail_after:
            params = replace(params, jail_after=jail_after)
        if challenge_window:
            params = replace(params, verification=replace(params.verification,
                                                          challenge_window=challenge_window))
        if root_grace is not None:
            params = replace(params, root_grace=root_grace)
        try:
            network = deploy_all(w3, deployer, params, name="devnet")
            fund_devnet_accounts(Chain(network, deployer))
        except BaseException:
            self.down()  # no anvil left running behind a failed deploy
            raise
        save_network(network, self.network_file)
        return network

    def down(self) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.05)
        else:
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


def _alive(pid: int) -> bool:
    """True while `pid` runs; reaps it first when it is our own exited child (a zombie)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def fund_devnet_accounts(chain: Chain) -> None:
    """Give every devnet account payment and stake tokens: payment tokens are minted (the
    deployer mints the devnet's stand-in stablecoin), stake comes from the deployer's supply
    (stake can only be minted through the Timelock: chain/deploy.py)."""
    for index in range(DEVNET_ACCOUNT_COUNT):
        address = devnet_account(index).address
        chain.send(chain.payment_token.functions.mint(address, FUND_PAYMENT))
        chain.send(chain.stake_token.functions.transfer(address, FUND_STAKE))
