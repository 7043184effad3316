# pragma version ~=0.4.3
"""
@title Tessera bridge orders
@license GNU Affero General Public License v3.0 or later
@notice On the home chain: a tenant on a peer chain funds a Market order in one message
        (docs/bridge.md, "An order funded in one message"). The tenant calls
        `TokenBridge.send_call` there with this contract as the recipient and the order's
        terms as the data; on delivery the TokenBridge here mints the deposit to this
        contract and calls `on_bridged_tokens`, which opens the order for the tenant it
        names (`Market.create_order_for`: the tenant runs it, this contract is its payer).
        Every refund of the order and of its leases comes here (`Market.refunded` counts
        them), and anyone can send what the tenant is owed back to its sender on the peer
        chain (`send_back`, as much as the route back takes now); the sender can also take it
        here (`claim_here`), for when the route back is paused, closed or over its limit. A
        send-back the peer's guardian cancels bounces back here and is owed again
        (`recover_bounce`). The same sender tops up a lease of the order it paid for the
        same way (data: `top_up(uint256)`'s selector and the lease id): the tokens go into
        the lease's budget, and what is left of them comes back with the order's refunds.
        A deposit whose terms the Market refuses (malformed data, a deposit too small, a
        tenant that cannot act, a lease not of the sender's order) opens no order and tops
        up nothing: it is owed back whole;
        the sender may cancel the order it paid for (`cancel_order`: a tenant it named that
        never acts cannot hold the deposit), here or by a message from its chain (data:
        `cancel_order(bytes32)`'s selector and the funding's id; the message's own tokens are
        owed back whole). `claim_here` and `cancel_order` here take the sender's address on
        this chain as the sender's only when it calls with its own key (`tx.origin`): a
        sender that is a contract on its chain may be someone else's contract at the same
        address here (the Wintermute loss), so it cancels and claims by message (data
        `claim_here(bytes32,address)`'s selector, the funding's id and the recipient here),
        or is paid back by `send_back`. No owner: nothing here can be changed after
        deployment.
@dev Every token this contract holds is owed to one funding's sender:
     balanceOf(self) == sum(owed(id)) + send-backs bounced back and not yet recovered
     (`recover_bounce` makes them owed) (plus tokens sent here without an order's terms or
     directly, which nobody can take; the audit checks all of it from logs). The order is opened in a self-call with a fixed gas allowance, so data the
     Market refuses (or that does not decode) never makes the delivery revert: the funding
     is recorded before it, and stays owed back if it fails.
"""

from ethereum.ercs import IERC20


from .interfaces import IMarket


interface IMarketOrders:
    def top_up(lease_id: uint256, amount: uint256): nonpayable
    def create_order_for(tenant: address, spec_hash: bytes32, gpu_model: String[64], min_gpus: uint32, min_gpu_memory_mb: uint32, max_price_per_gpu_hour: uint256, duration: uint256, nodes: uint32, deposit: uint256, verified: bool) -> uint256: nonpayable
    def cancel_order(order_id: uint256): nonpayable
    def refunded(order_id: uint256) -> uint256: view


# TokenBridge.Origin, field for field (its public `origins` getter)
struct BridgeOrigin:
    sender: address
    amount: uint256
    destination_chain: uint256
    open: bool


interface ITokenBridge:
    def send(destination_chain: uint256, to: address, amount: uint256) -> bytes32: nonpayable
    def origins(message_id: bytes32) -> BridgeOrigin: view
    def max_transfer(chain_id: uint256) -> uint256: view
    def backing(chain_id: uint256) -> uint256: view


# A deposit that came over the bridge, and what became of it.
struct Funding:
    sender: address          # who sent it, on source_chain: everything owed goes back to it
    source_chain: uint256
    amount: uint256          # the deposit, in base units
    order_id: uint256        # the order it opened or topped up (0: none, all owed back)
    returned: uint256        # what went back (sent to the peer chain or claimed here)
    added_to: bytes32        # a top-up: the funding of the order whose lease it topped up
                             # (what is left of it is refunded to the order: owed to that one)


event OrderFunded:
    message_id: indexed(bytes32)
    order_id: indexed(uint256)
    tenant: indexed(address)
    sender: address
    source_chain: uint256
    amount: uint256


