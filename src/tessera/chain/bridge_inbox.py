"""BridgeInbox.vy: delivers a message once, for its own chain, from a registered source outbox,
with a quorum of the committee's signatures; lets value come only from the senders the owner
listed for a source chain (its TokenBridges), each limited by its own token bucket and large
threshold, queues large transfers for a delay the guardian can cancel in, and pauses
(docs/bridge.md).

Refusals become BridgeError naming the message and the contract's reason (`refusal` reads the
reason back, so that a relayer can tell "already delivered", which is done, from "rate
limited", which is worth a retry). What a committee member signs, and how a signature is
checked before it is sent, comes from protocol/bridge.py (`sign_attestation`,
`attestation_signer`)."""

from __future__ import annotations

from collections.abc import Sequence

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper
from tessera.errors import BridgeError, TxRefused
from tessera.protocol.bridge import (
    Bucket,
    Message,
    attestation_typed_data,
    committee_refusal,
    rotation_typed_data,
)
from tessera.protocol.messages import signature_refusal

# BridgeInbox's revert reasons (docs/bridge.md); `refusal` finds them in an error's text.
REASONS = ("paused", "bad version", "wrong chain", "unknown outbox", "bad payload",
           "already delivered", "bad signature", "not ascending", "not a member", "no quorum",
           "over capacity", "rate limited", "not queued", "delayed", "not guardian", "wrong epoch",
           "not owner", "no committee", "not a value sender", "bad threshold", "same chain",
           "zero sender", "zero outbox")
# Refusals that a later try may not meet (time passes, the owner unpauses, the bucket refills).
TRANSIENT = ("paused", "rate limited", "delayed")


def refusal(exc: Exception) -> str:
    """The contract's reason in a refusal's text (one of REASONS), else the whole text."""
    text = str(exc)
    found = [r for r in REASONS if r in text]
    return max(found, key=len) if found else text.rsplit("refused: ", 1)[-1]


def sign_attestation(account: LocalAccount, destination_chain: int, inbox: str, message_id: bytes,
                     epoch: int) -> bytes:
    """`account`'s 65-byte EIP-712 attestation of `message_id` for `inbox` on
    `destination_chain`, as a member of committee epoch `epoch`."""
    typed = attestation_typed_data(destination_chain, inbox, message_id, epoch)
    return bytes(account.sign_typed_data(full_message=typed).signature)


def attestation_signer(destination_chain: int, inbox: str, message_id: bytes, epoch: int,
                       signature: bytes) -> str | None:
    """Who signed this attestation (checksummed), or None when it is not a signature the inbox
    would accept (protocol.messages.signature_refusal: a high-s twin recovers off chain too)."""
    if signature_refusal(bytes(signature)) is not None:
        return None
    typed = attestation_typed_data(destination_chain, inbox, message_id, epoch)
    try:
        return Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
    except Exception:  # eth_keys raises several types for a malformed signature
        return None


def sign_rotation(account: LocalAccount, chain_id: int, inbox: str, epoch: int,
                  members: Sequence[str], weights: Sequence[int]) -> bytes:
    """`account`'s signature handing `inbox` to epoch `epoch`'s committee (members, weights)."""
    typed = rotation_typed_data(chain_id, inbox, epoch, members, weights)
    return bytes(account.sign_typed_data(full_message=typed).signature)


def rotation_signer(chain_id: int, inbox: str, epoch: int, members: Sequence[str],
                    weights: Sequence[int], signature: bytes) -> str | None:
    """Who signed this rotation (checksummed), or None when the inbox would refuse it."""
    if signature_refusal(bytes(signature)) is not None:
        return None
    typed = rotation_typed_data(chain_id, inbox, epoch, members, weights)
    try:
        return Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
    except Exception:  # eth_keys raises several types for a malformed signature
        return None


