# pragma version ~=0.4.3
"""
@title Tessera bridge outbox
@license GNU Affero General Public License v3.0 or later
@notice Numbers and emits cross-chain messages (docs/bridge.md). `send` gives each message
        the next nonce, stores `sent[nonce] = message_id` and emits `MessageSent`; the
        committee attests ids it has seen here, and a relayer carries message and
        signatures to the destination's BridgeInbox.
        The stored ids also make forgery provable: a committee member's signature on a
        message id that this outbox never emitted is evidence (`prove_forgery`), recorded
        per signer and reported to the forgery sink, the home chain's ForgerySlasher: by a
        call when it is on this chain, else by a message sent from this outbox itself.
        The owner only names each destination chain's inbox (the EIP-712 domain in which
        forgery proofs are checked) and the forgery sink; it cannot send as anyone or
        change a sent message.
@dev message_id = keccak256(abi_encode(version, source_chain, source_outbox, sender, nonce,
     destination_chain, recipient, kind, amount, keccak256(payload))), exactly as
     `tessera.protocol.bridge.message_id` and `BridgeInbox.message_id`.
"""

from .interfaces import IBridgeOutbox
implements: IBridgeOutbox

from snekmate.auth import ownable
initializes: ownable

from snekmate.utils import ecdsa

# No renounce_ownership: a bridge contract without an owner cannot name a new inbox.
exports: (ownable.owner, ownable.transfer_ownership)


# One message, field for field as `MessageSent` emits it (same struct as BridgeInbox.Message;
# the field order is the id's abi_encode order, protocol.bridge.Message.as_tuple).
struct Message:
    version: uint8
    source_chain: uint256
    source_outbox: address
    sender: address
    nonce: uint256
    destination_chain: uint256
    recipient: address
    kind: uint8
    amount: uint256
    payload_hash: bytes32


event MessageSent:
    message_id: indexed(bytes32)
    nonce: indexed(uint256)
    destination_chain: indexed(uint256)
    sender: address
    recipient: address
    kind: uint8
    amount: uint256
    payload: Bytes[MAX_PAYLOAD]


event InboxSet:
    chain_id: indexed(uint256)
    inbox: address


event ForgeryProven:
    signer: indexed(address)
    message_id: indexed(bytes32)
    epoch: uint256
    destination_chain: uint256


event ForgerySinkSet:
    chain_id: indexed(uint256)
    sink: address


interface IForgerySink:
    def on_forgery(signer: address, message_id: bytes32, epoch: uint256, prover: address): nonpayable


VERSION: constant(uint8) = 1
# the kind of a forgery report (ForgerySlasher.KIND_FORGERY)
KIND_FORGERY: constant(uint8) = 1
MAX_PAYLOAD: constant(uint256) = 512
_DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_NAME_HASH: constant(bytes32) = keccak256("Tessera Bridge")
_VERSION_HASH: constant(bytes32) = keccak256("1")
_ATTESTATION_TYPEHASH: constant(bytes32) = keccak256("Attestation(bytes32 messageId,uint256 epoch)")

# nonce => id of the message sent with it (empty for a nonce not used yet)
sent: public(HashMap[uint256, bytes32])
# messages sent so far (the next nonce)
count: public(uint256)
# destination chain id => its BridgeInbox (the domain of the attestations signed for it)
inbox_of: public(HashMap[uint256, address])
# committee member => forgeries proven against it
forgeries: public(HashMap[address, uint256])
# keccak256(abi_encode(signer, message id, epoch)) => proven (each counts once)
_proven: HashMap[bytes32, bool]
# where proven forgeries are reported: the home chain's ForgerySlasher (0: nowhere)
forgery_sink_chain: public(uint256)
forgery_sink: public(address)


@deploy
def __init__():
    """
    @notice The deployer becomes the owner (it names destination inboxes, nothing else).
    """
    ownable.__init__()


@internal
@view
def _message_id(m: Message) -> bytes32:
    return keccak256(abi_encode(m.version, m.source_chain, m.source_outbox, m.sender, m.nonce, m.destination_chain, m.recipient, m.kind, m.amount, m.payload_hash))


@external
def send(destination_chain: uint256, recipient: address, kind: uint8, amount: uint256, payload: Bytes[MAX_PAYLOAD]) -> bytes32:
    """
    @notice Number and emit a message from the caller (its `sender`) to `recipient` on
            `destination_chain`. Anyone may send; the recipient decides whom it trusts.
    @param destination_chain The chain id the message is for (not this chain, not 0).
    @param recipient The contract that receives it there (an IBridgeReceiver).
    @param kind What the message asks the recipient to do.
    @param amount The value it carries, in base units (0 for none).
    @param payload Up to 512 bytes for the recipient (the id commits to their keccak256).
    @return bytes32 The message id.
    """
    return self._send(msg.sender, destination_chain, recipient, kind, amount, payload)


@internal
def _send(sender: address, destination_chain: uint256, recipient: address, kind: uint8, amount: uint256, payload: Bytes[MAX_PAYLOAD]) -> bytes32:
    assert destination_chain != 0, "zero destination"
    assert destination_chain != chain.id, "same chain"
    assert recipient != empty(address), "zero recipient"
    nonce: uint256 = self.count
    m: Message = Message(
        version=VERSION,
        source_chain=chain.id,
        source_outbox=self,
        sender=sender,
        nonce=nonce,
        destination_chain=destination_chain,
        recipient=recipient,
        kind=kind,
        amount=amount,
        payload_hash=keccak256(payload),
    )
    message_id: bytes32 = self._message_id(m)
    self.sent[nonce] = message_id
    self.count = nonce + 1
    log MessageSent(
        message_id=message_id,
        nonce=nonce,
        destination_chain=destination_chain,
        sender=sender,
        recipient=recipient,
        kind=kind,
        amount=amount,
        payload=payload,
    )
    return message_id