event OrderRefused:
    message_id: indexed(bytes32)
    sender: indexed(address)
    source_chain: uint256
    amount: uint256


# A funding that topped up a lease of the order `funding` opened (the same sender's).
event TopUpFunded:
    message_id: indexed(bytes32)
    funding: indexed(bytes32)
    lease_id: indexed(uint256)
    amount: uint256


# A message from the funding's sender cancelled the order it opened (`message_id` carried it).
event CancelFunded:
    message_id: indexed(bytes32)
    funding: indexed(bytes32)
    order_id: indexed(uint256)


# A message from the funding's sender paid what it was owed to `to` here (`message_id`
# carried it; its own tokens are owed back).
event ClaimFunded:
    message_id: indexed(bytes32)
    funding: indexed(bytes32)
    to: indexed(address)
    amount: uint256


# A send-back the peer chain cancelled came back here: owed again.
event BounceRecovered:
    message_id: indexed(bytes32)
    transfer_id: indexed(bytes32)
    amount: uint256


event Returned:
    message_id: indexed(bytes32)
    order_id: indexed(uint256)
    to: indexed(address)
    amount: uint256
    # the TokenBridge message that carries it back (zero: claimed on this chain)
    transfer_id: bytes32


# Gas the order's opening may use (create_order_for takes about 330,000); the rest of
# TokenBridge.CALL_GAS records the funding and its outcome.
ORDER_GAS: public(constant(uint256)) = 900_000
MAX_CALL_DATA: constant(uint256) = 384
# `data` that tops up a lease instead of opening an order: this selector, then the lease id
TOP_UP: constant(Bytes[4]) = method_id("top_up(uint256)")
# `data` that cancels the order a funding of the same sender opened: this selector, then its id
CANCEL: constant(Bytes[4]) = method_id("cancel_order(bytes32)")
# `data` that pays what a funding of the same sender is owed to an address here: this selector,
# the funding's id, the recipient (a contract sender's `claim_here`)
CLAIM: constant(Bytes[4]) = method_id("claim_here(bytes32,address)")

token: public(immutable(address))
market: public(immutable(address))
token_bridge: public(immutable(address))

# TokenBridge message id => the funding it carried
fundings: public(HashMap[bytes32, Funding])
# Market order id => the funding that opened it (how a refund finds its sender)
funding_of: public(HashMap[uint256, bytes32])
# TokenBridge message id of a send-back => the funding it returned to, and how much (zeroed
# once a bounce of it is recovered)
struct SentBack:
    message_id: bytes32
    amount: uint256


sent_back: public(HashMap[bytes32, SentBack])


@deploy
def __init__(token_: address, market_: address, token_bridge_: address):
    """
    @notice Wire the adapter to the home chain's TUSD, Market and TUSD TokenBridge.
    @param token_ The payment token (the TokenBridge's token).
    @param market_ The Market it opens orders in.
    @param token_bridge_ The TokenBridge it takes deliveries from and sends refunds back by.
    """
    assert token_ != empty(address) and market_ != empty(address) and token_bridge_ != empty(address), "zero address"
    token = token_
    market = market_
    token_bridge = token_bridge_


@internal
@view
def _owed(f: Funding) -> uint256:
    if f.added_to != empty(bytes32):
        return 0   # went into a lease: its rest is refunded to the order, owed to `added_to`
    total: uint256 = f.amount
    if f.order_id != 0:
        total = staticcall IMarketOrders(market).refunded(f.order_id)
    return total - f.returned


