"""Round commitments: the EIP-712 leaf by hand, the round tree, signatures, and bad input named."""

import pytest
from eth_account import Account
from eth_utils import keccak
from pydantic import ValidationError

from tessera.protocol import commitment as cm
from tessera.protocol import merkle

VERIFICATION = "0x" + "ab" * 20
WORKER = Account.from_key(b"\x11" * 32)  # test-only key


def make(**changes) -> cm.Commitment:
    fields = dict(job=3, round=7, lease_id=12, provider=WORKER.address,
                  result_hash=cm.hex32(keccak(b"result")),
                  checkpoint_root=cm.hex32(keccak(b"checkpoints")), checkpoints=51,
                  expiry=1_900_000_000)
    fields.update(changes)
    return cm.Commitment(**fields)


def u256(x: int) -> bytes:
    return x.to_bytes(32, "big")


def test_leaf_is_the_eip712_digest_computed_by_hand():
    c = make()
    domain_type = keccak(b"EIP712Domain(string name,string version,uint256 chainId,"
                         b"address verifyingContract)")
    domain = keccak(domain_type + keccak(b"TesseraVerification") + keccak(b"1") + u256(31337)
                    + bytes(12) + bytes.fromhex(VERIFICATION[2:]))
    typehash = keccak(b"Commitment(uint256 job,uint256 round,uint256 leaseId,address provider,"
                      b"bytes32 resultHash,bytes32 checkpointRoot,uint256 checkpoints,"
                      b"uint256 expiry)")
    struct = keccak(typehash + u256(3) + u256(7) + u256(12) + bytes(12)
                    + bytes.fromhex(WORKER.address[2:]) + keccak(b"result")
                    + keccak(b"checkpoints") + u256(51) + u256(1_900_000_000))
    assert cm.leaf(31337, VERIFICATION, c) == keccak(b"\x19\x01" + domain + struct)


def test_every_field_changes_the_leaf():
    base = cm.leaf(31337, VERIFICATION, make())
    variants = [make(job=4), make(round=8), make(lease_id=13),
                make(provider="0x" + "cd" * 20), make(result_hash=cm.hex32(keccak(b"x"))),
                make(checkpoint_root=cm.hex32(keccak(b"y"))), make(checkpoints=52),
                make(expiry=1_900_000_001)]
    leaves = {cm.leaf(31337, VERIFICATION, v) for v in variants}
    assert base not in leaves and len(leaves) == len(variants)
    assert cm.leaf(1, VERIFICATION, make()) != base
    assert cm.leaf(31337, "0x" + "ef" * 20, make()) != base


def test_sign_and_recover():
    signed = cm.sign(WORKER, 31337, VERIFICATION, make())
    assert cm.signer(31337, VERIFICATION, signed) == WORKER.address
    assert cm.signer(31338, VERIFICATION, signed) != WORKER.address  # another chain
    with pytest.raises(ValueError, match="signer is"):
        cm.sign(Account.from_key(b"\x22" * 32), 31337, VERIFICATION, make())


def test_round_tree_proofs_and_tree_hash():
    leaves = [cm.leaf(31337, VERIFICATION, make(lease_id=i)) for i in range(1, 6)]
    tree = cm.round_tree(leaves)
    assert tree.root == merkle.root(leaves) and tree.n_leaves == 5
    for i, leaf in enumerate(leaves):
        assert tree.index_of(leaf) == i
        assert merkle.verify(tree.root, leaf, i, list(tree.proofs[i]), 5)
    assert tree.tree_hash == keccak(tree.root + u256(5))
    with pytest.raises(ValueError, match="not in this round's tree"):
        tree.index_of(keccak(b"stranger"))
    with pytest.raises(ValueError, match="twice"):
        cm.round_tree([leaves[0], leaves[1], leaves[0]])


@pytest.mark.parametrize("field, value", [
    ("job", 0), ("lease_id", 0), ("round", -1), ("checkpoints", 1), ("expiry", 0),
    ("provider", "0x1234"), ("result_hash", "ab" * 32), ("checkpoint_root", "0x" + "AB" * 32),
    ("job", 2**256),
])
def test_bad_fields_are_named(field, value):
    with pytest.raises(ValidationError, match=field):
        make(**{field: value})


def test_contract_tuple_order():
    c = make()
    assert c.as_contract_tuple() == (3, 7, 12, WORKER.address, keccak(b"result"),
                                     keccak(b"checkpoints"), 51, 1_900_000_000)
