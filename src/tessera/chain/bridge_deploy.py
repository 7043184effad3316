"""Deploy the bridge (docs/bridge.md) between a home chain, where `deploy_all` already put the
market, and a peer chain, and describe both in one Network (`peers`).

On each chain: BridgeOutbox, BridgeInbox (the genesis committee, the threshold, the delay, the
guardian) and TokenBridge; the home's TokenBridge mints and burns the home's TUSD (mint mode:
the deployer, who still owns the home PaymentToken, makes it a minter), the peer's locks a TUSD
deployed there for it. Where the peer has a StakeToken, a StakeBridge on each side does the same
for TSTK (docs/bridge.md, "Stake on another chain"): the home StakeToken must still be the
deployer's (`deploy_all(hand_over=False)`; `hand_home_to_timelock` after this). Then each inbox
registers the other chain's outbox and lists the other chain's TokenBridge (and StakeBridge)
as value senders with the limits of `BridgeParams`, each outbox names the other chain's inbox
(where forgery proofs are checked) and each TokenBridge names the other as its peer. The home
chain also gets BridgeOrders (no owner), which opens a Market order for a deposit sent from a
peer chain with `TokenBridge.send_call` (docs/bridge.md, "An order funded in one message").

The genesis committee is the home chain's active validators weighted by stake (or an explicit
one, `committee=`); on a fresh devnet none is registered yet, so `tessera devnet up --chains 2`
registers its validator accounts first (chain/devnet.py).

Owner: the Timelock of each chain (docs/contracts.md, "Owner powers"), as deploy.py does for
the home contracts. Once the routes are linked and the minter set, the home chain's three bridge
contracts go to the home Timelock (deploy_all's); on the peer a Timelock with the same delay
(the deployer proposes, cancels and executes) is deployed and takes the peer's three bridge
contracts and the TUSD and TSTK deployed there (their mint role moves with the ownership; the
devnet's peer TUSD supply, `peer_supply`, is minted to the deployer before). From then on a new
limit, route, guardian or unpause waits the delay in the open (CallScheduled); the guardian,
set at deploy, still pauses and cancels at once. A second peer reuses the home side, which the
home Timelock already owns: its home half of the route is scheduled there (`schedule_route`)
and made by `execute_route` after the delay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3 import Web3

from tessera.chain.client import Chain
from tessera.chain.compiler import BRIDGE_CONTRACT_NAMES, CONTRACT_ALIASES
from tessera.chain.deploy import deploy_contract, deploy_timelock, owner_call
from tessera.chain.network import Network, PeerChain
from tessera.chain.timelock import OwnerCall, Timelock
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
TSTK = 10**STAKE_DECIMALS
DAY = 86_400
STAKE_BRIDGE = "StakeBridge"
assert CONTRACT_ALIASES[STAKE_BRIDGE] == "TokenBridge"


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
    - `forgery_reward_bps` (10 %): what the prover of a forgery gets of the forger's stake; a
      fraction, since the forger itself may prove its own forgery first.

    The stake route (StakeBridge, TSTK) has its own bucket and limits, `stake_*`: capacity 1,000
    TSTK refilled in a day (ten providers' 100 TSTK minimum stake a day; minted TSTK is voting
    stake too, so a deployment keeps it well below a third of its validators' stake), transfers
    over 200 TSTK wait `delay`, at most 500 TSTK per transfer (docs/bridge.md).
    """
    guardian: str
    threshold_bps: int = DEFAULT_THRESHOLD_BPS
    capacity: int = 100_000 * TUSD
    refill_per_s: int = 100_000 * TUSD // DAY
    large_threshold: int = 10_000 * TUSD
    delay: int = 3_600
    max_transfer: int = 50_000 * TUSD
    stake_capacity: int = 1_000 * TSTK
    stake_refill_per_s: int = 1_000 * TSTK // DAY
    stake_large_threshold: int = 200 * TSTK
    stake_max_transfer: int = 500 * TSTK
    # the prover's share of a forger's slashed stake (the rest to the treasury): ForgerySlasher
    forgery_reward_bps: int = 1_000

    def __post_init__(self) -> None:
        if not MIN_THRESHOLD_BPS <= self.threshold_bps <= BPS:
            raise ValueError(f"threshold_bps must be {MIN_THRESHOLD_BPS}..{BPS} (a majority of "
                             f"the committee's weight), got {self.threshold_bps}")
        if not 0 <= self.delay <= MAX_DELAY:
            raise ValueError(f"delay must be 0..{MAX_DELAY} s (30 days), got {self.delay}")
        if not 0 <= self.forgery_reward_bps <= BPS // 2:
            raise ValueError(f"forgery_reward_bps must be 0..{BPS // 2} (the forger may prove its "
                             f"own forgery), got {self.forgery_reward_bps}")
        for prefix in ("", "stake_"):
            capacity, refill, most = (getattr(self, prefix + n)
                                      for n in ("capacity", "refill_per_s", "max_transfer"))
            if most > capacity:
                raise ValueError(f"{prefix}max_transfer ({most}) must not exceed {prefix}capacity "
                                 f"({capacity}): a larger transfer would be refused for good")
            if capacity <= 0 or refill <= 0 or most <= 0:
                raise ValueError(f"{prefix}capacity, {prefix}refill_per_s and {prefix}max_transfer "
                                 "must be positive")


