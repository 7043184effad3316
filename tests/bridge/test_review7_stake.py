"""Review 7 (outside attacker): the stake route (StakeBridge, TSTK locked on the peer and minted
at home), on the two anvil nodes of `bridge_env` (docs/bridge.md, "Stake on another chain").

Finding 4 (documented, docs/bridge.md "Stake on another chain"; the test asserts it): the
  peer's lock is a pool, not the provider's: while a provider's bridged stake sits in the home
  registry, anyone holding home TSTK that never came from the peer (every devnet account holds
  10,000, minted at home) burns it toward the peer and takes locked TSTK there; `backing` is
  then spent, and the provider, unbonded, holds home TSTK that cannot cross back until someone
  else locks stake on the peer. Its stake at home, what its obligations rest on, is untouched.

Defences that hold (passing tests):
- a stranger's messages to the home StakeBridge (a transfer, a bounce naming someone's open
  transfer) through the peer outbox's public `send` mint nothing: refused as not the peer;
- a stranger's value message in the stake bridge's name cannot touch either bucket.
"""

from __future__ import annotations

import pytest
from eth_abi import encode
from tests.bridge.conftest import HOME, OWNER, PEER, RELAYER, SENDER

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_inbox import sign_attestation
from tessera.chain.devnet import BRIDGE_VALIDATORS
from tessera.chain.registry import ProviderRegistry
from tessera.chain.token_bridge import StakeBridge, TokenBridge
from tessera.chain.tokens import StakeToken
from tessera.errors import BridgeError
from tessera.protocol.bridge import KIND_BOUNCE, KIND_TRANSFER, sort_signatures, transfer_payload

TSTK = 10**18
PROVIDER, MALLORY = SENDER, RELAYER


def tstk(bridge, chain_id: int, account: int) -> int:
    return StakeToken(bridge.chain(chain_id)).balance_of(devnet_account(account).address)


def test_the_peer_lock_is_a_pool_that_home_tstk_redeems_up_to_backing(bridge):
    """Finding 4, documented (docs/bridge.md, "Stake on another chain"): the provider locks 200
    TSTK on the peer and stakes what is minted at home. Mallory, who never bridged anything,
    burns 200 of her home TSTK toward the peer and is paid the peer's 200: one asset on two
    chains, the lock a pool for all home TSTK up to `backing`. The provider's stake at home is
    untouched and still slashable; it has only lost the option to cross back until stake flows
    in again, and it is told so, before anything is sent."""
    provider = devnet_account(PROVIDER).address
    home = bridge.chain(HOME, PROVIDER)
    # the provider's only home TSTK is what crosses (its devnet funds go elsewhere)
    StakeToken(home).transfer(devnet_account(OWNER).address, tstk(bridge, HOME, PROVIDER), "setup")
    StakeBridge(bridge.chain(PEER, PROVIDER)).send(HOME, provider, 200 * TSTK)
    relayer = bridge.settle()
    ProviderRegistry(home).register(200 * TSTK, "cpu", 1, 1024, 1, "http://127.0.0.1:9", 1)

    mallory_peer = tstk(bridge, PEER, MALLORY)
    StakeBridge(bridge.chain(HOME, MALLORY)).send(PEER, devnet_account(MALLORY).address, 200 * TSTK)
    bridge.settle(relayer)
    assert tstk(bridge, PEER, MALLORY) == mallory_peer + 200 * TSTK   # the pool paid her
    assert StakeBridge(bridge.chain(HOME)).backing(PEER) == 0
    assert ProviderRegistry(home).provider_record(provider)["stake"] == 200 * TSTK   # still backed

    registry = home.contract("ProviderRegistry")
    home.send(registry.functions.request_unbond(200 * TSTK))
    bridge.warp(HOME, home.call(registry.functions.unbonding_period()) + 1)
    home.send(registry.functions.withdraw_unbonded())
    assert tstk(bridge, HOME, PROVIDER) == 200 * TSTK
    with pytest.raises(BridgeError, match="came from chain"):         # said before sending
        StakeBridge(home).send(PEER, provider, 200 * TSTK)
    # once stake flows in again (another provider), the way back reopens
    StakeBridge(bridge.chain(PEER, MALLORY)).send(HOME, devnet_account(MALLORY).address, 200 * TSTK)
    bridge.settle(relayer)
    peer_before = tstk(bridge, PEER, PROVIDER)
    StakeBridge(home).send(PEER, provider, 200 * TSTK)
    bridge.settle(relayer)
    assert tstk(bridge, PEER, PROVIDER) == peer_before + 200 * TSTK


