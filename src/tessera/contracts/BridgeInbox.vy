# pragma version ~=0.4.3
"""
@title Tessera bridge inbox
@license GNU Affero General Public License v3.0 or later
@notice Delivers cross-chain messages (docs/bridge.md): once, only for this chain id, only
        from the registered outbox of the source chain, only with a quorum of the current
        committee epoch's EIP-712 signatures in this inbox's domain. A message carrying
        value must come from a value sender the owner listed for its source (a TokenBridge)
        and fit that sender's token bucket; one above that sender's large threshold waits
        `delay` seconds, during which the guardian (or owner) may cancel it.
        The committee (bridge_committee.vy) changes by rotation, signed by the current
        committee; the owner may replace it only once it has not rotated for STALL_PERIOD
        (`recover_committee`: keys lost). The owner (a Timelock) registers
        sources, lists value senders with their limits, sets the delay and the guardian,
        and unpauses; the guardian pauses and cancels queued messages.
        A second transport, Hyperlane: the registered Mailbox may deliver a message
        (`handle`) that the registered HyperlaneDispatcher of its source dispatched, in
        place of the committee's signatures, the message passing every other check of
        `deliver` (same id, same once-only record, same bucket and delay). The Mailbox's
        ISM (this inbox's own if the owner names one) is then what vouches for the origin.
@dev Each check names the attack it stops (Nomad: a default value trusted; Wormhole: a
     signature check bypassed; Ronin: too few keys); see the tests in
     tests/contracts/test_bridge_inbox.py.
"""

from .interfaces import IBridgeReceiver

from snekmate.auth import ownable
initializes: ownable

from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator

import bridge_committee
initializes: bridge_committee[ownable := ownable, eip712_domain_separator := eip712_domain_separator]

# No renounce_ownership: without an owner a paused inbox could never be unpaused.
exports: (
    ownable.owner,
    ownable.transfer_ownership,
    eip712_domain_separator.eip712Domain,
    bridge_committee.threshold_bps,
    bridge_committee.epoch,
    bridge_committee.rotated_at,
    bridge_committee.retired,
    bridge_committee.STALL_PERIOD,
    bridge_committee.weight_of,
    bridge_committee.total_weight,
    bridge_committee.rotate,
    bridge_committee.recover_committee,
    bridge_committee.committee,
    bridge_committee.attestation_digest,
    bridge_committee.rotation_digest,
)


# Field order = the id's abi_encode order (protocol.bridge.Message.as_tuple; BridgeOutbox.Message).
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


# Value limit of one value sender of one source chain (protocol.bridge.Bucket).
struct Bucket:
    capacity: uint256
    refill_per_s: uint256
    tokens: uint256
    updated_at: uint256


event SourceRegistered:
    source_chain: indexed(uint256)
    outbox: address


event MessageDelivered:
    message_id: indexed(bytes32)
    source_chain: indexed(uint256)
    recipient: indexed(address)
    kind: uint8
    amount: uint256


event MessageQueued:
    message_id: indexed(bytes32)
    release_at: uint256


event MessageCancelled:
    message_id: indexed(bytes32)
    by: indexed(address)


event ValueSenderSet:
    source_chain: indexed(uint256)
    sender: indexed(address)
    capacity: uint256
    refill_per_s: uint256
    large_threshold: uint256


event Paused:
    by: indexed(address)


event Unpaused:
    by: indexed(address)


event GuardianSet:
    guardian: indexed(address)


event DelaySet:
    delay: uint256


event MailboxSet:
    mailbox: indexed(address)


event HyperlaneSenderSet:
    origin: indexed(uint32)
    sender: bytes32


event IsmSet:
    ism: indexed(address)


VERSION: constant(uint8) = 1
MAX_PAYLOAD: constant(uint256) = 512
# A Hyperlane body: abi_encode(Message (10 words), payload (offset, length, 512 bytes)).
MAX_BODY: constant(uint256) = 896
# So that block.timestamp + delay cannot overflow and a queued message cannot be locked for ever.
MAX_DELAY: constant(uint256) = 30 * 86_400
MAX_COMMITTEE: constant(uint256) = bridge_committee.MAX_COMMITTEE