@external
def on_bridged_tokens(source_chain: uint256, sender: address, amount: uint256, data: Bytes[MAX_CALL_DATA], message_id: bytes32):
    """
    @notice The TokenBridge hands over `amount` (already minted here) sent by `sender` on
            `source_chain`, with the order's terms as `data`: opens the order (or, for
            `data` = TOP_UP ++ lease id, tops up a lease of the order the same sender paid
            for), or records the deposit as owed back if that is refused.
    @param source_chain The chain the tokens came from.
    @param sender Who sent them there (gets every refund back there).
    @param amount The deposit, in base units.
    @param data abi_encode(tenant, spec_hash, gpu_model, min_gpus, min_gpu_memory_mb,
           max_price_per_gpu_hour, duration, nodes, verified): the terms of `create_order`,
           the deposit being `amount`; or a top-up: TOP_UP ++ uint256 lease id (36 bytes);
           or a cancel: CANCEL ++ the funding's id (36 bytes); or a claim: CLAIM ++ the
           funding's id ++ the recipient here (68 bytes) (for both, `amount` is owed back whole).
    @param message_id The TokenBridge message id (names the funding).
    """
    assert msg.sender == token_bridge, "only the token bridge"
    assert self.fundings[message_id].sender == empty(address), "funding seen"
    assert sender != empty(address) and amount > 0, "empty funding"
    self.fundings[message_id] = Funding(sender=sender, source_chain=source_chain, amount=amount, order_id=0, returned=0, added_to=empty(bytes32))
    ok: bool = False
    out: Bytes[64] = b""
    # (a recipient word wider than an address is refused here: decoding it would revert the
    # whole delivery and strand the carrier, review 19)
    if len(data) == 68 and slice(data, 0, 4) == CLAIM and extract32(data, 36, output_type=uint256) <= convert(max_value(uint160), uint256):
        ok, out = raw_call(
            self,
            abi_encode(extract32(data, 4), extract32(data, 36, output_type=address), sender, source_chain, method_id=method_id("claim_from_peer(bytes32,address,address,uint256)")),
            max_outsize=32,
            gas=ORDER_GAS,
            revert_on_failure=False,
        )
        if ok:
            log ClaimFunded(message_id=message_id, funding=extract32(data, 4), to=extract32(data, 36, output_type=address), amount=abi_decode(out, uint256))
        else:
            log OrderRefused(message_id=message_id, sender=sender, source_chain=source_chain, amount=amount)
        return
    if len(data) == 36 and slice(data, 0, 4) == CANCEL:
        funding_id: bytes32 = extract32(data, 4)
        ok, out = raw_call(
            self,
            abi_encode(funding_id, sender, source_chain, method_id=method_id("cancel_from_peer(bytes32,address,uint256)")),
            max_outsize=32,
            gas=ORDER_GAS,
            revert_on_failure=False,
        )
        if ok:
            log CancelFunded(message_id=message_id, funding=funding_id, order_id=abi_decode(out, uint256))
        else:
            log OrderRefused(message_id=message_id, sender=sender, source_chain=source_chain, amount=amount)
        return
    if len(data) == 36 and slice(data, 0, 4) == TOP_UP:
        lease_id: uint256 = extract32(data, 4, output_type=uint256)
        ok, out = raw_call(
            self,
            abi_encode(amount, lease_id, sender, source_chain, method_id=method_id("top_up_lease(uint256,uint256,address,uint256)")),
            max_outsize=64,
            gas=ORDER_GAS,
            revert_on_failure=False,
        )
        if ok:
            funding: bytes32 = empty(bytes32)
            order_id: uint256 = 0
            funding, order_id = abi_decode(out, (bytes32, uint256))
            self.fundings[message_id].order_id = order_id
            self.fundings[message_id].added_to = funding
            log TopUpFunded(message_id=message_id, funding=funding, lease_id=lease_id, amount=amount)
        else:
            log OrderRefused(message_id=message_id, sender=sender, source_chain=source_chain, amount=amount)
        return
    ok, out = raw_call(
        self,
        abi_encode(amount, data, method_id=method_id("open_order(uint256,bytes)")),
        max_outsize=64,
        gas=ORDER_GAS,
        revert_on_failure=False,
    )
    if ok:
        order_id: uint256 = 0
        tenant: address = empty(address)
        order_id, tenant = abi_decode(out, (uint256, address))
        self.fundings[message_id].order_id = order_id
        self.funding_of[order_id] = message_id
        log OrderFunded(message_id=message_id, order_id=order_id, tenant=tenant, sender=sender, source_chain=source_chain, amount=amount)
    else:
        log OrderRefused(message_id=message_id, sender=sender, source_chain=source_chain, amount=amount)


