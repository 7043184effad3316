# pragma version ~=0.4.3
"""
@title Tessera token bridge
@license GNU Affero General Public License v3.0 or later
@notice Moves TUSD between chains over the bridge (docs/bridge.md). In lock mode (chain B)
        it holds the token: `send` locks, an incoming transfer unlocks. In mint mode (chain
        A, a minter of the PaymentToken) `send` burns and an incoming transfer mints,
        CCTP-style. It trusts one peer TokenBridge per chain, and only messages its inbox
        delivers. A transfer the destination's guardian cancels comes back as a bounce
        that refunds its sender here.
        `send_call` also carries data for the recipient, which it is handed on arrival
        (`IBridgeTokenReceiver.on_bridged_tokens`): the recipient gets the tokens first, and
        its call is given a fixed gas allowance that the relayer cannot shrink. A failing
        call does not block the delivery (the tokens stay with the recipient the sender
        named; `CallFailed` says so): BridgeOrders, the recipient that funds a Market order,
        never fails on any data.
        The owner (a Timelock) sets peers and per-route maximums, the guardian and
        unpauses; the guardian pauses. Nobody can move the held tokens otherwise.
@dev Conservation: lock side holds total_sent - total_received - total_bounced (plus
     tokens sent to it directly); mint side's net supply change is total_received +
     total_bounced - total_sent. The mint side burns toward a chain at most what it minted
     from that chain (`backing`), so every burn has a lock behind it on the destination.
"""

from ethereum.ercs import IERC20

from .interfaces import IBridgeOutbox

from .interfaces import IBridgeReceiver
implements: IBridgeReceiver

from snekmate.auth import ownable
initializes: ownable

# No renounce_ownership: without an owner a paused bridge could never be unpaused.
exports: (ownable.owner, ownable.transfer_ownership)


interface IMintBurn:
    def mint(owner: address, amount: uint256): nonpayable
    def burn_from(owner: address, amount: uint256): nonpayable


# A transfer sent from here, until its bounce (if any) comes back.
struct Origin:
    sender: address
    amount: uint256
    destination_chain: uint256
    open: bool


event PeerSet:
    chain_id: indexed(uint256)
    peer: address
    max_transfer: uint256


event TransferSent:
    message_id: indexed(bytes32)
    sender: indexed(address)
    destination_chain: uint256
    to: address
    amount: uint256


event TransferReceived:
    message_id: indexed(bytes32)
    source_chain: uint256
    to: indexed(address)
    amount: uint256


event CallFailed:
    message_id: indexed(bytes32)
    to: indexed(address)


event TransferCancelled:
    message_id: indexed(bytes32)
    bounce_id: bytes32


event TransferBounced:
    cancelled_id: indexed(bytes32)
    to: indexed(address)
    amount: uint256


event Paused:
    by: indexed(address)


event Unpaused:
    by: indexed(address)


event GuardianSet:
    guardian: indexed(address)


KIND_TRANSFER: constant(uint8) = 1
KIND_BOUNCE: constant(uint8) = 2
KIND_TRANSFER_CALL: constant(uint8) = 3
MAX_PAYLOAD: constant(uint256) = 512
# abi_encode(to, refund_to, data) fits MAX_PAYLOAD: 4 words of head, the data after them.
MAX_CALL_DATA: public(constant(uint256)) = 384
# Gas the recipient's `on_bridged_tokens` always gets (BridgeOrders uses about a third).
CALL_GAS: public(constant(uint256)) = 1_500_000

token: public(immutable(address))
outbox: public(immutable(address))
inbox: public(immutable(address))
mint_mode: public(immutable(bool))

