"""A forger's slash on the home chain (docs/bridge.md, "A forger's slash"), on two real anvil
nodes with the devnet's bridge: a committee member signs an attestation of a message its source
outbox never emitted; anyone proves it on that outbox, which reports it to the home chain's
ForgerySlasher (a call when the source is home, a bridge message carried by the committee and
a relayer when it is the peer), and the forger loses its whole validator stake: 10 % to the
prover, the rest to the treasury.

How an adversary would try to get round it, and where each is tested:
- forge a report (send a kind-1 message to the slasher from its own contract or account, to
  slash an honest validator): the slasher accepts reports only from the source's registered
  outbox (below);
- call the slasher directly: only the home outbox / the home inbox may (below);
- get slashed twice for one forgery, or prove it twice: refused ("proven", once-only key);
- prove its own forgery to keep the stake: it gets the prover's 10 % back and loses the rest;
- sign an attestation with a key that is not a validator's: proven and recorded, nothing to
  take (below).
"""

from __future__ import annotations

import pytest
from eth_account import Account
from tests.bridge.conftest import HOME, OTHER, PEER

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_inbox import sign_attestation, sign_rotation
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.devnet import BRIDGE_VALIDATORS
from tessera.chain.forgery_slasher import ForgerySlasher
from tessera.chain.tokens import StakeToken
from tessera.chain.validators import Validators
from tessera.errors import BridgeError, TxRefused
from tessera.protocol.bridge import Message, sort_signatures

PROVER = OTHER
BPS = 10_000


def forged(bridge, source: int, destination: int, nonce_ahead: int = 7) -> Message:
    """A message 'from' `source`'s outbox that it never emitted (a nonce not used yet)."""
    outbox = bridge.outbox(source)
    return Message(source_chain=source, source_outbox=outbox.address,
                   sender=devnet_account(5).address, nonce=outbox.count() + nonce_ahead,
                   destination_chain=destination, recipient=devnet_account(5).address, kind=1,
                   amount=10**12, payload_hash=b"\x11" * 32)


def attest(bridge, signer, message: Message) -> tuple[bytes, int]:
    """`signer`'s attestation of `message` in its destination inbox's domain, current epoch."""
    inbox = bridge.inbox(message.destination_chain)
    epoch = inbox.epoch()
    return sign_attestation(signer, message.destination_chain, inbox.address, message.id,
                            epoch), epoch


def stakes(bridge, forger: str) -> tuple[int, int, int]:
    home = bridge.chain(HOME)
    slasher = ForgerySlasher(home)
    token = StakeToken(home)
    return (Validators(home).stake_of(forger), token.balance_of(devnet_account(PROVER).address),
            token.balance_of(slasher.treasury()))


def test_a_forgery_proven_on_the_peer_slashes_the_forger_at_home(bridge):
    forger = devnet_account(7)
    stake, prover_before, treasury_before = stakes(bridge, forger.address)
    assert stake > 0
    fake = forged(bridge, PEER, HOME)
    signature, epoch = attest(bridge, forger, fake)
    peer_outbox = BridgeOutbox(bridge.chain(PEER, PROVER))
    signer, receipt = peer_outbox.prove_forgery_receipt(fake, epoch, signature)
    assert signer == forger.address
    [report] = peer_outbox.sent_in(receipt)   # the outbox's own message to the home slasher
    slasher = ForgerySlasher(bridge.chain(HOME))
    assert (report.message.sender, report.message.recipient) == (peer_outbox.address, slasher.address)
    assert (report.message.kind, report.message.amount) == (1, 0)

    relayer = bridge.settle()
    assert relayer.state["open"] == {}
    assert slasher.slashed(PEER, forger.address, fake.id, epoch)
    after, prover_after, treasury_after = stakes(bridge, forger.address)
    reward = stake * slasher.reward_bps() // BPS
    assert after == 0 and Validators(bridge.chain(HOME)).weight_of(forger.address) == 0
    assert prover_after - prover_before == reward
    assert treasury_after - treasury_before == stake - reward
    with pytest.raises(TxRefused, match="proven"):   # once per (signer, message, epoch)
        peer_outbox.prove_forgery(fake, epoch, signature)


