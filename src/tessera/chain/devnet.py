"""A local chain for development: anvil plus freshly deployed contracts and funded test accounts."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from web3 import Web3

from tessera.chain.accounts import DEVNET_ACCOUNT_COUNT, devnet_account
from tessera.chain.bridge_deploy import BridgeParams, deploy_bridge
from tessera.chain.client import Chain
from tessera.chain.deploy import DeployParams, deploy_all, hand_home_to_timelock
from tessera.chain.network import Network, devnet_network_file, save_network
from tessera.chain.validators import Validators
from tessera.errors import BridgeError, DevnetError, PortInUse
from tessera.protocol.bridge import DEFAULT_CONFIRMATIONS
from tessera.protocol.liveness import CONFIRMATIONS as LIVENESS_CONFIRMATIONS
from tessera.protocol.money import PAYMENT_DECIMALS, STAKE_DECIMALS

DEVNET_CHAIN_ID = 31337
PEER_CHAIN_ID = 31338    # `devnet up --chains 2`: the second anvil, on the port after the first
FUND_PAYMENT = 100_000 * 10**PAYMENT_DECIMALS
FUND_STAKE = 10_000 * 10**STAKE_DECIMALS
# Who is who on the devnet (indexes into anvil's published test keys).
DEPLOYER, TREASURY = 0, 1
# A two-chain devnet: the bridge's guardian, and the validators registered before the bridge is
# deployed (its genesis committee is the home chain's staked validators: docs/bridge.md). They
# are the demo's three validators; `tessera validator run` with these accounts attests.
BRIDGE_GUARDIAN = 1
BRIDGE_VALIDATORS = (7, 8, 9)
BRIDGE_VALIDATOR_STAKE = 100 * 10**STAKE_DECIMALS


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


# Ports for local servers are drawn below Linux's ephemeral range (32768-60999 by default): a
# port from bind(0) lies inside it, where the kernel also picks the local ports of outgoing
# connections, so another process's HTTP client could take it before our server binds it.
LOCAL_PORTS = range(20_000, 32_768)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(count: int = 1) -> int:
    """A port (the first of `count` consecutive ones) that nothing holds now, drawn at random
    from LOCAL_PORTS (two test workers draw apart; a caller that still loses the race gets
    PortInUse from `Devnet.up` and may draw again)."""
    for _ in range(200):
        port = random.randrange(LOCAL_PORTS.start, LOCAL_PORTS.stop - count + 1)
        if all(_bindable(p) for p in range(port, port + count)):
            return port
    raise DevnetError(f"no {count} free consecutive port(s) in {LOCAL_PORTS}")


def free_port_pair() -> int:
    """A free port whose successor is free too (`up(chains=2)` puts the peer chain there)."""
    return free_port(2)


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

    @property
    def peer_pid_file(self) -> Path:
        """The second anvil of a two-chain devnet (`up(chains=2)`)."""
        return self.home / "anvil-peer.pid"

    def pid(self) -> int | None:
        return _pid_in(self.pid_file)

    def peer_pid(self) -> int | None:
        return _pid_in(self.peer_pid_file)

    def up(self, port: int = 8545, block_time: int | None = None,
           epoch_length: int | None = None, jail_after: int | None = None,
           challenge_window: int | None = None, root_grace: int | None = None,
           chains: int = 1, bridge: BridgeParams | None = None) -> Network:
        """Start anvil and deploy. `epoch_length` (uptime epoch, seconds) defaults to
        $TESSERA_EPOCH_LENGTH, else DeployParams' default (60 s); `jail_after` (epochs without a
        heartbeat before an outage can be reported) and `challenge_window` (seconds a round root
        can be challenged, so also how long verified pay waits) and `root_grace` (seconds after
        the window before pay for time no root covers is released) to DeployParams' defaults.
        `chains=2` also starts a second anvil (chain PEER_CHAIN_ID, on `port + 1`) and deploys
        the bridge between them (`bridge`: its limits, default BridgeParams with the devnet's
        guardian); the network file then names it as a peer."""
        if chains not in (1, 2):
            raise DevnetError(f"a devnet has 1 or 2 chains, not {chains}")
        running = self.pid() or self.peer_pid()
        if running is not None:
            raise DevnetError(f"a devnet is already running (pid {running}); `tessera devnet down` first")
        self.home.mkdir(parents=True, exist_ok=True)
        for p in range(port, port + chains):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", p)) == 0:
                    raise PortInUse(f"port {p} is already in use; pick another with --port"
                                      + (" (a two-chain devnet uses --port and the next one)"
                                         if chains > 1 else ""))
        w3 = self._start_anvil(port, DEVNET_CHAIN_ID, block_time, "anvil.log", self.pid_file)
        deployer = devnet_account(DEPLOYER)
        params = DeployParams(treasury=devnet_account(TREASURY).address)
        epoch_length = epoch_length or int(os.environ.get("TESSERA_EPOCH_LENGTH") or 0)
        if epoch_length:
            params = params.with_epoch(epoch_length)
        if jail_after:
            params = replace(params, jail_after=jail_after)
        if challenge_window:
            params = replace(params, verification=replace(params.verification,
                                                          challenge_window=challenge_window))
        if root_grace is not None:
            params = replace(params, root_grace=root_grace)
        try:
            # two chains: the bridge's StakeBridge becomes a stake minter before the hand-over
            network = deploy_all(w3, deployer, params, name="devnet", hand_over=chains == 1)
            fund_devnet_accounts(Chain(network, deployer))
            if chains == 2:
                network = self._add_peer(network, port + 1, block_time, bridge)
                hand_home_to_timelock(w3, deployer, network, payment=True)
        except BaseException:
            self.down()  # no anvil left running behind a failed deploy
            raise
        save_network(network, self.network_file)
        return network

    def _start_anvil(self, port: int, chain_id: int, block_time: int | None, log_name: str,
                     pid_file: Path) -> Web3:
        cmd = [find_anvil(), "--host", "127.0.0.1", "--port", str(port),
               "--chain-id", str(chain_id), "--accounts", str(DEVNET_ACCOUNT_COUNT)]
        if block_time:   # a block every N s besides one per transaction (which lands at once)
            cmd += ["--block-time", str(block_time), "--mixed-mining"]
        log = open(self.home / log_name, "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        pid_file.write_text(str(proc.pid))
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                text = (self.home / log_name).read_text(errors="replace")
                if "Address already in use" in text:
                    raise PortInUse(f"port {port} is already in use: pick another --port")
                raise DevnetError(f"anvil exited with {proc.returncode}; see {self.home / log_name}")
            # Connect only once OUR anvil says it listens: another process on the port (another
            # test's anvil) would answer too, while ours is failing to bind.
            listening = f"Listening on 127.0.0.1:{port}" in (self.home / log_name).read_text(
                errors="replace")
            try:
                if listening and w3.is_connected():
                    return w3
            except Exception:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise DevnetError("anvil did not answer within 30 s")
            time.sleep(0.05)

    def _add_peer(self, home: Network, port: int, block_time: int | None,
                  bridge: BridgeParams | None) -> Network:
        """The second chain: anvil, the validators that form the bridge's genesis committee,
        the bridge, and the devnet accounts funded with the peer's TUSD and TSTK (minted once to
        the deployer: their mint role then goes to the peer's Timelock with the bridge)."""
        w3 = self._start_anvil(port, PEER_CHAIN_ID, block_time, "anvil-peer.log", self.peer_pid_file)
        for index in BRIDGE_VALIDATORS:
            validators = Validators(Chain(home, devnet_account(index)))
            if validators.weight_of(devnet_account(index).address) == 0:
                validators.register(BRIDGE_VALIDATOR_STAKE)
        remote = Network(name="devnet-peer", chain_id=PEER_CHAIN_ID,
                         rpc_url=w3.provider.endpoint_uri,  # type: ignore[attr-defined]
                         contracts={})
        params = bridge or BridgeParams(guardian=devnet_account(BRIDGE_GUARDIAN).address)
        network = deploy_bridge(home, remote, devnet_account(DEPLOYER), params,
                                peer_name="devnet-peer",
                                peer_supply=DEVNET_ACCOUNT_COUNT * FUND_PAYMENT,
                                peer_stake_supply=DEVNET_ACCOUNT_COUNT * FUND_STAKE)
        peer = Chain(network.peer(PEER_CHAIN_ID), devnet_account(DEPLOYER))
        for index in range(DEVNET_ACCOUNT_COUNT):
            if index != DEPLOYER:
                address = devnet_account(index).address
                peer.send(peer.payment_token.functions.transfer(address, FUND_PAYMENT))
                peer.send(peer.stake_token.functions.transfer(address, FUND_STAKE))
        return network

    def up_anywhere(self, chains: int = 1, tries: int = 3, **options) -> Network:
        """`up` on free ports (`free_port`), drawing again when another process takes them
        first (PortInUse): what tests, benches and the demo use."""
        for attempt in range(tries):
            try:
                return self.up(port=free_port(chains), chains=chains, **options)
            except PortInUse:
                if attempt == tries - 1:
                    raise
        raise DevnetError("unreachable: tries must be at least 1")

    def down(self) -> bool:
        """Stop the devnet's anvil (both, on a two-chain devnet); False if none was running."""
        stopped = [_stop(self.pid(), self.pid_file), _stop(self.peer_pid(), self.peer_pid_file)]
        return any(stopped)