paused: public(bool)
guardian: public(address)
# chain id => the TokenBridge there (the only sender trusted from that chain)
peer: public(HashMap[uint256, address])
# chain id => most one transfer to it may carry
max_transfer: public(HashMap[uint256, uint256])
# message id => a transfer sent from here
origins: public(HashMap[bytes32, Origin])
# message id => the peer it was sent to: the only contract whose bounce may refund it, whatever
# the route's peer is by then (a peer changed while a transfer was in flight stranded its
# bounce; and a former peer must not bounce a transfer sent to its successor: review 29)
origin_peer: public(HashMap[bytes32, address])
# chain id => address => ever this route's peer: a transfer it sent that this chain's guardian
# cancels is bounced back to it after the route moved on
was_peer: public(HashMap[uint256, HashMap[address, bool]])
# running totals, in base units (conservation audit)
total_sent: public(uint256)
total_received: public(uint256)
total_bounced: public(uint256)
# transfers cancelled at this chain's inbox and bounced back to their source
total_cancelled: public(uint256)
# Mint mode: chain id => what was minted here for tokens locked there and not yet sent back.
# A send to that chain may burn at most this much: the token may have other minters (a faucet,
# another bridge), and what they minted has nothing locked behind it on that chain, so it
# would be burned here and never released there.
backing: public(HashMap[uint256, uint256])


@deploy
def __init__(token_: address, outbox_: address, inbox_: address, mint_mode_: bool, guardian_: address):
    """
    @notice The deployer becomes the owner. In mint mode, the token's owner must then make
            this contract a minter (`set_minter`).
    @param token_ The bridged token (TUSD).
    @param outbox_ This chain's BridgeOutbox.
    @param inbox_ This chain's BridgeInbox.
    @param mint_mode_ True: burn to send and mint to receive; False: lock and unlock.
    @param guardian_ Who may pause (besides the owner).
    """
    assert token_ != empty(address), "zero token"
    assert outbox_ != empty(address), "zero outbox"
    assert inbox_ != empty(address), "zero inbox"
    ownable.__init__()
    token = token_
    outbox = outbox_
    inbox = inbox_
    mint_mode = mint_mode_
    self.guardian = guardian_
    log GuardianSet(guardian=guardian_)


@internal
def _release(to: address, amount: uint256):
    if mint_mode:
        extcall IMintBurn(token).mint(to, amount)
    else:
        assert extcall IERC20(token).transfer(to, amount, default_return_value=True), "transfer failed"


@internal
def _send(destination_chain: uint256, to: address, amount: uint256, kind: uint8, payload: Bytes[MAX_PAYLOAD]) -> bytes32:
    assert not self.paused, "paused"
    peer_: address = self.peer[destination_chain]
    assert peer_ != empty(address), "no route"
    assert to != empty(address), "zero recipient"
    # the peer would hold them with no owner's claim
    assert to != peer_, "to is the bridge"
    assert amount > 0, "zero amount"
    assert amount <= self.max_transfer[destination_chain], "over max transfer"
    if mint_mode:
        assert amount <= self.backing[destination_chain], "over bridged supply"
        self.backing[destination_chain] -= amount
        extcall IMintBurn(token).burn_from(msg.sender, amount)
    else:
        assert extcall IERC20(token).transferFrom(msg.sender, self, amount, default_return_value=True), "transfer failed"
    message_id: bytes32 = extcall IBridgeOutbox(outbox).send(destination_chain, peer_, kind, amount, payload)
    self.origins[message_id] = Origin(sender=msg.sender, amount=amount, destination_chain=destination_chain, open=True)
    self.origin_peer[message_id] = peer_
    self.total_sent += amount
    log TransferSent(message_id=message_id, sender=msg.sender, destination_chain=destination_chain, to=to, amount=amount)
    return message_id


@external
@nonreentrant
def send(destination_chain: uint256, to: address, amount: uint256) -> bytes32:
    """
    @notice Send `amount` of the caller's tokens to `to` on `destination_chain` (approve
            this contract first: lock mode pulls them, mint mode burns them).
    @param destination_chain The chain id; its peer must be set.
    @param to Who receives them there.
    @param amount The amount, in base units (at most the route's max_transfer; in mint mode
           also at most `backing[destination_chain]`, what was bridged in from there).
    @return bytes32 The message id.
    """
    return self._send(destination_chain, to, amount, KIND_TRANSFER, abi_encode(to, msg.sender))