def test_a_strangers_messages_to_the_home_stake_bridge_mint_nothing(bridge):
    """Mallory has the home StakeBridge sent a release to her, and a 'bounce' of a provider's
    open home -> peer transfer, both as value-less messages through the peer outbox's `send`
    (value-less so the inbox delivers them): the relayer does not carry them (not the bridge's own
    routes, review 13); delivered by hand with the committee's signatures, the StakeBridge
    refuses both (not its peer), nothing is minted and neither bucket moves."""
    mallory = bridge.chain(PEER, MALLORY)
    home_stake = StakeBridge(bridge.chain(HOME))
    StakeBridge(bridge.chain(PEER, PROVIDER)).send(HOME, devnet_account(PROVIDER).address, 50 * TSTK)
    relayer = bridge.settle()
    out_id, _ = StakeBridge(bridge.chain(HOME, PROVIDER)).send(PEER, devnet_account(PROVIDER).address,
                                                                10 * TSTK)
    inbox = bridge.inbox(HOME)
    peer_stake = StakeBridge(bridge.chain(PEER)).address
    peer_tusd = TokenBridge(bridge.chain(PEER)).address
    buckets = (inbox.available(PEER, peer_stake), inbox.available(PEER, peer_tusd))
    supply = bridge.chain(HOME).call(StakeToken(bridge.chain(HOME)).contract.functions.totalSupply())
    outbox = mallory.contract("BridgeOutbox").functions
    receipts = [
        mallory.send(outbox.send(HOME, home_stake.address, KIND_TRANSFER, 0,
                                 transfer_payload(mallory.address, mallory.address))),
        mallory.send(outbox.send(HOME, home_stake.address, KIND_BOUNCE, 0,
                                 encode(["bytes32"], [out_id]))),
        # and one with value in nobody's name: refused before any bucket
        mallory.send(outbox.send(HOME, home_stake.address, KIND_TRANSFER, 500 * TSTK,
                                 transfer_payload(mallory.address, mallory.address)))]
    bridge.settle(relayer)
    assert relayer.state["not_served"]["count"] == 3 and not relayer.state["open"]
    notes = []
    for receipt in receipts:
        [sent] = bridge.outbox(PEER).sent_in(receipt)
        signed = {devnet_account(i).address: sign_attestation(
            devnet_account(i), HOME, inbox.address, sent.message.id, inbox.epoch())
            for i in BRIDGE_VALIDATORS}
        with pytest.raises(BridgeError) as refused:
            bridge.inbox(HOME, MALLORY).deliver(sent.message, sent.payload, sort_signatures(signed))
        notes.append(str(refused.value))
    assert sum("unknown peer" in n for n in notes) == 2, notes
    assert sum("not a value sender" in n for n in notes) == 1, notes
    assert bridge.chain(HOME).call(StakeToken(bridge.chain(HOME)).contract.functions.totalSupply()) == supply
    assert home_stake.origins(out_id).open
    assert inbox.available(PEER, peer_tusd) == buckets[1]
    assert inbox.available(PEER, peer_stake) >= buckets[0]


def test_backing_refuses_native_tstk_beyond_what_came_in(bridge):
    """With nothing bridged in, home TSTK cannot go to the peer at all (the raw call too)."""
    home = bridge.chain(HOME, MALLORY)
    assert StakeBridge(home).backing(PEER) == 0
    with pytest.raises(BridgeError, match="came from chain"):
        StakeBridge(home).send(PEER, home.address, 1 * TSTK)
