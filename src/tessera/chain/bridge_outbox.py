"""BridgeOutbox.vy: numbers and emits a chain's outgoing bridge messages, stores each one's id by
nonce, and takes proofs of forged attestations (docs/bridge.md).

`messages` reads `MessageSent` logs back as `protocol.bridge.Message`s with their payloads, and
refuses a log whose fields do not hash to the id the outbox emitted beside them (the off-chain
rules and the contract would then disagree, and nothing should be signed or relayed)."""

from __future__ import annotations

from typing import NamedTuple

from eth_utils import keccak
from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.client import tx_hash
from tessera.chain.contract import ContractWrapper
from tessera.errors import BridgeError
from tessera.protocol.bridge import MAX_PAYLOAD, Message


class SentMessage(NamedTuple):
    """One `MessageSent` log: the message, its payload, where it was mined."""
    message: Message
    payload: bytes
    block_number: int
    tx: str
    block_hash: str = ""


def message_from_event(chain_id: int, outbox: str, args: dict) -> tuple[Message, bytes]:
    """The message and payload a `MessageSent` log of `outbox` on chain `chain_id` describes;
    BridgeError when its fields do not hash to the id it carries."""
    payload = bytes(args["payload"])
    message = Message(source_chain=chain_id, source_outbox=Web3.to_checksum_address(outbox),
                      sender=args["sender"], nonce=args["nonce"],
                      destination_chain=args["destination_chain"], recipient=args["recipient"],
                      kind=args["kind"], amount=args["amount"], payload_hash=keccak(payload))
    if message.id != bytes(args["message_id"]):
        raise BridgeError(
            f"MessageSent nonce {args['nonce']} on chain {chain_id}: the outbox emitted id "
            f"0x{bytes(args['message_id']).hex()} but its fields hash to 0x{message.id.hex()}: "
            "protocol/bridge.py and BridgeOutbox.vy disagree; nothing is signed or relayed")
    return message, payload


def _uint(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
        raise ValueError(f"{what} must be an unsigned integer, got {value!r}")
    return value


class BridgeOutbox(ContractWrapper):
    NAME = "BridgeOutbox"

    # -- sending -------------------------------------------------------------------------
    def send(self, destination_chain: int, recipient: str, kind: int, amount: int,
             payload: bytes = b"") -> tuple[bytes, TxReceipt]:
        """Emit a message from this account (its `sender`); returns the message id and receipt.
        Value moves through TokenBridge, not here: a message sent directly carries no tokens."""
        _uint("destination_chain", destination_chain)
        _uint("kind", kind)
        _uint("amount", amount)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit")
        receipt = self._send("send", destination_chain, Web3.to_checksum_address(recipient), kind,
                             amount, bytes(payload))
        return bytes(self._event(receipt, "MessageSent")["message_id"]), receipt

    def sent_in(self, receipt: TxReceipt) -> list[SentMessage]:
        """Every message a transaction emitted through this outbox."""
        return [SentMessage(*message_from_event(self.chain.network.chain_id, self.address, args),
                            receipt["blockNumber"], tx_hash(receipt))
                for args in self._events(receipt, "MessageSent")]

    # -- reading -------------------------------------------------------------------------
    def messages(self, from_block: int, to_block: int | str = "latest", *,
                 nonce: int | None = None, destination_chain: int | None = None) -> list[SentMessage]:
        """`MessageSent` logs over a block range (optionally one nonce or one destination), in
        nonce order."""
        filters = {}
        if nonce is not None:
            filters["nonce"] = _uint("nonce", nonce)
        if destination_chain is not None:
            filters["destination_chain"] = _uint("destination_chain", destination_chain)
        logs = self.chain.events(self.NAME, "MessageSent", from_block, to_block,
                                 argument_filters=filters or None)
        found = []
        for log in logs:
            message, payload = message_from_event(self.chain.network.chain_id, log["address"],
                                                  dict(log["args"]))
            found.append(SentMessage(message, payload, log["blockNumber"], tx_hash(log),
                                     "0x" + bytes(log["blockHash"]).hex()))
        return sorted(found, key=lambda s: s.message.nonce)

    def message(self, nonce: int, from_block: int | None = None) -> SentMessage:
        """The message sent with `nonce` (BridgeError if the outbox never sent it)."""
        start = self.chain.network.deploy_block if from_block is None else from_block
        found = self.messages(start, "latest", nonce=nonce)
        if not found:
            raise BridgeError(f"the outbox on chain {self.chain.network.chain_id} sent no "
                              f"message with nonce {nonce}")
        return found[-1]

    def sent(self, nonce: int, block: int | str = "latest") -> bytes:
        """The id stored for `nonce` (32 zero bytes if none), at `block`."""
        fn = self.contract.functions.sent(_uint("nonce", nonce))
        return bytes(self.chain.rpc(lambda: fn.call(block_identifier=block), what="sent"))

    def count(self, block: int | str = "latest") -> int:
        """Messages sent so far (the next nonce)."""
        fn = self.contract.functions.count()
        return self.chain.rpc(lambda: fn.call(block_identifier=block), what="count")

    def inbox_of(self, chain_id: int) -> str:
        return self._call("inbox_of", _uint("chain_id", chain_id))

    def forgeries(self, signer: str) -> int:
        """How many forged attestations have been proven against `signer`."""
        return self._call("forgeries", Web3.to_checksum_address(signer))

    def forgery_sink(self) -> tuple[int, str]:
        """(chain id, ForgerySlasher) where proven forgeries are reported ((0, zero): none)."""
        return self._call("forgery_sink_chain"), self._call("forgery_sink")

    # -- owner and anyone ----------------------------------------------------------------
    def set_forgery_sink(self, chain_id: int, sink: str) -> TxReceipt:
        """Owner only: report proven forgeries to `sink` (the home ForgerySlasher) on `chain_id`."""
        return self._send("set_forgery_sink", _uint("chain_id", chain_id),
                          Web3.to_checksum_address(sink))

    def set_inbox(self, chain_id: int, inbox: str) -> TxReceipt:
        """Owner only: the inbox on `chain_id` whose domain attestations for that route use."""
        return self._send("set_inbox", _uint("chain_id", chain_id), Web3.to_checksum_address(inbox))

    def prove_forgery(self, message: Message, epoch: int, signature: bytes,
                      reward_to: str | None = None) -> str:
        """Anyone: prove that `signature` attests a message this outbox never sent; returns the
        signer the contract recorded (TxRefused if the message was sent, or the signature is
        not one). The outbox reports it to its forgery sink, naming `reward_to` (default: this
        account) for the prover's share of the slash on the home chain."""
        return self.prove_forgery_receipt(message, epoch, signature, reward_to)[0]

    def prove_forgery_receipt(self, message: Message, epoch: int, signature: bytes,
                              reward_to: str | None = None) -> tuple[str, TxReceipt]:
        """prove_forgery, with its receipt (the report message or the local slash is in it)."""
        receipt = self._send("prove_forgery", message.as_tuple(), _uint("epoch", epoch),
                             bytes(signature),
                             Web3.to_checksum_address(reward_to or self.chain.address))
        return self._event(receipt, "ForgeryProven")["signer"], receipt
