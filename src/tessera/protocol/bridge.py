"""The bridge between chains, off chain: messages, their ids, what the committee signs, limits.

The contracts (BridgeOutbox.vy, BridgeInbox.vy, TokenBridge.vy) are the authority; this module
is the one off-chain home of their formats and rules, so that an attester, a relayer, the audit
and the tests compute exactly what the contracts compute (docs/bridge.md):

- `Message` and `message_id`: the ten fields an outbox emits and the hash that names a message.
- `attestation_typed_data`: the EIP-712 `Attestation(bytes32 messageId,uint256 epoch)` a
  committee member signs, in the *destination inbox's* domain (name, version, chain id, inbox),
  so a signature is good for one message, on one chain, at one inbox, under one committee epoch.
- `rotation_typed_data` / `committee_hash`: the hand-over to the next epoch's committee, signed
  by the current one.
- `quorum_reached`: signers strictly ascending (so none counts twice), all members, weight at
  least `threshold_bps` of the committee's total.
- `Bucket`: the token bucket that limits the value one sender of one source chain delivers
  (refill per second, capacity).
- `transfer_payload` / `bounce_payload` / `transfer_call_payload`: what TokenBridge puts in a
  message's payload; `order_call_data`: the order terms BridgeOrders opens a Market order with.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from eth_abi import decode, encode
from eth_utils import keccak, to_checksum_address

VERSION = 1
DOMAIN_NAME = "Tessera Bridge"
DOMAIN_VERSION = "1"
MAX_COMMITTEE = 32       # members of one epoch's committee (BridgeInbox.MAX_COMMITTEE)
MAX_PAYLOAD = 512        # bytes of payload a message may carry (BridgeOutbox.MAX_PAYLOAD)
BPS = 10_000
MIN_THRESHOLD_BPS = 5_001      # below a majority, two disjoint quorums could both sign
MAX_DELAY = 30 * 86_400        # the longest a large transfer may be held (BridgeInbox.MAX_DELAY)
# Blocks an attester waits on the source before signing a message. 2 is for the devnet only:
# a real deployment must wait for the source chain's finality (Ethereum's `finalized` block, an
# L2's batch posted on L1), because a signature on a message that a reorg removes is exactly
# what `BridgeOutbox.prove_forgery` slashes, and its value would have no lock behind it.
DEFAULT_CONFIRMATIONS = 2
# Two thirds of the committee's weight, rounded down so that 2 of 3 equal members reach it
# (2·10,000 >= 3·6,666); the inbox refuses any threshold that is not a majority (<= 5,000).
DEFAULT_THRESHOLD_BPS = 6_666

# What a message asks its recipient to do (TokenBridge reads them; the inbox does not).
KIND_TRANSFER = 1   # amount crosses: unlock (lock side) or mint (mint side) to the payload's `to`
KIND_BOUNCE = 2     # a transfer was cancelled at its destination: give it back to its sender
KIND_TRANSFER_CALL = 3   # a transfer, then its data handed to the recipient contract (send_call)
TRANSFER_KINDS = frozenset({KIND_TRANSFER, KIND_TRANSFER_CALL})   # the kinds that move value
# TokenBridge.MAX_CALL_DATA: abi_encode(to, refund_to, data) fits MAX_PAYLOAD (4 head words)
MAX_CALL_DATA = MAX_PAYLOAD - 4 * 32

MESSAGE_TUPLE = "(uint8,uint256,address,address,uint256,uint256,address,uint8,uint256,bytes32)"
MAX_BODY = 10 * 32 + 32 + 32 + MAX_PAYLOAD   # BridgeInbox.MAX_BODY: a Hyperlane body, 896 bytes
_MESSAGE_TYPES = ("uint8", "uint256", "address", "address", "uint256", "uint256", "address",
                  "uint8", "uint256", "bytes32")

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
ATTESTATION_TYPE = [
    {"name": "messageId", "type": "bytes32"},
    {"name": "epoch", "type": "uint256"},
]
ATTESTATION_TYPE_STRING = "Attestation(bytes32 messageId,uint256 epoch)"
ROTATION_TYPE = [
    {"name": "epoch", "type": "uint256"},
    {"name": "committee", "type": "bytes32"},
]
ROTATION_TYPE_STRING = "Rotation(uint256 epoch,bytes32 committee)"


@dataclass(frozen=True)
class Message:
    """One cross-chain message, field for field as BridgeOutbox emits it (`MessageSent`)."""
    source_chain: int
    source_outbox: str      # the outbox that emitted it
    sender: str             # the contract that called the outbox's `send`
    nonce: int              # the outbox's counter, from 0
    destination_chain: int
    recipient: str          # the contract that receives it on the destination chain
    kind: int
    amount: int             # base units of the bridged token (0 for a message with no value)
    payload_hash: bytes     # keccak256 of the payload bytes
    version: int = VERSION

    def as_tuple(self) -> tuple:
        """The fields in the contract's order (the `Message` struct, and what the id hashes)."""
        return (self.version, self.source_chain, to_checksum_address(self.source_outbox),
                to_checksum_address(self.sender), self.nonce, self.destination_chain,
                to_checksum_address(self.recipient), self.kind, self.amount, self.payload_hash)

    @property
    def id(self) -> bytes:
        return message_id(self)