Committee = tuple[list[str], list[int]]


def validator_weights(chain: Chain) -> list[tuple[str, int]]:
    """(validator, weight) of every address the home Validators ever registered (0: inactive)."""
    validators = Validators(chain)
    return [(Web3.to_checksum_address(who), validators.weight_of(who))
            for who in validators.addresses()]


def validator_committee(chain: Chain) -> Committee:
    """The home chain's active validators weighted by stake, ascending by address: the genesis
    committee. Over MAX_COMMITTEE validators, the most staked ones (ties: lower address)."""
    members, weights = choose_committee(validator_weights(chain))
    if not members:
        raise BridgeError(f"chain {chain.network.chain_id} has no active validator to form the "
                          "bridge committee: register validators first, or pass a committee")
    return members, weights


def deploy_peer_tokens(w3: Web3, deployer: LocalAccount) -> tuple[dict[str, str], int]:
    """The peer chain's TUSD (6 decimals) and TSTK, owned by the deployer until deploy_bridge
    hands them to the peer's Timelock; returns their addresses and the first block."""
    payment, first = deploy_contract(w3, deployer, "PaymentToken", "Tessera USD", PAYMENT_SYMBOL,
                             PAYMENT_DECIMALS, "Tessera USD", "1")
    stake, _ = deploy_contract(w3, deployer, "StakeToken", "Tessera Stake", STAKE_SYMBOL, STAKE_DECIMALS,
                       "Tessera Stake", "1")
    return {"PaymentToken": payment, "StakeToken": stake}, first


def deploy_bridge_side(w3: Web3, deployer: LocalAccount, token: str, mint_mode: bool,
                       committee: Committee, params: BridgeParams,
                       stake_token: str | None = None) -> tuple[dict[str, str], int]:
    """BridgeOutbox, BridgeInbox and TokenBridge on one chain (in that order: a chain given the
    same deployer nonce gets the same addresses, which the replay test relies on), then a
    StakeBridge over `stake_token` if one is given."""
    members, weights = committee
    guardian = Web3.to_checksum_address(params.guardian)
    outbox, first = deploy_contract(w3, deployer, "BridgeOutbox")
    inbox, _ = deploy_contract(w3, deployer, "BridgeInbox", members, weights, params.threshold_bps,
                       params.delay, guardian)
    side = {"BridgeOutbox": outbox, "BridgeInbox": inbox}
    side["TokenBridge"], _ = deploy_contract(w3, deployer, "TokenBridge", token, outbox, inbox,
                                             mint_mode, guardian)
    if stake_token:
        side[STAKE_BRIDGE], _ = deploy_contract(w3, deployer, STAKE_BRIDGE, stake_token, outbox,
                                                inbox, mint_mode, guardian)
    return side, first


