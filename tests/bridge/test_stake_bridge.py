"""Stake on another chain (docs/bridge.md, "Stake on another chain"), on two real anvil nodes: a
provider locks TSTK on the peer chain, stakes what StakeBridge mints for it at home, cannot take
it back while the registry holds it, and is slashed at home; the slash's recipient redeems the
peer's locked stake, and the provider's way out after the hold and the unbonding is the same
road back. Conservation (locked on the peer = minted at home + in flight) is read at every step.

The slasher is a test account given the registry's slasher role through the home Timelock
after its delay (the only way the owner can grant it): in the network the slashers are
Verification, Uptime, the Market and HardwareReports, whose own tests cover when they slash.

How an adversary would try it, and where it is tested:
- take the locked stake back on the peer while it backs an open hold at home: the provider has
  no home TSTK left to burn, and the registry refuses the withdrawal (test below);
- burn TSTK that never came from the peer to drain the peer's lock: `backing`, in
  tests/contracts/test_token_bridge.py and the property test (the same contract);
- empty TUSD's bucket with stake transfers, or the other way round: separate buckets, checked
  here after the first crossing.
"""

from __future__ import annotations

import pytest
from tests.bridge.conftest import HOME, OTHER, OWNER, PEER

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_deploy import BridgeParams
from tessera.chain.registry import ProviderRegistry
from tessera.chain.token_bridge import StakeBridge, TokenBridge
from tessera.chain.tokens import StakeToken
from tessera.errors import InsufficientFunds, TxRefused

TSTK = 10**18
PROVIDER, SLASHER, RECIPIENT = 4, 2, OTHER
STAKE, SLASH = 200 * TSTK, 150 * TSTK
PARAMS = BridgeParams(guardian=devnet_account(1).address)


def tstk(bridge, chain_id: int, account: int) -> int:
    return StakeToken(bridge.chain(chain_id)).balance_of(devnet_account(account).address)


def send_stake(bridge, source: int, account: int, amount: int) -> bytes:
    chain = bridge.chain(source, account)
    message_id, _ = StakeBridge(chain).send(PEER if source == HOME else HOME, chain.address, amount)
    return message_id


def conserved(bridge, in_flight: int = 0) -> tuple[int, int]:
    """(locked on the peer, minted at home and outstanding), asserting that the lock covers
    exactly what was minted plus `in_flight` (sent from the peer, not delivered)."""
    peer_bridge, home_bridge = StakeBridge(bridge.chain(PEER)), StakeBridge(bridge.chain(HOME))
    locked = StakeToken(bridge.chain(PEER)).balance_of(peer_bridge.address)
    minted = home_bridge.total_received() + home_bridge.total_bounced() - home_bridge.total_sent()
    assert locked == minted + in_flight
    assert minted == home_bridge.backing(PEER)
    return locked, minted


def registry_call(bridge, account: int, function: str, *args):
    chain = bridge.chain(HOME, account)
    return chain.send(getattr(chain.contract("ProviderRegistry").functions, function)(*args))


