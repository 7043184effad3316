"""Liveness probes: the HTTP bodies, the signed receipt, and the Merkle leaf of one probe.

Pure: no I/O. A validator sends a `ProbeRequest` (a fresh random 32-byte challenge, the
current epoch and a deadline in unix seconds), signed by the validator: its EIP-712 signature
over (chain id, Probes contract, provider, validator, epoch, challenge, deadline), so that only
the validator it names can ask, and only this provider, on this chain and deployment, before
the deadline (the challenge is the nonce; a provider refuses a deadline more than
`MAX_PROBE_AHEAD_S` ahead, and a challenge it has answered). The provider answers with a
`ProbeReceipt`, its EIP-712 signature over the same fields (another type name: one cannot
pass for the other). Every probe, answered or missed, becomes one leaf of the validator's per-epoch
Merkle tree (tessera.protocol.merkle):

    leaf = keccak256(abi.encode(bytes32 receipt_digest, bool answered, bytes32 keccak256(signature)))

where `receipt_digest` is the EIP-712 digest of the ProbeReceipt and `signature` is the 65
signature bytes for an answered probe and empty for a missed one (docs/validators.md).
"""

from __future__ import annotations

from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field

from tessera.protocol import merkle, messages

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
BYTES32 = r"^0x[0-9a-f]{64}$"
SIGNATURE = r"^0x[0-9a-fA-F]{130}$"


UINT64 = 2**64 - 1    # far past any epoch or unix second; well inside the uint256 the ABI takes
MAX_PROBE_AHEAD_S = 120   # a provider refuses a deadline further ahead than this (timeout_s <= 60)

PROBE_REQUEST_TYPE = [
    {"name": "provider", "type": "address"},
    {"name": "validator", "type": "address"},
    {"name": "epoch", "type": "uint256"},
    {"name": "challenge", "type": "bytes32"},
    {"name": "deadline", "type": "uint256"},
]
_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


class ProbeRequest(BaseModel):
    """What a validator POSTs to a provider's /probe, signed by the validator."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=ADDRESS, description="the provider asked; no other may answer")
    validator: str = Field(pattern=ADDRESS)
    epoch: int = Field(ge=0, le=UINT64)
    challenge: str = Field(pattern=BYTES32, description="32 random bytes, 0x + lowercase hex")
    deadline: int = Field(gt=0, le=UINT64,
                          description="unix seconds after which the provider must not sign")
    signature: str = Field(pattern=SIGNATURE, description="the validator's EIP-712 signature")


class ProbeReceipt(BaseModel):
    """A provider's signed answer to one probe."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=ADDRESS)
    validator: str = Field(pattern=ADDRESS)
    epoch: int = Field(ge=0)
    challenge: str = Field(pattern=BYTES32)
    deadline: int = Field(gt=0)
    signature: str = Field(pattern=SIGNATURE)


def request_typed_data(chain_id: int, probes: str, provider: str, validator: str, epoch: int,
                       challenge: str, deadline: int) -> dict:
    """EIP-712 `ProbeRequest` in the Probes contract's domain (the receipt's domain)."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, "ProbeRequest": PROBE_REQUEST_TYPE},
        "primaryType": "ProbeRequest",
        "domain": {"name": messages.PROBES_DOMAIN_NAME, "version": messages.DOMAIN_VERSION,
                   "chainId": chain_id, "verifyingContract": to_checksum_address(probes)},
        "message": {"provider": to_checksum_address(provider),
                    "validator": to_checksum_address(validator), "epoch": epoch,
                    "challenge": bytes.fromhex(challenge.removeprefix("0x")),
                    "deadline": deadline},
    }


def signed_request(account: LocalAccount, chain_id: int, probes: str, provider: str, epoch: int,
                   challenge: str, deadline: int) -> ProbeRequest:
    """A ProbeRequest from `account` (the validator) to `provider`, signed."""
    typed = request_typed_data(chain_id, probes, provider, account.address, epoch, challenge,
                               deadline)
    return ProbeRequest(provider=to_checksum_address(provider), validator=account.address,
                        epoch=epoch, challenge=challenge, deadline=deadline,
                        signature=messages.sign(account, typed))


def request_signer(request: ProbeRequest, chain_id: int, probes: str) -> str | None:
    """The address that signed `request`, or None when the signature is unusable."""
    typed = request_typed_data(chain_id, probes, request.provider, request.validator,
                               request.epoch, request.challenge, request.deadline)
    return messages.signer_or_none(typed, request.signature)


def receipt_typed_data(chain_id: int, probes: str, provider: str, validator: str, epoch: int,
                       challenge: str, deadline: int) -> dict:
    return messages.probe_receipt_typed_data(
        chain_id, to_checksum_address(probes), to_checksum_address(provider),
        to_checksum_address(validator), epoch, bytes.fromhex(challenge.removeprefix("0x")), deadline)


def receipt_signer(receipt: ProbeReceipt, chain_id: int, probes: str) -> str | None:
    """The address that signed `receipt`, or None when the signature is unusable."""
    typed = receipt_typed_data(chain_id, probes, receipt.provider, receipt.validator, receipt.epoch,
                               receipt.challenge, receipt.deadline)
    return messages.signer_or_none(typed, receipt.signature)


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
