"""Liveness probes: the HTTP bodies, the signed receipt, and the Merkle leaf of one probe.

Pure: no I/O. A validator sends a `ProbeRequest` (a fresh random 32-byte challenge, the
current epoch and a deadline in unix seconds); the provider answers with a `ProbeReceipt`,
its EIP-712 signature over (chain id, Probes contract, provider, validator, epoch, challenge,
deadline). Every probe, answered or missed, becomes one leaf of the validator's per-epoch
Merkle tree (tessera.protocol.merkle):

    leaf = keccak256(abi.encode(bytes32 receipt_digest, bool answered, bytes32 keccak256(signature)))

where `receipt_digest` is the EIP-712 digest of the ProbeReceipt and `signature` is the 65
signature bytes for an answered probe and empty for a missed one (docs/validators.md).
"""

from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field

from tessera.protocol import merkle, messages

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
BYTES32 = r"^0x[0-9a-f]{64}$"
SIGNATURE = r"^0x[0-9a-fA-F]{130}$"


class ProbeRequest(BaseModel):
    """What a validator POSTs to a provider's /probe."""

    model_config = ConfigDict(extra="forbid")

    validator: str = Field(pattern=ADDRESS)
    epoch: int = Field(ge=0)
    challenge: str = Field(pattern=BYTES32, description="32 random bytes, 0x + lowercase hex")
    deadline: int = Field(gt=0, description="unix seconds after which the provider must not sign")


class ProbeReceipt(BaseModel):
    """A provider's signed answer to one probe."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=ADDRESS)
    validator: str = Field(pattern=ADDRESS)
    epoch: int = Field(ge=0)
    challenge: str = Field(pattern=BYTES32)
    deadline: int = Field(gt=0)
    signature: str = Field(pattern=SIGNATURE)


def receipt_typed_data(chain_id: int, probes: str, provider: str, validator: str, epoch: int,
                       challenge: str, deadline: int) -> dict:
    return messages.probe_receipt_typed_data(
        chain_id, to_checksum_address(probes), to_checksum_address(provider),
        to_checksum_address(validator), epoch, bytes.fromhex(challenge.removeprefix("0x")), deadline)


def receipt_signer(receipt: ProbeReceipt, chain_id: int, probes: str) -> str | None:
    """The address that signed `receipt`, or None when the signature is unusable."""
    typed = receipt_typed_data(chain_id, probes, receipt.provider, receipt.validator, receipt.epoch,
                               receipt.challenge, receipt.deadline)
    try:
        return messages.recover(typed, receipt.signature)
    except Exception:  # eth-account raises several types for malformed signatures
        return None


def probe_leaf(chain_id: int, probes: str, provider: str, validator: str, epoch: int,
               challenge: str, deadline: int, answered: bool, signature: str) -> bytes:
    """The 32-byte Merkle leaf of one probe (module docstring)."""
    if answered != bool(signature):
        raise ValueError("an answered probe carries a signature and a missed one does not")
    digest = messages.digest(receipt_typed_data(chain_id, probes, provider, validator, epoch,
                                                challenge, deadline))
    sig = bytes.fromhex(signature.removeprefix("0x"))
    return keccak(encode(["bytes32", "bool", "bytes32"], [digest, answered, keccak(sig)]))


def check_receipt_entry(entry: dict, root: bytes, receipt_count: int, chain_id: int, probes: str,
                        validator: str, epoch: int) -> str | None:
    """Check one entry of a validator's receipts document (GET /receipts/{epoch}) against the
    root it posted on chain. Returns None when it holds, else what is wrong."""
    try:
        leaf = probe_leaf(chain_id, probes, entry["provider"], validator, epoch, entry["challenge"],
                          entry["deadline"], entry["answered"], entry["signature"])
    except (KeyError, ValueError, TypeError) as exc:
        return f"malformed entry: {exc}"
    if entry["answered"]:
        receipt = ProbeReceipt(provider=entry["provider"], validator=validator, epoch=epoch,
                               challenge=entry["challenge"], deadline=entry["deadline"],
                               signature=entry["signature"])
        signer = receipt_signer(receipt, chain_id, probes)
        if signer is None or signer.lower() != entry["provider"].lower():
            return f"signature is by {signer}, not the provider {entry['provider']}"
    proof = [bytes.fromhex(h.removeprefix("0x")) for h in entry.get("proof", [])]
    if not merkle.verify(root, leaf, entry.get("index", -1), proof, receipt_count):
        return "leaf is not under the posted root"
    return None