@external
def set_inbox(chain_id: uint256, inbox: address):
    """
    @notice The owner names the BridgeInbox of `chain_id`: forgery proofs for messages to
            that chain are checked in its EIP-712 domain.
    @param chain_id The destination chain id (not this chain, not 0).
    @param inbox The BridgeInbox there.
    """
    assert msg.sender == ownable.owner, "not owner"
    assert chain_id != 0, "zero chain"
    assert chain_id != chain.id, "same chain"
    assert inbox != empty(address), "zero inbox"
    self.inbox_of[chain_id] = inbox
    log InboxSet(chain_id=chain_id, inbox=inbox)


@internal
@view
def _attestation_digest(inbox: address, destination_chain: uint256, message_id: bytes32, epoch: uint256) -> bytes32:
    # The destination inbox's domain, as its snekmate eip712_domain_separator builds it there.
    domain: bytes32 = keccak256(abi_encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, destination_chain, inbox))
    struct_hash: bytes32 = keccak256(abi_encode(_ATTESTATION_TYPEHASH, message_id, epoch))
    return keccak256(concat(b"\x19\x01", domain, struct_hash))


@internal
@pure
def _recover(digest: bytes32, signature: Bytes[65]) -> address:
    # 65 bytes (no EIP-2098 short form), v in {27, 28}, low s (EIP-2): one signature per
    # (signer, digest, k), so a proof cannot be replayed in another shape.
    assert len(signature) == 65, "bad signature"
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    s: uint256 = extract32(signature, 32, output_type=uint256)
    assert (v == 27 or v == 28) and s <= ecdsa._MALLEABILITY_THRESHOLD, "bad signature"
    signer: address = ecrecover(digest, v, extract32(signature, 0, output_type=uint256), s)
    assert signer != empty(address), "bad signature"
    return signer


@external
def prove_forgery(m: Message, epoch: uint256, signature: Bytes[65], reward_to: address = msg.sender) -> address:
    """
    @notice Anyone proves that a committee member attested a message this outbox never
            emitted: `signature` is its EIP-712 Attestation(id, epoch) in the destination
            inbox's domain, and `sent[m.nonce]` is not `m`'s id. Counts once per (signer,
            message, epoch), and is reported to the forgery sink (with `reward_to`, who gets
            the prover's share of the slash).
    @param m The attested message (claimed to come from this outbox on this chain).
    @param epoch The committee epoch named in the attestation.
    @param signature The member's 65-byte (r, s, v) signature.
    @param reward_to Who receives the prover's reward on the home chain (default: the caller;
           a contract prover names an address it controls there).
    @return address The signer, whose forgery count went up by one.
    """
    assert m.source_chain == chain.id and m.source_outbox == self, "not this outbox"
    assert reward_to != empty(address), "zero reward_to"
    inbox: address = self.inbox_of[m.destination_chain]
    assert inbox != empty(address), "unknown destination"
    message_id: bytes32 = self._message_id(m)
    assert self.sent[m.nonce] != message_id, "emitted"
    signer: address = self._recover(
        self._attestation_digest(inbox, m.destination_chain, message_id, epoch), signature
    )
    key: bytes32 = keccak256(abi_encode(signer, message_id, epoch))
    assert not self._proven[key], "proven"
    self._proven[key] = True
    self.forgeries[signer] += 1
    log ForgeryProven(signer=signer, message_id=message_id, epoch=epoch, destination_chain=m.destination_chain)
    sink: address = self.forgery_sink
    if sink != empty(address):
        if self.forgery_sink_chain == chain.id:
            extcall IForgerySink(sink).on_forgery(signer, message_id, epoch, reward_to)
        else:
            # from this outbox itself: the home inbox checks the route, the sink the sender
            self._send(self, self.forgery_sink_chain, sink, KIND_FORGERY, 0, abi_encode(signer, message_id, epoch, reward_to))
    return signer


@external
def set_forgery_sink(chain_id: uint256, sink: address):
    """
    @notice The owner names where proven forgeries are reported: the ForgerySlasher of the
            home chain (`chain_id`; this chain's id when it is the home chain).
    @param chain_id The chain the sink is on.
    @param sink The ForgerySlasher there.
    """
    assert msg.sender == ownable.owner, "not owner"
    assert chain_id != 0, "zero chain"
    assert sink != empty(address), "zero sink"
    self.forgery_sink_chain = chain_id
    self.forgery_sink = sink
    log ForgerySinkSet(chain_id=chain_id, sink=sink)


@external
@view
def message_id(m: Message) -> bytes32:
    """
    @notice The id of a message (the hash the committee attests).
    @param m The message.
    @return bytes32 keccak256 of its fields' abi encoding.
    """
    return self._message_id(m)


@external
@view
def attestation_digest(destination_chain: uint256, message_id: bytes32, epoch: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a member signs to attest `message_id` under `epoch` for the
            named inbox of `destination_chain` (0x0 if none is named).
    @param destination_chain The destination chain id.
    @param message_id The message id.
    @param epoch The committee epoch.
    @return bytes32 The digest.
    """
    inbox: address = self.inbox_of[destination_chain]
    if inbox == empty(address):
        return empty(bytes32)
    return self._attestation_digest(inbox, destination_chain, message_id, epoch)
