"""BridgeOutbox: message numbering, the id every party computes, and forgery proofs."""

from __future__ import annotations

import dataclasses

import pytest
from bridge_support import (
    ALICE,
    BOB,
    CHAIN_A,
    CHAIN_B,
    CHAIN_C,
    COMMITTEE,
    OUTSIDER,
    isolated,
    refused,
    send_raw,
    sent_messages,
    shared_world,
    unchanged,
)
from contracts_support import typed_digest

from tessera.protocol import bridge as pb

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@pytest.fixture(scope="module")
def world():
    return shared_world()


@pytest.fixture(autouse=True)
def _isolated(world):
    with isolated(world.envs):
        yield


def test_send_numbers_stores_and_emits(world):
    a, b = world.a, world.b
    m0, p0 = send_raw(a, b, b.bridge.address, amount=5, payload=b"first", kind=7)
    m1, p1 = send_raw(a, b, BOB.address, amount=0, payload=b"", kind=0, sender=BOB)
    assert (m0.nonce, m1.nonce) == (0, 1) and a.outbox.count() == 2
    assert a.outbox.sent(0) == m0.id and a.outbox.sent(1) == m1.id and a.outbox.sent(2) == b"\0" * 32
    assert (m0.source_chain, m0.source_outbox, m0.sender) == (CHAIN_A, a.outbox.address, ALICE.address)
    assert (m0.destination_chain, m0.recipient, m0.kind, m0.amount, p0) == (CHAIN_B, b.bridge.address,
                                                                            7, 5, b"first")
    assert m1.sender == BOB.address and p1 == b""


def test_message_id_is_protocol_message_id(world):
    """Every party computes the same id: protocol.bridge, the outbox (send and view), the inbox."""
    a, b = world.a, world.b
    with a.prank(ALICE):
        returned = a.outbox.send(CHAIN_B, b.bridge.address, 200, 2**255 + 3, b"\xff" * 512)
    [(m, payload)] = sent_messages(a.outbox)  # asserts the event's id == pb.message_id too
    assert returned == m.id == pb.message_id(m) == a.outbox.sent(m.nonce)
    assert a.outbox.message_id(m.as_tuple()) == b.inbox.message_id(m.as_tuple()) == m.id
    # arbitrary field values, not only what send produces
    odd = pb.Message(source_chain=2**256 - 1, source_outbox=OUTSIDER.address, sender=BOB.address,
                     nonce=2**200, destination_chain=1, recipient=ALICE.address, kind=255,
                     amount=1, payload_hash=b"\x5a" * 32, version=9)
    assert a.outbox.message_id(odd.as_tuple()) == b.inbox.message_id(odd.as_tuple()) == odd.id
    # every field is in the id
    for name, value in [("source_chain", 5), ("source_outbox", BOB.address), ("sender", ALICE.address),
                        ("nonce", 1), ("destination_chain", 2), ("recipient", BOB.address),
                        ("kind", 1), ("amount", 2), ("payload_hash", b"\x5b" * 32), ("version", 1)]:
        assert dataclasses.replace(odd, **{name: value}).id != odd.id, name


@pytest.mark.parametrize("dest, recipient, payload, reason", [
    (CHAIN_A, BOB.address, b"", "same chain"),
    (0, BOB.address, b"", "zero destination"),
    (CHAIN_B, "0x" + "00" * 20, b"", "zero recipient"),
])
def test_send_refusals(world, dest, recipient, payload, reason):
    a = world.a
    with unchanged(a), a.prank(ALICE):
        refused(reason, a.outbox.send, dest, recipient, 1, 1, payload)


def test_payload_over_512_bytes_is_refused(world):
    """The ABI decoder bounds Bytes[512]: a longer payload never reaches the id."""
    a = world.a
    with unchanged(a), a.prank(ALICE):
        refused("Bytes[512] bounds check", a.outbox.send, CHAIN_B, BOB.address, 1, 1, b"x" * 513)


