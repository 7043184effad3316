"""A worker's signed commitment to one training round, and the round's Merkle tree over them.

A worker signs, per round, EIP-712 typed data ``Commitment`` in the domain
``{name: "TesseraVerification", version: "1", chainId, verifyingContract: Verification}``:

    Commitment(uint256 job, uint256 round, uint256 leaseId, address provider,
               bytes32 resultHash, bytes32 checkpointRoot, uint256 checkpoints, uint256 expiry)

``job`` is the Market order id, ``resultHash`` the sha256 of the round's result (the
pseudo-gradient payload), ``checkpointRoot`` the Merkle root (``protocol.merkle``) over the
``checkpoints`` checkpoint leaves of ``compute.checkpoints`` (``ceil(H / k) + 1``), and ``expiry``
the last time at which a round root containing it may be posted. (job, round, leaseId) is the
nonce: a lease commits once per round. The EIP-712 digest is the worker's *leaf*: the
coordinator posts ``merkle.root`` over the round's leaves on chain, and a challenger opens a
leaf with its fields, the worker's signature and ``merkle.proof``; ``Verification.vy``
recomputes the digest, checks the signature and the proof. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field

from tessera.protocol import merkle

# How long after signing a provider lets its commitment be posted in a round root (the
# coordinator posts right after the round's last answer, so this covers the round timeout).
VALIDITY_S = 2 * 3600
# A commitment must stay postable this long after its round's answers are all in (the root is
# posted then, and a challenge needs the root posted before the commitment expires)
MIN_COMMITMENT_LIFE_S = 600
# The longest round a verified job may wait for (its round_timeout): the tenant asks a round's
# commitments to outlive its start by the timeout and MIN_COMMITMENT_LIFE_S, and an honest
# provider signs for VALIDITY_S from when it got the round, which may be a whole round before its
# start when it was sent ahead (docs/verification.md, review 23)
MAX_VERIFIED_ROUND_TIMEOUT_S = (VALIDITY_S - MIN_COMMITMENT_LIFE_S) // 2

DOMAIN_NAME = "TesseraVerification"
DOMAIN_VERSION = "1"
UINT256_MAX = 2**256 - 1
HEX32 = r"^0x[0-9a-f]{64}$"
ADDRESS = r"^0x[0-9a-fA-F]{40}$"
SIGNATURE = r"^0x[0-9a-fA-F]{130}$"

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
COMMITMENT_TYPE = [
    {"name": "job", "type": "uint256"},
    {"name": "round", "type": "uint256"},
    {"name": "leaseId", "type": "uint256"},
    {"name": "provider", "type": "address"},
    {"name": "resultHash", "type": "bytes32"},
    {"name": "checkpointRoot", "type": "bytes32"},
    {"name": "checkpoints", "type": "uint256"},
    {"name": "expiry", "type": "uint256"},
]


class Commitment(BaseModel):
    """One worker's statement about one round (hashes as 0x-prefixed lowercase hex)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: int = Field(ge=1, le=UINT256_MAX)
    round: int = Field(ge=0, le=UINT256_MAX)
    lease_id: int = Field(ge=1, le=UINT256_MAX)
    provider: str = Field(pattern=ADDRESS)
    result_hash: str = Field(pattern=HEX32)
    checkpoint_root: str = Field(pattern=HEX32)
    checkpoints: int = Field(ge=2, le=UINT256_MAX)
    expiry: int = Field(gt=0, le=UINT256_MAX)

    def as_contract_tuple(self) -> tuple:
        """The `Commitment` struct argument of Verification.vy, field by field."""
        return (self.job, self.round, self.lease_id, self.provider,
                bytes.fromhex(self.result_hash[2:]), bytes.fromhex(self.checkpoint_root[2:]),
                self.checkpoints, self.expiry)


class SignedCommitment(BaseModel):
    """A commitment with the provider's 65-byte EIP-712 signature (r || s || v)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    commitment: Commitment
    signature: str = Field(pattern=SIGNATURE)


def hex32(value: bytes) -> str:
    if len(value) != 32:
        raise ValueError(f"expected 32 bytes, got {len(value)}")
    return "0x" + value.hex()


def typed_data(chain_id: int, verification: str, c: Commitment) -> dict:
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, "Commitment": COMMITMENT_TYPE},
        "primaryType": "Commitment",
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id,
                   "verifyingContract": verification},
        "message": {"job": c.job, "round": c.round, "leaseId": c.lease_id,
                    "provider": c.provider, "resultHash": bytes.fromhex(c.result_hash[2:]),
                    "checkpointRoot": bytes.fromhex(c.checkpoint_root[2:]),
                    "checkpoints": c.checkpoints, "expiry": c.expiry},
    }


def leaf(chain_id: int, verification: str, c: Commitment) -> bytes:
    """The commitment's EIP-712 digest: what the worker signs and the round tree's leaf."""
    signable = encode_typed_data(full_message=typed_data(chain_id, verification, c))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign(account: LocalAccount, chain_id: int, verification: str, c: Commitment) -> SignedCommitment:
    if account.address.lower() != c.provider.lower():
        raise ValueError(f"commitment names provider {c.provider}, but the signer is {account.address}")
    signature = account.sign_typed_data(full_message=typed_data(chain_id, verification, c)).signature
    return SignedCommitment(commitment=c, signature="0x" + bytes(signature).hex())


def signer(chain_id: int, verification: str, signed: SignedCommitment) -> str:
    """The address that signed; raises ValueError for a malformed signature."""
    return Account.recover_message(
        encode_typed_data(full_message=typed_data(chain_id, verification, signed.commitment)),
        signature=signed.signature)


@dataclass(frozen=True)
class RoundTree:
    """The coordinator's tree over one round's leaves, in the order it lists the workers."""

    leaves: tuple[bytes, ...]
    root: bytes
    proofs: tuple[tuple[bytes, ...], ...]

    @property
    def n_leaves(self) -> int:
        return len(self.leaves)

    @property
    def tree_hash(self) -> bytes:
        """What Verification.vy stores for the round: keccak256(abi_encode(root, n_leaves))."""
        return keccak(self.root + self.n_leaves.to_bytes(32, "big"))

    def index_of(self, leaf_hash: bytes) -> int:
        try:
            return self.leaves.index(leaf_hash)
        except ValueError:
            raise ValueError("that commitment is not in this round's tree") from None


def round_tree(leaves: list[bytes]) -> RoundTree:
    """Merkle root and every proof over the round's commitment leaves (`protocol.merkle`)."""
    if len(set(leaves)) != len(leaves):
        raise ValueError("a round tree must not list the same commitment twice")
    return RoundTree(tuple(leaves), merkle.root(leaves),
                     tuple(tuple(p) for p in merkle.proofs(leaves)))