def route_actions(peer_chain_id: int, peer: dict[str, str],
                  params: BridgeParams, stake: bool = False) -> list[tuple[str, str, tuple]]:
    """The owner actions, (contract, function, args), that open the route from `peer` on one
    chain: accept messages from the peer's outbox, let the peer's TokenBridge carry value on that
    route with the limits (a value message from anyone else is refused: it could empty a bucket
    for free), name the peer's inbox, trust the peer's TokenBridge up to `max_transfer`; with
    `stake` (both sides have a StakeBridge), the same for the peer's StakeBridge with the
    `stake_*` limits."""
    outbox, inbox, token_bridge = (Web3.to_checksum_address(peer[n]) for n in BRIDGE_CONTRACT_NAMES)
    return [("BridgeInbox", "register_source", (peer_chain_id, outbox)),
            ("BridgeInbox", "set_value_sender", (peer_chain_id, token_bridge, params.capacity,
                                                 params.refill_per_s, params.large_threshold)),
            ("BridgeOutbox", "set_inbox", (peer_chain_id, inbox)),
            ("TokenBridge", "set_peer", (peer_chain_id, token_bridge, params.max_transfer))
            ] + (stake_route_actions(peer_chain_id, peer, params) if stake else [])


def stake_route_actions(peer_chain_id: int, peer: dict[str, str],
                        params: BridgeParams) -> list[tuple[str, str, tuple]]:
    """The stake route's half of route_actions: the peer's StakeBridge, its own bucket."""
    stake_bridge = Web3.to_checksum_address(peer[STAKE_BRIDGE])
    return [("BridgeInbox", "set_value_sender", (peer_chain_id, stake_bridge, params.stake_capacity,
                                                 params.stake_refill_per_s,
                                                 params.stake_large_threshold)),
            (STAKE_BRIDGE, "set_peer", (peer_chain_id, stake_bridge, params.stake_max_transfer))]


def _stake_route(chain: Chain, peer: dict[str, str]) -> bool:
    """Whether the route between `chain` and `peer` carries stake: both have a StakeBridge."""
    return STAKE_BRIDGE in peer and STAKE_BRIDGE in chain.network.contracts


def link_route(chain: Chain, peer_chain_id: int, peer: dict[str, str], params: BridgeParams) -> None:
    """On `chain`, whose bridge its account still owns (at deploy): open the route from `peer`."""
    for name, function, args in route_actions(peer_chain_id, peer, params,
                                              _stake_route(chain, peer)):
        chain.send(getattr(chain.contract(name).functions, function)(*args))


def route_calls(chain: Chain, peer_chain_id: int, peer: dict[str, str],
                params: BridgeParams) -> list[OwnerCall]:
    """The route's owner actions as calls for `chain`'s Timelock to make."""
    timelock = Timelock(chain)
    return [timelock.owner_call(name, function, *args) for name, function, args
            in route_actions(peer_chain_id, peer, params, _stake_route(chain, peer))]


def schedule_route(chain: Chain, peer_chain_id: int, peer: dict[str, str],
                   params: BridgeParams) -> int:
    """On `chain`, whose bridge its Timelock owns (`chain`'s account a proposer): schedule the
    route's owner actions, in the open; returns when they can be executed (Unix seconds)."""
    timelock = Timelock(chain)
    calls = route_calls(chain, peer_chain_id, peer, params)
    for call in calls:
        timelock.schedule(call)
    return timelock.ready_at(calls[0])


def execute_route(chain: Chain, peer_chain_id: int, peer: dict[str, str],
                  params: BridgeParams) -> None:
    """After the delay: make the route's scheduled owner actions (the same `params`; refused
    before the delay, or if they were never scheduled)."""
    timelock = Timelock(chain)
    for call in route_calls(chain, peer_chain_id, peer, params):
        timelock.execute(call)


def _hand_over(w3: Web3, deployer: LocalAccount, timelock: str, owned: dict[str, str]) -> None:
    """Make `timelock` the owner of each contract in `owned` (name -> address)."""
    for name, address in owned.items():
        owner_call(w3, deployer, name, address, "transfer_ownership", timelock)


