"""BridgeInbox: each check against the attack it stops, on two (three) titanoboa chains.

Messages go from chain A's outbox (sent by ALICE, an ordinary account that every test lists as
a value sender of chain A on B and C, with bridge_support's limits) to a recording recipient on
chain B; every refusal asserts that balances and bridge state are unchanged.
"""

from __future__ import annotations

import dataclasses

import boa
import pytest
from bridge_support import (
    ALICE,
    BOB,
    CAPACITY,
    CHAIN_A,
    CHAIN_B,
    CHAIN_C,
    COMMITTEE,
    DELAY,
    FOREIGN,
    LARGE,
    NEXT_COMMITTEE,
    NEXT_WEIGHTS,
    OUTSIDER,
    QUORUM,
    THRESHOLD,
    WEIGHTS,
    attest,
    deliver,
    deploy_inbox,
    deploy_mock,
    deploy_null_receiver,
    isolated,
    list_sender,
    refused,
    send_raw,
    sent_messages,
    shared_world,
    sign_rotation,
    state,
    unchanged,
)
from contracts_support import key_account, typed_digest

from tessera.protocol import bridge as pb

ZERO = "0x" + "00" * 20


@pytest.fixture(scope="module")
def world():
    return shared_world()


@pytest.fixture(autouse=True)
def _isolated(world):
    with isolated(world.envs):
        for dst in (world.b, world.c):
            list_sender(dst, CHAIN_A, ALICE)
        yield


@pytest.fixture
def mock(world):
    return deploy_mock(world.b)


def _send(world, mock, **kw):
    return send_raw(world.a, world.b, mock.address, **kw)


# ---------------------------------------------------------------- deliver: happy path


def test_deliver_calls_the_recipient_once(world, mock):
    b = world.b
    m, payload = _send(world, mock, amount=7, payload=b"hello", kind=9)
    assert deliver(b, m, payload) is True
    assert (mock.calls(), mock.last_source_chain(), mock.last_sender(), mock.last_kind(),
            mock.last_amount(), mock.last_payload(), mock.last_id()) == (
        1, CHAIN_A, m.sender, 9, 7, b"hello", m.id)
    [event] = [e for e in b.inbox.get_logs() if type(e).__name__ == "MessageDelivered"]
    assert (event.message_id, event.source_chain, event.recipient, event.kind, event.amount) == (
        m.id, CHAIN_A, mock.address, 9, 7)
    assert b.inbox.delivered(m.id) and b.inbox.pending(m.id) == 0
    assert b.inbox.available(CHAIN_A, ALICE.address) == CAPACITY - 7


def test_domain_and_digests_match_protocol(world):
    b = world.b
    assert b.inbox.attestation_digest(b"\1" * 32, 4) == typed_digest(
        pb.attestation_typed_data(CHAIN_B, b.inbox.address, b"\1" * 32, 4))
    members, weights = [a.address for a in NEXT_COMMITTEE], NEXT_WEIGHTS
    assert b.inbox.rotation_digest(1, pb.committee_hash(members, weights)) == typed_digest(
        pb.rotation_typed_data(CHAIN_B, b.inbox.address, 1, members, weights))
    domain = b.inbox.eip712Domain()
    assert (domain[1], domain[2], domain[3], domain[4]) == ("Tessera Bridge", "1", CHAIN_B, b.inbox.address)
    assert b.inbox.committee(0) == [a.address for a in COMMITTEE]
    assert [b.inbox.weight_of(0, a.address) for a in COMMITTEE] == WEIGHTS
    assert b.inbox.total_weight(0) == sum(WEIGHTS) and b.inbox.threshold_bps() == THRESHOLD


# ---------------------------------------------------------------- replay


def test_delivered_twice_is_refused(world, mock):
    b = world.b
    m, payload = _send(world, mock, amount=5)
    deliver(b, m, payload)
    with unchanged(b, ids=[m.id]):
        refused("already delivered", deliver, b, m, payload)
    assert mock.calls() == 1


def test_replay_on_a_third_chain_is_refused(world):
    """Same message, same signatures, to chain C's inbox (same address as B's, same committee,
    A's outbox registered): refused for the chain id; and a message that *is* for C, with
    signatures made for B's inbox at the same address, is refused for the domain."""
    b, c = world.b, world.c
    mock_b, mock_c = deploy_mock(b), deploy_mock(c)
    assert mock_b.address == mock_c.address
    m, payload = send_raw(world.a, b, mock_b.address, amount=3)
    sigs = attest(QUORUM, CHAIN_B, b.inbox.address, m.id)
    with unchanged(c, ids=[m.id]):
        refused("wrong chain", deliver, c, m, payload, signatures=sigs)
    to_c, payload_c = send_raw(world.a, c, mock_c.address, amount=3)
    for_b = attest(QUORUM, CHAIN_B, b.inbox.address, to_c.id)   # chain B's domain, C's message
    with unchanged(c, ids=[to_c.id]):
        refused(FOREIGN, deliver, c, to_c, payload_c, signatures=for_b)
    deliver(b, m, payload, signatures=sigs)
    deliver(c, to_c, payload_c)                                 # C's own domain: fine
    assert mock_b.calls() == mock_c.calls() == 1