delay: public(uint256)
guardian: public(address)
paused: public(bool)
# message id => delivered or queued here (never cleared: one delivery per id)
delivered: public(HashMap[bytes32, bool])
# message id => cancelled by the guardian while queued
cancelled: public(HashMap[bytes32, bool])
# message id => release time of a queued message (0: not queued)
pending: public(HashMap[bytes32, uint256])
# source chain id => its registered BridgeOutbox
outbox_of: public(HashMap[uint256, address])
# source chain id => value sender => its amounts above this wait `delay` seconds
large_threshold: public(HashMap[uint256, HashMap[address, uint256]])
# source chain id => value sender => its token bucket (capacity 0: not listed, no value)
bucket: public(HashMap[uint256, HashMap[address, Bucket]])
# the Hyperlane Mailbox allowed to call `handle` (0: Hyperlane delivery is off)
mailbox: public(address)
# Hyperlane origin domain (= the source chain id) => the only sender there whose messages
# `handle` accepts: that chain's HyperlaneDispatcher, left-padded (0: none)
hyperlane_sender: public(HashMap[uint32, bytes32])
# the ISM the Mailbox must verify messages to this inbox with (0: the Mailbox's default)
interchainSecurityModule: public(address)


@deploy
def __init__(members: DynArray[address, MAX_COMMITTEE], weights: DynArray[uint256, MAX_COMMITTEE], threshold_bps_: uint256, delay_: uint256, guardian_: address):
    """
    @notice The deployer becomes the owner; `members` (strictly ascending, weighted by
            `weights`) are the committee of epoch 0. The EIP-712 domain of attestations
            and rotations is ("Tessera Bridge", "1", chain id, this inbox).
    @param members The epoch-0 committee, strictly ascending addresses, 1 to 32 of them.
    @param weights Their weights (> 0), in the same order.
    @param threshold_bps_ The share of the total weight a quorum needs (5001 to 10000).
    @param delay_ Seconds a large message waits before it can be executed (at most 30 days).
    @param guardian_ Who may pause and cancel queued messages (besides the owner).
    """
    assert delay_ <= MAX_DELAY, "delay too long"
    ownable.__init__()
    eip712_domain_separator.__init__("Tessera Bridge", "1")
    bridge_committee.__init__(members, weights, threshold_bps_)
    self.delay = delay_
    self.guardian = guardian_
    log DelaySet(delay=delay_)
    log GuardianSet(guardian=guardian_)


# ---------------------------------------------------------------- delivery


@internal
@view
def _message_id(m: Message) -> bytes32:
    return keccak256(abi_encode(m.version, m.source_chain, m.source_outbox, m.sender, m.nonce, m.destination_chain, m.recipient, m.kind, m.amount, m.payload_hash))


@internal
@view
def _refilled(source_chain: uint256, sender: address) -> Bucket:
    # protocol.bridge.Bucket.at: min(capacity, tokens + elapsed * refill), without overflow.
    b: Bucket = self.bucket[source_chain][sender]
    if block.timestamp <= b.updated_at:
        return b
    elapsed: uint256 = block.timestamp - b.updated_at
    room: uint256 = b.capacity - b.tokens
    if b.refill_per_s != 0 and elapsed > room // b.refill_per_s:
        b.tokens = b.capacity
    else:
        # elapsed * refill_per_s <= room here
        b.tokens += elapsed * b.refill_per_s
    b.updated_at = block.timestamp
    return b


@internal
def _call_recipient(m: Message, payload: Bytes[MAX_PAYLOAD], message_id: bytes32):
    log MessageDelivered(message_id=message_id, source_chain=m.source_chain, recipient=m.recipient, kind=m.kind, amount=m.amount)
    extcall IBridgeReceiver(m.recipient).on_bridge_message(m.source_chain, m.sender, m.kind, m.amount, payload, message_id)


