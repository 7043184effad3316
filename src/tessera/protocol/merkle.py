"""A binary Merkle tree over 32-byte leaves, hashed so that a Vyper contract can check the proofs.

Pure: no I/O, no torch. The hashing rule, exactly (``||`` is byte concatenation, ``keccak256``
is Ethereum's Keccak-256, ``eth_utils.keccak`` here and the ``keccak256`` builtin in Vyper):

* a leaf is exactly 32 bytes; its hash is ``keccak256(0x00 || leaf)`` (33 bytes in);
* an inner node is ``keccak256(0x01 || left || right)`` (65 bytes in);
* level 0 holds the leaf hashes in order. Each next level pairs nodes (0,1), (2,3), ...; when a
  level has an odd number of nodes, its last node is carried up unchanged (it is NOT paired
  with itself: duplicating the last node lets two different leaf lists share a root, the
  CVE-2012-2459 trap of Bitcoin's tree);
* the root is the single node of the last level. A tree of one leaf has root
  ``keccak256(0x00 || leaf)``. An empty tree has no root (``ValueError``).

The two one-byte prefixes separate leaves from inner nodes, so a 64-byte concatenation of
two children can never be presented as a leaf (second-preimage trick), and a leaf can never be
presented as an inner node. Because a carried-up node has no sibling, the shape of the tree,
and so the proof length, depends on ``n_leaves``; ``verify`` takes it and a contract must store
it beside the root (for a DiLoCo round it is fixed by the job: ``ceil(H / k) + 1``).

A proof is the list of sibling hashes from the leaf's level upward, skipping the levels where
the node on the path is carried up. ``verify`` recomputes the root from the leaf, walking the
index bits: at each level of width ``w`` with the path at position ``i``:
``if i % 2 == 1: node = H1(sibling, node)``; ``elif i + 1 < w: node = H1(node, sibling)``;
else carried up (no sibling used); then ``i //= 2; w = (w + 1) // 2``; it accepts only when the
proof is used up exactly and the result equals the root. The Vyper mirror is in
``docs/verification.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils import keccak

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_LEN = 32


def _check32(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_LEN:
        raise ValueError(f"{what} must be {HASH_LEN} bytes, got "
                         f"{len(value) if isinstance(value, bytes | bytearray) else type(value).__name__}")
    return bytes(value)


def hash_leaf(leaf: bytes) -> bytes:
    return keccak(LEAF_PREFIX + _check32(leaf, "leaf"))


def hash_node(left: bytes, right: bytes) -> bytes:
    return keccak(NODE_PREFIX + left + right)


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    if len(leaves) == 0:
        raise ValueError("a Merkle tree needs at least one leaf")
    level = [hash_leaf(leaf) for leaf in leaves]
    levels = [level]
    while len(level) > 1:
        nxt = [hash_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])  # carried up unchanged
        levels.append(nxt)
        level = nxt
    return levels


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle root of `leaves` (each exactly 32 bytes)."""
    return _levels(leaves)[-1][0]


def proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The sibling hashes that prove `leaves[index]` under `root(leaves)`."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} is not in [0, {len(leaves)})")
    out, i = [], index
    for level in _levels(leaves)[:-1]:
        sibling = i ^ 1
        if sibling < len(level):
            out.append(level[sibling])
        i //= 2
    return out


def proofs(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every leaf's proof, building the tree once."""
    levels = _levels(leaves)
    out = []
    for index in range(len(leaves)):
        p, i = [], index
        for level in levels[:-1]:
            if (i ^ 1) < len(level):
                p.append(level[i ^ 1])
            i //= 2
        out.append(p)
    return out


def verify(root_hash: bytes, leaf: bytes, index: int, proof_hashes: Sequence[bytes],
           n_leaves: int) -> bool:
    """True when `leaf` is leaf number `index` of an `n_leaves`-leaf tree with root `root_hash`.
    Never raises on a bad proof; malformed inputs (wrong lengths) are simply rejected."""
    try:
        node = hash_leaf(leaf)
        _check32(root_hash, "root")
        siblings = [_check32(s, "sibling") for s in proof_hashes]
    except (ValueError, TypeError):
        return False
    if not (isinstance(index, int) and isinstance(n_leaves, int) and 0 <= index < n_leaves):
        return False
    i, width, used = index, n_leaves, 0
    while width > 1:
        if i % 2 == 1:
            if used >= len(siblings):
                return False
            node = hash_node(siblings[used], node)
            used += 1
        elif i + 1 < width:
            if used >= len(siblings):
                return False
            node = hash_node(node, siblings[used])
            used += 1
        i //= 2
        width = (width + 1) // 2
    return used == len(siblings) and node == root_hash