def test_replay_on_a_second_inbox_of_the_same_chain_is_refused(world, mock):
    a, b = world.a, world.b
    second = deploy_inbox(b.env, b.owner)
    with b.prank(b.owner):
        second.register_source(CHAIN_A, a.outbox.address)
    list_sender(b, CHAIN_A, ALICE, inbox=second)
    m, payload = _send(world, mock, amount=3)
    sigs = attest(QUORUM, CHAIN_B, b.inbox.address, m.id)
    with unchanged(b, ids=[m.id]):
        refused(FOREIGN, deliver, b, m, payload, signatures=sigs, inbox=second)
    assert not second.delivered(m.id)
    deliver(b, m, payload, signatures=sigs)
    assert mock.calls() == 1


# ---------------------------------------------------------------- signatures


def _sig(acct, world, m, epoch=0):
    return attest([acct], CHAIN_B, world.b.inbox.address, m.id, epoch)[0]


@pytest.mark.parametrize("case", ["non-member", "duplicated", "out of order", "below threshold",
                                  "three light", "none", "other epoch", "malleable", "short",
                                  "bad v"])
def test_bad_signature_sets_are_refused(world, mock, case):
    b = world.b
    m, payload = _send(world, mock, amount=5)
    c0, c1, c2, c3 = (_sig(acct, world, m) for acct in COMMITTEE)
    heavy = sorted([(COMMITTEE[3].address, c3), (OUTSIDER.address, _sig(OUTSIDER, world, m))],
                   key=lambda kv: int(kv[0], 16))
    sig = bytearray(c3)
    s = int.from_bytes(sig[32:64], "big")
    twin = bytes(sig[:32]) + (pb_n() - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    sets = {
        # Wormhole: a signature check bypassed. A key outside the committee weighs nothing.
        "non-member": ([s for _, s in heavy], "not a member"),
        # Counting one signer twice (a duplicate, or its malleable twin) to fake a quorum.
        "duplicated": ([c3, c3], "not ascending"),
        "out of order": ([c3, c2], "not ascending"),
        "below threshold": ([c1, c3], "no quorum"),           # 20 + 40 = 60 < 66.67
        "three light": ([c0, c1, c2], "no quorum"),           # three signers, 60: weight counts
        "none": ([], "no quorum"),
        # a quorum's signatures under epoch 1 while epoch 0 is current
        "other epoch": ([_sig(COMMITTEE[2], world, m, 1), _sig(COMMITTEE[3], world, m, 1)], FOREIGN),
        "malleable": ([c2, twin], "bad signature"),
        "short": ([c2, c3[:64]], "bad signature"),
        "bad v": ([c2, c3[:64] + b"\x01"], "bad signature"),
    }
    signatures, reason = sets[case]
    with unchanged(b, ids=[m.id]):
        refused(reason, deliver, b, m, payload, signatures=signatures)
    assert mock.calls() == 0
    deliver(b, m, payload)   # a proper quorum still delivers it
    assert mock.calls() == 1


def pb_n() -> int:
    return 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def test_quorum_rule_matches_protocol(world, mock):
    """Every subset of the committee, in address order: the inbox accepts exactly what
    protocol.bridge.quorum_reached accepts."""
    b = world.b
    m, payload = _send(world, mock)
    weights = {a.address: w for a, w in zip(COMMITTEE, WEIGHTS, strict=True)}
    sigs = {a.address: _sig(a, world, m) for a in COMMITTEE}
    for mask in range(1, 16):
        signers = [a.address for i, a in enumerate(COMMITTEE) if mask >> i & 1]
        ok = pb.quorum_reached(signers, weights, THRESHOLD)
        signatures = [sigs[s] for s in signers]
        if ok:
            with b.env.anchor():
                deliver(b, m, payload, signatures=signatures)
        else:
            refused("no quorum", deliver, b, m, payload, signatures=signatures)


# ---------------------------------------------------------------- message checks


@pytest.mark.parametrize("field, value, reason", [
    ("version", 2, "bad version"),
    ("destination_chain", CHAIN_C, "wrong chain"),
    ("source_outbox", OUTSIDER.address, "unknown outbox"),
    ("payload_hash", b"\x13" * 32, "bad payload"),
])
def test_message_checks(world, mock, field, value, reason):
    b = world.b
    m, payload = _send(world, mock, amount=5)
    bad = dataclasses.replace(m, **{field: value})
    # signed by the quorum for this inbox: only the check named can stop it
    with unchanged(b, ids=[m.id, bad.id]):
        refused(reason, deliver, b, bad, payload)
    assert mock.calls() == 0


def test_unregistered_source_with_zero_outbox_is_refused(world, mock):
    """Nomad: an unregistered source chain reads as outbox 0x0; a message claiming outbox 0x0
    from that chain must not match it."""
    b = world.b
    m, payload = _send(world, mock)
    nomad = dataclasses.replace(m, source_chain=777, source_outbox=ZERO)
    with unchanged(b, ids=[nomad.id]):
        refused("unknown outbox", deliver, b, nomad, payload)


def test_bad_payload_for_the_right_hash_is_refused(world, mock):
    b = world.b
    m, payload = _send(world, mock, payload=b"pay alice")
    with unchanged(b, ids=[m.id]):
        refused("bad payload", deliver, b, m, b"pay mallory")


# ---------------------------------------------------------------- limits


def test_bucket_emptied_then_refilled(world, mock):
    b = world.b
    list_sender(b, CHAIN_A, ALICE, large=CAPACITY)   # no queueing here: only the bucket
    model = pb.Bucket(*b.inbox.bucket(CHAIN_A, ALICE.address))
    assert model.tokens == CAPACITY
    m1, p1 = _send(world, mock, amount=6_000 * 10**6)
    deliver(b, m1, p1)
    model = model.take(m1.amount, b.env.timestamp)
    m2, p2 = _send(world, mock, amount=5_000 * 10**6)
    assert model.refusal(m2.amount, b.env.timestamp) == "rate limited"
    with unchanged(b, ids=[m2.id]):
        refused("rate limited", deliver, b, m2, p2)
    b.env.time_travel(seconds=499)     # 998 USD back: 4,998 < 5,000
    assert b.inbox.available(CHAIN_A, ALICE.address) == model.at(b.env.timestamp).tokens == 4_998 * 10**6
    refused("rate limited", deliver, b, m2, p2)
    b.env.time_travel(seconds=1)
    deliver(b, m2, p2)
    model = model.take(m2.amount, b.env.timestamp)
    assert tuple(b.inbox.bucket(CHAIN_A, ALICE.address)) == (
        model.capacity, model.refill_per_s, model.tokens, model.updated_at)
    b.env.time_travel(seconds=10**9)   # refills to capacity, never above
    assert b.inbox.available(CHAIN_A, ALICE.address) == CAPACITY
    m3, p3 = _send(world, mock, amount=CAPACITY + 1)
    with unchanged(b, ids=[m3.id]):
        refused("over capacity", deliver, b, m3, p3)
    assert mock.calls() == 2


# Value senders (two TokenBridges of one source: TUSD with 6 decimals, a stake token with 18)
STAKE = 10**18
STAKE_LIMITS = dict(capacity=1_000_000 * STAKE, refill=10 * STAKE, large=50_000 * STAKE)

ROGUE_SENDER = """
# pragma version ~=0.4.3
# An attacker's own contract on the source chain: it sends through the real outbox.

interface IOutbox:
    def send(destination_chain: uint256, recipient: address, kind: uint8, amount: uint256,
             payload: Bytes[512]) -> bytes32: nonpayable


@external
def drain(outbox: address, destination_chain: uint256, recipient: address, amount: uint256):
    extcall IOutbox(outbox).send(destination_chain, recipient, 1, amount, b"")
"""


def test_value_senders_of_one_source_have_their_own_buckets_and_thresholds(world, mock):
    """ALICE (TUSD-like limits) and BOB (a second bridge over an 18-decimal token: limits in
    its own base units, a billion times larger) on the same source: an amount far over
    ALICE's capacity is BOB's everyday transfer; the same amount queued for one is delivered
    at once for the other; emptying one bucket leaves the other's untouched."""
    b = world.b
    list_sender(b, CHAIN_A, BOB, **STAKE_LIMITS)
    assert b.inbox.value_sender(CHAIN_A, ALICE.address) and b.inbox.value_sender(CHAIN_A, BOB.address)
    assert b.inbox.large_threshold(CHAIN_A, BOB.address) == STAKE_LIMITS["large"]
    assert b.inbox.large_threshold(CHAIN_A, ALICE.address) == LARGE
    models = {who: pb.Bucket(*b.inbox.bucket(CHAIN_A, who.address)) for who in (ALICE, BOB)}

    def send(who, amount) -> bool:
        m, p = _send(world, mock, amount=amount, sender=who)
        delivered = deliver(b, m, p)
        models[who] = models[who].take(amount, b.env.timestamp)
        for x in (ALICE, BOB):   # the one spent, and the other untouched
            assert tuple(b.inbox.bucket(CHAIN_A, x.address)) == dataclasses.astuple(models[x])
        return delivered

    big = 20_000 * STAKE
    assert pb.Bucket(*b.inbox.bucket(CHAIN_A, ALICE.address)).refusal(big, b.env.timestamp) == (
        "over capacity")                                   # what one shared bucket would say
    assert send(BOB, big) is True                          # delivered now, under BOB's threshold
    assert b.inbox.available(CHAIN_A, ALICE.address) == CAPACITY
    assert send(ALICE, 2 * LARGE) is False                 # over ALICE's threshold: queued
    assert send(BOB, 2 * LARGE) is True                    # the same amount: delivered now
    assert send(ALICE, CAPACITY - 2 * LARGE) is False      # ALICE's bucket is empty now
    assert b.inbox.available(CHAIN_A, ALICE.address) == 0
    m, p = _send(world, mock, amount=1)
    with unchanged(b, ids=[m.id]):
        refused("rate limited", deliver, b, m, p)
    assert send(BOB, 1) is True                            # BOB's is not
    assert send(BOB, STAKE_LIMITS["large"] + 1) is False   # over BOB's own threshold: queued
    assert b.inbox.available(CHAIN_A, BOB.address) == (
        STAKE_LIMITS["capacity"] - big - 2 * LARGE - 1 - STAKE_LIMITS["large"] - 1)
    assert mock.calls() == 3 and b.inbox.available(CHAIN_A, world.a.bridge.address) == CAPACITY


def test_an_attackers_own_contract_cannot_drain_the_token_bridges_bucket(world, mock):
    """Attack: anyone can deploy a contract on the source chain and send value messages from it
    through the real outbox (an amount is just a number there, nothing is locked), to a
    recipient of their own that accepts anything. The committee attests whatever the outbox
    emitted, so the messages are genuine; if their amounts counted against the TUSD bridge's
    bucket, they would empty it and delay every real transfer (bucket griefing). The message's
    sender is the attacker's contract (the outbox records msg.sender, and a message claiming
    the TokenBridge as its sender was never emitted, so no honest quorum signs it), and the
    inbox refuses value from any sender that is not listed: refused, nothing spent."""
    a, b = world.a, world.b
    with a.prank(OUTSIDER):
        rogue = boa.loads(ROGUE_SENDER, name="RogueSender", env=a.env)
    for amount in (1, CAPACITY):
        with a.prank(OUTSIDER):
            rogue.drain(a.outbox.address, CHAIN_B, mock.address, amount)
        [(m, p)] = sent_messages(rogue)
        assert m.sender == rogue.address and m.amount == amount
        with unchanged(b, ids=[m.id]):
            refused("not a value sender", deliver, b, m, p)
    assert b.inbox.available(CHAIN_A, a.bridge.address) == CAPACITY and mock.calls() == 0


def test_an_unlisted_senders_value_is_refused_even_when_none_is_listed(world, mock):
    """A source with no value sender listed at all is not open to everyone: its value messages
    are all refused, whoever sent them; a message without value still passes."""
    a, b = world.a, world.b
    fresh = deploy_inbox(b.env, b.owner)
    with b.prank(b.owner):
        fresh.register_source(CHAIN_A, a.outbox.address)
    m, p = _send(world, mock, amount=1)
    for who in (ALICE, a.bridge):
        assert not fresh.value_sender(CHAIN_A, who.address)
    refused("not a value sender", deliver, b, m, p, inbox=fresh)
    assert not fresh.delivered(m.id) and mock.calls() == 0
    assert tuple(fresh.bucket(CHAIN_A, ALICE.address)) == (0, 0, 0, 0)
    free, fp = _send(world, mock)
    assert deliver(b, free, fp, inbox=fresh) is True and mock.calls() == 1


def test_unlisting_refuses_value_afterwards(world, mock):
    b = world.b
    m, p = _send(world, mock, amount=LARGE)
    deliver(b, m, p)
    queued, qp = _send(world, mock, amount=LARGE + 1)
    assert deliver(b, queued, qp) is False
    list_sender(b, CHAIN_A, ALICE, capacity=0)
    [e] = [e for e in b.inbox.get_logs() if type(e).__name__ == "ValueSenderSet"]
    assert (e.source_chain, e.sender, e.capacity, e.refill_per_s, e.large_threshold) == (
        CHAIN_A, ALICE.address, 0, 0, 0)
    assert not b.inbox.value_sender(CHAIN_A, ALICE.address)
    assert tuple(b.inbox.bucket(CHAIN_A, ALICE.address)) == (0, 0, 0, 0)
    assert b.inbox.large_threshold(CHAIN_A, ALICE.address) == 0
    assert b.inbox.available(CHAIN_A, ALICE.address) == 0
    m2, p2 = _send(world, mock, amount=1)
    with unchanged(b, ids=[m2.id]):
        refused("not a value sender", deliver, b, m2, p2)
    free, fp = _send(world, mock)                  # no value: still delivered
    assert deliver(b, free, fp) is True
    b.env.time_travel(seconds=DELAY)               # what was queued before is not touched
    with b.prank(OUTSIDER):                        # (the guardian cancels it if need be)
        b.inbox.execute(queued.as_tuple(), qp)
    list_sender(b, CHAIN_A, ALICE)                 # listed again: a new, full bucket
    assert b.inbox.available(CHAIN_A, ALICE.address) == CAPACITY
    deliver(b, m2, p2)
    assert mock.calls() == 4


def test_a_zero_amount_message_from_an_unlisted_sender_takes_nothing(world, mock):
    b = world.b
    m, p = _send(world, mock, sender=OUTSIDER)
    assert not b.inbox.value_sender(CHAIN_A, OUTSIDER.address)
    before = state(b)
    assert deliver(b, m, p) is True and mock.calls() == 1
    after = state(b)
    assert {k: v for k, v in after.items() if k[1] == "bucket"} == {
        k: v for k, v in before.items() if k[1] == "bucket"}


def test_set_value_sender_update_keeps_what_is_left(world, mock):
    b = world.b
    m, p = _send(world, mock, amount=800 * 10**6)
    deliver(b, m, p)
    b.env.time_travel(seconds=100)
    model = pb.Bucket(*b.inbox.bucket(CHAIN_A, ALICE.address)).at(b.env.timestamp)  # old rate
    list_sender(b, CHAIN_A, ALICE, capacity=5_000 * 10**6, refill=1)
    assert tuple(b.inbox.bucket(CHAIN_A, ALICE.address)) == (
        5_000 * 10**6, 1, min(model.tokens, 5_000 * 10**6), b.env.timestamp)
    list_sender(b, CHAIN_A, ALICE, capacity=CAPACITY * 2, refill=1)
    assert b.inbox.available(CHAIN_A, ALICE.address) == 5_000 * 10**6   # a raise mints nothing


@pytest.mark.parametrize("who, args, reason", [
    ("outsider", (CHAIN_C, OUTSIDER.address), "not owner"),
    ("guardian", (CHAIN_C, OUTSIDER.address), "not owner"),
    ("owner", (CHAIN_B, OUTSIDER.address), "same chain"),
    ("owner", (CHAIN_C, ZERO), "zero outbox"),
])
def test_register_source_refusals(world, who, args, reason):
    b = world.b
    caller = {"outsider": OUTSIDER.address, "guardian": b.guardian, "owner": b.owner}[who]
    with unchanged(b), b.prank(caller):
        refused(reason, b.inbox.register_source, *args)


@pytest.mark.parametrize("who, args, reason", [
    ("outsider", (CHAIN_A, OUTSIDER.address, 1, 1, 1), "not owner"),
    ("guardian", (CHAIN_A, OUTSIDER.address, 1, 1, 1), "not owner"),
    ("owner", (CHAIN_B, OUTSIDER.address, 1, 1, 1), "same chain"),
    ("owner", (CHAIN_A, ZERO, 1, 1, 1), "zero sender"),
])
def test_set_value_sender_refusals(world, who, args, reason):
    b = world.b
    caller = {"outsider": OUTSIDER.address, "guardian": b.guardian, "owner": b.owner}[who]
    with unchanged(b), b.prank(caller):
        refused(reason, b.inbox.set_value_sender, *args)


def test_large_message_is_queued_then_executed_after_the_delay(world, mock):
    b = world.b
    m, p = _send(world, mock, amount=LARGE + 1)
    assert deliver(b, m, p) is False
    [event] = [e for e in b.inbox.get_logs() if type(e).__name__ == "MessageQueued"]
    release = b.env.timestamp + DELAY
    assert (event.message_id, event.release_at) == (m.id, release)
    assert b.inbox.pending(m.id) == release and b.inbox.delivered(m.id) and mock.calls() == 0
    assert b.inbox.available(CHAIN_A, ALICE.address) == CAPACITY - m.amount   # taken when queued
    refused("already delivered", deliver, b, m, p)
    b.env.time_travel(seconds=DELAY - 1)
    with unchanged(b, ids=[m.id]), b.prank(OUTSIDER):
        refused("delayed", b.inbox.execute, m.as_tuple(), p)
    b.env.time_travel(seconds=1)
    with unchanged(b, ids=[m.id]), b.prank(OUTSIDER):
        # the id commits to the payload's hash only: a swapped payload must not pass
        refused("bad payload", b.inbox.execute, m.as_tuple(), b"swapped")
    with b.prank(OUTSIDER):
        b.inbox.execute(m.as_tuple(), p)
    assert mock.calls() == 1 and mock.last_payload() == p and b.inbox.pending(m.id) == 0
    with unchanged(b, ids=[m.id]), b.prank(OUTSIDER):
        refused("not queued", b.inbox.execute, m.as_tuple(), p)
    assert mock.calls() == 1


def test_guardian_cancels_a_queued_message(world, mock):
    b = world.b
    m, p = _send(world, mock, amount=LARGE * 2)
    deliver(b, m, p)
    for outsider in (OUTSIDER.address, m.sender):
        with unchanged(b, ids=[m.id]), b.prank(outsider):
            refused("not guardian", b.inbox.cancel, m.as_tuple(), p)
    with b.prank(b.guardian):
        b.inbox.cancel(m.as_tuple(), p)
    assert b.inbox.cancelled(m.id) and b.inbox.pending(m.id) == 0 and b.inbox.delivered(m.id)
    assert (mock.cancels(), mock.calls(), mock.last_id(), mock.last_amount()) == (1, 0, m.id, m.amount)
    assert b.inbox.available(CHAIN_A, ALICE.address) == CAPACITY - m.amount   # not refunded
    b.env.time_travel(seconds=DELAY)
    with unchanged(b, ids=[m.id]), b.prank(OUTSIDER):
        refused("not queued", b.inbox.execute, m.as_tuple(), p)
    with unchanged(b, ids=[m.id]), b.prank(b.guardian):
        refused("not queued", b.inbox.cancel, m.as_tuple(), p)
    refused("already delivered", deliver, b, m, p)


def test_owner_may_cancel_too(world, mock):
    b = world.b
    m, p = _send(world, mock, amount=LARGE * 2)
    deliver(b, m, p)
    with b.prank(b.owner):
        b.inbox.cancel(m.as_tuple(), p)
    assert b.inbox.cancelled(m.id) and mock.cancels() == 1


# ---------------------------------------------------------------- pause and owner powers


def test_pause_by_guardian_unpause_only_by_owner(world, mock):
    b = world.b
    m, p = _send(world, mock)
    big, bp = _send(world, mock, amount=LARGE + 1)
    deliver(b, big, bp)
    with b.prank(OUTSIDER):
        refused("not guardian", b.inbox.pause)
    with b.prank(b.guardian):
        b.inbox.pause()
    assert b.inbox.paused()
    b.env.time_travel(seconds=DELAY)
    with unchanged(b, ids=[m.id, big.id]):
        refused("paused", deliver, b, m, p)
        with b.prank(OUTSIDER):
            refused("paused", b.inbox.execute, big.as_tuple(), bp)
        with b.prank(b.guardian):
            refused("not owner", b.inbox.unpause)
    with b.prank(b.guardian):               # cancelling still works while paused
        b.inbox.cancel(big.as_tuple(), bp)
    with b.prank(b.owner):
        b.inbox.unpause()
    deliver(b, m, p)
    assert mock.calls() == 1 and mock.cancels() == 1


def test_owner_setters(world):
    b = world.b
    with unchanged(b):
        for fn, arg in ((b.inbox.set_delay, 1), (b.inbox.set_guardian, OUTSIDER.address)):
            for who in (OUTSIDER.address, b.guardian):
                with b.prank(who):
                    refused("not owner", fn, arg)
        with b.prank(b.owner):
            refused("delay too long", b.inbox.set_delay, 30 * 86_400 + 1)
    with b.prank(b.owner):
        b.inbox.set_delay(60)
        b.inbox.set_guardian(OUTSIDER.address)
    assert b.inbox.delay() == 60 and b.inbox.guardian() == OUTSIDER.address
    with b.prank(OUTSIDER.address):
        b.inbox.pause()


def _events(contract, name):
    return [e for e in contract.get_logs() if type(e).__name__ == name]


def test_every_owner_and_guardian_action_is_logged(world):
    a, b = world.a, world.b
    with b.prank(b.owner):
        b.inbox.register_source(CHAIN_C, OUTSIDER.address)
        [e] = _events(b.inbox, "SourceRegistered")
        assert (e.source_chain, e.outbox) == (CHAIN_C, OUTSIDER.address)
        b.inbox.set_value_sender(CHAIN_C, BOB.address, 5, 1, 2)
        [e] = _events(b.inbox, "ValueSenderSet")
        assert (e.source_chain, e.sender, e.capacity, e.refill_per_s, e.large_threshold) == (
            CHAIN_C, BOB.address, 5, 1, 2)
        b.inbox.set_delay(7)
        assert [e.delay for e in _events(b.inbox, "DelaySet")] == [7]
        b.inbox.set_guardian(OUTSIDER.address)
        assert [e.guardian for e in _events(b.inbox, "GuardianSet")] == [OUTSIDER.address]
        b.inbox.pause()
        assert [e.by for e in _events(b.inbox, "Paused")] == [b.owner]
        b.inbox.unpause()
        assert [e.by for e in _events(b.inbox, "Unpaused")] == [b.owner]
    with a.prank(a.owner):
        a.outbox.set_inbox(4242, OUTSIDER.address)
        assert [(e.chain_id, e.inbox) for e in _events(a.outbox, "InboxSet")] == [
            (4242, OUTSIDER.address)]


def test_queued_message_with_a_reverting_recipient_stays_queued(world, mock):
    b = world.b
    m, p = _send(world, mock, amount=LARGE + 1)
    deliver(b, m, p)
    b.env.time_travel(seconds=DELAY)
    with b.prank(OUTSIDER):
        mock.set_fail(True)
    with unchanged(b, ids=[m.id]), b.prank(OUTSIDER):
        refused("recipient refuses", b.inbox.execute, m.as_tuple(), p)
    with b.prank(OUTSIDER):
        mock.set_fail(False)
        b.inbox.execute(m.as_tuple(), p)
    assert mock.calls() == 1 and b.inbox.pending(m.id) == 0


# ---------------------------------------------------------------- rotation


def _rotate(b, epoch, members, weights, signers, **kw):
    sigs = sign_rotation(signers, b, epoch, members, weights)
    with b.prank(OUTSIDER):
        b.inbox.rotate(epoch, [a.address for a in members], list(weights), sigs, **kw)


def test_rotation_retires_the_old_committee(world, mock):
    b = world.b
    m, p = _send(world, mock)
    old_epoch0 = attest(QUORUM, CHAIN_B, b.inbox.address, m.id, 0)
    with b.prank(b.guardian):
        b.inbox.pause()                      # rotation works while paused
    _rotate(b, 1, NEXT_COMMITTEE, NEXT_WEIGHTS, QUORUM)
    [event] = [e for e in b.inbox.get_logs() if type(e).__name__ == "CommitteeRotated"]
    assert (event.epoch, event.committee, event.total_weight, event.members) == (
        1, pb.committee_hash([a.address for a in NEXT_COMMITTEE], NEXT_WEIGHTS), 10,
        [a.address for a in NEXT_COMMITTEE])
    with b.prank(b.owner):
        b.inbox.unpause()
    assert b.inbox.epoch() == 1 and b.inbox.committee(1) == [a.address for a in NEXT_COMMITTEE]
    assert b.inbox.total_weight(1) == 10
    with unchanged(b, ids=[m.id]):
        # the retired committee's signatures from before the rotation (epoch 0) ...
        refused(FOREIGN, deliver, b, m, p, signatures=old_epoch0)
        # ... and signed afresh under the new epoch: no longer members
        refused("not a member", deliver, b, m, p, signers=QUORUM, epoch=1)
        # the new committee signing under the retired epoch
        refused(FOREIGN, deliver, b, m, p, signers=NEXT_COMMITTEE[:2], epoch=0)
    deliver(b, m, p, signers=NEXT_COMMITTEE[:2], epoch=1)    # 8 of 10
    assert mock.calls() == 1 and b.inbox.available(CHAIN_A, ALICE.address) == CAPACITY   # no value
    # and only the new committee can rotate again
    with unchanged(b):
        refused(FOREIGN + ("no quorum",), _rotate, b, 2, COMMITTEE, WEIGHTS, COMMITTEE)
    _rotate(b, 2, COMMITTEE, WEIGHTS, NEXT_COMMITTEE)
    assert b.inbox.epoch() == 2


def test_rotation_refusals(world):
    b = world.b
    members, weights = NEXT_COMMITTEE, NEXT_WEIGHTS
    addrs = [a.address for a in members]
    with unchanged(b):
        for epoch in (0, 2):
            refused("wrong epoch", _rotate, b, epoch, members, weights, COMMITTEE)
        # below the quorum (60 of 100), and a quorum's signatures over another committee
        refused("no quorum", _rotate, b, 1, members, weights, COMMITTEE[:3])
        sigs = sign_rotation(QUORUM, b, 1, members, weights)
        with b.prank(OUTSIDER):
            refused(FOREIGN, b.inbox.rotate, 1, addrs, [4, 4, 500], sigs)
            # a rotation signed for another inbox's domain
            other = deploy_inbox(b.env, b.owner)
            refused(FOREIGN, b.inbox.rotate, 1, addrs, weights,
                    sign_rotation(QUORUM, b, 1, members, weights, inbox=other))
            # type confusion: attestations of (id = the committee hash, epoch 1), same values
            # as the Rotation(1, hash): the type hash tells them apart
            att = attest(QUORUM, CHAIN_B, b.inbox.address, pb.committee_hash(addrs, weights), 1)
            refused(FOREIGN, b.inbox.rotate, 1, addrs, weights, att)


BAD_COMMITTEES = [
    ([], [], "empty committee"),
    (["A", "B"], [1], "length mismatch"),
    (["A", "B"], [1, 0], "zero weight"),
    (["B", "A"], [1, 1], "members not ascending"),
    (["A", "A"], [1, 1], "members not ascending"),
    (["0", "A"], [1, 1], "members not ascending"),
]


def _members(names):
    by = {"A": NEXT_COMMITTEE[0].address, "B": NEXT_COMMITTEE[1].address, "0": ZERO}
    return [by[n] for n in names]


@pytest.mark.parametrize("names, weights, reason", BAD_COMMITTEES)
def test_invalid_committees_are_refused_as_protocol_says(world, names, weights, reason):
    b = world.b
    members = _members(names)
    assert pb.committee_refusal(members, weights) == reason
    with b.prank(b.owner):
        refused(reason, deploy_inbox, b.env, b.owner, committee=[_Addr(a) for a in members],
                weights=weights)
    typed = {a.address: bytes(a.sign_typed_data(full_message=pb.rotation_typed_data(
        CHAIN_B, b.inbox.address, 1, members, weights)).signature) for a in QUORUM}
    with unchanged(b), b.prank(OUTSIDER):
        refused(reason, b.inbox.rotate, 1, members, weights, pb.sort_signatures(typed))


def test_committee_size_bound_and_weight_overflow(world):
    b = world.b
    too_many = sorted((key_account(500 + i).address for i in range(33)), key=lambda a: int(a, 16))
    assert pb.committee_refusal(too_many, [1] * 33) == "committee too large"
    refused(("committee too large", "DynArray[address, 32] bounds check"), deploy_inbox, b.env,
            b.owner, committee=[_Addr(a) for a in too_many], weights=[1] * 33)
    refused("total weight too large", deploy_inbox, b.env, b.owner,
            committee=NEXT_COMMITTEE[:2], weights=[2**255, 2**255 - 1])


@pytest.mark.parametrize("threshold", [0, 5_000, 10_001])
def test_minority_or_impossible_thresholds_are_refused(world, threshold):
    refused("bad threshold", deploy_inbox, world.b.env, world.b.owner, threshold=threshold)


@dataclasses.dataclass
class _Addr:
    address: str


# ---------------------------------------------------------------- recipient behaviour


def test_reverting_recipient_leaves_the_message_retryable(world, mock):
    b = world.b
    m, p = _send(world, mock, amount=50)
    with b.prank(OUTSIDER):
        mock.set_fail(True)
    with unchanged(b, ids=[m.id]):
        refused("recipient refuses", deliver, b, m, p)
    assert not b.inbox.delivered(m.id) and b.inbox.available(CHAIN_A, ALICE.address) == CAPACITY
    with b.prank(OUTSIDER):
        mock.set_fail(False)
    assert deliver(b, m, p) is True and mock.calls() == 1


def test_reentrant_deliver_and_execute_are_refused(world, mock):
    """A recipient that calls back into the inbox during `on_bridge_message` (to deliver the
    same message again, or to execute a queued one) gets a failed call; only the outer
    delivery happens."""
    b = world.b
    m, p = _send(world, mock, amount=10)
    sigs = attest(QUORUM, CHAIN_B, b.inbox.address, m.id)
    with b.prank(OUTSIDER):
        mock.set_reentry(b.inbox.address, b.inbox.deliver.prepare_calldata(m.as_tuple(), p, sigs))
    deliver(b, m, p, signatures=sigs)
    assert mock.reentry_tried() and not mock.reentry_ok() and mock.calls() == 1

    big, bp = _send(world, mock, amount=LARGE + 1)
    deliver(b, big, bp)
    b.env.time_travel(seconds=DELAY)
    small, sp = _send(world, mock, amount=1)
    with b.prank(OUTSIDER):
        mock.set_reentry(b.inbox.address, b.inbox.execute.prepare_calldata(big.as_tuple(), bp))
    deliver(b, small, sp)
    assert mock.reentry_tried() and not mock.reentry_ok()
    assert b.inbox.pending(big.id) != 0 and mock.calls() == 2   # the queued one still waits
    with b.prank(OUTSIDER):
        mock.set_reentry(ZERO, b"")
        b.inbox.execute(big.as_tuple(), bp)
    assert mock.calls() == 3


# ---------------------------------------------------------------- gas


def test_deliver_gas_by_signature_count(world, capsys):
    """deliver's execution gas (boa's computation: without the 21,000 base and calldata) with
    n signatures: a committee of n equal weights, all signing; a 64-byte payload, a nonzero
    amount (bucket update), a recipient that does nothing."""
    a, b = world.a, world.b
    null = deploy_null_receiver(b)
    gas, tx = {}, {}
    for n in (1, 4, 8, 16, 32):
        committee = sorted((key_account(600 + i) for i in range(n)), key=lambda x: int(x.address, 16))
        with a.env.anchor(), b.env.anchor():
            inbox = deploy_inbox(b.env, b.owner, committee=committee, weights=[1] * n)
            with b.prank(b.owner):
                inbox.register_source(CHAIN_A, a.outbox.address)
            list_sender(b, CHAIN_A, ALICE, inbox=inbox)
            m, p = send_raw(a, b, null.address, amount=10**6, payload=b"\x01" * 64)
            sigs = attest(committee, CHAIN_B, inbox.address, m.id)
            deliver(b, m, p, signatures=sigs, inbox=inbox)
            gas[n] = inbox._computation.get_gas_used()
            data = inbox.deliver.prepare_calldata(m.as_tuple(), p, sigs)
            tx[n] = 21_000 + sum(16 if byte else 4 for byte in data) + gas[n]
    with capsys.disabled():
        print(f"\ndeliver execution gas by signatures: {gas}\nwith base and calldata: {tx}")
    assert gas[1] < gas[4] < gas[8] < gas[16] < gas[32] < 500_000