@internal
@view
def _checked_id(m: Message, payload: Bytes[MAX_PAYLOAD]) -> bytes32:
    # What every transport must pass (deliver, handle): the message is well formed, for this
    # chain, from the registered outbox of its source, with its own payload, not seen here.
    assert not self.paused, "paused"
    assert m.version == VERSION, "bad version"
    # cross-chain replay: a message is good on its own destination only
    assert m.destination_chain == chain.id, "wrong chain"
    # Nomad: an unregistered source reads as the zero address, which must never match
    registered: address = self.outbox_of[m.source_chain]
    assert registered != empty(address) and registered == m.source_outbox, "unknown outbox"
    assert keccak256(payload) == m.payload_hash, "bad payload"
    message_id: bytes32 = self._message_id(m)
    # one delivery per id, whichever transport carried it
    assert not self.delivered[message_id], "already delivered"
    return message_id


@internal
def _accept(m: Message, payload: Bytes[MAX_PAYLOAD], message_id: bytes32) -> bool:
    # An authenticated message (quorum or Mailbox) that passed _checked_id: the limits, the
    # once-only record, then the recipient now or the queue.
    if m.amount > 0:
        # bucket griefing: anyone can emit a message with any amount to a recipient of their
        # own; only a listed sender's messages carry value, each against its own bucket
        b: Bucket = self._refilled(m.source_chain, m.sender)
        assert b.capacity != 0, "not a value sender"
        assert m.amount <= b.capacity, "over capacity"
        assert m.amount <= b.tokens, "rate limited"
        b.tokens -= m.amount
        self.bucket[m.source_chain][m.sender] = b

    # effects before the recipient's call: a reentrant deliver sees it delivered
    self.delivered[message_id] = True
    # (an amount of 0 is never above a threshold: never queued)
    if m.amount > self.large_threshold[m.source_chain][m.sender]:
        release_at: uint256 = block.timestamp + self.delay
        self.pending[message_id] = release_at
        log MessageQueued(message_id=message_id, release_at=release_at)
        return False
    self._call_recipient(m, payload, message_id)
    return True


@external
@nonreentrant
def deliver(m: Message, payload: Bytes[MAX_PAYLOAD], signatures: DynArray[Bytes[65], MAX_COMMITTEE]) -> bool:
    """
    @notice Anyone (a relayer) delivers message `m` with its payload and the current
            committee's quorum of Attestation(id, epoch) signatures. A message within its
            sender's large threshold is passed to its recipient now; a larger one is queued
            for `delay` seconds (see `execute`, `cancel`). If the recipient reverts,
            the delivery reverts and can be retried.
    @param m The message, as the source outbox emitted it.
    @param payload The payload bytes (their keccak256 must be m.payload_hash).
    @param signatures Committee signatures, ordered by signer address.
    @return bool True if delivered now, False if queued.
    """
    message_id: bytes32 = self._checked_id(m, payload)
    bridge_committee._check_attested(message_id, signatures)
    return self._accept(m, payload, message_id)


@external
@payable
@nonreentrant
def handle(origin: uint32, sender: bytes32, body: Bytes[MAX_BODY]):
    """
    @notice The registered Hyperlane Mailbox delivers a message that the registered
            sender (the source's HyperlaneDispatcher) dispatched on `origin`, after the
            Mailbox's ISM verified it. Every check of `deliver` applies except the
            committee's signatures, with the same once-only record: a message delivered
            here cannot be delivered by `deliver`, nor the other way round. A large one
            is queued. If anything refuses, the Mailbox's `process` reverts and the
            message can be relayed again. Payable as Hyperlane's IMessageRecipient is;
            a call with value is refused (nothing could take it out).
    @param origin The origin's Hyperlane domain: the source chain id.
    @param sender The contract that dispatched it there, left-padded to 32 bytes.
    @param body abi_encode(m, payload): the Message struct, then the payload bytes.
    """
    assert msg.value == 0, "no value"
    mailbox_: address = self.mailbox
    # Nomad: an unset mailbox reads as the zero address, which must never match
    assert mailbox_ != empty(address) and msg.sender == mailbox_, "not mailbox"
    registered: bytes32 = self.hyperlane_sender[origin]
    assert registered != empty(bytes32) and sender == registered, "unknown sender"
    m: Message = empty(Message)
    payload: Bytes[MAX_PAYLOAD] = b""
    m, payload = abi_decode(body, (Message, Bytes[MAX_PAYLOAD]))
    # the dispatcher on `origin` only dispatches what that chain's outbox emitted
    assert m.source_chain == convert(origin, uint256), "wrong origin"
    self._accept(m, payload, self._checked_id(m, payload))


