"""Merkle commitments: every proof verifies, any change fails, and a Vyper mirror agrees."""

import pytest
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.protocol import merkle

leaf32 = st.binary(min_size=32, max_size=32)
leaf_lists = st.lists(leaf32, min_size=1, max_size=40, unique=True)


def flip(b: bytes, i: int = 0) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]


# --- the hashing rule, by hand ------------------------------------------------------------------


def test_hashing_rule_by_hand():
    a, b, c = (bytes([x]) * 32 for x in (1, 2, 3))
    h0 = lambda x: keccak(b"\x00" + x)  # noqa: E731
    h1 = lambda x, y: keccak(b"\x01" + x + y)  # noqa: E731
    assert merkle.root([a]) == h0(a)
    assert merkle.root([a, b]) == h1(h0(a), h0(b))
    # three leaves: the last node is carried up, not paired with itself
    assert merkle.root([a, b, c]) == h1(h1(h0(a), h0(b)), h0(c))
    assert merkle.proof([a, b, c], 2) == [h1(h0(a), h0(b))]
    assert merkle.proof([a], 0) == []


def test_no_duplicate_last_node_ambiguity():
    a, b, c = (bytes([x]) * 32 for x in (1, 2, 3))
    assert merkle.root([a, b, c]) != merkle.root([a, b, c, c])


def test_bad_inputs():
    with pytest.raises(ValueError):
        merkle.root([])
    with pytest.raises(ValueError):
        merkle.root([b"short"])
    with pytest.raises(IndexError):
        merkle.proof([b"\x00" * 32], 1)
    r = merkle.root([b"\x00" * 32])
    assert not merkle.verify(r, b"\x00" * 31, 0, [], 1)
    assert not merkle.verify(r, b"\x00" * 32, 0, [b"x"], 1)
    assert not merkle.verify(r, b"\x00" * 32, -1, [], 1)
    assert not merkle.verify(r[:31], b"\x00" * 32, 0, [], 1)


def test_inner_node_cannot_pose_as_a_leaf():
    leaves = [bytes([x]) * 32 for x in range(4)]
    r = merkle.root(leaves)
    left = merkle.hash_node(merkle.hash_leaf(leaves[0]), merkle.hash_leaf(leaves[1]))
    right = merkle.hash_node(merkle.hash_leaf(leaves[2]), merkle.hash_leaf(leaves[3]))
    # "a 2-leaf tree whose leaves are the two inner nodes" must not have the same root
    assert not merkle.verify(r, left, 0, [right], 2)
    assert merkle.root([left, right]) != r


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(leaf_lists)
def test_every_proof_verifies(leaves):
    r = merkle.root(leaves)
    all_proofs = merkle.proofs(leaves)
    for i, leaf in enumerate(leaves):
        p = merkle.proof(leaves, i)
        assert p == all_proofs[i]
        assert merkle.verify(r, leaf, i, p, len(leaves))
        assert len(p) <= max(1, len(leaves) - 1).bit_length()


@settings(max_examples=60, deadline=None)
@given(leaf_lists, st.data())
def test_changed_leaf_index_or_sibling_fails(leaves, data):
    n = len(leaves)
    r = merkle.root(leaves)
    i = data.draw(st.integers(0, n - 1))
    p = merkle.proof(leaves, i)
    byte = data.draw(st.integers(0, 31))
    assert not merkle.verify(r, flip(leaves[i], byte), i, p, n)
    for j in range(n):
        if j != i:
            assert not merkle.verify(r, leaves[i], j, p, n)
    assert not merkle.verify(r, leaves[i], n, p, n)
    for s in range(len(p)):
        bad = list(p)
        bad[s] = flip(bad[s], byte)
        assert not merkle.verify(r, leaves[i], i, bad, n)
    if p:
        assert not merkle.verify(r, leaves[i], i, p[:-1], n)
    if len(p) >= 2:
        assert not merkle.verify(r, leaves[i], i, list(reversed(p)), n)
    assert not merkle.verify(r, leaves[i], i, [*p, r], n)
    assert not merkle.verify(flip(r), leaves[i], i, p, n)


@settings(max_examples=40, deadline=None)
@given(leaf_lists, st.data())
def test_changing_any_leaf_changes_the_root(leaves, data):
    i = data.draw(st.integers(0, len(leaves) - 1))
    changed = list(leaves)
    changed[i] = flip(changed[i], data.draw(st.integers(0, 31)))
    assert merkle.root(changed) != merkle.root(leaves)


def test_leaf_count_is_not_bound_by_the_root():
    """Documented: the contract must store n_leaves beside the root. For index 0, trees of 5
    and 6 leaves take the same path, so the proof verifies under either count."""
    leaves = [bytes([x]) * 32 for x in range(5)]
    r, p = merkle.root(leaves), merkle.proof(leaves, 0)
    assert merkle.verify(r, leaves[0], 0, p, 5)
    assert merkle.verify(r, leaves[0], 0, p, 6)


# --- the Vyper mirror in docs/verification.md -----------------------------------------------------

VYPER_VERIFY = '''
# pragma version ~=0.4.3
@external
@pure
def verify(root: bytes32, leaf: bytes32, index: uint256, proof: DynArray[bytes32, 64],
           n_leaves: uint256) -> bool:
    if index >= n_leaves:
        return False
    node: bytes32 = keccak256(concat(x"00", leaf))
    i: uint256 = index
    width: uint256 = n_leaves
    used: uint256 = 0
    for _level: uint256 in range(64):
        if width <= 1:
            break
        if i % 2 == 1:
            if used >= len(proof):
                return False
            node = keccak256(concat(x"01", proof[used], node))
            used += 1
        elif i + 1 < width:
            if used >= len(proof):
                return False
            node = keccak256(concat(x"01", node, proof[used]))
            used += 1
        i = i // 2
        width = (width + 1) // 2
    return used == len(proof) and node == root
'''


def test_vyper_mirror_agrees():
    boa = pytest.importorskip("boa")
    contract = boa.loads(VYPER_VERIFY)
    for n in (1, 2, 3, 5, 8, 13):
        leaves = [keccak(bytes([n, x])) for x in range(n)]
        r = merkle.root(leaves)
        for i in range(n):
            p = merkle.proof(leaves, i)
            assert contract.verify(r, leaves[i], i, p, n)
            assert not contract.verify(r, flip(leaves[i]), i, p, n)
            if n > 1:
                assert not contract.verify(r, leaves[i], (i + 1) % n, p, n)
            if p:
                assert not contract.verify(r, leaves[i], i, [flip(p[0]), *p[1:]], n)