def test_stake_locked_on_the_peer_backs_a_provider_at_home_and_its_slash(bridge):
    provider = devnet_account(PROVIDER).address
    # the provider's only home TSTK will be what crosses: its devnet funds go elsewhere
    home = bridge.chain(HOME, PROVIDER)
    StakeToken(home).transfer(devnet_account(OWNER).address, tstk(bridge, HOME, PROVIDER), "setup")
    peer_before = tstk(bridge, PEER, PROVIDER)
    inbox = bridge.inbox(HOME)
    peer_token_bridge = TokenBridge(bridge.chain(PEER)).address
    peer_stake_bridge = StakeBridge(bridge.chain(PEER)).address

    # 1. locked on the peer, minted at home, at once: the stake route's own bucket and
    # threshold (200 TSTK is 2e20 base units, far over TUSD's 10,000 TUSD = 1e10), TUSD's
    # bucket untouched
    send_stake(bridge, PEER, PROVIDER, STAKE)
    assert conserved(bridge, in_flight=STAKE) == (STAKE, 0)
    relayer = bridge.settle()
    assert relayer.state["open"] == {} and relayer.state["done"] == {"delivered": 1}
    assert tstk(bridge, HOME, PROVIDER) == STAKE
    assert tstk(bridge, PEER, PROVIDER) == peer_before - STAKE
    assert conserved(bridge) == (STAKE, STAKE)
    stake_bucket = inbox.bucket(PEER, peer_stake_bridge)
    assert stake_bucket.capacity == PARAMS.stake_capacity
    assert stake_bucket.tokens == PARAMS.stake_capacity - STAKE   # taken at delivery
    tusd_bucket = inbox.bucket(PEER, peer_token_bridge)
    assert tusd_bucket.tokens == tusd_bucket.capacity == PARAMS.capacity

    # 2. staked at home with it
    ProviderRegistry(home).register(STAKE, "cpu", 1, 1024, 1, "http://127.0.0.1:9", 1)
    assert tstk(bridge, HOME, PROVIDER) == 0
    assert ProviderRegistry(home).is_registered(provider)

    # 3. a slasher (granted through the Timelock) holds it: no way back to the peer
    slasher = devnet_account(SLASHER).address
    bridge.owner_action(HOME, "ProviderRegistry", "set_slasher", slasher, True)
    registry_call(bridge, SLASHER, "hold", provider)
    registry_call(bridge, PROVIDER, "request_unbond", STAKE)
    period = bridge.chain(HOME).call(home.contract("ProviderRegistry").functions.unbonding_period())
    bridge.warp(HOME, period + 1)
    with pytest.raises(TxRefused, match="stake backs an open lease"):
        registry_call(bridge, PROVIDER, "withdraw_unbonded")
    with pytest.raises(InsufficientFunds):            # nothing to burn for the peer's lock
        send_stake(bridge, HOME, PROVIDER, STAKE)
    raw = StakeBridge(home).contract.functions.send(PEER, provider, STAKE)
    with pytest.raises(TxRefused):                   # nor without the client's check
        home.send(raw)
    assert conserved(bridge) == (STAKE, STAKE)

    # 4. slashed at home: the recipient's TSTK is the claim on the peer's lock, and redeems it
    recipient = devnet_account(RECIPIENT).address
    recipient_peer = tstk(bridge, PEER, RECIPIENT)
    recipient_home = tstk(bridge, HOME, RECIPIENT)
    registry_call(bridge, SLASHER, "slash", provider, SLASH, recipient)
    assert tstk(bridge, HOME, RECIPIENT) == recipient_home + SLASH
    send_stake(bridge, HOME, RECIPIENT, SLASH)
    bridge.settle(relayer)
    assert tstk(bridge, PEER, RECIPIENT) == recipient_peer + SLASH
    assert tstk(bridge, HOME, RECIPIENT) == recipient_home
    assert conserved(bridge) == (STAKE - SLASH, STAKE - SLASH)

    # 5. the hold released and the lock passed, the provider takes the rest home and across
    registry_call(bridge, SLASHER, "release_hold", provider, bridge.chain(HOME).block_timestamp())
    bridge.warp(HOME, 1)
    registry_call(bridge, PROVIDER, "withdraw_unbonded")
    assert tstk(bridge, HOME, PROVIDER) == STAKE - SLASH
    send_stake(bridge, HOME, PROVIDER, STAKE - SLASH)
    bridge.settle(relayer)
    assert tstk(bridge, PEER, PROVIDER) == peer_before - SLASH
    assert conserved(bridge) == (0, 0)
    assert relayer.state["open"] == {}


def test_stake_over_its_own_large_threshold_waits_the_delay(bridge):
    """A stake transfer over stake_large_threshold is queued for the delay, then arrives; each
    token bridge trusts only its own kind on the other chain."""
    big = PARAMS.stake_large_threshold + TSTK
    message_id = send_stake(bridge, PEER, PROVIDER, big)
    relayer = bridge.settle()
    inbox = bridge.inbox(HOME)
    assert inbox.pending(message_id) > 0
    home_before = tstk(bridge, HOME, PROVIDER)
    bridge.warp(HOME, PARAMS.delay + 1)
    bridge.settle(relayer)
    assert inbox.pending(message_id) == 0
    assert tstk(bridge, HOME, PROVIDER) == home_before + big
    # the home TokenBridge trusts the peer's TokenBridge only: the StakeBridge is not its peer
    home_tusd = TokenBridge(bridge.chain(HOME))
    assert home_tusd.peer(PEER) != StakeBridge(bridge.chain(PEER)).address
    assert StakeBridge(bridge.chain(HOME)).peer(PEER) == StakeBridge(bridge.chain(PEER)).address