@external
@nonreentrant
def execute(m: Message, payload: Bytes[MAX_PAYLOAD]):
    """
    @notice Anyone passes a queued message to its recipient once its delay has passed.
    @param m The queued message.
    @param payload Its payload bytes (their keccak256 must be m.payload_hash).
    """
    assert not self.paused, "paused"
    # the id commits to the payload's hash only: a substituted payload must not pass
    assert keccak256(payload) == m.payload_hash, "bad payload"
    message_id: bytes32 = self._message_id(m)
    release_at: uint256 = self.pending[message_id]
    assert release_at != 0, "not queued"
    assert block.timestamp >= release_at, "delayed"
    self.pending[message_id] = 0
    self._call_recipient(m, payload, message_id)


@external
@nonreentrant
def cancel(m: Message, payload: Bytes[MAX_PAYLOAD]):
    """
    @notice The guardian or the owner cancels a queued message (also while paused): it is
            never delivered, and its recipient's `on_bridge_cancelled` is called (TokenBridge
            bounces the amount back to its sender). The bucket is not refunded.
    @param m The queued message.
    @param payload Its payload bytes (their keccak256 must be m.payload_hash).
    """
    assert msg.sender == self.guardian or msg.sender == ownable.owner, "not guardian"
    assert keccak256(payload) == m.payload_hash, "bad payload"
    message_id: bytes32 = self._message_id(m)
    assert self.pending[message_id] != 0, "not queued"
    self.pending[message_id] = 0
    self.cancelled[message_id] = True
    log MessageCancelled(message_id=message_id, by=msg.sender)
    extcall IBridgeReceiver(m.recipient).on_bridge_cancelled(m.source_chain, m.sender, m.kind, m.amount, payload, message_id)


# ---------------------------------------------------------------- owner and guardian


@external
def register_source(source_chain: uint256, outbox: address):
    """
    @notice The owner registers (or updates) the outbox of `source_chain`. Its messages
            carry value only from the senders listed with `set_value_sender`.
    @param source_chain The source chain id (not this chain).
    @param outbox Its BridgeOutbox.
    """
    assert msg.sender == ownable.owner, "not owner"
    assert source_chain != chain.id, "same chain"
    assert outbox != empty(address), "zero outbox"
    self.outbox_of[source_chain] = outbox
    log SourceRegistered(source_chain=source_chain, outbox=outbox)


@external
def set_value_sender(source_chain: uint256, sender: address, capacity: uint256, refill_per_s: uint256, large_threshold: uint256):
    """
    @notice The owner lists (or updates, or unlists) a contract on `source_chain` (a
            TokenBridge) whose messages may carry value, with its own limits: messages with
            amount > 0 from any other sender are refused, so that nobody can empty a
            bucket with messages to a recipient of their own. A newly listed sender's
            bucket starts full; an update keeps what is left (refilled to now at the old
            rate), at most the new capacity.
    @param source_chain The source chain id (not this chain).
    @param sender The sending contract there.
    @param capacity Most value its bucket holds, in its token's base units (0: unlist it).
    @param refill_per_s Value its bucket regains per second.
    @param large_threshold Its amounts above this are queued for `delay` seconds.
    """
    assert msg.sender == ownable.owner, "not owner"
    assert source_chain != chain.id, "same chain"
    assert sender != empty(address), "zero sender"
    # unlisted (capacity 0): all zero, so that listing it again starts a full bucket
    b: Bucket = empty(Bucket)
    threshold: uint256 = 0
    if capacity != 0:
        b = Bucket(capacity=capacity, refill_per_s=refill_per_s, tokens=capacity, updated_at=block.timestamp)
        if self.bucket[source_chain][sender].capacity != 0:
            b.tokens = min(self._refilled(source_chain, sender).tokens, capacity)
        threshold = large_threshold
    self.bucket[source_chain][sender] = b
    self.large_threshold[source_chain][sender] = threshold
    log ValueSenderSet(source_chain=source_chain, sender=sender, capacity=capacity, refill_per_s=b.refill_per_s, large_threshold=threshold)