@external
@nonreentrant
def send_call(destination_chain: uint256, to: address, amount: uint256, data: Bytes[MAX_CALL_DATA]) -> bytes32:
    """
    @notice Send like `send`, and on arrival hand `data` to the recipient contract
            (`on_bridged_tokens(source_chain, sender, amount, data, message_id)`, with
            CALL_GAS) after it has the tokens: for example BridgeOrders, which funds a
            Market order with them. The recipient must be such a contract: tokens sent to
            one whose call fails stay with it.
    @param destination_chain The chain id; its peer must be set.
    @param to The receiving contract there.
    @param amount The amount, in base units (limits as for `send`).
    @param data What the recipient is told (at most MAX_CALL_DATA bytes).
    @return bytes32 The message id.
    """
    return self._send(destination_chain, to, amount, KIND_TRANSFER_CALL, abi_encode(to, msg.sender, data))


@internal
@view
def _check_caller(source_chain: uint256, sender: address):
    assert msg.sender == inbox, "only inbox"
    peer_: address = self.peer[source_chain]
    # Nomad: an unset peer reads as the zero address, which must never match
    assert peer_ != empty(address) and sender == peer_, "unknown peer"


@external
@nonreentrant
def on_bridge_message(source_chain: uint256, sender: address, kind: uint8, amount: uint256, payload: Bytes[MAX_PAYLOAD], message_id: bytes32):
    """
    @notice The inbox delivers a transfer (kind 1: release `amount` to the payload's `to`;
            kind 3: the same, then hand the payload's data to `to`) or a bounce (kind 2:
            refund a transfer sent from here that the destination cancelled) from the peer
            on `source_chain`. A transfer must come from the route's peer; a bounce from the
            peer its transfer was sent to (`origin_peer`), even if the route has moved since.
    @param source_chain The chain the message comes from.
    @param sender The contract that sent it there (see above).
    @param kind 1 (transfer) or 2 (bounce).
    @param amount The amount, in base units.
    @param payload abi_encode(to, refund_to) for a transfer, abi_encode(to, refund_to, data)
           for a transfer with a call, abi_encode(cancelled id) for a bounce.
    @param message_id The message id.
    """
    if kind == KIND_BOUNCE:
        assert msg.sender == inbox, "only inbox"
    else:
        self._check_caller(source_chain, sender)
    assert not self.paused, "paused"
    if kind == KIND_TRANSFER:
        to: address = empty(address)
        refund_to: address = empty(address)
        to, refund_to = abi_decode(payload, (address, address))
        self.total_received += amount
        if mint_mode:
            self.backing[source_chain] += amount
        log TransferReceived(message_id=message_id, source_chain=source_chain, to=to, amount=amount)
        self._release(to, amount)
    elif kind == KIND_TRANSFER_CALL:
        self._receive_call(source_chain, amount, payload, message_id)
    elif kind == KIND_BOUNCE:
        cancelled_id: bytes32 = abi_decode(payload, bytes32)
        o: Origin = self.origins[cancelled_id]
        assert o.open, "not open"
        # the peer bounces what it was sent, from where it was sent
        assert sender == self.origin_peer[cancelled_id], "unknown peer"
        assert o.destination_chain == source_chain and o.amount == amount, "bounce mismatch"
        self.origins[cancelled_id].open = False
        self.total_bounced += amount
        if mint_mode:   # the send had taken it out of the route's backing: it never left
            self.backing[source_chain] += amount
        log TransferBounced(cancelled_id=cancelled_id, to=o.sender, amount=amount)
        self._release(o.sender, amount)
    else:
        raise "unknown kind"