def test_attestation_digest_is_the_destination_inbox_digest(world):
    a, b, c = world.a, world.b, world.c
    mid = b"\x42" * 32
    want = typed_digest(pb.attestation_typed_data(CHAIN_B, b.inbox.address, mid, 3))
    assert a.outbox.attestation_digest(CHAIN_B, mid, 3) == b.inbox.attestation_digest(mid, 3) == want
    # same inbox address on chain C, other chain id: another digest
    assert c.inbox.address == b.inbox.address
    assert a.outbox.attestation_digest(CHAIN_C, mid, 3) == c.inbox.attestation_digest(mid, 3) != want
    assert a.outbox.attestation_digest(4242, mid, 3) == b"\0" * 32  # no inbox named


def test_set_inbox_is_owner_only_and_checked(world):
    a = world.a
    with unchanged(a):
        with a.prank(OUTSIDER):
            refused("not owner", a.outbox.set_inbox, 4242, BOB.address)
        with a.prank(a.owner):
            refused("same chain", a.outbox.set_inbox, CHAIN_A, BOB.address)
            refused("zero chain", a.outbox.set_inbox, 0, BOB.address)
            refused("zero inbox", a.outbox.set_inbox, 4242, "0x" + "00" * 20)
    with a.prank(a.owner):
        a.outbox.set_inbox(4242, BOB.address)
    assert a.outbox.inbox_of(4242) == BOB.address


# ---------------------------------------------------------------- forgery proofs


def _sign(acct, chain_id, inbox, m, epoch=0) -> bytes:
    typed = pb.attestation_typed_data(chain_id, inbox, m.id, epoch)
    return bytes(acct.sign_typed_data(full_message=typed).signature)


def _forged(world):
    """A message that A's outbox never emitted: a real one with its amount raised."""
    m, _ = send_raw(world.a, world.b, world.b.bridge.address, amount=1, payload=b"real")
    return m, dataclasses.replace(m, amount=10**12)


def test_prove_forgery_records_the_signer_once(world):
    a, b = world.a, world.b
    _, fake = _forged(world)
    forger = COMMITTEE[1]
    sig = _sign(forger, CHAIN_B, b.inbox.address, fake)
    with a.prank(OUTSIDER):
        assert a.outbox.prove_forgery(fake.as_tuple(), 0, sig) == forger.address
    [event] = [e for e in a.outbox.get_logs() if type(e).__name__ == "ForgeryProven"]
    assert (event.signer, event.message_id, event.epoch, event.destination_chain) == (
        forger.address, fake.id, 0, CHAIN_B)
    assert a.outbox.forgeries(forger.address) == 1
    # the same proof again (replayed) counts nothing
    with unchanged(a), a.prank(BOB):
        refused("proven", a.outbox.prove_forgery, fake.as_tuple(), 0, sig)
    assert a.outbox.forgeries(forger.address) == 1
    # a signature under another epoch is another forgery
    with a.prank(OUTSIDER):
        a.outbox.prove_forgery(fake.as_tuple(), 5, _sign(forger, CHAIN_B, b.inbox.address, fake, 5))
    assert a.outbox.forgeries(forger.address) == 2


def test_prove_forgery_on_a_future_nonce(world):
    """An attestation of a nonce the outbox has not reached is also a forgery (an honest member
    signs only what it has seen emitted and confirmed)."""
    a, b = world.a, world.b
    fake = pb.Message(CHAIN_A, a.outbox.address, a.bridge.address, 99, CHAIN_B, b.bridge.address,
                      pb.KIND_TRANSFER, 10**9, pb.payload_hash(pb.transfer_payload(OUTSIDER.address,
                                                                                   OUTSIDER.address)))
    with a.prank(OUTSIDER):
        assert a.outbox.prove_forgery(fake.as_tuple(), 0, _sign(COMMITTEE[0], CHAIN_B, b.inbox.address,
                                                                fake)) == COMMITTEE[0].address


