"""The bridge's brakes, with the default limits (BridgeParams: over 10,000 TUSD waits an hour):
a large transfer is queued, then executed after the delay or cancelled by the guardian and
bounced back to its sender; a paused inbox refuses delivery until its owner (the home chain's
Timelock, after its delay) unpauses it."""

from __future__ import annotations

import pytest
from tests.bridge.conftest import GUARDIAN, HOME, OWNER, PEER, SENDER, TUSD

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_deploy import BridgeParams
from tessera.chain.bridge_inbox import refusal
from tessera.errors import BridgeError

LARGE = 20_000 * TUSD
DELAY = BridgeParams(guardian=devnet_account(GUARDIAN).address).delay


def test_large_transfer_waits_the_delay_then_arrives(bridge):
    sender = devnet_account(SENDER).address
    home_before = bridge.tusd(HOME, sender)
    message_id = bridge.send(PEER, SENDER, LARGE)
    relayer = bridge.settle()
    inbox = bridge.inbox(HOME)
    assert inbox.pending(message_id) > 0 and relayer.state["open"]   # queued, still followed
    assert bridge.tusd(HOME, sender) == home_before
    bridge.settle(relayer)
    assert inbox.pending(message_id) > 0                               # not before the delay

    bridge.warp(HOME, DELAY + 1)
    bridge.settle(relayer)
    assert inbox.pending(message_id) == 0 and relayer.state["open"] == {}
    assert bridge.tusd(HOME, sender) == home_before + LARGE
    assert relayer.state["done"] == {"executed": 1}


def test_large_transfer_cancelled_by_the_guardian_bounces_back(bridge):
    sender = devnet_account(SENDER).address
    home_before, peer_before = bridge.tusd(HOME, sender), bridge.tusd(PEER, sender)
    message_id = bridge.send(PEER, SENDER, LARGE)
    relayer = bridge.settle()
    assert bridge.inbox(HOME).pending(message_id) > 0
    assert bridge.tusd(PEER, sender) == peer_before - LARGE

    sent = bridge.outbox(PEER).messages(0, "latest")[-1]
    with pytest.raises(BridgeError) as refused:       # not the guardian
        bridge.inbox(HOME, SENDER).cancel(sent.message, sent.payload)
    assert refusal(refused.value) == "not guardian"
    bridge.inbox(HOME, GUARDIAN).cancel(sent.message, sent.payload)
    assert bridge.inbox(HOME).cancelled(message_id)

    # the bounce (home -> peer) carries the same large amount, so it waits the delay there too
    bridge.settle(relayer)
    bridge.warp(PEER, DELAY + 1)
    bridge.settle(relayer)
    assert relayer.state["open"] == {}
    assert relayer.state["done"] == {"cancelled": 1, "executed": 1}
    assert bridge.tusd(PEER, sender) == peer_before
    assert bridge.tusd(HOME, sender) == home_before
    origin = bridge.token_bridge(PEER).origins(message_id)
    assert origin.sender == sender and origin.amount == LARGE and not origin.open


def test_pause_stops_delivery_until_the_owner_unpauses(bridge):
    sender = devnet_account(SENDER).address
    home_before = bridge.tusd(HOME, sender)
    bridge.inbox(HOME, GUARDIAN).pause()
    message_id = bridge.send(PEER, SENDER, 12 * TUSD)
    relayer = bridge.settle()
    entry = relayer.state["open"][f"{PEER}:0"]
    assert entry["note"] == "paused" and not bridge.inbox(HOME).delivered(message_id)
    assert bridge.tusd(HOME, sender) == home_before

    for who in (GUARDIAN, OWNER):   # the guardian pulls; the deployer no longer owns the inbox
        with pytest.raises(BridgeError) as refused:
            bridge.inbox(HOME, who).unpause()
        assert refusal(refused.value) == "not owner"
    bridge.owner_action(HOME, "BridgeInbox", "unpause")   # its owner, the Timelock, releases
    bridge.settle(relayer)
    assert bridge.inbox(HOME).delivered(message_id) and relayer.state["open"] == {}
    assert bridge.tusd(HOME, sender) == home_before + 12 * TUSD
