"""EIP-712 messages exchanged off chain: bids (provider -> tenant) and manifests (tenant -> provider).

Every signed message names its chain and contract (the EIP-712 domain), a nonce and an expiry.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys.constants import SECPK1_N as SECP256K1_N
from eth_utils import keccak

DOMAIN_NAME = "TesseraMarket"
DOMAIN_VERSION = "1"

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
BID_TYPE = [
    {"name": "orderId", "type": "uint256"},
    {"name": "provider", "type": "address"},
    {"name": "pricePerGpuHour", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "expiry", "type": "uint256"},
]
MANIFEST_TYPE = [
    {"name": "leaseId", "type": "uint256"},
    {"name": "manifestHash", "type": "bytes32"},
    {"name": "nonce", "type": "uint256"},
    {"name": "expiry", "type": "uint256"},
]
ROUND_TYPE = [
    {"name": "leaseId", "type": "uint256"},
    {"name": "round", "type": "uint256"},
    {"name": "paramsHash", "type": "bytes32"},
    {"name": "nonce", "type": "uint256"},
    {"name": "expiry", "type": "uint256"},
]
ROUND_RESULT_TYPE = [
    {"name": "leaseId", "type": "uint256"},
    {"name": "round", "type": "uint256"},
    {"name": "paramsHash", "type": "bytes32"},
    {"name": "resultHash", "type": "bytes32"},
]
READ_GRANT_TYPE = [
    {"name": "leaseId", "type": "uint256"},
    {"name": "reader", "type": "address"},
    {"name": "expiry", "type": "uint256"},
]


def typed_data(primary: str, fields: list, message: dict, chain_id: int, contract: str,
               domain_name: str = DOMAIN_NAME, version: str = DOMAIN_VERSION) -> dict:
    """EIP-712 typed data of one message in the domain (name, version: "1", chain id,
    contract)."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, primary: fields},
        "primaryType": primary,
        "domain": {"name": domain_name, "version": version,
                   "chainId": chain_id, "verifyingContract": contract},
        "message": message,
    }


_typed = typed_data   # the Market's messages


def bid_typed_data(chain_id: int, market: str, order_id: int, provider: str,
                   price_per_gpu_hour: int, nonce: int, expiry: int) -> dict:
    return _typed("Bid", BID_TYPE, {
        "orderId": order_id, "provider": provider, "pricePerGpuHour": price_per_gpu_hour,
        "nonce": nonce, "expiry": expiry,
    }, chain_id, market)


def manifest_typed_data(chain_id: int, market: str, lease_id: int, manifest_hash: bytes,
                        nonce: int, expiry: int) -> dict:
    return _typed("Manifest", MANIFEST_TYPE, {
        "leaseId": lease_id, "manifestHash": manifest_hash, "nonce": nonce, "expiry": expiry,
    }, chain_id, market)


def round_typed_data(chain_id: int, market: str, lease_id: int, round_index: int,
                     params_hash: bytes, nonce: int, expiry: int) -> dict:
    """The tenant's order to a DiLoCo worker: run this round from these global parameters."""
    return _typed("Round", ROUND_TYPE, {
        "leaseId": lease_id, "round": round_index, "paramsHash": params_hash, "nonce": nonce,
        "expiry": expiry,
    }, chain_id, market)


def round_result_typed_data(chain_id: int, market: str, lease_id: int, round_index: int,
                            params_hash: bytes, result_hash: bytes) -> dict:
    """A worker's statement: from these parameters, this round produced this pseudo-gradient."""
    return _typed("RoundResult", ROUND_RESULT_TYPE, {
        "leaseId": lease_id, "round": round_index, "paramsHash": params_hash,
        "resultHash": result_hash,
    }, chain_id, market)


def read_grant_typed_data(chain_id: int, market: str, lease_id: int, reader: str,
                          expiry: int) -> dict:
    """A reader's request to download a lease's round results and checkpoint states until
    `expiry` (no nonce: reads change nothing; tessera.protocol.read_grant)."""
    return _typed("ReadGrant", READ_GRANT_TYPE, {
        "leaseId": lease_id, "reader": reader, "expiry": expiry,
    }, chain_id, market)


PROBES_DOMAIN_NAME = "TesseraProbes"
PROBE_RECEIPT_TYPE = [
    {"name": "provider", "type": "address"},
    {"name": "validator", "type": "address"},
    {"name": "epoch", "type": "uint256"},
    {"name": "challenge", "type": "bytes32"},
    {"name": "deadline", "type": "uint256"},
]


