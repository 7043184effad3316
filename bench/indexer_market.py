"""A large market for the explorer benchmark (bench/indexer.py): many providers with hourly
heartbeats and a lease market spread over many blocks, on a local anvil, saved for reuse.

Built on `tessera.explorer.simulate.Workload` (batched `eth_sendTransaction` through anvil's
unlocked accounts, automine off, one block per `mine()` at a chosen time), with:

- N providers whose keys come from fixed seeds (anvil funds only ten accounts): anvil sends for
  them (`anvil_autoImpersonateAccount`), `anvil_setBalance` pays their gas, the deployer transfers
  their stake, and their own keys sign their bids;
- an uptime epoch of an hour (deployed with epoch_length=3600) cut into `slots` blocks, one block
  every few minutes of chain time; every online provider sends one heartbeat per epoch (naming
  the previous block by number and hash, as provider/heartbeats.py does), in the block of its
  slot; a provider is offline for a single epoch now and then and, rarely, for a long stretch;
- once per epoch a `Workload.round`: new orders and leases, withdrawals, top-ups, results and
  closes, and stake changes, slashes, offer updates and jails for a sample of the providers.

`start_anvil` runs anvil with `--dump-state` (written when anvil stops) or `--load-state`, so a
market is generated once and indexed by every backend and later run. Devnet only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from unittest import mock

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.deploy import DeployParams, deploy_all
from tessera.chain.devnet import DEPLOYER, DEVNET_CHAIN_ID, TREASURY, find_anvil, fund_devnet_accounts
from tessera.chain.network import Network, load_network, save_network
from tessera.explorer import simulate
from tessera.explorer.simulate import MAX_UINT, MODELS, TSTK, TUSD, SimProvider, Workload

EPOCH_LENGTH = 3600


class Anvil:
    """One anvil process; `stop()` (SIGTERM) makes it write its `--dump-state` file."""

    def __init__(self, port: int, log: Path, load_state: Path | None = None,
                 dump_state: Path | None = None):
        cmd = [find_anvil(), "--host", "127.0.0.1", "--port", str(port), "--chain-id",
               str(DEVNET_CHAIN_ID), "--accounts", "10", "--silent"]
        if load_state:
            cmd += ["--load-state", str(load_state)]
        if dump_state:
            # Keep two past states in memory: each is a copy of every account's storage, and
            # with 64 kept, anvil's memory grew by about 16 KB an event (16 GB at a million).
            # Blocks, transactions and logs are all kept and dumped.
            cmd += ["--dump-state", str(dump_state), "--prune-history", "2"]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        w3 = Web3(Web3.HTTPProvider(self.url))
        deadline = time.monotonic() + 900          # loading a large state takes a while
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"anvil exited with {self.proc.returncode}; see {log}")
            try:
                if w3.is_connected():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("anvil did not answer within 900 s")
            time.sleep(0.2)

    def stop(self, timeout: float = 900) -> None:
        """SIGTERM to the whole process group and wait until every process in it is gone: the
        npm `anvil` is a node shim around the real binary, which writes the dump as it exits
        (the shim exits at once; renaming the dump before the binary is done loses blocks)."""
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.killpg(pgid, signal.SIGKILL)
        self.proc.wait()


def deploy(url: str, network_file: Path, epoch_length: int = EPOCH_LENGTH) -> Network:
    """Deploy every contract (uptime epoch `epoch_length` s) and fund the devnet accounts, as
    `Devnet.up(epoch_length=...)` does, on an anvil this module started."""
    w3 = Web3(Web3.HTTPProvider(url))
    params = DeployParams(treasury=devnet_account(TREASURY).address).with_epoch(epoch_length)
    network = deploy_all(w3, devnet_account(DEPLOYER), params, name="devnet")
    fund_devnet_accounts(Chain(network, devnet_account(DEPLOYER)))
    save_network(network, network_file)
    return network


def open_network(network_file: Path, url: str) -> Network:
    """The saved network, pointed at `url` (the port changes between runs)."""
    network = load_network(network_file)
    return network.model_copy(update={"rpc_url": url})


class BenchMarket(Workload):
    """`Workload` with `providers` seeded provider keys, hourly heartbeats and many blocks."""

    def __init__(self, network: Network, providers: int, seed: int = 1, slots: int = 12,
                 orders_per_epoch: int | None = None, churn: float = 0.1):
        super().__init__(network, seed=seed, providers=(), tenants=range(2, 10))
        self.n = providers
        self.slots = slots
        self.orders_per_epoch = orders_per_epoch or max(4, providers // 20)
        self.churn = churn
        self._seed = seed
        self.uptime = Chain(network).uptime
        self.genesis = self.uptime.functions.genesis().call()
        self.epoch_length = self.uptime.functions.epoch_length().call()
        self.keys: dict[int, LocalAccount] = {}
        self.slot_of: dict[str, int] = {}
        self.down_until: dict[str, int] = {}    # address -> first epoch it is online again
        self.beat: dict[str, int] = {}          # address -> last epoch with its heartbeat
        self.events = 0
        self.heartbeats = 0
        self.blocks = 0
        self.lease_count = 0

    # -- plumbing --------------------------------------------------------------------------
    def mine(self, advance: int = 1) -> list[dict]:
        receipts = super().mine(advance)
        self.events += sum(len(r["logs"]) for r in receipts)
        self.blocks += 1
        return receipts

    def _key(self, index: int) -> LocalAccount:
        return self.keys[index] if index in self.keys else devnet_account(index)

    # -- setup -----------------------------------------------------------------------------
    def setup(self, slasher: bool = True) -> None:
        """Tenants and the slasher as `Workload.setup`; then the seeded providers: gas money,
        stake from the deployer, approve and register, a few hundred to a block."""
        self._rpc("anvil_autoImpersonateAccount", [True])
        super().setup(slasher)
        rng = self.rng
        for i in range(self.n):
            index = 1000 + i
            account = Account.from_key(keccak(text=f"tessera-bench-provider-{self.rng_seed}-{i}"))
            self.keys[index] = account
            p = SimProvider(index, account.address, rng.choice(MODELS), rng.randint(1, 8),
                            rng.randint(5, 30) * TUSD // 10, rng.randint(100, 300) * TSTK)
            self.providers[account.address] = p
            self.slot_of[account.address] = i % self.slots
        self._batch([("anvil_setBalance", [a, hex(10**21)]) for a in self.providers])
        for p in self.providers.values():
            self.send(self.deployer, self.stake, "transfer", p.address, 100_000 * TSTK)
        self.mine(60)
        for n, p in enumerate(self.providers.values(), 1):
            self.send(p.address, self.stake, "approve", self.registry.address, MAX_UINT)
            self.send(p.address, self.registry, "register", p.stake, p.model, p.gpus, 81920,
                      1000 + p.index, f"http://10.0.{p.index // 250}.{p.index % 250}:7000", p.floor)
            if n % 250 == 0:
                self.mine(60)
        self.mine(60)

    @property
    def rng_seed(self) -> int:
        return self._seed

    # -- heartbeats ------------------------------------------------------------------------
    def _heartbeats(self, t: int) -> None:
        """Queue the heartbeats due in a block at time `t`: every online provider whose slot has
        come in this epoch and that has not beaten in it yet."""
        epoch, into = divmod(t - self.genesis, self.epoch_length)
        slot = into * self.slots // self.epoch_length
        latest = self._rpc("eth_getBlockByNumber", ["latest", False])
        number, block_hash = int(latest["number"], 16), bytes.fromhex(latest["hash"][2:])
        for address in self.providers:
            if self.slot_of[address] > slot or self.beat.get(address) == epoch:
                continue
            if self.down_until.get(address, 0) > epoch:
                continue
            roll = self.rng.random()
            if roll < 0.002:          # a long outage: 2 to 48 epochs
                self.down_until[address] = epoch + self.rng.randint(2, 48)
                continue
            if roll < 0.012:          # misses this one epoch
                self.beat[address] = epoch
                continue
            self.send(address, self.uptime, "heartbeat", epoch, number, block_hash)
            self.beat[address] = epoch
            self.heartbeats += 1

    def _provider_events(self, t: int) -> None:
        """Stake, slash, offer and jail actions for a `churn` share of the providers (the
        Workload's rates are per round: an hourly round for every provider would slash each
        one every day or two), stake back for the inactive, then the block's heartbeats."""
        everyone = self.providers
        self.providers = {a: p for a, p in everyone.items() if self.rng.random() < self.churn}
        try:
            super()._provider_events(t)
        finally:
            self.providers = everyone
        for p in everyone.values():
            if not p.active and self.rng.random() < 0.2:
                self.send(p.address, self.registry, "add_stake", 200 * TSTK)
                p.stake += 200 * TSTK
                p.active = True
        self._heartbeats(t)

    # -- the timeline ----------------------------------------------------------------------
    def epoch(self) -> None:
        """About one uptime epoch of chain time: a market round (three blocks, the last
        `epoch_length / slots` s later) and then a block every `epoch_length / slots` s, each
        with the heartbeats of its slot."""
        step = self.epoch_length // self.slots
        # Workload.round signs bids with `devnet_account(p.index)`; the seeded keys sign here.
        with mock.patch.object(simulate, "devnet_account", self._key):
            self.lease_count += self.round(self.orders_per_epoch, step)
        self.leases = {i: lease for i, lease in self.leases.items() if not lease.closed}
        for _ in range(self.slots - 1):
            self._heartbeats(self.now + step)
            self.mine(step)

    def summary(self) -> dict:
        return {"providers": self.n, "events": self.events, "heartbeats": self.heartbeats,
                "transactions": self.sent, "blocks_mined": self.blocks, "leases": self.lease_count,
                "chain_days": round((self.now - self.genesis) / 86400, 2)}


def generate(network: Network, providers: int, events: int, seed: int, progress,
             orders_per_epoch: int | None = None) -> dict:
    """Grow a market until it emitted at least `events` logs; its summary with timings."""
    started = time.perf_counter()
    market = BenchMarket(network, providers, seed=seed, orders_per_epoch=orders_per_epoch)
    market.setup()
    epochs = 0
    while market.events < events:
        market.epoch()
        epochs += 1
        elapsed = time.perf_counter() - started
        if epochs % 5 == 0 or market.events >= events:
            progress(market.events, elapsed, market.summary())
    market.restore_automine()
    elapsed = time.perf_counter() - started
    return {**market.summary(), "epochs": epochs, "orders_per_epoch": market.orders_per_epoch,
            "generate_s": round(elapsed, 1), "generate_events_per_s": round(market.events / elapsed, 1)}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
