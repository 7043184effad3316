"""The tree's commitments and openings on the wire (compute/aggregation_tree_wire.py): what is
sent parses back to the same check, and malformed bytes are refused with the reason."""

import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.compute import aggregation_tree as tree
from tessera.compute import aggregation_tree_wire as wire
from tessera.compute.diloco import encode_tensors
from tessera.errors import WireFormatError

CHUNK = 7
REFERENCE = {"a": torch.zeros(5, 4), "b": torch.zeros(3)}   # 23 values: 4 chunks, paths of 2
CHUNKS, DEPTH = 4, 2


def member(seed: int) -> tree.Opened:
    values = torch.randn(23, generator=torch.Generator().manual_seed(seed))
    state = {"a": values[:20].reshape(5, 4), "b": values[20:]}
    payload = encode_tensors(state, "int8", CHUNK, {"kind": "pseudo_gradient"})
    return tree.open_payload(payload, REFERENCE, CHUNK)


MEMBERS = [member(s) for s in range(3)]
SAMPLE = [1, 3]                                  # chunk 3 is the short one (2 values)


def openings_bytes() -> bytes:
    shown = [tree.open_chunks(m, SAMPLE) for m in MEMBERS]
    return wire.openings_to_bytes({j: [s[j] for s in shown] for j in SAMPLE})


def test_sent_and_parsed_back_the_check_still_passes():
    partial = tree.open_payload(tree.partial_sum(MEMBERS, REFERENCE, CHUNK), REFERENCE, CHUNK, 3)
    commitments = [wire.commitment_from_bytes(wire.commitment_to_bytes(tree.commit(m)), CHUNKS)
                   for m in MEMBERS]
    assert [c.root() for c in commitments] == [tree.commit(m).root() for m in MEMBERS]
    openings = wire.openings_from_bytes(openings_bytes(), CHUNKS, CHUNK, len(MEMBERS))
    assert sorted(openings) == SAMPLE and len(openings[3][0].values) == 2
    signed = [tree.commit(m).root() for m in MEMBERS]
    assert tree.check_partial(partial, commitments, signed, [1, 1, 1], openings, SAMPLE) == []
    assert len(wire.commitment_to_bytes(commitments[0])) == 4 + 8 + 32 + 4 * CHUNKS


def commitment_bytes() -> bytes:
    return wire.commitment_to_bytes(tree.commit(MEMBERS[0]))


def with_u32(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + struct.pack("<I", value) + data[at + 4:]


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "bad magic"),
    (b"XXXX" + commitment_bytes()[4:], "bad magic"),
    (commitment_bytes()[:-1], "holds 4 scales"),
    (commitment_bytes() + b"\0", "holds 4 scales"),
    (with_u32(commitment_bytes(), 8, 5), "holds 4 scales"),
    (with_u32(commitment_bytes(), 4, 0), "member count"),
    (with_u32(commitment_bytes(), 4, 4097), "member count"),
    (commitment_bytes()[:-4] + struct.pack("<f", float("nan")), "finite"),
    (commitment_bytes()[:-4] + struct.pack("<f", -1.0), ">= 0"),
])
def test_a_malformed_commitment_is_refused(data, reason):
    with pytest.raises(WireFormatError, match=reason):
        wire.commitment_from_bytes(data, CHUNKS)


FIRST_INDEX_AT = 16                 # after the magic and the three counts


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda d: b"XXXX" + d[4:], "bad magic"),
    (lambda d: d[:-1], "runs past the end"),
    (lambda d: d + b"\0", "trailing"),
    (lambda d: with_u32(d, 4, 5), "at most 4 chunks"),
    (lambda d: with_u32(d, 8, 2), "of 2 with"),
    (lambda d: with_u32(d, 12, 3), "paths of 2 hashes"),
    (lambda d: with_u32(d, FIRST_INDEX_AT, 4), "bad or repeated chunk index 4"),
    (lambda d: with_u32(d, FIRST_INDEX_AT, 3), "bad or repeated chunk index 3"),
    (lambda d: with_u32(d, FIRST_INDEX_AT + 4, 8), "claims 8 values"),
    (lambda d: d[:FIRST_INDEX_AT + 2], "truncated"),
])
def test_malformed_openings_are_refused(mutate, reason):
    with pytest.raises(WireFormatError, match=reason):
        wire.openings_from_bytes(mutate(openings_bytes()), CHUNKS, CHUNK, len(MEMBERS))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 400), st.binary(max_size=8))
def test_junk_only_ever_raises_wire_format_errors(junk, cut, splice):
    for good, parse in ((commitment_bytes(), lambda d: wire.commitment_from_bytes(d, CHUNKS)),
                        (openings_bytes(),
                         lambda d: wire.openings_from_bytes(d, CHUNKS, CHUNK, len(MEMBERS)))):
        for data in (junk, good[:4] + junk, good[:cut] + splice + good[cut + len(splice):]):
            try:
                parse(data)
            except WireFormatError:
                pass


def test_uneven_openings_are_not_sent():
    shown = [tree.open_chunks(m, SAMPLE) for m in MEMBERS]
    with pytest.raises(ValueError, match="one opening per member"):
        wire.openings_to_bytes({1: [s[1] for s in shown], 3: [shown[0][3]]})