class BridgeInbox(ContractWrapper):
    NAME = "BridgeInbox"

    def _act(self, what: str, function: str, *args) -> TxReceipt:
        try:
            return self._send(function, *args)
        except TxRefused as exc:
            raise BridgeError(f"BridgeInbox on chain {self.chain.network.chain_id}: {what} "
                              f"refused: {refusal(exc)}") from None

    # -- delivery ------------------------------------------------------------------------
    def deliver(self, message: Message, payload: bytes,
                signatures: Sequence[bytes]) -> tuple[bool, TxReceipt]:
        """Deliver with signatures sorted by signer; (True, receipt) when delivered now,
        (False, receipt) when queued for the delay (a large transfer)."""
        receipt = self._act(f"delivery of 0x{message.id.hex()}", "deliver", message.as_tuple(),
                            bytes(payload), [bytes(s) for s in signatures])
        return bool(self._events(receipt, "MessageDelivered")), receipt

    def execute(self, message: Message, payload: bytes) -> TxReceipt:
        """Anyone, once a queued message's delay is over: deliver it."""
        return self._act(f"execution of 0x{message.id.hex()}", "execute", message.as_tuple(),
                         bytes(payload))

    def cancel(self, message: Message, payload: bytes) -> TxReceipt:
        """Guardian or owner, during a queued message's delay: cancel it (TokenBridge bounces
        the amount back to its sender on the source chain)."""
        return self._act(f"cancel of 0x{message.id.hex()}", "cancel", message.as_tuple(),
                         bytes(payload))

    def rotate(self, epoch: int, members: Sequence[str], weights: Sequence[int],
               signatures: Sequence[bytes]) -> TxReceipt:
        """Hand over to epoch `epoch`'s committee with the current committee's signatures."""
        members = [Web3.to_checksum_address(m) for m in members]
        problem = committee_refusal(members, list(weights))
        if problem:
            raise ValueError(f"committee refused before sending: {problem}")
        return self._act(f"rotation to epoch {epoch}", "rotate", epoch, members, list(weights),
                         [bytes(s) for s in signatures])

    def recover_committee(self, epoch: int, members: Sequence[str], weights: Sequence[int],
                          lost: Sequence[str]) -> TxReceipt:
        """Owner only (a Timelock in every deployment: see Timelock.advance): install epoch
        `epoch`'s committee once the current one has not rotated for STALL_PERIOD, retiring
        the `lost` members for good."""
        members = [Web3.to_checksum_address(m) for m in members]
        problem = committee_refusal(members, list(weights))
        if problem:
            raise ValueError(f"committee refused before sending: {problem}")
        return self._act(f"recovery to epoch {epoch}", "recover_committee", epoch, members,
                         list(weights), [Web3.to_checksum_address(m) for m in lost])

    # -- guardian and owner --------------------------------------------------------------
    def pause(self) -> TxReceipt:
        return self._act("pause", "pause")

    def unpause(self) -> TxReceipt:
        return self._act("unpause", "unpause")

    def set_guardian(self, guardian: str) -> TxReceipt:
        return self._act("set_guardian", "set_guardian", Web3.to_checksum_address(guardian))

    def set_delay(self, delay: int) -> TxReceipt:
        return self._act("set_delay", "set_delay", delay)

    def register_source(self, source_chain: int, outbox: str) -> TxReceipt:
        """Owner: the BridgeOutbox of `source_chain` (no limits: see set_value_sender)."""
        return self._act(f"register_source({source_chain})", "register_source", source_chain,
                         Web3.to_checksum_address(outbox))

    def set_value_sender(self, source_chain: int, sender: str, capacity: int, refill_per_s: int,
                         large_threshold: int) -> TxReceipt:
        """Owner: list `sender` on `source_chain` (a TokenBridge) as one whose messages may
        carry value, with its own bucket and large threshold; capacity 0 unlists it. Messages
        with value from a sender not listed are refused."""
        return self._act(f"set_value_sender({source_chain}, {sender})", "set_value_sender",
                         source_chain, Web3.to_checksum_address(sender), capacity, refill_per_s,
                         large_threshold)

    # -- views ---------------------------------------------------------------------------
    def epoch(self) -> int:
        return self._call("epoch")

    def rotated_at(self) -> int:
        """Chain time the current epoch began (deployment, rotation or recovery)."""
        return self._call("rotated_at")

    def retired(self, member: str) -> bool:
        """Named lost by a recovery of this inbox: never a member again."""
        return self._call("retired", Web3.to_checksum_address(member))

    def stall_period(self) -> int:
        """How long a committee may go without rotating before the owner may replace it."""
        return self._call("STALL_PERIOD")

    def stalled_since(self) -> int:
        """Chain time from which `recover_committee` is allowed (if nothing rotates first)."""
        return self.rotated_at() + self.stall_period()

    def threshold_bps(self) -> int:
        return self._call("threshold_bps")

    def delay(self) -> int:
        return self._call("delay")

    def guardian(self) -> str:
        return self._call("guardian")

    def owner(self) -> str:
        return self._call("owner")

    def paused(self) -> bool:
        return bool(self._call("paused"))

    def delivered(self, message_id: bytes) -> bool:
        return bool(self._call("delivered", bytes(message_id)))

    def cancelled(self, message_id: bytes) -> bool:
        return bool(self._call("cancelled", bytes(message_id)))

    def pending(self, message_id: bytes) -> int:
        """When a queued message may be executed (Unix seconds); 0 when it is not queued."""
        return self._call("pending", bytes(message_id))

    def outbox_of(self, chain_id: int) -> str:
        return self._call("outbox_of", chain_id)

    def large_threshold(self, source_chain: int, sender: str) -> int:
        """`sender`'s amounts from `source_chain` above this are queued for the delay."""
        return self._call("large_threshold", source_chain, Web3.to_checksum_address(sender))

    def value_sender(self, source_chain: int, sender: str) -> bool:
        """Whether `sender` on `source_chain` is listed (its messages may carry value)."""
        return bool(self._call("value_sender", source_chain, Web3.to_checksum_address(sender)))

    def weight_of(self, epoch: int, member: str) -> int:
        return self._call("weight_of", epoch, Web3.to_checksum_address(member))

    def total_weight(self, epoch: int) -> int:
        return self._call("total_weight", epoch)

    def committee(self, epoch: int | None = None) -> list[str]:
        """The members of epoch `epoch`'s committee (default: the current one), ascending."""
        return list(self._call("committee", self.epoch() if epoch is None else epoch))

    def weights(self, epoch: int | None = None) -> dict[str, int]:
        """{member: weight} of epoch `epoch`'s committee (default: the current one)."""
        epoch = self.epoch() if epoch is None else epoch
        return {m: self.weight_of(epoch, m) for m in self.committee(epoch)}

    def bucket(self, source_chain: int, sender: str) -> Bucket:
        """The token bucket that limits value delivered from `sender` on `source_chain`
        (all zero when it is not listed)."""
        record = self._struct("bucket", source_chain, Web3.to_checksum_address(sender))
        names = ("capacity", "refill_per_s", "tokens", "updated_at")
        if all(n in record for n in names):
            return Bucket(**{n: record[n] for n in names})
        return Bucket(*record.values())

    def available(self, source_chain: int, sender: str) -> int:
        """Value that `sender` on `source_chain` could deliver now."""
        return self._call("available", source_chain, Web3.to_checksum_address(sender))

    def domain_separator(self) -> bytes:
        return bytes(self._call("DOMAIN_SEPARATOR"))

    def attestation_digest(self, message_id: bytes, epoch: int) -> bytes:
        return bytes(self._call("attestation_digest", bytes(message_id), epoch))

    def message_id(self, message: Message) -> bytes:
        """The id the contract computes for `message` (equal to protocol.bridge.message_id)."""
        return bytes(self._call("message_id", message.as_tuple()))