def _pid_in(pid_file: Path) -> int | None:
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text())
    return pid if _alive(pid) else None


def _stop(pid: int | None, pid_file: Path) -> bool:
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.05)
    else:
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
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


def liveness_confirmations(network: Network, configured: int | None) -> int:
    """Blocks an epoch's seed must be buried under before beats sign it or are receipted: the
    configured number, else 0 on the devnet's own chains (anvil mines a block per transaction:
    waiting for more would stall a quiet devnet, and it never reorgs), else
    protocol.liveness.CONFIRMATIONS (docs/uptime.md, "Reorgs")."""
    if configured is not None:
        return configured
    if network.chain_id in (DEVNET_CHAIN_ID, PEER_CHAIN_ID):
        return 0
    return LIVENESS_CONFIRMATIONS


def bridge_confirmations(network: Network, configured: int | None) -> int:
    """Blocks a bridge message must be buried under before it is signed or carried: the
    configured number, else, on the devnet's own chains only, protocol.bridge's devnet default.
    Anywhere else the operator must name the source chain's finality: a signature on a message
    that a reorg then removes is a provable forgery, and its value has no lock behind it."""
    if configured is not None:
        return configured
    chain_ids = {net.chain_id for net in network.chains()}
    if chain_ids <= {DEVNET_CHAIN_ID, PEER_CHAIN_ID}:
        return DEFAULT_CONFIRMATIONS
    raise BridgeError(
        f"network {network.name!r} (chains {', '.join(map(str, sorted(chain_ids)))}) is not the "
        "devnet: set the bridge's confirmations to the source chain's finality depth (the "
        "validator's [bridge] confirmations, the relayer's --confirmations); the devnet "
        f"default of {DEFAULT_CONFIRMATIONS} blocks would sign messages a reorg can remove")
