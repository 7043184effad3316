"""The committee side on real chains: after a rotation the attesters sign again for the new
epoch and a signature of the retired epoch is refused; a signature on a message the source
outbox never emitted is proven a forgery there."""

from __future__ import annotations

import dataclasses

import pytest
from tests.bridge.conftest import HOME, PEER, RELAYER, SENDER, TUSD

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_inbox import BridgeInbox, refusal, sign_attestation, sign_rotation
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.devnet import BRIDGE_VALIDATORS
from tessera.errors import BridgeError, TxRefused


def test_rotation_retires_old_signatures_and_attesters_sign_again(bridge):
    sender = devnet_account(SENDER).address
    home_before = bridge.tusd(HOME, sender)
    message_id = bridge.send(PEER, SENDER, 4 * TUSD)
    bridge.mine(PEER)
    bridge.attest()
    relayer = bridge.relayer()
    sent = bridge.outbox(PEER).messages(0, "latest")[-1]
    old = relayer.collector.collect(sent.message)
    assert old is not None                                   # a quorum for epoch 0

    inbox = bridge.inbox(HOME, RELAYER)
    members = inbox.committee(0)
    weights = [3, 2, 2]                                      # same members, new weights
    signatures = [sign_rotation(devnet_account(i), HOME, inbox.address, 1, members, weights)
                  for i in BRIDGE_VALIDATORS]
    signed = {devnet_account(i).address: s for i, s in zip(BRIDGE_VALIDATORS, signatures,
                                                            strict=True)}
    inbox.rotate(1, members, weights, [signed[m] for m in members])
    assert inbox.epoch() == 1 and inbox.weights() == dict(zip(members, weights, strict=True))

    with pytest.raises(BridgeError) as refused:              # epoch 0's quorum is retired
        inbox.deliver(sent.message, sent.payload, old)
    assert refusal(refused.value) in ("not a member", "not ascending")
    relayer.collector.forget()
    assert relayer.collector.collect(sent.message) is None   # attesters still hold epoch 0's

    bridge.settle(relayer)                                   # they notice the rotation, sign again
    assert bridge.attesters[7].attestation(PEER, 0)["epoch"] == 1
    assert bridge.inbox(HOME).delivered(message_id)
    assert bridge.tusd(HOME, sender) == home_before + 4 * TUSD


def test_signature_on_a_message_never_sent_is_a_provable_forgery(bridge):
    bridge.send(PEER, SENDER, 1 * TUSD)
    real = bridge.outbox(PEER).messages(0, "latest")[-1].message
    forged = dataclasses.replace(real, amount=1_000_000 * TUSD)   # what the outbox never emitted
    forger = devnet_account(BRIDGE_VALIDATORS[0])
    home_inbox = BridgeInbox(bridge.chain(HOME))
    signature = sign_attestation(forger, HOME, home_inbox.address, forged.id, 0)
    assert home_inbox.attestation_digest(forged.id, 0)  # the same domain the outbox checks

    outbox = BridgeOutbox(bridge.chain(PEER, RELAYER))
    assert outbox.prove_forgery(forged, 0, signature) == forger.address
    assert outbox.forgeries(forger.address) == 1
    honest = sign_attestation(forger, HOME, home_inbox.address, real.id, 0)
    with pytest.raises(TxRefused, match="emitted"):
        outbox.prove_forgery(real, 0, honest)
