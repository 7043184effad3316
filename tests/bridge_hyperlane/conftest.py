"""Two anvil nodes with real Hyperlane core and Tessera's bridge on both (module-scoped).

Chain A (31337, TokenBridge in mint mode) and chain B (31338, lock mode), each an anvil on a
free port. Devnet account 0 deploys Hyperlane core on both with the CLI (`hyperlane core
deploy`, the trusted-relayer ISM naming account 0 itself, which then relays); meanwhile
account 1 deploys Tessera's TUSD, BridgeOutbox, BridgeInbox (a two-member committee, accounts
7 and 8) and TokenBridge on both, then B's HyperlaneDispatcher (B's outbox, B's Mailbox) and the
links: A's inbox trusts B's outbox, A's Mailbox, B's dispatcher as chain B's Hyperlane sender
and, as its own ISM, the trusted-relayer ISM the CLI deployed on A.

Skipped, with the reason, when the Hyperlane CLI is not installed (`scripts/setup.sh --tests`
installs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from tests.bridge_hyperlane.hyperlane import (
    MAILBOX_ABI,
    Anvil,
    Cli,
    core_config,
    find_cli,
    read_addresses,
    start_anvil,
    write_chain_metadata,
)
from web3 import Web3
from web3.contract import Contract

from tessera.chain.accounts import devnet_account
from tessera.chain.compiler import compile_contract
from tessera.chain.deploy import deploy_contract as _deploy
from tessera.protocol.bridge import DEFAULT_THRESHOLD_BPS, address_to_bytes32

CHAIN_A, CHAIN_B = 31337, 31338
TUSD = 10**6
CAPACITY = 100_000 * TUSD
REFILL = CAPACITY // 86_400
LARGE = 10_000 * TUSD
DELAY = 3_600
START_BALANCE = 1_000 * TUSD
HYPERLANE, OWNER, RELAYER, ALICE, BOB = (devnet_account(i) for i in (0, 1, 3, 5, 6))
COMMITTEE = sorted((devnet_account(i) for i in (7, 8)), key=lambda a: int(a.address, 16))


def transact(w3: Web3, account: LocalAccount, call, value: int = 0, gas: int | None = None) -> dict:
    """Sign and send a contract call from `account` (with `gas`, else the node's estimate);
    the receipt (raises if it reverted)."""
    fields = {"from": account.address, "value": value, "chainId": w3.eth.chain_id,
              "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    if gas is not None:
        fields["gas"] = gas
    tx = call.build_transaction(fields)
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    assert receipt["status"] == 1, f"{call.fn_name} reverted (tx {tx_hash.hex()})"
    return receipt


@dataclass
class Side:
    """One chain: its anvil and its contracts (web3 objects)."""
    anvil: Anvil
    token: Contract
    outbox: Contract
    inbox: Contract
    bridge: Contract
    mailbox: Contract | None = None
    dispatcher: Contract | None = None

    @property
    def w3(self) -> Web3:
        return self.anvil.w3


@dataclass
class HyperlaneBridge:
    a: Side
    b: Side
    cli: Cli
    registry: Path


def _contract(w3: Web3, name: str, address: str) -> Contract:
    return w3.eth.contract(address=address, abi=compile_contract(name).abi)


def _deploy_tessera(anvil: Anvil, mint_mode: bool) -> Side:
    """TUSD, outbox, inbox, TokenBridge on one chain, owned by OWNER."""
    w3 = anvil.w3
    token, _ = _deploy(w3, OWNER, "PaymentToken", "Tessera USD", "TUSD", 6, "Tessera USD", "1")
    outbox, _ = _deploy(w3, OWNER, "BridgeOutbox")
    inbox, _ = _deploy(w3, OWNER, "BridgeInbox", [a.address for a in COMMITTEE], [1, 1],
                       DEFAULT_THRESHOLD_BPS, DELAY, OWNER.address)
    bridge, _ = _deploy(w3, OWNER, "TokenBridge", token, outbox, inbox, mint_mode, OWNER.address)
    side = Side(anvil, _contract(w3, "PaymentToken", token), _contract(w3, "BridgeOutbox", outbox),
                _contract(w3, "BridgeInbox", inbox), _contract(w3, "TokenBridge", bridge))
    if mint_mode:
        transact(w3, OWNER, side.token.functions.set_minter(bridge, True))
    else:
        transact(w3, OWNER, side.token.functions.mint(ALICE.address, START_BALANCE))
        transact(w3, ALICE, side.token.functions.approve(bridge, 2**256 - 1))
    return side


def _deploy_dispatcher(side: Side) -> Contract:
    address, _ = _deploy(side.w3, OWNER, "HyperlaneDispatcher", side.outbox.address,
                         side.mailbox.address)
    return side.w3.eth.contract(address=address, abi=compile_contract("HyperlaneDispatcher").abi)


def _link(a: Side, b: Side) -> None:
    """Route B -> A, with Hyperlane as a second transport into A's inbox (B's TokenBridge the
    value sender)."""
    transact(a.w3, OWNER, a.inbox.functions.register_source(CHAIN_B, b.outbox.address))
    transact(a.w3, OWNER, a.inbox.functions.set_value_sender(CHAIN_B, b.bridge.address, CAPACITY,
                                                             REFILL, LARGE))
    transact(b.w3, OWNER, b.outbox.functions.set_inbox(CHAIN_A, a.inbox.address))
    transact(b.w3, OWNER, b.bridge.functions.set_peer(CHAIN_A, a.bridge.address, CAPACITY // 2))
    transact(a.w3, OWNER, a.bridge.functions.set_peer(CHAIN_B, b.bridge.address, CAPACITY // 2))
    transact(a.w3, OWNER, a.inbox.functions.set_mailbox(a.mailbox.address))
    transact(a.w3, OWNER, a.inbox.functions.set_hyperlane_sender(
        CHAIN_B, address_to_bytes32(b.dispatcher.address)))
    # the inbox names its ISM itself: a later change of the Mailbox's default does not apply
    transact(a.w3, OWNER, a.inbox.functions.set_ism(a.mailbox.functions.defaultIsm().call()))


@pytest.fixture(scope="module")
def hyperlane_bridge(tmp_path_factory) -> Iterator[HyperlaneBridge]:
    command = find_cli()
    if command is None:
        pytest.skip("the Hyperlane CLI (@hyperlane-xyz/cli with Node.js >= 22) is not installed: "
                    "run scripts/setup.sh --tests")
    work = tmp_path_factory.mktemp("hyperlane")
    registry = work / "registry"
    anvils: list[Anvil] = []
    deploys = []
    try:
        anvils.append(start_anvil("tesseraa", CHAIN_A, work))
        anvils.append(start_anvil("tesserab", CHAIN_B, work))
        config = work / "core-config.yaml"
        config.write_text(Web3.to_json(core_config(HYPERLANE.address, HYPERLANE.address)))
        for anvil in anvils:
            write_chain_metadata(registry, anvil)
        cli = Cli(command, registry, HYPERLANE, work)
        # both core deployments run while Tessera's contracts are deployed (other accounts)
        deploys = [(cli.core_deploy(anvil.name, config), f"core-deploy-{anvil.name}.log")
                   for anvil in anvils]
        a, b = _deploy_tessera(anvils[0], True), _deploy_tessera(anvils[1], False)
        for proc, log_name in deploys:
            cli.wait(proc, log_name, timeout=180)
        for side in (a, b):
            mailbox = read_addresses(registry, side.anvil.name)["mailbox"]
            side.mailbox = side.w3.eth.contract(address=mailbox, abi=MAILBOX_ABI)
            assert side.mailbox.functions.localDomain().call() == side.anvil.chain_id
        b.dispatcher = _deploy_dispatcher(b)
        _link(a, b)
        yield HyperlaneBridge(a, b, cli, registry)
    finally:
        for proc, _ in deploys:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for anvil in anvils:
            anvil.stop()