@external
def open_order(amount: uint256, data: Bytes[MAX_CALL_DATA]) -> (uint256, address):
    """
    @notice Internal step of `on_bridged_tokens`, callable only by this contract: decode
            the terms and open the order with `amount` as its deposit (a revert here leaves
            the funding owed back).
    @param amount The deposit, in base units.
    @param data The order's terms (see `on_bridged_tokens`).
    @return uint256 The order id.
    @return address Its tenant.
    """
    assert msg.sender == self, "only this contract"
    tenant: address = empty(address)
    spec_hash: bytes32 = empty(bytes32)
    gpu_model: String[64] = ""
    min_gpus: uint32 = 0
    min_gpu_memory_mb: uint32 = 0
    max_price: uint256 = 0
    duration: uint256 = 0
    nodes: uint32 = 0
    verified: bool = False
    tenant, spec_hash, gpu_model, min_gpus, min_gpu_memory_mb, max_price, duration, nodes, verified = abi_decode(
        data, (address, bytes32, String[64], uint32, uint32, uint256, uint256, uint32, bool)
    )
    # contracts of the bridge that could never run (or cancel) the order
    assert tenant != self and tenant != market and tenant != token and tenant != token_bridge, "tenant cannot act"
    assert extcall IERC20(token).approve(market, amount, default_return_value=True), "approve failed"
    order_id: uint256 = extcall IMarketOrders(market).create_order_for(
        tenant, spec_hash, gpu_model, min_gpus, min_gpu_memory_mb, max_price, duration, nodes, amount, verified
    )
    return order_id, tenant


@external
def top_up_lease(amount: uint256, lease_id: uint256, sender: address, source_chain: uint256) -> (bytes32, uint256):
    """
    @notice Internal step of `on_bridged_tokens`, callable only by this contract: top up
            a lease of an order that `sender` on `source_chain` paid for through this
            contract (a revert here leaves the funding owed back).
    @param amount The top-up, in base units.
    @param lease_id The lease (open, not exhausted: the Market checks).
    @param sender Who sent it, on `source_chain`.
    @param source_chain The chain it came from.
    @return bytes32 The funding that opened the lease's order.
    @return uint256 The order id.
    """
    assert msg.sender == self, "only this contract"
    order_id: uint256 = (staticcall IMarket(market).leases(lease_id)).order_id
    funding: bytes32 = self.funding_of[order_id]
    assert order_id != 0 and funding != empty(bytes32), "not a lease of a bridged order"
    f: Funding = self.fundings[funding]
    assert f.sender == sender and f.source_chain == source_chain, "not the order's sender"
    assert extcall IERC20(token).approve(market, amount, default_return_value=True), "approve failed"
    extcall IMarketOrders(market).top_up(lease_id, amount)
    return funding, order_id


@external
def claim_from_peer(funding: bytes32, to: address, sender: address, source_chain: uint256) -> uint256:
    """
    @notice Internal step of `on_bridged_tokens`, callable only by this contract: pay what
            `funding` is owed to `to` here, for its sender on `source_chain` (a revert here
            pays nothing; the message's own tokens are owed back whole either way).
    @param funding The funding whose owed amount is paid.
    @param to Who receives it on this chain.
    @param sender Who sent the claim, on `source_chain`.
    @param source_chain The chain it came from.
    @return uint256 The amount paid.
    """
    assert msg.sender == self, "only this contract"
    f: Funding = self.fundings[funding]
    assert f.sender == sender and f.source_chain == source_chain, "not the funding's sender"
    return self._pay_here(funding, f, to)


@internal
def _pay_here(message_id: bytes32, f: Funding, to: address) -> uint256:
    assert to != empty(address) and to != self, "bad recipient"
    owed: uint256 = self._owed(f)
    assert owed > 0, "nothing owed"
    self.fundings[message_id].returned = f.returned + owed
    assert extcall IERC20(token).transfer(to, owed, default_return_value=True), "transfer failed"
    log Returned(message_id=message_id, order_id=f.order_id, to=to, amount=owed, transfer_id=empty(bytes32))
    return owed


@external
def cancel_from_peer(funding: bytes32, sender: address, source_chain: uint256) -> uint256:
    """
    @notice Internal step of `on_bridged_tokens`, callable only by this contract: cancel
            the order that `funding` opened, for its sender on `source_chain` (a revert here
            cancels nothing; the message's tokens are owed back whole either way).
    @param funding The funding that opened the order.
    @param sender Who sent the cancel, on `source_chain`.
    @param source_chain The chain it came from.
    @return uint256 The order id.
    """
    assert msg.sender == self, "only this contract"
    f: Funding = self.fundings[funding]
    assert f.sender == sender and f.source_chain == source_chain, "not the order's sender"
    assert f.order_id != 0 and f.added_to == empty(bytes32), "no order"
    extcall IMarketOrders(market).cancel_order(f.order_id)
    return f.order_id