def test_a_forgery_proven_on_the_home_chain_slashes_at_once(bridge):
    forger = devnet_account(8)
    stake, prover_before, _ = stakes(bridge, forger.address)
    fake = forged(bridge, HOME, PEER)
    signature, epoch = attest(bridge, forger, fake)
    home_outbox = BridgeOutbox(bridge.chain(HOME, PROVER))
    _, receipt = home_outbox.prove_forgery_receipt(fake, epoch, signature)
    [event] = ForgerySlasher(bridge.chain(HOME)).slashes_in(receipt)   # in the same transaction
    assert (event["signer"], event["taken"]) == (forger.address, stake)
    assert stakes(bridge, forger.address)[:2] == (0, prover_before + stake * 1_000 // BPS)
    assert bridge.outbox(HOME).sent_in(receipt) == []                 # no message needed


def test_a_key_that_is_no_validator_is_recorded_with_nothing_taken(bridge):
    stranger = Account.create()
    fake = forged(bridge, PEER, HOME)
    signature, epoch = attest(bridge, stranger, fake)
    peer_outbox = BridgeOutbox(bridge.chain(PEER, PROVER))
    peer_outbox.prove_forgery(fake, epoch, signature)
    relayer = bridge.settle()
    assert relayer.state["open"] == {}   # delivered, not retried for ever
    assert ForgerySlasher(bridge.chain(HOME)).slashed(PEER, stranger.address, fake.id, epoch)


def test_a_report_not_from_an_outbox_slashes_nobody(bridge):
    """An attacker sends the slasher a well-formed report through the peer outbox's public
    `send` (so it is attested and carried like any message) naming an honest validator: its
    sender is the attacker, not the outbox, and the delivery is refused. Calling the slasher
    directly is refused too."""
    from eth_abi import encode

    honest = devnet_account(9).address
    stake = Validators(bridge.chain(HOME)).stake_of(honest)
    slasher = ForgerySlasher(bridge.chain(HOME))
    attacker = bridge.chain(PEER, PROVER)
    payload = encode(["address", "bytes32", "uint256", "address"],
                     [honest, b"\x22" * 32, 0, attacker.address])
    receipt = attacker.send(attacker.contract("BridgeOutbox").functions.send(HOME, slasher.address,
                                                                             1, 0, payload))
    [sent] = bridge.outbox(PEER).sent_in(receipt)
    relayer = bridge.settle()
    # the relayer carries the bridge's own routes only: not an attacker's message (review 13)
    assert not relayer.state["open"] and relayer.state["not_served"]["count"] == 1
    # attested like any message; delivered by hand, it is refused at the slasher
    signed = {devnet_account(i).address: sign_attestation(
        devnet_account(i), HOME, bridge.inbox(HOME).address, sent.message.id, bridge.inbox(HOME).epoch())
        for i in BRIDGE_VALIDATORS}
    with pytest.raises(BridgeError, match="not an outbox"):
        bridge.inbox(HOME, PROVER).deliver(sent.message, sent.payload, sort_signatures(signed))
    assert Validators(bridge.chain(HOME)).stake_of(honest) == stake
    home = bridge.chain(HOME, PROVER)
    with pytest.raises(TxRefused, match="only outbox"):
        home.send(home.contract("ForgerySlasher").functions.on_forgery(honest, b"\x22" * 32, 0,
                                                                       home.address))
    with pytest.raises(TxRefused, match="only inbox"):
        home.send(home.contract("ForgerySlasher").functions.on_bridge_message(
            PEER, bridge.outbox(PEER).address, 1, 0, payload, b"\x33" * 32))
    assert Validators(bridge.chain(HOME)).stake_of(honest) == stake


def test_a_member_leaves_the_committee_by_rotation_then_withdraws(bridge):
    """The withdraw guard holds a committee member's stake in reach of a forgery proof, not for
    ever: once the committee rotates it out (the current members sign the new committee), it
    withdraws as any validator does."""
    leaver, stay = BRIDGE_VALIDATORS[0], BRIDGE_VALIDATORS[1:]
    home = bridge.chain(HOME, leaver)
    validators = Validators(home)
    stake = validators.stake_of(home.address)
    validators.request_unbond(stake)
    bridge.warp(HOME, home.call(home.contract("Validators").functions.unbonding_period()) + 1)
    with pytest.raises(TxRefused, match="a bridge committee member"):
        validators.withdraw_unbonded()
    assert not ForgerySlasher(home).may_withdraw(home.address)

    inbox = bridge.inbox(HOME, OTHER)
    members = sorted((devnet_account(i).address for i in stay), key=lambda a: int(a, 16))
    weights = [1] * len(members)
    signed = {devnet_account(i).address: sign_rotation(devnet_account(i), HOME, inbox.address,
                                                       inbox.epoch() + 1, members, weights)
              for i in BRIDGE_VALIDATORS}
    inbox.rotate(inbox.epoch() + 1, members, weights, sort_signatures(signed))
    assert ForgerySlasher(home).may_withdraw(home.address)
    before = StakeToken(home).balance_of(home.address)
    validators.withdraw_unbonded()
    assert StakeToken(home).balance_of(home.address) == before + stake