def _home_owned_by_timelock(chain: Chain, side: dict[str, str]) -> bool:
    """Whether the home bridge (of an earlier peer) belongs to the home Timelock already (True)
    or still to the deployer, as bridges deployed before the hand-over existed do (False)."""
    owners = {chain.call(chain.contract(n).functions.owner()) for n in side}
    if owners == {chain.network.address("Timelock")}:
        return True
    if owners == {chain.address}:
        return False
    raise BridgeError(f"the home chain's bridge contracts are owned by {', '.join(sorted(owners))}"
                      ", not by the deployer or the home Timelock alone: a route cannot be added")


def deploy_bridge(home: Network, remote: Network, deployer: LocalAccount, params: BridgeParams,
                  committee: Committee | None = None, peer_name: str = "peer",
                  peer_supply: int = 0, peer_stake_supply: int = 0) -> Network:
    """Deploy the bridge between `home` (deployed by deploy_all, its PaymentToken still owned
    by `deployer`) and `remote` (a chain with nothing of Tessera's yet: its contracts may be
    empty; TUSD and TSTK are deployed there unless it names a PaymentToken, and `peer_supply`
    of that TUSD and `peer_stake_supply` of that TSTK are minted to the deployer). Where the
    remote has a StakeToken, StakeBridges carry stake too: the home StakeToken must then still be
    the deployer's, who makes the home StakeBridge its minter. Hands every bridge contract, and the tokens
    deployed on the peer, to its chain's Timelock. Returns `home` with its bridge contracts
    added and `remote` as a peer, naming its Timelock. If `home` already has a bridge owned by
    its Timelock (a second peer), the home half of the new route is only scheduled:
    `execute_route(Chain(home), remote's chain id, the peer's contracts, params)` after the
    delay opens it."""
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
    peer_tokens: dict[str, str] = {}   # deployed here, so owned by the deployer until handed on
    if "PaymentToken" not in remote_contracts:
        peer_tokens, first_remote = deploy_peer_tokens(remote_w3, deployer)
        remote_contracts.update(peer_tokens)
    elif peer_supply or peer_stake_supply:
        raise BridgeError("peer_supply and peer_stake_supply mint tokens deployed for the peer, "
                          "but the remote chain names its own PaymentToken")
    remote_stake = remote_contracts.get("StakeToken")
    reuse = all(name in home.contracts for name in BRIDGE_CONTRACT_NAMES)
    timelocked_home = False
    if reuse:   # a second peer: the home's bridge serves every route
        home_side = {n: home.contracts[n] for n in BRIDGE_CONTRACT_NAMES}
        timelocked_home = _home_owned_by_timelock(Chain(home, deployer), home_side)
        if STAKE_BRIDGE in home.contracts:
            home_side[STAKE_BRIDGE] = home.contracts[STAKE_BRIDGE]
    else:
        _check_home_owner(Chain(home, deployer), ["Validators"] + (["StakeToken"] if remote_stake else []))
        home_side, _ = deploy_bridge_side(home_w3, deployer, home.address("PaymentToken"), True,
                                          (members, list(weights)), params,
                                          home.address("StakeToken") if remote_stake else None)
    stake_route = bool(remote_stake) and STAKE_BRIDGE in home_side
    remote_side, first = deploy_bridge_side(remote_w3, deployer, remote_contracts["PaymentToken"],
                                            False, (members, list(weights)), params,
                                            remote_stake if stake_route else None)
    first_remote = first_remote or first
    home_net = home.model_copy(update={"contracts": {**home.contracts, **home_side}})
    remote_net = Network(name=peer_name, chain_id=remote.chain_id, rpc_url=remote.rpc_url,
                         contracts={**remote_contracts, **remote_side}, deploy_block=first_remote)
    if timelocked_home:
        schedule_route(Chain(home_net, deployer), remote.chain_id, remote_side, params)
    else:
        link_route(Chain(home_net, deployer), remote.chain_id, remote_side, params)
    link_route(Chain(remote_net, deployer), home.chain_id, home_side, params)
    if not reuse:   # mint mode: the home TokenBridge mints what arrives, burns what leaves
        home_net = _add_forgery_slasher(home_w3, deployer, home_net, params)
        orders, _ = deploy_contract(home_w3, deployer, "BridgeOrders", home.address("PaymentToken"),
                                    home.address("Market"), home_side["TokenBridge"])
        home_net = home_net.model_copy(update={"contracts": {**home_net.contracts, "BridgeOrders": orders}})
        owner_call(home_w3, deployer, "PaymentToken", home.address("PaymentToken"),
                    "set_minter", home_side["TokenBridge"], True)
        if stake_route:   # ... and the home StakeBridge the stake locked on the peer
            owner_call(home_w3, deployer, "StakeToken", home.address("StakeToken"),
                       "set_minter", home_side[STAKE_BRIDGE], True)
    if "ForgerySlasher" in home_net.contracts:   # the peer's outbox reports forgeries home
        owner_call(remote_w3, deployer, "BridgeOutbox", remote_side["BridgeOutbox"],
                   "set_forgery_sink", home.chain_id, home_net.address("ForgerySlasher"))
    for token, supply in (("PaymentToken", peer_supply), ("StakeToken", peer_stake_supply)):
        if supply:
            owner_call(remote_w3, deployer, token, peer_tokens[token], "mint", deployer.address,
                       supply)
    if not timelocked_home:
        _hand_over(home_w3, deployer, home.address("Timelock"), home_side)
    peer_timelock = remote_contracts.get("Timelock") or deploy_timelock(
        remote_w3, deployer, Timelock(Chain(home)).min_delay())
    _hand_over(remote_w3, deployer, peer_timelock, {**remote_side, **peer_tokens})
    peer = PeerChain(name=peer_name, chain_id=remote.chain_id, rpc_url=remote.rpc_url,
                     contracts={**remote_net.contracts, "Timelock": peer_timelock},
                     deploy_block=first_remote)
    others = [p for p in home.peers if p.chain_id != remote.chain_id]
    return home_net.model_copy(update={"peers": [*others, peer]})


