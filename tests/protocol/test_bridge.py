"""protocol/bridge.py: the message id, the quorum rule, the committee rule and the token bucket.

The contracts are checked against these in tests/contracts/test_bridge_*.py; here the rules
themselves are pinned down, including the attacks each one exists for."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given
from hypothesis import strategies as st

from tessera.protocol import bridge, messages

A, B = 31337, 31338
OUTBOX = "0x" + "11" * 20
APP = "0x" + "22" * 20
PEER = "0x" + "33" * 20
INBOX = "0x" + "44" * 20


def message(**changes) -> bridge.Message:
    fields = dict(source_chain=B, source_outbox=OUTBOX, sender=APP, nonce=0, destination_chain=A,
                  recipient=PEER, kind=bridge.KIND_TRANSFER, amount=5,
                  payload_hash=bridge.payload_hash(bridge.transfer_payload(APP, APP)))
    fields.update(changes)
    return bridge.Message(**fields)


def test_every_field_changes_the_id():
    """A message is good for one route, once: the id names all ten fields."""
    base = message()
    variants = [message(source_chain=7), message(source_outbox=APP), message(sender=PEER),
                message(nonce=1), message(destination_chain=7), message(recipient=APP),
                message(kind=bridge.KIND_BOUNCE), message(amount=6),
                message(payload_hash=bridge.payload_hash(b"")), message(version=2)]
    ids = {base.id} | {m.id for m in variants}
    assert len(ids) == 1 + len(variants)


def test_payload_over_the_limit_is_refused():
    bridge.payload_hash(b"x" * bridge.MAX_PAYLOAD)
    with pytest.raises(ValueError, match="512-byte limit"):
        bridge.payload_hash(b"x" * (bridge.MAX_PAYLOAD + 1))


def test_attestation_names_chain_inbox_and_epoch():
    """A signature is good at one inbox on one chain under one epoch: replaying it at another
    chain's inbox, another inbox, or after a rotation recovers someone else (not a member)."""
    key = Account.create()
    msg_id = message().id
    typed = bridge.attestation_typed_data(A, INBOX, msg_id, 0)
    signature = key.sign_message(encode_typed_data(full_message=typed)).signature
    assert Account.recover_message(encode_typed_data(full_message=typed), signature=signature) \
        == key.address
    for other in (bridge.attestation_typed_data(B, INBOX, msg_id, 0),
                  bridge.attestation_typed_data(A, PEER, msg_id, 0),
                  bridge.attestation_typed_data(A, INBOX, msg_id, 1)):
        assert Account.recover_message(encode_typed_data(full_message=other),
                                       signature=signature) != key.address


def _members(n: int) -> list[str]:
    return sorted((Account.create().address for _ in range(n)), key=lambda a: int(a, 16))


def test_quorum_counts_weight_once_and_in_order():
    members = _members(4)
    weights = dict(zip(members, [40, 30, 20, 10], strict=True))
    assert bridge.quorum_reached(members[:3], weights, bridge.DEFAULT_THRESHOLD_BPS)  # 90 %
    assert bridge.quorum_reached(members[:2], weights, 7_000)                        # 70 % exactly
    assert not bridge.quorum_reached(members[:2], weights, 7_001)
    # the attacks: the heaviest signer twice, the order reversed, an outsider
    assert not bridge.quorum_reached([members[0], members[0], members[1]], weights, 6_667)
    assert not bridge.quorum_reached(list(reversed(members[:3])), weights, 6_667)
    assert not bridge.quorum_reached([*members[:2], _members(1)[0]], weights, 5_000)


@given(st.lists(st.integers(1, 10**24), min_size=1, max_size=8), st.data())
def test_quorum_is_exactly_the_weight_rule(weights, data):
    members = _members(len(weights))
    table = dict(zip(members, weights, strict=True))
    chosen = sorted(data.draw(st.sets(st.sampled_from(members))), key=lambda a: int(a, 16))
    threshold = data.draw(st.integers(5_001, bridge.BPS))
    expected = sum(table[m] for m in chosen) * bridge.BPS >= sum(weights) * threshold
    assert bridge.quorum_reached(chosen, table, threshold) == expected