@external
@view
def owed(message_id: bytes32) -> uint256:
    """
    @notice What the funding's sender is owed now: the whole deposit if it opened no
            order, else the order's refunds so far, less what already went back.
    @param message_id The funding's TokenBridge message id.
    @return uint256 The amount, in base units.
    """
    return self._owed(self.fundings[message_id])


@external
@nonreentrant
def send_back(message_id: bytes32) -> bytes32:
    """
    @notice Anyone sends what a funding's sender is owed back to it on its chain, through
            the TokenBridge: as much as the route takes now (its max_transfer, and what was
            bridged in from that chain and not sent back, `backing`); the rest stays owed.
            While the TokenBridge refuses (paused), the sender can `claim_here`.
    @param message_id The funding's TokenBridge message id.
    @return bytes32 The TokenBridge message carrying it back.
    """
    f: Funding = self.fundings[message_id]
    assert f.sender != empty(address), "unknown funding"
    owed: uint256 = self._owed(f)
    assert owed > 0, "nothing owed"
    amount: uint256 = min(owed, min(staticcall ITokenBridge(token_bridge).max_transfer(f.source_chain),
                                    staticcall ITokenBridge(token_bridge).backing(f.source_chain)))
    assert amount > 0, "the route back takes nothing now"
    self.fundings[message_id].returned = f.returned + amount
    assert extcall IERC20(token).approve(token_bridge, amount, default_return_value=True), "approve failed"
    transfer_id: bytes32 = extcall ITokenBridge(token_bridge).send(f.source_chain, f.sender, amount)
    self.sent_back[transfer_id] = SentBack(message_id=message_id, amount=amount)
    log Returned(message_id=message_id, order_id=f.order_id, to=f.sender, amount=amount, transfer_id=transfer_id)
    return transfer_id


@external
@nonreentrant
def recover_bounce(transfer_id: bytes32):
    """
    @notice Anyone makes a send-back that the peer chain cancelled owed again: its bounce
            refunded the tokens here (the TokenBridge's `origins` entry is closed only by a
            bounce), so they go back on the funding's account, for `send_back` or `claim_here`.
    @param transfer_id The send-back's TokenBridge message id.
    """
    back: SentBack = self.sent_back[transfer_id]
    assert back.amount > 0, "no send-back to recover"
    assert not (staticcall ITokenBridge(token_bridge).origins(transfer_id)).open, "not bounced"
    self.sent_back[transfer_id].amount = 0
    self.fundings[back.message_id].returned -= back.amount
    log BounceRecovered(message_id=back.message_id, transfer_id=transfer_id, amount=back.amount)


@external
@nonreentrant
def cancel_order(message_id: bytes32):
    """
    @notice The funding's sender (the same address on this chain, calling with its own
            key) cancels the order it paid for: the unallocated deposit is refunded (owed
            back); its leases go on. A sender that is a contract cancels by a message from
            its chain instead (data CANCEL ++ id).
    @param message_id The funding's TokenBridge message id.
    """
    f: Funding = self.fundings[message_id]
    assert f.sender != empty(address), "unknown funding"
    assert msg.sender == f.sender, "not the sender"
    # the address is the sender's here only if a key, the same on every chain, signed for it
    assert msg.sender == tx.origin, "a contract sender cancels from its chain"
    assert f.order_id != 0, "no order"
    extcall IMarketOrders(market).cancel_order(f.order_id)


@external
@nonreentrant
def claim_here(message_id: bytes32, to: address):
    """
    @notice The funding's sender (the same address on this chain, calling with its own
            key) takes what it is owed here instead of on its chain. A sender that is a
            contract claims by a message from its chain instead (data CLAIM ++ id ++ to).
    @param message_id The funding's TokenBridge message id.
    @param to Who receives it on this chain.
    """
    f: Funding = self.fundings[message_id]
    assert f.sender != empty(address), "unknown funding"
    assert msg.sender == f.sender, "not the sender"
    # the address is the sender's here only if a key, the same on every chain, signed for it
    assert msg.sender == tx.origin, "a contract sender claims from its chain"
    self._pay_here(message_id, f, to)