def _check_home_owner(home: Chain, names: list[str]) -> None:
    """A new bridge makes its StakeBridge a minter of the home StakeToken and its
    ForgerySlasher a slasher of the Validators: refuse before deploying anything when the
    deployer no longer owns them."""
    for name in names:
        owner = home.call(home.contract(name).functions.owner())
        if owner.lower() != home.address.lower():
            raise BridgeError(
                f"the home {name} is owned by {owner}, not the deployer {home.address}: the "
                "bridge could not be given its role there. Deploy the home chain with "
                "deploy_all(hand_over=False) and hand it over after the bridge "
                "(hand_home_to_timelock)")


def _add_forgery_slasher(w3: Web3, deployer: LocalAccount, home: Network,
                         params: BridgeParams) -> Network:
    """The home ForgerySlasher: a slasher of the Validators and their withdraw guard (a member
    of the current committee cannot withdraw), the home outbox's forgery sink, the Market's
    treasury paid what the prover is not. Returns `home` naming it."""
    slasher, _ = deploy_contract(w3, deployer, "ForgerySlasher", home.address("Validators"),
                                 home.address("BridgeInbox"), home.address("BridgeOutbox"),
                                 home.address("Market"), params.forgery_reward_bps)
    owner_call(w3, deployer, "Validators", home.address("Validators"), "set_slasher", slasher, True)
    owner_call(w3, deployer, "Validators", home.address("Validators"), "set_withdraw_guard",
               slasher)
    owner_call(w3, deployer, "BridgeOutbox", home.address("BridgeOutbox"), "set_forgery_sink",
               home.chain_id, slasher)
    return home.model_copy(update={"contracts": {**home.contracts, "ForgerySlasher": slasher}})


def committee_of(members: Sequence[str], weights: Sequence[int]) -> Committee:
    """An explicit committee, ascending by address (BridgeInbox requires that order)."""
    pairs = sorted(zip((Web3.to_checksum_address(m) for m in members), weights, strict=True),
                   key=lambda mw: int(mw[0], 16))
    return [m for m, _ in pairs], [w for _, w in pairs]
