"""Deploy the bridge (docs/bridge.md) between a home chain, where `deploy_all` already put the
market, and a peer chain, and describe both in one Network (`peers`).

On each chain: BridgeOutbox, BridgeInbox (the genesis committee, the threshold, the delay, the
guardian) and TokenBridge; the home's TokenBridge mints and burns the home's TUSD (mint mode:
the deployer, who still owns the home PaymentToken, makes it a minter), the peer's locks a TUSD
deployed there for it (with a StakeToken for stake on the peer, a later tranche). Then each
inbox registers the other chain's outbox with the limits of `BridgeParams`, each outbox names
the other chain's inbox (where forgery proofs are checked) and each TokenBridge names the
other as its peer.

The genesis committee is the home chain's active validators weighted by stake (or an explicit
one, `committee=`); on a fresh devnet none is registered yet, so `tessera devnet up --chains 2`
registers its validator accounts first (chain/devnet.py).

Owner: the deployer owns the six bridge contracts. That is a known gap: the target is the home
Timelock pattern of deploy.py (every owner action waits in the open), which needs a timelock
on the peer chain too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3 import Web3

from tessera.chain.bridge_inbox import BridgeInbox
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.client import Chain
from tessera.chain.deploy import deploy_contract, owner_call
from tessera.chain.network import Network, PeerChain
from tessera.chain.token_bridge import TokenBridge
from tessera.chain.validators import Validators
from tessera.errors import BridgeError
from tessera.protocol.bridge import (
    BPS,
    DEFAULT_THRESHOLD_BPS,
    MAX_DELAY,
    MIN_THRESHOLD_BPS,
    choose_committee,
    committee_refusal,
)
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL, STAKE_DECIMALS, STAKE_SYMBOL

TUSD = 10**PAYMENT_DECIMALS
DAY = 86_400


@dataclass(frozen=True)
class BridgeParams:
    """The bridge's limits, the same on both routes (docs/bridge.md, "Limits").

    - `capacity` (100,000 TUSD): the most value one source chain can deliver in a burst. It is
      the blast radius of a stolen committee quorum (Ronin: 5 of 9 keys) until the guardian
      pauses; every devnet account holds 100,000 TUSD, and a lease's escrow is tens of TUSD.
    - `refill_per_s` (capacity / 1 day, 1.157 TUSD/s): an emptied bucket is full again after a
      day, so a thief gets at most one more capacity per day that nobody notices.
    - `large_threshold` (10,000 TUSD): transfers above it wait `delay`; payments for compute
      are far below it and arrive at once.
    - `delay` (1 hour): the time a guardian watching `MessageQueued` has to cancel a large
      transfer it does not recognise.
    - `max_transfer` (50,000 TUSD, half the capacity): at most the destination's capacity, or a
      transfer would be refused there for good; half, so one transfer cannot empty the bucket
      for everyone else.
    """
    guardian: str
    threshold_bps: int = DEFAULT_THRESHOLD_BPS
    capacity: int = 100_000 * TUSD
    refill_per_s: int = 100_000 * TUSD // DAY
    large_threshold: int = 10_000 * TUSD
    delay: int = 3_600
    max_transfer: int = 50_000 * TUSD

    def __post_init__(self) -> None:
        if not MIN_THRESHOLD_BPS <= self.threshold_bps <= BPS:
            raise ValueError(f"threshold_bps must be {MIN_THRESHOLD_BPS}..{BPS} (a majority of "
                             f"the committee's weight), got {self.threshold_bps}")
        if not 0 <= self.delay <= MAX_DELAY:
            raise ValueError(f"delay must be 0..{MAX_DELAY} s (30 days), got {self.delay}")
        if self.max_transfer > self.capacity:
            raise ValueError(f"max_transfer ({self.max_transfer}) must not exceed capacity "
                             f"({self.capacity}): a larger transfer would be refused for good")
        if self.capacity <= 0 or self.refill_per_s <= 0 or self.max_transfer <= 0:
            raise ValueError("capacity, refill_per_s and max_transfer must be positive")


Committee = tuple[list[str], list[int]]


def validator_committee(chain: Chain) -> Committee:
    """The home chain's active validators weighted by stake, ascending by address: the genesis
    committee. Over MAX_COMMITTEE validators, the most staked ones (ties: lower address)."""
    validators = Validators(chain)
    weighted = [(Web3.to_checksum_address(who), validators.weight_of(who))
                for who in validators.addresses()]
    members, weights = choose_committee(weighted)
    if not members:
        raise BridgeError(f"chain {chain.network.chain_id} has no active validator to form the "
                          "bridge committee: register validators first, or pass a committee")
    return members, weights


def deploy_peer_tokens(w3: Web3, deployer: LocalAccount) -> tuple[dict[str, str], int]:
    """The peer chain's TUSD (6 decimals; the deployer owns it and mints on the devnet) and
    TSTK; returns their addresses and the first block."""
    payment, first = deploy_contract(w3, deployer, "PaymentToken", "Tessera USD", PAYMENT_SYMBOL,
                             PAYMENT_DECIMALS, "Tessera USD", "1")
    stake, _ = deploy_contract(w3, deployer, "StakeToken", "Tessera Stake", STAKE_SYMBOL, STAKE_DECIMALS,
                       "Tessera Stake", "1")
    return {"PaymentToken": payment, "StakeToken": stake}, first


def deploy_bridge_side(w3: Web3, deployer: LocalAccount, token: str, mint_mode: bool,
                       committee: Committee, params: BridgeParams) -> tuple[dict[str, str], int]:
    """BridgeOutbox, BridgeInbox and TokenBridge on one chain (in that order: a chain given the
    same deployer nonce gets the same addresses, which the replay test relies on)."""
    members, weights = committee
    outbox, first = deploy_contract(w3, deployer, "BridgeOutbox")
    inbox, _ = deploy_contract(w3, deployer, "BridgeInbox", members, weights, params.threshold_bps,
                       params.delay, Web3.to_checksum_address(params.guardian))
    token_bridge, _ = deploy_contract(w3, deployer, "TokenBridge", token, outbox, inbox, mint_mode,
                              Web3.to_checksum_address(params.guardian))
    return {"BridgeOutbox": outbox, "BridgeInbox": inbox, "TokenBridge": token_bridge}, first


def link_route(chain: Chain, peer_chain_id: int, peer: dict[str, str], params: BridgeParams) -> None:
    """On `chain` (the deployer's account): accept messages from the peer's outbox with the
    limits, let only the peer's TokenBridge carry value on that route (anyone else's value
    message could empty the bucket for free), name the peer's inbox, trust the peer's
    TokenBridge up to `max_transfer`."""
    inbox = BridgeInbox(chain)
    inbox.register_source(peer_chain_id, peer["BridgeOutbox"], params.capacity,
                          params.refill_per_s, params.large_threshold)
    inbox.set_value_sender(peer_chain_id, peer["TokenBridge"], True)
    BridgeOutbox(chain).set_inbox(peer_chain_id, peer["BridgeInbox"])
    TokenBridge(chain).set_peer(peer_chain_id, peer["TokenBridge"], params.max_transfer)


def deploy_bridge(home: Network, remote: Network, deployer: LocalAccount, params: BridgeParams,
                  committee: Committee | None = None, peer_name: str = "peer") -> Network:
    """Deploy the bridge between `home` (deployed by deploy_all, its PaymentToken still owned
    by `deployer`) and `remote` (a chain with nothing of Tessera's yet: its contracts may be
    empty; TUSD and TSTK are deployed there unless it names a PaymentToken). Returns `home`
    with its bridge contracts added and `remote` as a peer."""
    if home.chain_id == remote.chain_id:
        raise BridgeError(f"home and remote are the same chain ({home.chain_id})")
    home_w3 = Web3(Web3.HTTPProvider(home.rpc_url))
    remote_w3 = Web3(Web3.HTTPProvider(remote.rpc_url))
    for w3, net in ((home_w3, home), (remote_w3, remote)):
        if w3.eth.chain_id != net.chain_id:
            raise BridgeError(f"RPC {net.rpc_url} serves chain {w3.eth.chain_id}, not {net.chain_id}")
    members, weights = committee_of(*committee) if committee else validator_committee(Chain(home))
    problem = committee_refusal(members, list(weights))
    if problem:
        raise BridgeError(f"the bridge committee is refused: {problem}")
    remote_contracts = dict(remote.contracts)
    first_remote = remote.deploy_block
    if "PaymentToken" not in remote_contracts:
        tokens, first_remote = deploy_peer_tokens(remote_w3, deployer)
        remote_contracts.update(tokens)
    reuse = all(name in home.contracts for name in ("BridgeOutbox", "BridgeInbox", "TokenBridge"))
    if reuse:   # a second peer: the home's bridge serves every route
        home_side = {n: home.contracts[n] for n in ("BridgeOutbox", "BridgeInbox", "TokenBridge")}
    else:
        home_side, _ = deploy_bridge_side(home_w3, deployer, home.address("PaymentToken"), True,
                                          (members, list(weights)), params)
    remote_side, first = deploy_bridge_side(remote_w3, deployer, remote_contracts["PaymentToken"],
                                            False, (members, list(weights)), params)
    first_remote = first_remote or first
    home_net = home.model_copy(update={"contracts": {**home.contracts, **home_side}})
    remote_net = Network(name=peer_name, chain_id=remote.chain_id, rpc_url=remote.rpc_url,
                         contracts={**remote_contracts, **remote_side}, deploy_block=first_remote)
    link_route(Chain(home_net, deployer), remote.chain_id, remote_side, params)
    link_route(Chain(remote_net, deployer), home.chain_id, home_side, params)
    if not reuse:   # mint mode: the home TokenBridge mints what arrives, burns what leaves
        owner_call(home_w3, deployer, "PaymentToken", home.address("PaymentToken"),
                    "set_minter", home_side["TokenBridge"], True)
    peer = PeerChain(name=peer_name, chain_id=remote.chain_id, rpc_url=remote.rpc_url,
                     contracts=remote_net.contracts, deploy_block=first_remote)
    others = [p for p in home.peers if p.chain_id != remote.chain_id]
    return home_net.model_copy(update={"peers": [*others, peer]})


def committee_of(members: Sequence[str], weights: Sequence[int]) -> Committee:
    """An explicit committee, ascending by address (BridgeInbox requires that order)."""
    pairs = sorted(zip((Web3.to_checksum_address(m) for m in members), weights, strict=True),
                   key=lambda mw: int(mw[0], 16))
    return [m for m, _ in pairs], [w for _, w in pairs]
