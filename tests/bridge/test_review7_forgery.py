"""Review 7 (outside attacker): escaping a forger's slash, and slashing an honest validator,
on the two anvil nodes of `bridge_env` (docs/bridge.md, "A forger's slash").

Findings (fixed; the tests below were the attacks, now refused):
- finding 1: a committee member withdraws its whole validator stake and keeps its committee
  weight (the inbox's committee changes only by a rotation nobody is made to sign); its forgery
  was then free. Now the Validators' withdraw guard (ForgerySlasher) refuses members;
- finding 2: the guardian pauses the home inbox in answer to a forgery minting at home (the
  documented response); the peer's report then waits for the Timelock's unpause (2 days) while
  the forger unbonds in the Validators' unbonding period (1 hour) and withdrew. The same guard
  keeps a member's stake in reach until its report lands.

Defences that hold (passing tests):
- an honest attestation of an emitted message is no proof, on its own outbox or the other;
- a report is carried out once, whoever delivers it again;
- a slash forwards everything: the ForgerySlasher holds nothing after it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_utils import keccak
from tests.bridge.conftest import GUARDIAN, HOME, OTHER, PEER, RELAYER, SENDER

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_inbox import BridgeInbox, sign_attestation
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.devnet import BRIDGE_VALIDATORS
from tessera.chain.forgery_slasher import ForgerySlasher
from tessera.chain.token_bridge import StakeBridge
from tessera.chain.tokens import StakeToken
from tessera.chain.validators import Validators
from tessera.errors import BridgeError, TxRefused
from tessera.protocol.bridge import KIND_TRANSFER, Message, sort_signatures, transfer_payload

TSTK = 10**18
PROVER = OTHER
THIEF = RELAYER


def withdraw_all(bridge, index: int) -> int:
    """Validator `index` unbonds and withdraws its whole stake; returns what it took out."""
    home = bridge.chain(HOME, index)
    validators = Validators(home)
    stake = validators.stake_of(home.address)
    validators.request_unbond(stake)
    period = home.call(home.contract("Validators").functions.unbonding_period())
    bridge.warp(HOME, period + 1)
    validators.withdraw_unbonded()
    return stake


def signatures(signers, destination: int, inbox: BridgeInbox, message_id: bytes) -> list[bytes]:
    epoch = inbox.epoch()
    return sort_signatures({a.address: sign_attestation(a, destination, inbox.address, message_id, epoch)
                            for a in signers})


def test_committee_members_cannot_withdraw_so_their_forgery_is_not_free(bridge):
    """Review 7 finding 1 (fixed): the three committee members unbond and try to withdraw their
    whole validator stake, keeping their committee weight (the inbox changes its committee only
    by rotation): the withdraw guard (ForgerySlasher.may_withdraw) refuses while they are
    members. They forge a release of the peer's locked stake anyway; each proof on the home
    outbox takes the forger's unbonding stake in the same transaction."""
    StakeBridge(bridge.chain(PEER, SENDER)).send(HOME, devnet_account(SENDER).address, 150 * TSTK)
    bridge.settle()
    forgers = [devnet_account(i) for i in BRIDGE_VALIDATORS]
    peer_inbox = bridge.inbox(PEER, THIEF)
    weights = {a.address: peer_inbox.weight_of(peer_inbox.epoch(), a.address) for a in forgers}
    for index in BRIDGE_VALIDATORS:
        with pytest.raises(TxRefused, match="a bridge committee member"):
            withdraw_all(bridge, index)
    assert all(Validators(bridge.chain(HOME)).record(a)["unbonding"] == w for a, w in weights.items())

    thief = devnet_account(THIEF).address
    payload = transfer_payload(thief, thief)
    peer_stake = StakeBridge(bridge.chain(PEER))
    forged = Message(source_chain=HOME, source_outbox=bridge.outbox(HOME).address,
                     sender=StakeBridge(bridge.chain(HOME)).address, nonce=50_000, destination_chain=PEER,
                     recipient=peer_stake.address, kind=KIND_TRANSFER, amount=150 * TSTK,
                     payload_hash=keccak(payload))
    sigs = signatures(forgers, PEER, peer_inbox, forged.id)
    assert peer_inbox.deliver(forged, payload, sigs)[0]          # a stolen quorum does steal...

    home_outbox = BridgeOutbox(bridge.chain(HOME, PROVER))
    taken = 0
    for account in forgers:
        signature = sign_attestation(account, PEER, peer_inbox.address, forged.id, peer_inbox.epoch())
        _, receipt = home_outbox.prove_forgery_receipt(forged, peer_inbox.epoch(), signature)
        [event] = ForgerySlasher(bridge.chain(HOME)).slashes_in(receipt)
        taken += event["taken"]
    assert taken == sum(weights.values())                        # ... and loses all it staked