def message_id(message: Message) -> bytes:
    """keccak256(abi_encode(version, source chain, source outbox, sender, nonce, destination
    chain, recipient, kind, amount, payload hash)): what BridgeOutbox stores per nonce."""
    return keccak(encode(list(_MESSAGE_TYPES), list(message.as_tuple())))


def payload_hash(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit")
    return keccak(payload)


def _domain(chain_id: int, inbox: str) -> dict:
    return {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id,
            "verifyingContract": to_checksum_address(inbox)}


def attestation_typed_data(destination_chain: int, inbox: str, message: bytes, epoch: int) -> dict:
    """The EIP-712 message a committee member signs to attest `message` (an id) for the inbox
    at `inbox` on `destination_chain`, as a member of epoch `epoch`'s committee."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, "Attestation": ATTESTATION_TYPE},
        "primaryType": "Attestation",
        "domain": _domain(destination_chain, inbox),
        "message": {"messageId": message, "epoch": epoch},
    }


def committee_hash(members: Sequence[str], weights: Sequence[int]) -> bytes:
    """keccak256(abi_encode(members, weights)): what a rotation's signers agree to."""
    return keccak(encode(["address[]", "uint256[]"],
                         [[to_checksum_address(m) for m in members], list(weights)]))


def rotation_typed_data(chain_id: int, inbox: str, epoch: int, members: Sequence[str],
                        weights: Sequence[int]) -> dict:
    """The EIP-712 message the current committee signs to hand the inbox to epoch `epoch`'s."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, "Rotation": ROTATION_TYPE},
        "primaryType": "Rotation",
        "domain": _domain(chain_id, inbox),
        "message": {"epoch": epoch, "committee": committee_hash(members, weights)},
    }


def committee_refusal(members: Sequence[str], weights: Sequence[int]) -> str | None:
    """Why BridgeInbox would refuse this committee (constructor or rotation), or None."""
    if not members:
        return "empty committee"
    if len(members) > MAX_COMMITTEE:
        return "committee too large"
    if len(members) != len(weights):
        return "length mismatch"
    if any(w == 0 for w in weights):
        return "zero weight"
    keys = [int(m, 16) for m in members]
    if any(b <= a for a, b in zip(keys, keys[1:], strict=False)) or keys[0] == 0:
        return "members not ascending"
    if sum(weights) > (2**256 - 1) // BPS:   # the quorum's `signed * BPS` must not overflow
        return "total weight too large"
    return None


def choose_committee(weighted: Sequence[tuple[str, int]]) -> tuple[list[str], list[int]]:
    """The committee from (validator, stake weight) pairs: those with weight, at most
    MAX_COMMITTEE of the heaviest (ties: the lower address), then ascending by address as the
    inbox requires. Empty when nobody has weight."""
    live = [(to_checksum_address(who), w) for who, w in weighted if w > 0]
    live.sort(key=lambda mw: (-mw[1], int(mw[0], 16)))
    chosen = sorted(live[:MAX_COMMITTEE], key=lambda mw: int(mw[0], 16))
    return [m for m, _ in chosen], [w for _, w in chosen]


# A rotation costs 0.3 M (4 members) to 1.8 M gas (32): weights that moved by less than this
# share of their old value do not call for one; a member joining or leaving always does.
ROTATION_WEIGHT_CHANGE_BPS = 1_000


def rotation_due(current: Mapping[str, int], proposed: Mapping[str, int]) -> bool:
    """Whether an inbox whose committee is `current` ({member: weight}) should hand over to
    `proposed` (the home Validators' stake-weighted choice): another member set, or a weight
    moved by at least ROTATION_WEIGHT_CHANGE_BPS of its old value. Never to an empty one."""
    now = {to_checksum_address(k): w for k, w in current.items()}
    new = {to_checksum_address(k): w for k, w in proposed.items()}
    if not new:
        return False
    if set(now) != set(new):
        return True
    return any(abs(new[m] - w) * BPS >= w * ROTATION_WEIGHT_CHANGE_BPS for m, w in now.items())


# The rotation duty renews a committee (the same members, the next epoch) once its epoch is a
# third of BridgeInbox.STALL_PERIOD old, so that only a committee that missed two renewals in a
# row can be replaced by the owner (`recover_committee`).
RENEWALS_PER_STALL_PERIOD = 3


def renewal_due(rotated_at: int, now: int, stall_period: int) -> bool:
    """Whether an inbox whose epoch began at `rotated_at` should be renewed at `now` (chain
    times, s): its committee shows it can still sign before the owner may replace it."""
    return now - rotated_at >= stall_period // RENEWALS_PER_STALL_PERIOD


def quorum_reached(signers: Sequence[str], weights: Mapping[str, int], threshold_bps: int) -> bool:
    """True when `signers` (recovered, in submitted order) reach the threshold: each strictly
    above the previous one (so none counts twice) and a member; BridgeInbox reverts otherwise."""
    members = {to_checksum_address(k): w for k, w in weights.items()}
    previous = 0
    signed = 0
    for signer in signers:
        key = int(signer, 16)
        if key <= previous:
            return False
        previous = key
        weight = members.get(to_checksum_address(signer), 0)
        if weight == 0:
            return False
        signed += weight
    return signed * BPS >= sum(members.values()) * threshold_bps




def sort_signatures(signed: Mapping[str, bytes]) -> list[bytes]:
    """Signatures ordered by their signer's address, as BridgeInbox requires."""
    return [signed[k] for k in sorted(signed, key=lambda a: int(a, 16))]


@dataclass(frozen=True)
class Bucket:
    """BridgeInbox's token bucket for one value sender of one source chain: `tokens` at
    `updated_at`, refilling at `refill_per_s` up to `capacity`. A value message takes its amount
    out; one larger than the capacity is refused for good, one larger than what is left waits for
    the refill."""
    capacity: int
    refill_per_s: int
    tokens: int
    updated_at: int

    def at(self, now: int) -> Bucket:
        if now <= self.updated_at:
            return self
        tokens = min(self.capacity, self.tokens + (now - self.updated_at) * self.refill_per_s)
        return replace(self, tokens=tokens, updated_at=now)

    def refusal(self, amount: int, now: int) -> str | None:
        if amount > self.capacity:
            return "over capacity"
        if amount > self.at(now).tokens:
            return "rate limited"
        return None

    def take(self, amount: int, now: int) -> Bucket:
        reason = self.refusal(amount, now)
        if reason:
            raise ValueError(reason)
        filled = self.at(now)
        return replace(filled, tokens=filled.tokens - amount)


def transfer_payload(to: str, refund_to: str) -> bytes:
    """TokenBridge's payload of a transfer: who receives on the destination, and who gets the
    amount back on the source if the destination cancels it."""
    return encode(["address", "address"], [to_checksum_address(to), to_checksum_address(refund_to)])


def decode_transfer_payload(payload: bytes) -> tuple[str, str]:
    to, refund_to = decode(["address", "address"], payload)
    return to_checksum_address(to), to_checksum_address(refund_to)


def transfer_call_payload(to: str, refund_to: str, data: bytes) -> bytes:
    """TokenBridge's payload of a transfer with a call (`send_call`): the recipient contract,
    the sender, and the data the recipient is handed on arrival."""
    return encode(["address", "address", "bytes"],
                  [to_checksum_address(to), to_checksum_address(refund_to), bytes(data)])


def decode_transfer_call_payload(payload: bytes) -> tuple[str, str, bytes]:
    """(to, refund_to, data) of a transfer with a call; ValueError if it does not decode."""
    try:
        to, refund_to, data = decode(["address", "address", "bytes"], bytes(payload))
    except Exception as exc:   # eth_abi raises several decoding errors
        raise ValueError(f"not a transfer-with-call payload: {exc}") from None
    return to_checksum_address(to), to_checksum_address(refund_to), bytes(data)


_ORDER_TYPES = ["address", "bytes32", "string", "uint32", "uint32", "uint256", "uint256", "uint32",
                "bool"]
_UINT32 = 2**32 - 1


@dataclass(frozen=True)
class OrderTerms:
    """What `Market.create_order_for` takes besides the deposit (the bridged amount): the data
    a tenant on a peer chain sends BridgeOrders with `TokenBridge.send_call`."""
    tenant: str
    spec_hash: bytes
    gpu_model: str
    min_gpus: int
    min_gpu_memory_mb: int
    max_price_per_gpu_hour: int
    duration: int
    nodes: int
    verified: bool = False

    def refusal(self) -> str | None:
        """Why the Market or BridgeOrders would refuse these terms (None: they fit the types;
        the deposit's size is checked against the amount separately)."""
        if int(to_checksum_address(self.tenant), 16) == 0:
            return "the tenant cannot be the zero address"
        if len(self.spec_hash) != 32:
            return "the spec hash must be 32 bytes"
        if len(self.gpu_model.encode()) > 64:
            return "the GPU model name is longer than 64 bytes"
        for name in ("min_gpus", "min_gpu_memory_mb", "nodes"):
            value = getattr(self, name)
            if not 0 <= value <= _UINT32:
                return f"{name} must fit in 32 bits, got {value}"
        for name in ("min_gpus", "nodes", "max_price_per_gpu_hour", "duration"):
            if getattr(self, name) <= 0:
                return f"{name} must be positive, got {getattr(self, name)}"
        return None


def order_call_data(terms: OrderTerms) -> bytes:
    """BridgeOrders' data: abi_encode of the terms, in `create_order_for`'s order."""
    problem = terms.refusal()
    if problem:
        raise ValueError(problem)
    data = encode(_ORDER_TYPES, [to_checksum_address(terms.tenant), bytes(terms.spec_hash),
                                 terms.gpu_model, terms.min_gpus, terms.min_gpu_memory_mb,
                                 terms.max_price_per_gpu_hour, terms.duration, terms.nodes,
                                 bool(terms.verified)])
    if len(data) > MAX_CALL_DATA:   # cannot happen with a 64-byte model name; kept as the rule
        raise ValueError(f"the order's terms take {len(data)} bytes, over {MAX_CALL_DATA}")
    return data


# BridgeOrders' data for a top-up instead of an order: this selector, then the lease id
TOP_UP_SELECTOR = keccak(text="top_up(uint256)")[:4]


def top_up_call_data(lease_id: int) -> bytes:
    """BridgeOrders' data that tops up lease `lease_id` (of an order the same sender paid for
    through BridgeOrders) with the transfer's amount: 36 bytes, never an order's terms."""
    if not 0 < lease_id < 2**256:
        raise ValueError(f"a lease id is a positive uint256, got {lease_id}")
    return TOP_UP_SELECTOR + lease_id.to_bytes(32, "big")


CANCEL_SELECTOR = keccak(text="cancel_order(bytes32)")[:4]


def cancel_call_data(funding_id: bytes) -> bytes:
    """BridgeOrders' data that cancels the order funding `funding_id` opened (the message's
    sender must be that funding's, on the same chain): 36 bytes; the message's own amount is
    owed back whole. What a sender that is a contract (a Safe) sends to cancel."""
    if len(funding_id) != 32 or funding_id == bytes(32):
        raise ValueError("a funding is named by its 32-byte message id")
    return CANCEL_SELECTOR + bytes(funding_id)


CLAIM_SELECTOR = keccak(text="claim_here(bytes32,address)")[:4]


def claim_call_data(funding_id: bytes, to: str) -> bytes:
    """BridgeOrders' data that pays what funding `funding_id` is owed to `to` on the home chain
    (the message's sender must be that funding's, on the same chain): 68 bytes; the message's
    own amount is owed back whole. A contract sender's `claim_here`."""
    if len(funding_id) != 32 or funding_id == bytes(32):
        raise ValueError("a funding is named by its 32-byte message id")
    if int(to, 16) == 0:
        raise ValueError("the recipient is the zero address")
    return CLAIM_SELECTOR + bytes(funding_id) + bytes(12) + bytes.fromhex(to.removeprefix("0x"))


def bounce_payload(cancelled: bytes) -> bytes:
    """TokenBridge's payload of a bounce: the id of the cancelled transfer."""
    return encode(["bytes32"], [cancelled])


def hyperlane_body(message: Message, payload: bytes) -> bytes:
    """abi_encode(message, payload): what HyperlaneDispatcher sends through a Hyperlane Mailbox
    and BridgeInbox.handle decodes (docs/bridge.md, "Hyperlane")."""
    if payload_hash(payload) != message.payload_hash:
        raise ValueError("payload does not match the message's payload hash")
    return encode([MESSAGE_TUPLE, "bytes"], [message.as_tuple(), payload])


def address_to_bytes32(address: str) -> bytes:
    """A Hyperlane sender or recipient: the address left-padded to 32 bytes."""
    return b"\x00" * 12 + bytes.fromhex(to_checksum_address(address)[2:])
