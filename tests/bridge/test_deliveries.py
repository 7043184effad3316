"""What the inbox refuses, on real anvil nodes (the contract-level twins are in
tests/contracts/test_bridge_inbox.py): a message delivered twice; forged, duplicated,
out-of-order, tampered, wrong-domain and below-threshold signatures; a bucket emptied, then
refilled as time passes. Each refusal names its reason and leaves every balance and the inbox's
record as they were; the same message then arrives with a good quorum."""

from __future__ import annotations

import pytest
from eth_account import Account
from tests.bridge.conftest import HOME, OTHER, PEER, RELAYER, SENDER, TUSD

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_deploy import DAY, BridgeParams
from tessera.chain.bridge_inbox import refusal, sign_attestation
from tessera.chain.devnet import BRIDGE_VALIDATORS
from tessera.chain.token_bridge import TokenBridge
from tessera.errors import BridgeError
from tessera.protocol.bridge import sort_signatures

PARAMS = BridgeParams(guardian=devnet_account(1).address)


def sent_to_home(bridge, amount: int = 3 * TUSD):
    """A transfer from the peer, buried under its confirmations; its (message, payload)."""
    bridge.send(PEER, SENDER, amount)
    bridge.mine(PEER)
    sent = bridge.outbox(PEER).messages(0, "latest")[-1]
    return sent.message, sent.payload


def signed_by(bridge, message, *indexes: int, inbox_chain: int = HOME) -> dict[str, bytes]:
    """{signer: attestation of `message`} by devnet accounts `indexes`, in `inbox_chain`'s
    inbox domain (the current epoch)."""
    inbox = bridge.inbox(inbox_chain)
    return {devnet_account(i).address: sign_attestation(devnet_account(i), inbox_chain,
                                                        inbox.address, message.id, inbox.epoch())
            for i in indexes}


def snapshot(bridge, message) -> tuple:
    """Everything a refused delivery must leave as it was."""
    sender = devnet_account(SENDER).address
    inbox = bridge.inbox(HOME)
    home_bridge = TokenBridge(bridge.chain(HOME))
    return (bridge.tusd(HOME, sender), bridge.tusd(PEER, sender), inbox.delivered(message.id),
            inbox.pending(message.id), home_bridge.total_received(),
            inbox.available(PEER, TokenBridge(bridge.chain(PEER)).address))


def test_bad_signatures_are_refused_then_a_quorum_delivers(bridge):
    message, payload = sent_to_home(bridge)
    a, b, c = BRIDGE_VALIDATORS
    good = signed_by(bridge, message, a, b, c)
    ordered = sort_signatures(good)
    first, second = ordered[0], ordered[1]
    stranger = Account.create()
    forged = sign_attestation(stranger, HOME, bridge.inbox(HOME).address, message.id, 0)
    tampered = bytearray(first)
    tampered[5] ^= 0x01
    peer_domain = sort_signatures(signed_by(bridge, message, a, b, inbox_chain=PEER))
    before = snapshot(bridge, message)
    inbox = bridge.inbox(HOME, RELAYER)
    cases = {
        "forged (no member's key)": ([forged, first, second], ("not a member", "not ascending")),
        "duplicated": ([first, first], ("not ascending",)),
        "out of order": ([second, first], ("not ascending",)),
        "below the threshold": ([first], ("no quorum",)),
        "tampered": ([bytes(tampered), second], ("not a member", "not ascending", "bad signature")),
        "another inbox's domain": (peer_domain, ("not a member", "not ascending")),
        "none": ([], ("no quorum",)),
    }
    for what, (signatures, reasons) in cases.items():
        with pytest.raises(BridgeError) as refused:
            inbox.deliver(message, payload, signatures)
        assert refusal(refused.value) in reasons, (what, str(refused.value))
        assert snapshot(bridge, message) == before, what
    delivered_now, _ = inbox.deliver(message, payload, [first, second])   # 2 of 3 equal weights
    assert delivered_now and bridge.inbox(HOME).delivered(message.id)
    assert bridge.tusd(HOME, devnet_account(SENDER).address) == before[0] + message.amount


def test_a_message_delivered_twice_is_refused_the_second_time(bridge):
    message, payload = sent_to_home(bridge)
    signatures = sort_signatures(signed_by(bridge, message, *BRIDGE_VALIDATORS))
    inbox = bridge.inbox(HOME, RELAYER)
    inbox.deliver(message, payload, signatures)
    after_once = snapshot(bridge, message)
    for attempt in (signatures, signatures[:2], signatures[1:]):   # same or other quorums
        with pytest.raises(BridgeError) as refused:
            inbox.deliver(message, payload, attempt)
        assert refusal(refused.value) == "already delivered"
        assert snapshot(bridge, message) == after_once
    relayer = bridge.settle()   # a relayer carrying it again finds it done, counts it once
    assert relayer.state["open"] == {}


def test_a_bucket_emptied_refuses_until_it_refills(bridge):
    """Two transfers of max_transfer (50,000 TUSD, over the large threshold: queued, but taken
    from the bucket at delivery) empty the 100,000 TUSD bucket; a third transfer, 1,000 TUSD
    from another account (what refills in 864 s), is "rate limited" and changes nothing,
    retried by the relayer until the refill (100,000 TUSD a day) covers it."""
    sender, other = devnet_account(SENDER).address, devnet_account(OTHER).address
    token_bridge = TokenBridge(bridge.chain(PEER)).address
    inbox = bridge.inbox(HOME)
    assert PARAMS.capacity == 2 * PARAMS.max_transfer
    sender_home = bridge.tusd(HOME, sender)
    first = bridge.send(PEER, SENDER, PARAMS.max_transfer)
    second = bridge.send(PEER, SENDER, PARAMS.max_transfer)
    relayer = bridge.settle()
    assert inbox.pending(first) and inbox.pending(second)          # queued, bucket taken
    assert inbox.available(PEER, token_bridge) < 100 * TUSD     # a few seconds' refill
    other_before = bridge.tusd(HOME, other)
    small = bridge.send(PEER, OTHER, 1_000 * TUSD)
    bridge.settle(relayer)
    assert not inbox.delivered(small) and bridge.tusd(HOME, other) == other_before
    [entry] = [e for e in relayer.state["open"].values() if e.get("note") == "rate limited"]
    assert entry

    # time passes (the refill: 1.157 TUSD a second): the small one and both queued ones land
    bridge.warp(HOME, 900)
    bridge.settle(relayer)
    assert inbox.delivered(small) and bridge.tusd(HOME, other) == other_before + 1_000 * TUSD
    bridge.warp(HOME, DAY)
    bridge.settle(relayer)
    assert relayer.state["open"] == {}
    assert bridge.tusd(HOME, sender) == sender_home + 2 * PARAMS.max_transfer
