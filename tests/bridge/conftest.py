"""Two real anvil nodes with the bridge between them, and the off-chain parties in-process.

- `bridge_env` (session): `Devnet.up(chains=2)` (home chain 31337, peer 31338, the bridge
  deployed with the default BridgeParams; devnet accounts 7, 8, 9 are the registered
  validators and the genesis committee) with no block timer: tests mine blocks themselves, so
  that "confirmed" is exact. The three validators' attestation routes are served by uvicorn on
  free ports and published as their endpoints in the Validators contract; each test points
  them at fresh attesters.
- `bridge` (function): both chains snapshotted before the test and reverted after it
  (evm_snapshot / evm_revert), fresh attesters (their SQLite under tmp_path), and helpers to
  mine, attest, relay and read balances. Every Chain is created inside the test: a revert
  rewinds account nonces, which a Chain used before it would not know.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_utils import keccak
from fastapi import FastAPI
from tests.support.uvicorn_server import serve
from web3 import Web3

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_inbox import BridgeInbox
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.client import Chain
from tessera.chain.devnet import (
    BRIDGE_VALIDATORS,
    PEER_CHAIN_ID,
    Devnet,
    find_anvil,
    free_port,
)
from tessera.chain.network import Network
from tessera.chain.timelock import Timelock
from tessera.chain.token_bridge import TokenBridge
from tessera.chain.tokens import PaymentToken
from tessera.chain.validators import Validators
from tessera.logs import EventLog
from tessera.relayer.relay import Relayer
from tessera.validator.bridge_attester import BridgeAttester, attestation_routes

HOME, PEER = 31337, PEER_CHAIN_ID
TUSD = 10**6
RELAYER, SENDER, OTHER, GUARDIAN, OWNER = 3, 5, 6, 1, 0
CONFIRMATIONS = 2


class Proxy:
    """Stands for whichever attester the current test made (the routes are served all session)."""

    def __init__(self):
        self.target: BridgeAttester | None = None

    def __getattr__(self, name):
        if self.target is None:
            raise RuntimeError("no attester in this test")
        return getattr(self.target, name)


@dataclass
class BridgeEnv:
    devnet: Devnet
    network: Network
    proxies: dict[int, Proxy]          # validator account index -> its served attester
    urls: dict[int, str]


@pytest.fixture(scope="session")
def bridge_env(tmp_path_factory) -> Iterator[BridgeEnv]:
    home = tmp_path_factory.mktemp("bridge-devnet")
    devnet = Devnet(home / "devnet")
    network = devnet.up_anywhere(chains=2)
    try:
        proxies, urls = {}, {}
        with _served(BRIDGE_VALIDATORS, proxies, urls):
            for index in BRIDGE_VALIDATORS:
                Validators(Chain(network, devnet_account(index))).set_endpoint(urls[index])
            yield BridgeEnv(devnet, network, proxies, urls)
    finally:
        devnet.down()


@contextmanager
def _served(indexes, proxies, urls):
    if not indexes:
        yield
        return
    index, rest = indexes[0], indexes[1:]
    proxies[index] = Proxy()
    app = FastAPI()
    app.include_router(attestation_routes(proxies[index]))
    with serve(app) as url:
        urls[index] = url
        with _served(rest, proxies, urls):
            yield


@contextmanager
def extra_anvil(tmp_path: Path, chain_id: int) -> Iterator[str]:
    """One more bare anvil (chain `chain_id`) for the test; yields its RPC URL."""
    port = free_port()
    proc = subprocess.Popen([find_anvil(), "--host", "127.0.0.1", "--port", str(port),
                             "--chain-id", str(chain_id)],
                            stdout=open(tmp_path / f"anvil-{chain_id}.log", "wb"),
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        w3 = Web3(Web3.HTTPProvider(url))
        deadline = time.monotonic() + 30
        while not w3.is_connected():
            assert time.monotonic() < deadline and proc.poll() is None, "anvil did not start"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def rpc(network: Network, method: str, *params):
    chain = Chain(network)
    reply = chain.w3.provider.make_request(method, list(params))
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def balance_slot(network: Network, token: str, holder: str, balance: int) -> int:
    """The storage slot of `holder`'s balance in the ERC-20 at `token` (a Vyper HashMap: keccak of
    the slot then the key, or the other way round), found by matching `balance`: the tests that
    stand in for a drain overwrite it."""
    key = bytes.fromhex(holder.removeprefix("0x").rjust(64, "0"))
    for slot in range(64):
        for where in (keccak(slot.to_bytes(32, "big") + key), keccak(key + slot.to_bytes(32, "big"))):
            if int(rpc(network, "eth_getStorageAt", token, "0x" + where.hex(), "latest"), 16) == balance:
                return int.from_bytes(where, "big")
    raise AssertionError("no balance slot found")


@dataclass
class Bridge:
    env: BridgeEnv
    tmp: Path
    attesters: dict[int, BridgeAttester] = field(default_factory=dict)

    @property
    def network(self) -> Network:
        return self.env.network

    def net(self, chain_id: int) -> Network:
        return self.network.chain(chain_id)

    def chain(self, chain_id: int, account: int | None = None) -> Chain:
        return Chain(self.net(chain_id), devnet_account(account) if account is not None else None)

    def mine(self, chain_id: int, blocks: int = CONFIRMATIONS) -> None:
        for _ in range(blocks):
            rpc(self.net(chain_id), "evm_mine")

    def warp(self, chain_id: int, seconds: int) -> None:
        rpc(self.net(chain_id), "evm_increaseTime", seconds)
        rpc(self.net(chain_id), "evm_mine")

    def attest(self, only: tuple[int, ...] | None = None) -> None:
        for index, attester in self.attesters.items():
            if only is None or index in only:
                attester.poll_once()

    def relayer(self, name: str = "relayer", confirmations: int = CONFIRMATIONS,
                **options) -> Relayer:
        return Relayer(self.network, devnet_account(RELAYER), self.tmp / f"{name}.json",
                       confirmations, log=EventLog("relayer"), **options)

    def settle(self, relayer: Relayer | None = None, rounds: int = 4) -> Relayer:
        """Mine past the confirmations on both chains, attest, relay; a bounce or a second hop
        needs another round, so a few rounds."""
        relayer = relayer or self.relayer()
        for _ in range(rounds):
            self.mine(HOME)
            self.mine(PEER)
            self.attest()
            relayer.poll_once()
            if not relayer.state["open"]:
                break
        return relayer

    def tusd(self, chain_id: int, address: str) -> int:
        return PaymentToken(self.chain(chain_id)).balance_of(address)

    def send(self, source: int, account: int, amount: int, to: str | None = None) -> bytes:
        chain = self.chain(source, account)
        destination = PEER if source == HOME else HOME
        message_id, _ = TokenBridge(chain).send(destination, to or chain.address, amount)
        return message_id

    def inbox(self, chain_id: int, account: int | None = None) -> BridgeInbox:
        return BridgeInbox(self.chain(chain_id, account))

    def outbox(self, chain_id: int) -> BridgeOutbox:
        return BridgeOutbox(self.chain(chain_id))

    def token_bridge(self, chain_id: int, account: int | None = None) -> TokenBridge:
        return TokenBridge(self.chain(chain_id, account))

    def timelock(self, chain_id: int, account: int = OWNER) -> Timelock:
        """The chain's Timelock, which owns its bridge (the deployer proposes and executes)."""
        return Timelock(self.chain(chain_id, account))

    def owner_action(self, chain_id: int, contract: str, function: str, *args) -> None:
        """An owner action the only way there is: scheduled through the chain's Timelock, the
        delay warped past, executed."""
        timelock = self.timelock(chain_id)
        step, ready_at, _ = timelock.advance(contract, function, *args)
        assert step == "scheduled"
        self.warp(chain_id, ready_at - self.chain(chain_id).block_timestamp())
        assert timelock.advance(contract, function, *args)[0] == "executed"


@pytest.fixture
def bridge(bridge_env, tmp_path) -> Iterator[Bridge]:
    snapshots = {cid: rpc(bridge_env.network.chain(cid), "evm_snapshot") for cid in (HOME, PEER)}
    helper = Bridge(bridge_env, tmp_path)
    try:
        for index, proxy in bridge_env.proxies.items():
            attester = BridgeAttester(devnet_account(index), bridge_env.network,
                                      tmp_path / f"validator-{index}", EventLog(f"attester-{index}"),
                                      CONFIRMATIONS)
            proxy.target = attester
            helper.attesters[index] = attester
        yield helper
    finally:
        for proxy in bridge_env.proxies.values():
            proxy.target = None
        for attester in helper.attesters.values():
            attester.close()
        for cid, snapshot in snapshots.items():
            assert rpc(bridge_env.network.chain(cid), "evm_revert", snapshot)
