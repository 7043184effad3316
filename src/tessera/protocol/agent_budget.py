"""An agent's on-chain budget (AgentBudget.vy), off chain: the signed payment and the limits.

The contract is the authority; this module mirrors it so that a client refuses before signing
what the contract would refuse anyway (property-tested against AgentBudget.vy in
tests/contracts/test_agent_budget_properties.py, like protocol/lease.py against the Market):

- `payment_typed_data`: the EIP-712 `AgentPayment` a session key signs (domain: name, version,
  chain id, the AgentBudget contract), ready for eth_account's `encode_typed_data`.
- `payment_refusal`: the revert reason `pay` would give for a well-signed payment, checked in
  the contract's order, or None when it would pass.
- `period_start` / `spent_now` / `available`: the period arithmetic (periods are aligned at the
  grant's start: start + k·period).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOMAIN_NAME = "Tessera AgentBudget"
DOMAIN_VERSION = "1"
ZERO_ADDRESS = "0x" + "0" * 40
MAX_PAYEES = 16

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
PAYMENT_TYPE = [
    {"name": "grant", "type": "uint256"},
    {"name": "payee", "type": "address"},
    {"name": "amount", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
    {"name": "deadline", "type": "uint256"},
]
PAYMENT_TYPE_STRING = ("AgentPayment(uint256 grant,address payee,uint256 amount,bytes32 nonce,"
                       "uint256 deadline)")

# The revert reasons of `pay`, in the order the contract checks them (the signature last).
REASONS = ("unknown grant", "revoked", "paused", "not started", "expired", "deadline passed",
           "zero amount", "over cap", "over period budget", "payee not allowed", "nonce used",
           "owner balance", "bad signature")


@dataclass(frozen=True)
class Grant:
    """AgentBudget's `Grant` struct, field for field (all zero for an unknown grant)."""
    owner: str
    key: str
    budget: int
    period: int
    cap: int
    start: int
    expiry: int
    any_provider: bool
    paused: bool
    revoked: bool
    period_start: int  # the period `spent` counts (moved by the first payment of a period)
    spent: int

    @property
    def exists(self) -> bool:
        return int(self.owner, 16) != 0


def payment_typed_data(chain_id: int, contract: str, grant: int, payee: str, amount: int,
                       nonce: bytes, deadline: int, name: str = DOMAIN_NAME,
                       version: str = DOMAIN_VERSION) -> dict:
    """The full EIP-712 message of one payment (for `encode_typed_data(full_message=...)`).

    `grant` is the grant id; `nonce` 32 bytes; `deadline` the last timestamp it may be submitted.
    """
    if len(nonce) != 32:
        raise ValueError(f"nonce must be 32 bytes, got {len(nonce)}")
    for what, value in (("grant", grant), ("amount", amount), ("deadline", deadline),
                        ("chain_id", chain_id)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
            raise ValueError(f"{what} must be an integer in [0, 2**256), got {value!r}")
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, "AgentPayment": PAYMENT_TYPE},
        "primaryType": "AgentPayment",
        "domain": {"name": name, "version": version, "chainId": chain_id,
                   "verifyingContract": contract},
        "message": {"grant": grant, "payee": payee, "amount": amount, "nonce": bytes(nonce),
                    "deadline": deadline},
    }


def period_start(grant: Grant, now: int) -> int:
    """The start of the period `now` falls in (only meaningful once `now >= grant.start`)."""
    return grant.start + (now - grant.start) // grant.period * grant.period


def spent_now(grant: Grant, now: int) -> int:
    """What the grant has spent in the period `now` falls in (0 before the start)."""
    if now < grant.start or grant.period_start != period_start(grant, now):
        return 0
    return grant.spent


def usable(grant: Grant, now: int) -> bool:
    """Not unknown, revoked or paused, and `start <= now < expiry`."""
    return (grant.exists and not grant.revoked and not grant.paused
            and grant.start <= now < grant.expiry)


def available(grant: Grant, owner_balance: int, now: int) -> int:
    """The contract's `available`: the most one payment can move now (0 when unusable)."""
    if not usable(grant, now):
        return 0
    return min(grant.cap, grant.budget - spent_now(grant, now), owner_balance)