@internal
def _receive_call(source_chain: uint256, amount: uint256, payload: Bytes[MAX_PAYLOAD], message_id: bytes32):
    to: address = empty(address)
    sender: address = empty(address)
    data: Bytes[MAX_CALL_DATA] = b""
    to, sender, data = abi_decode(payload, (address, address, Bytes[MAX_CALL_DATA]))
    self.total_received += amount
    if mint_mode:
        self.backing[source_chain] += amount
    log TransferReceived(message_id=message_id, source_chain=source_chain, to=to, amount=amount)
    self._release(to, amount)
    # The 63/64 rule: with this much left, the call gets all of CALL_GAS, so a relayer
    # cannot make it fail by sending too little gas (the whole delivery reverts instead).
    assert msg.gas >= CALL_GAS + CALL_GAS // 63 + 20_000, "too little gas for the call"
    ok: bool = raw_call(
        to,
        abi_encode(
            source_chain, sender, amount, data, message_id,
            method_id=method_id("on_bridged_tokens(uint256,address,uint256,bytes,bytes32)"),
        ),
        gas=CALL_GAS,
        revert_on_failure=False,
    )
    if not ok:
        log CallFailed(message_id=message_id, to=to)


@external
@nonreentrant
def on_bridge_cancelled(source_chain: uint256, sender: address, kind: uint8, amount: uint256, payload: Bytes[MAX_PAYLOAD], message_id: bytes32):
    """
    @notice The inbox's guardian cancelled a queued transfer from the peer on
            `source_chain` (or from a former peer: a transfer it sent before the route moved
            could not be delivered, and its bounce is its only way back): nothing was released
            here, so a bounce carries the amount back to its sender there. A bounce itself
            cannot be cancelled (a refund must arrive).
    @param source_chain The chain the cancelled message came from.
    @param sender The contract that sent it there (the peer, now or before).
    @param kind The cancelled message's kind (1 or 3).
    @param amount Its amount, in base units.
    @param payload Its payload.
    @param message_id Its id (the bounce's payload).
    """
    assert msg.sender == inbox, "only inbox"
    assert self.was_peer[source_chain][sender], "unknown peer"
    assert kind != KIND_BOUNCE, "bounce cannot be cancelled"
    assert kind == KIND_TRANSFER or kind == KIND_TRANSFER_CALL, "unknown kind"
    bounce_id: bytes32 = extcall IBridgeOutbox(outbox).send(
        source_chain, sender, KIND_BOUNCE, amount, abi_encode(message_id)
    )
    self.total_cancelled += amount
    log TransferCancelled(message_id=message_id, bounce_id=bounce_id)


@external
def set_peer(chain_id: uint256, peer_: address, max_transfer_: uint256):
    """
    @notice The owner names the TokenBridge on `chain_id` and the most one transfer to it
            may carry (at most the capacity of that chain's inbox bucket for this chain,
            and of this chain's bucket for it, so that a bounce can always come back).
    @param chain_id The other chain's id (not this chain).
    @param peer_ The TokenBridge there.
    @param max_transfer_ Most one transfer may carry, in base units (0 closes the route).
    """
    assert msg.sender == ownable.owner, "not owner"
    assert chain_id != 0 and chain_id != chain.id, "same chain"
    assert peer_ != empty(address), "zero peer"
    self.peer[chain_id] = peer_
    self.was_peer[chain_id][peer_] = True
    self.max_transfer[chain_id] = max_transfer_
    log PeerSet(chain_id=chain_id, peer=peer_, max_transfer=max_transfer_)


@external
def pause():
    """
    @notice The guardian or the owner stops sending and receiving (cancellations still
            send their bounce).
    """
    assert msg.sender == self.guardian or msg.sender == ownable.owner, "not guardian"
    self.paused = True
    log Paused(by=msg.sender)


@external
def unpause():
    """
    @notice The owner resumes sending and receiving.
    """
    assert msg.sender == ownable.owner, "not owner"
    self.paused = False
    log Unpaused(by=msg.sender)


@external
def set_guardian(guardian_: address):
    """
    @notice The owner names the guardian (zero: none).
    @param guardian_ The new guardian.
    """
    assert msg.sender == ownable.owner, "not owner"
    self.guardian = guardian_
    log GuardianSet(guardian=guardian_)