@external
def set_mailbox(mailbox_: address):
    """
    @notice The owner names the Hyperlane Mailbox that may call `handle` (zero: Hyperlane
            delivery off). Like `register_source`, this names whom the inbox trusts.
    @param mailbox_ This chain's Mailbox.
    """
    assert msg.sender == ownable.owner, "not owner"
    self.mailbox = mailbox_
    log MailboxSet(mailbox=mailbox_)


@external
def set_hyperlane_sender(origin_domain: uint32, sender: bytes32):
    """
    @notice The owner names the only contract on `origin_domain` whose Hyperlane messages
            `handle` accepts: that chain's HyperlaneDispatcher, which dispatches only
            messages its BridgeOutbox emitted (zero: none from that chain).
    @param origin_domain The origin's Hyperlane domain, which must be its chain id.
    @param sender The dispatcher's address, left-padded to 32 bytes.
    """
    assert msg.sender == ownable.owner, "not owner"
    assert convert(origin_domain, uint256) != chain.id, "same chain"
    self.hyperlane_sender[origin_domain] = sender
    log HyperlaneSenderSet(origin=origin_domain, sender=sender)


@external
def set_ism(ism: address):
    """
    @notice The owner names the Interchain Security Module the Mailbox must verify this
            inbox's messages with (read through `interchainSecurityModule`), so that the
            Mailbox owner's default ISM is not trusted (zero: the default).
    @param ism The ISM contract on this chain.
    """
    assert msg.sender == ownable.owner, "not owner"
    self.interchainSecurityModule = ism
    log IsmSet(ism=ism)


@external
def pause():
    """
    @notice The guardian or the owner stops delivery and execution (rotation and
            cancellation still work).
    """
    assert msg.sender == self.guardian or msg.sender == ownable.owner, "not guardian"
    self.paused = True
    log Paused(by=msg.sender)


@external
def unpause():
    """
    @notice The owner resumes delivery and execution.
    """
    assert msg.sender == ownable.owner, "not owner"
    self.paused = False
    log Unpaused(by=msg.sender)


@external
def set_guardian(guardian_: address):
    """
    @notice The owner names the guardian (zero: none; the owner keeps its powers).
    @param guardian_ The new guardian.
    """
    assert msg.sender == ownable.owner, "not owner"
    self.guardian = guardian_
    log GuardianSet(guardian=guardian_)


@external
def set_delay(delay_: uint256):
    """
    @notice The owner sets how long a large message waits (applies to messages queued
            afterwards).
    @param delay_ Seconds, at most 30 days.
    """
    assert msg.sender == ownable.owner, "not owner"
    assert delay_ <= MAX_DELAY, "delay too long"
    self.delay = delay_
    log DelaySet(delay=delay_)


# ---------------------------------------------------------------- views


@external
@view
def value_sender(source_chain: uint256, sender: address) -> bool:
    """
    @notice Whether `sender` on `source_chain` is listed: its messages may carry value.
    @param source_chain The source chain id.
    @param sender The sending contract there.
    @return bool True if listed (its bucket's capacity is not 0).
    """
    return self.bucket[source_chain][sender].capacity != 0


@external
@view
def available(source_chain: uint256, sender: address) -> uint256:
    """
    @notice How much value a message from `sender` on `source_chain` may carry now (its
            refilled bucket; 0 when it is not listed).
    @param source_chain The source chain id.
    @param sender The sending contract there.
    @return uint256 The amount, in its token's base units.
    """
    return self._refilled(source_chain, sender).tokens


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    """
    @notice The EIP-712 domain separator of attestations and rotations.
    @return bytes32 The domain separator.
    """
    return eip712_domain_separator._domain_separator_v4()


@external
@view
def message_id(m: Message) -> bytes32:
    """
    @notice The id of a message (what the committee attests).
    @param m The message.
    @return bytes32 keccak256 of its fields' abi encoding.
    """
    return self._message_id(m)