def payment_refusal(grant: Grant, payee_allowed: bool, owner_balance: int, nonce_used: bool,
                    now: int, payee: str, amount: int, deadline: int) -> str | None:
    """The reason `pay` would revert with for a payment signed by the grant's key, or None.

    `payee_allowed` is the contract's `payee_allowed(grant, payee)` (listed, or any_provider and
    registered), `owner_balance` its `balance_of(grant.owner)`, `nonce_used` its `nonce_used`;
    `now` is the timestamp of the block the payment would be in. `payee` is named for the
    caller's clarity only: its allowance is `payee_allowed`.
    """
    del payee  # decided by payee_allowed (the registry lookup is on chain)
    checks = (
        (not grant.exists, "unknown grant"),
        (grant.revoked, "revoked"),
        (grant.paused, "paused"),
        (now < grant.start, "not started"),
        (now >= grant.expiry, "expired"),
        (now > deadline, "deadline passed"),
        (amount <= 0, "zero amount"),
        (amount > grant.cap, "over cap"),
    )
    for failed, reason in checks:
        if failed:
            return reason
    if amount > grant.budget - spent_now(grant, now):
        return "over period budget"
    if not payee_allowed:
        return "payee not allowed"
    if nonce_used:
        return "nonce used"
    if amount > owner_balance:
        return "owner balance"
    return None


@dataclass(frozen=True)
class SignedPayment:
    """One payment as a session key signed it (the x402 "tessera-budget" payload's fields)."""
    grant: int
    payee: str
    amount: int
    nonce: bytes
    deadline: int
    signature: bytes

    def to_dict(self) -> dict:
        """JSON-safe: integers, addresses and 0x-hex strings."""
        return {"grant": self.grant, "payee": self.payee, "amount": self.amount,
                "nonce": "0x" + self.nonce.hex(), "deadline": self.deadline,
                "signature": "0x" + self.signature.hex()}


def parse_uint(payload: dict, field: str) -> int:
    """An unsigned integer field: a JSON integer or ASCII decimal digits, nothing else (one
    spelling per value: a guard keyed on it cannot be dodged with " 5 " or full-width digits)."""
    value = payload.get(field)
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,78}", value):  # x402 amounts are strings
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
        raise ValueError(f"payment field {field!r} must be an unsigned integer, got {str(value)[:80]!r}")
    return value


def _hex_bytes(payload: dict, field: str, sizes: tuple[int, ...]) -> bytes:
    value = payload.get(field)
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, str):
        if not re.fullmatch(r"0x(?:[0-9a-fA-F]{2})*", value):   # one spelling: 0x, even, no spaces
            raise ValueError(f"payment field {field!r} is not 0x-hex: {value[:80]!r}")
        raw = bytes.fromhex(value[2:])
    else:
        raise ValueError(f"payment field {field!r} must be a 0x-hex string, got {value!r}")
    if len(raw) not in sizes:
        raise ValueError(f"payment field {field!r} must be {' or '.join(map(str, sizes))} bytes, "
                         f"got {len(raw)}")
    return raw


def parse_payment(payload: object) -> SignedPayment:
    """A payment dict (as `SignedPayment.to_dict` writes it) checked field by field; ValueError
    naming the first bad field. The payee must be a 0x address of 20 bytes (any case: checksum
    it with the chain layer before sending)."""
    if not isinstance(payload, dict):
        raise ValueError(f"a payment must be an object, got {type(payload).__name__}")
    payee = payload.get("payee")
    if not isinstance(payee, str) or len(_hex_bytes(payload, "payee", (20,))) != 20:
        raise ValueError(f"payment field 'payee' must be an address, got {payee!r}")
    return SignedPayment(grant=parse_uint(payload, "grant"), payee=payee,
                         amount=parse_uint(payload, "amount"),
                         nonce=_hex_bytes(payload, "nonce", (32,)),
                         deadline=parse_uint(payload, "deadline"),
                         signature=_hex_bytes(payload, "signature", (65,)))