def test_sort_signatures_orders_by_signer():
    members = _members(3)
    signed = {members[2]: b"c", members[0]: b"a", members[1]: b"b"}
    assert bridge.sort_signatures(signed) == [b"a", b"b", b"c"]


def test_committee_rules():
    members = _members(3)
    assert bridge.committee_refusal(members, [1, 2, 3]) is None
    assert bridge.committee_refusal([], []) == "empty committee"
    assert bridge.committee_refusal(members, [1, 2]) == "length mismatch"
    assert bridge.committee_refusal(members, [1, 0, 3]) == "zero weight"
    assert bridge.committee_refusal(list(reversed(members)), [1, 2, 3]) == "members not ascending"
    assert bridge.committee_refusal([members[0], members[0]], [1, 1]) == "members not ascending"
    too_many = _members(bridge.MAX_COMMITTEE + 1)
    assert bridge.committee_refusal(too_many, [1] * len(too_many)) == "committee too large"


def test_committee_hash_binds_members_and_weights():
    members = _members(2)
    assert bridge.committee_hash(members, [1, 2]) != bridge.committee_hash(members, [2, 1])
    assert bridge.committee_hash(members, [1, 2]) != bridge.committee_hash(members[:1], [1])


def test_bucket_refills_and_refuses():
    bucket = bridge.Bucket(capacity=100, refill_per_s=2, tokens=100, updated_at=1_000)
    assert bucket.refusal(101, 1_000) == "over capacity"
    emptied = bucket.take(100, 1_000)
    assert emptied.tokens == 0
    assert emptied.refusal(1, 1_000) == "rate limited"
    assert emptied.at(1_010).tokens == 20
    assert emptied.take(20, 1_010).tokens == 0
    assert emptied.at(10**9).tokens == 100  # never above capacity
    with pytest.raises(ValueError, match="rate limited"):
        emptied.take(21, 1_010)


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 120)), max_size=30))
def test_bucket_never_lets_more_than_capacity_plus_refill_through(steps):
    """Over any schedule, what passes in [t0, t] is at most capacity + refill·(t - t0)."""
    bucket = bridge.Bucket(capacity=100, refill_per_s=3, tokens=100, updated_at=0)
    now, passed = 0, 0
    for wait, amount in steps:
        now += wait
        if bucket.refusal(amount, now) is None:
            bucket = bucket.take(amount, now)
            passed += amount
        assert passed <= 100 + 3 * now
        assert 0 <= bucket.tokens <= bucket.capacity


def test_transfer_payload_round_trips():
    to, refund = Account.create().address, Account.create().address
    assert bridge.decode_transfer_payload(bridge.transfer_payload(to, refund)) == (to, refund)


def test_a_malleated_twin_is_refused_as_the_inbox_refuses_it():
    """eth_account recovers the high-s twin (n - s, v flipped) of a signature to the same
    signer; BridgeInbox refuses it. A member serving such twins must not be counted off chain,
    or the relayer would submit a quorum the inbox refuses, every time (a red-team finding)."""
    key = Account.create()
    typed = bridge.attestation_typed_data(A, INBOX, message().id, 0)
    signature = key.sign_message(encode_typed_data(full_message=typed)).signature
    assert messages.signature_refusal(signature) is None
    s = int.from_bytes(signature[32:64], "big")
    twin = signature[:32] + (messages.SECP256K1_N - s).to_bytes(32, "big") \
        + bytes([55 - signature[64]])
    assert Account.recover_message(encode_typed_data(full_message=typed), signature=twin) \
        == key.address
    assert "upper half" in messages.signature_refusal(twin)
    assert messages.signature_refusal(signature[:64]) == "64 bytes, not 65"
    assert "v is 0" in messages.signature_refusal(signature[:64] + b"\x00")