def test_a_forger_cannot_withdraw_while_the_paused_home_inbox_holds_its_report(bridge):
    """Review 7 finding 2 (fixed by the same guard): a committee member signs a message the peer
    never emitted; the guardian pauses the home inbox; the proof's report waits for the
    Timelock's unpause (2 days), longer than the forger's 1-hour unbonding. The forger asks to
    unbond at once, but cannot withdraw while it is a member; the report lands after the
    unpause and takes the whole stake."""
    forger = devnet_account(BRIDGE_VALIDATORS[0])
    stake = Validators(bridge.chain(HOME)).stake_of(forger.address)
    home_inbox = bridge.inbox(HOME)
    fake = Message(source_chain=PEER, source_outbox=bridge.outbox(PEER).address,
                   sender=StakeBridge(bridge.chain(PEER)).address, nonce=60_000, destination_chain=HOME,
                   recipient=StakeBridge(bridge.chain(HOME)).address, kind=KIND_TRANSFER,
                   amount=100 * TSTK, payload_hash=b"\x44" * 32)
    epoch = home_inbox.epoch()
    signature = sign_attestation(forger, HOME, home_inbox.address, fake.id, epoch)

    bridge.inbox(HOME, GUARDIAN).pause()                       # the guardian's answer
    BridgeOutbox(bridge.chain(PEER, PROVER)).prove_forgery(fake, epoch, signature)
    Validators(bridge.chain(HOME, BRIDGE_VALIDATORS[0])).request_unbond(stake)
    relayer = bridge.settle()
    assert len(relayer.state["open"]) == 1                     # the report waits: paused
    bridge.owner_action(HOME, "BridgeInbox", "unpause")        # 2 days later
    with pytest.raises(TxRefused, match="a bridge committee member"):
        Validators(bridge.chain(HOME, BRIDGE_VALIDATORS[0])).withdraw_unbonded()
    bridge.settle(relayer)
    slasher = ForgerySlasher(bridge.chain(HOME))
    assert slasher.slashed(PEER, forger.address, fake.id, epoch)
    assert Validators(bridge.chain(HOME)).record(forger.address)["slashed_total"] == stake


def test_an_honest_attestation_is_no_forgery_proof_on_either_outbox(bridge):
    """A real transfer peer -> home, attested by the committee: its signatures prove nothing on
    the peer outbox (emitted), nor on the home outbox (not its message), nor with the message's
    fields changed (the signature then recovers to some other key, which is no validator)."""
    mid, _ = StakeBridge(bridge.chain(PEER, SENDER)).send(HOME, devnet_account(SENDER).address, 10 * TSTK)
    bridge.mine(PEER)
    bridge.mine(PEER)
    bridge.attest()
    attester = bridge.attesters[BRIDGE_VALIDATORS[0]]
    nonce = bridge.outbox(PEER).count() - 1
    row = attester.attestation(PEER, nonce)
    assert row is not None
    sent = bridge.outbox(PEER).message(nonce).message
    assert sent.id == mid
    signature = bytes.fromhex(row["signature"][2:])
    peer = BridgeOutbox(bridge.chain(PEER, PROVER))
    with pytest.raises((TxRefused, BridgeError), match="emitted"):
        peer.prove_forgery(sent, row["epoch"], signature)
    home = BridgeOutbox(bridge.chain(HOME, PROVER))
    with pytest.raises((TxRefused, BridgeError), match="not this outbox"):
        home.prove_forgery(sent, row["epoch"], signature)
    other = replace(sent, nonce=sent.nonce + 1)
    signer = peer.prove_forgery(other, row["epoch"], signature)
    assert signer != devnet_account(BRIDGE_VALIDATORS[0]).address
    stake = Validators(bridge.chain(HOME)).stake_of(devnet_account(BRIDGE_VALIDATORS[0]).address)
    bridge.settle()
    assert Validators(bridge.chain(HOME)).stake_of(devnet_account(BRIDGE_VALIDATORS[0]).address) == stake


def test_a_report_is_carried_out_once_and_the_slasher_keeps_nothing(bridge):
    """A real forgery proven on the peer; the report delivered by the relayer; the same report
    delivered again by hand with fresh committee signatures: refused by the inbox. A second proof
    of the same signer for another message takes nothing more (the stake is gone) and the
    ForgerySlasher ends with no TSTK."""
    forger = devnet_account(BRIDGE_VALIDATORS[1])
    home_inbox = bridge.inbox(HOME, THIEF)
    fakes = [Message(source_chain=PEER, source_outbox=bridge.outbox(PEER).address,
                     sender=devnet_account(SENDER).address, nonce=70_000 + i, destination_chain=HOME,
                     recipient=devnet_account(SENDER).address, kind=1, amount=0,
                     payload_hash=b"\x55" * 32) for i in range(2)]
    epoch = home_inbox.epoch()
    peer_outbox = BridgeOutbox(bridge.chain(PEER, PROVER))
    _, receipt = peer_outbox.prove_forgery_receipt(
        fakes[0], epoch, sign_attestation(forger, HOME, home_inbox.address, fakes[0].id, epoch))
    [report] = peer_outbox.sent_in(receipt)
    bridge.settle()
    assert home_inbox.delivered(report.message.id)
    honest = [devnet_account(i) for i in BRIDGE_VALIDATORS]
    with pytest.raises(BridgeError, match="already delivered"):
        home_inbox.deliver(report.message, report.payload,
                           signatures(honest, HOME, home_inbox, report.message.id))
    peer_outbox.prove_forgery(fakes[1], epoch,
                              sign_attestation(forger, HOME, home_inbox.address, fakes[1].id, epoch))
    bridge.settle()
    slasher = ForgerySlasher(bridge.chain(HOME))
    assert slasher.slashed(PEER, forger.address, fakes[1].id, epoch)
    assert Validators(bridge.chain(HOME)).record(forger.address)["slashed_total"] == 100 * TSTK
    assert StakeToken(bridge.chain(HOME)).balance_of(slasher.address) == 0
