# pragma version ~=0.4.3
"""
@title Tessera Hyperlane dispatcher
@license GNU Affero General Public License v3.0 or later
@notice Carries a message that this chain's BridgeOutbox emitted through a Hyperlane
        Mailbox to the BridgeInbox of its destination (docs/bridge.md, "Hyperlane"). Anyone
        may call `dispatch`, and only with a message the outbox really emitted: its id must
        be `sent[nonce]` there. The destination inbox is the one the outbox names
        (`inbox_of`), so this contract has no owner and nothing to set: a destination
        inbox that registers it as the Hyperlane sender of this chain trusts exactly what
        the outbox emitted, as the committee does.
@dev The body is abi_encode(m, payload), what BridgeInbox.handle decodes. Dispatching one
     message twice makes two Hyperlane messages; the inbox delivers the first and refuses
     the second ("already delivered"), so a repeat costs its caller only (and nobody can
     block a message by dispatching it first with too little gas paid: dispatch it again).
     The hook metadata is Hyperlane's StandardHookMetadata (variant 1, msgValue 0, the
     caller's destination gas limit, the caller as refund address), so an overpayment of
     the hooks goes back to the caller, not into this contract, which cannot hold value.
"""


# Mailbox's overloads with hook metadata (IMailbox.sol).
interface IMailbox:
    def dispatch(destinationDomain: uint32, recipientAddress: bytes32, messageBody: Bytes[MAX_BODY], hookMetadata: Bytes[HOOK_METADATA]) -> bytes32: payable
    def quoteDispatch(destinationDomain: uint32, recipientAddress: bytes32, messageBody: Bytes[MAX_BODY], hookMetadata: Bytes[HOOK_METADATA]) -> uint256: view


interface IOutbox:
    def sent(nonce: uint256) -> bytes32: view
    def inbox_of(chain_id: uint256) -> address: view


# Same struct as BridgeOutbox.Message / BridgeInbox.Message (the id's abi_encode order).
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


event Dispatched:
    message_id: indexed(bytes32)
    hyperlane_id: indexed(bytes32)
    destination_chain: indexed(uint256)
    inbox: address


MAX_PAYLOAD: constant(uint256) = 512
# abi_encode(Message (10 words), payload (offset, length, 512 bytes)): BridgeInbox.MAX_BODY
MAX_BODY: constant(uint256) = 896
# StandardHookMetadata: uint16 variant, uint256 msgValue, uint256 gasLimit, address refund
HOOK_METADATA: constant(uint256) = 86

outbox: public(immutable(address))
mailbox: public(immutable(address))


@deploy
def __init__(outbox_: address, mailbox_: address):
    """
    @notice Bind this dispatcher to this chain's BridgeOutbox and Hyperlane Mailbox, for
            good (a new one of either needs a new dispatcher, registered anew).
    @param outbox_ This chain's BridgeOutbox.
    @param mailbox_ This chain's Hyperlane Mailbox.
    """
    assert outbox_ != empty(address), "zero outbox"
    assert mailbox_ != empty(address), "zero mailbox"
    outbox = outbox_
    mailbox = mailbox_


@internal
@view
def _route(m: Message, payload: Bytes[MAX_PAYLOAD]) -> (uint32, bytes32, Bytes[MAX_BODY], bytes32):
    # The message as the outbox emitted it, and where Hyperlane must take it.
    assert m.source_chain == chain.id and m.source_outbox == outbox, "not this outbox"
    assert keccak256(payload) == m.payload_hash, "bad payload"
    message_id: bytes32 = keccak256(abi_encode(m.version, m.source_chain, m.source_outbox, m.sender, m.nonce, m.destination_chain, m.recipient, m.kind, m.amount, m.payload_hash))
    assert staticcall IOutbox(outbox).sent(m.nonce) == message_id, "not sent"
    inbox: address = staticcall IOutbox(outbox).inbox_of(m.destination_chain)
    assert inbox != empty(address), "unknown destination"
    # a destination beyond uint32 has no Hyperlane domain: the conversion reverts
    return convert(m.destination_chain, uint32), convert(inbox, bytes32), abi_encode(m, payload), message_id


@internal
@view
def _hook_metadata(gas_limit: uint256) -> Bytes[HOOK_METADATA]:
    return concat(convert(convert(1, uint16), bytes2), convert(0, bytes32), convert(gas_limit, bytes32), convert(msg.sender, bytes20))


@external
@payable
def dispatch(m: Message, payload: Bytes[MAX_PAYLOAD], gas_limit: uint256) -> bytes32:
    """
    @notice Anyone dispatches a message this chain's outbox emitted to its destination's
            BridgeInbox through the Mailbox; the value sent pays the Mailbox's hooks
            (see `quote`), and what they do not take is refunded to the caller.
    @param m The message, as the outbox emitted it (`MessageSent`).
    @param payload Its payload bytes (their keccak256 must be m.payload_hash).
    @param gas_limit Gas the destination's `handle` needs (what the gas paymaster prices).
    @return bytes32 The Hyperlane message id (what a Hyperlane relayer tracks).
    """
    domain: uint32 = 0
    recipient: bytes32 = empty(bytes32)
    body: Bytes[MAX_BODY] = b""
    message_id: bytes32 = empty(bytes32)
    domain, recipient, body, message_id = self._route(m, payload)
    hyperlane_id: bytes32 = extcall IMailbox(mailbox).dispatch(domain, recipient, body, self._hook_metadata(gas_limit), value=msg.value)
    log Dispatched(message_id=message_id, hyperlane_id=hyperlane_id, destination_chain=m.destination_chain, inbox=convert(recipient, address))
    return hyperlane_id


@external
@view
def quote(m: Message, payload: Bytes[MAX_PAYLOAD], gas_limit: uint256) -> uint256:
    """
    @notice The value `dispatch` must send for this message (the Mailbox's hook fees), when
            called by the same caller.
    @param m The message, as the outbox emitted it.
    @param payload Its payload bytes.
    @param gas_limit Gas the destination's `handle` needs.
    @return uint256 The fee, in wei.
    """
    domain: uint32 = 0
    recipient: bytes32 = empty(bytes32)
    body: Bytes[MAX_BODY] = b""
    message_id: bytes32 = empty(bytes32)
    domain, recipient, body, message_id = self._route(m, payload)
    return staticcall IMailbox(mailbox).quoteDispatch(domain, recipient, body, self._hook_metadata(gas_limit))