def probe_receipt_typed_data(chain_id: int, probes: str, provider: str, validator: str, epoch: int,
                             challenge: bytes, deadline: int) -> dict:
    """A provider's answer to a validator's liveness probe (domain: the Probes contract).
    The random `challenge` is the nonce, `deadline` the expiry (docs/validators.md)."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, "ProbeReceipt": PROBE_RECEIPT_TYPE},
        "primaryType": "ProbeReceipt",
        "domain": {"name": PROBES_DOMAIN_NAME, "version": DOMAIN_VERSION,
                   "chainId": chain_id, "verifyingContract": probes},
        "message": {"provider": provider, "validator": validator, "epoch": epoch,
                    "challenge": challenge, "deadline": deadline},
    }


HARDWARE_CHALLENGE_TYPE = [
    {"name": "provider", "type": "address"},
    {"name": "validator", "type": "address"},
    {"name": "seed", "type": "bytes32"},
    {"name": "size", "type": "uint256"},
    {"name": "deadlineMs", "type": "uint256"},
]
HARDWARE_ANSWER_TYPE = [
    {"name": "provider", "type": "address"},
    {"name": "validator", "type": "address"},
    {"name": "seed", "type": "bytes32"},
    {"name": "size", "type": "uint256"},
    {"name": "deadlineMs", "type": "uint256"},
    {"name": "fingerprintsHash", "type": "bytes32"},
]


def hardware_challenge_typed_data(chain_id: int, probes: str, provider: str, validator: str,
                                  seed: bytes, size: int, deadline_ms: int) -> dict:
    """A validator's hardware challenge to one provider (domain: the Probes contract), signed so
    that nobody else can make the provider compute; the seed is the nonce, `deadlineMs` the
    expiry (docs/hardware.md)."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, "HardwareChallenge": HARDWARE_CHALLENGE_TYPE},
        "primaryType": "HardwareChallenge",
        "domain": {"name": PROBES_DOMAIN_NAME, "version": DOMAIN_VERSION,
                   "chainId": chain_id, "verifyingContract": probes},
        "message": {"provider": provider, "validator": validator, "seed": seed, "size": size,
                    "deadlineMs": deadline_ms},
    }


def hardware_answer_typed_data(chain_id: int, probes: str, provider: str, validator: str,
                               seed: bytes, size: int, deadline_ms: int,
                               fingerprints_hash: bytes) -> dict:
    """A provider's answer to a validator's hardware challenge (domain: the Probes contract).
    The random `seed` is the nonce, `deadlineMs` the expiry (docs/hardware.md)."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, "HardwareAnswer": HARDWARE_ANSWER_TYPE},
        "primaryType": "HardwareAnswer",
        "domain": {"name": PROBES_DOMAIN_NAME, "version": DOMAIN_VERSION,
                   "chainId": chain_id, "verifyingContract": probes},
        "message": {"provider": provider, "validator": validator, "seed": seed, "size": size,
                    "deadlineMs": deadline_ms, "fingerprintsHash": fingerprints_hash},
    }


def digest(typed: dict) -> bytes:
    signable = encode_typed_data(full_message=typed)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign(account: LocalAccount, typed: dict) -> str:
    return "0x" + account.sign_typed_data(full_message=typed).signature.hex().removeprefix("0x")


def recover(typed: dict, signature: str) -> str:
    """The address that signed `typed`; raises ValueError for a malformed signature."""
    return Account.recover_message(encode_typed_data(full_message=typed), signature=signature)


def signer_or_none(typed: dict, signature: str) -> str | None:
    """The address that signed `typed`, or None when the signature is unusable."""
    try:
        return recover(typed, signature)
    except Exception:  # eth-account raises several types for malformed signatures
        return None


def signature_refusal(signature: bytes) -> str | None:
    """Why the contracts (signature.vy, BridgeInbox) would refuse this signature's form ("bad
    signature"), or None: exactly 65 bytes (r, s, v), v 27 or 28, r and s nonzero, s in the
    lower half of the curve order (EIP-2). eth_account recovers a high-s twin (n - s, v
    flipped) to the same signer, so an off-chain check without this rule counts a signature the
    contract then refuses: a bridge member serving one could block every delivery that
    includes it; a validator's receipt in that form could not be claimed with."""
    if len(signature) != 65:
        return f"{len(signature)} bytes, not 65"
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        return f"v is {v}, not 27 or 28"
    if r == 0 or s == 0:
        return "r or s is zero"
    if s > SECP256K1_N // 2:
        return "s is in the upper half of the curve order (a malleated signature)"
    return None