def test_prove_forgery_refuses_an_emitted_message(world):
    """Framing an honest member: its signature on a real message is no proof."""
    a, b = world.a, world.b
    real, _ = _forged(world)
    with unchanged(a), a.prank(OUTSIDER):
        refused("emitted", a.outbox.prove_forgery, real.as_tuple(), 0,
                _sign(COMMITTEE[0], CHAIN_B, b.inbox.address, real))
    assert a.outbox.forgeries(COMMITTEE[0].address) == 0


def test_prove_forgery_refuses_other_outboxes_and_unknown_destinations(world):
    a, b = world.a, world.b
    _, fake = _forged(world)
    elsewhere = [dataclasses.replace(fake, source_chain=CHAIN_C),          # sent[] here says nothing
                 dataclasses.replace(fake, source_outbox=BOB.address)]      # another outbox
    with unchanged(a), a.prank(OUTSIDER):
        for m in elsewhere:
            refused("not this outbox", a.outbox.prove_forgery, m.as_tuple(), 0,
                    _sign(COMMITTEE[0], CHAIN_B, b.inbox.address, m))
        nowhere = dataclasses.replace(fake, destination_chain=4242)
        refused("unknown destination", a.outbox.prove_forgery, nowhere.as_tuple(), 0,
                _sign(COMMITTEE[0], 4242, b.inbox.address, nowhere))


def test_prove_forgery_refuses_malformed_signatures(world):
    """A malleable twin (n - s, flipped v) would count the same signer twice under another
    signature; short, bad-v and unrecoverable signatures recover nobody (zero signer)."""
    a, b = world.a, world.b
    _, fake = _forged(world)
    sig = _sign(COMMITTEE[2], CHAIN_B, b.inbox.address, fake)
    r, s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    twin = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
    compact = r + ((v - 27) << 255 | s).to_bytes(32, "big")   # EIP-2098 form, 64 bytes
    bad_v = sig[:64] + bytes([v + 2])
    zero_r = b"\0" * 32 + sig[32:]
    with unchanged(a), a.prank(OUTSIDER):
        for bad in (twin, compact, bad_v, zero_r, b""):
            refused("bad signature", a.outbox.prove_forgery, fake.as_tuple(), 0, bad)
    assert a.outbox.forgeries(COMMITTEE[2].address) == 0


def test_forgery_sink_is_the_owners_to_name_and_gets_a_report_from_the_outbox_itself(world):
    """The owner names where forgeries are reported; nobody else can (a sink of the attacker's
    would swallow the reports). A proof with a sink on another chain emits the report as the
    outbox's own message (sender = the outbox: the home ForgerySlasher trusts nothing else)."""
    a, b = world.a, world.b
    sink = BOB.address   # stands for the home ForgerySlasher on chain B
    with unchanged(a), a.prank(OUTSIDER):
        refused("not owner", a.outbox.set_forgery_sink, CHAIN_B, sink)
    with unchanged(a), a.prank(a.owner):
        refused("zero sink", a.outbox.set_forgery_sink, CHAIN_B, "0x" + "00" * 20)
        refused("zero chain", a.outbox.set_forgery_sink, 0, sink)
    with a.prank(a.owner):
        a.outbox.set_forgery_sink(CHAIN_B, sink)
    assert (a.outbox.forgery_sink_chain(), a.outbox.forgery_sink()) == (CHAIN_B, sink)
    _, fake = _forged(world)
    with a.prank(OUTSIDER):
        a.outbox.prove_forgery(fake.as_tuple(), 0, _sign(COMMITTEE[2], CHAIN_B, b.inbox.address, fake))
    (report, payload), = sent_messages(a.outbox)   # the proof's call: the report only
    assert (report.sender, report.recipient, report.destination_chain) == (a.outbox.address, sink, CHAIN_B)
    assert (report.kind, report.amount) == (1, 0)
    from eth_abi import decode
    signer, forged_id, epoch, prover = decode(["address", "bytes32", "uint256", "address"], payload)
    assert (signer.lower(), forged_id, epoch, prover.lower()) == (
        COMMITTEE[2].address.lower(), fake.id, 0, OUTSIDER.address.lower())
