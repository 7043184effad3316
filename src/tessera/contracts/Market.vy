# pragma version ~=0.4.3
"""
@title Tessera compute market
@license GNU Affero General Public License v3.0 or later
@notice Tenants post orders and fund escrow in the payment token; providers
        sign EIP-712 bids off chain; the tenant accepts one bid per node, which
        creates a lease whose budget streams to the provider by elapsed time.
        A protocol fee (basis points) goes to the treasury on every payout; the
        unspent part of every order and lease always goes back to the tenant (or to
        whoever paid the order's deposit for it, `create_order_for`).
        The fee of a lease is fixed when it is created.
        Pay is for live time only: anyone may claim, for the tenant, the lease's pay
        for whole final epochs in which the provider was not up (`Uptime.is_up`: no
        heartbeat, no validator's liveness report) (`claim_downtime`); it is refunded from the provider's pay still in escrow (never
        from the tenant's unspent budget), the rest is netted against the provider's later
        pay, and the provider's stake is slashed per epoch and burned (docs/uptime.md).
        While a lease is open the Market holds the provider's stake in the registry, and
        for `claim_window` after it closes, so that unbonding cannot dodge those slashes.
        A `verified` order's leases accrue the same way, but the provider is paid only
        for time whose training round is final in `Verification`: the `Settlement`
        contract walks the rounds and tells the Market what is released; the pay of a
        round proven to cheat goes back to the tenant (docs/verification.md).
        An order may be paid for by someone other than its tenant (`create_order_for`: a
        bridge adapter funding it from another chain); every refund of such an order goes
        to that payer instead of the tenant, and `refunded` counts them per order.
@dev Escrow invariant: payment_token.balanceOf(self) ==
        sum(order.deposit - order.allocated for open orders)
      + sum(lease.budget - lease.paid - lease.downtime_refunded for open unverified leases)
      + sum(lease.budget - lease.paid - lease.downtime_refunded
            - Settlement.releases(lease).refunded for verified leases, open or closed).
"""

from ethereum.ercs import IERC20

from .interfaces import IProviderRegistry
from .interfaces import ISettlement
from .interfaces import IStakeToken
from .interfaces import IUptime

from .interfaces import IMarket
implements: IMarket

import lease_stream

from snekmate.auth import ownable
initializes: ownable

from snekmate.utils import ecdsa

from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator

exports: (
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
    eip712_domain_separator.eip712Domain,
)


struct Order:
    tenant: address
    spec_hash: bytes32
    gpu_model: String[64]
    min_gpus: uint32
    min_gpu_memory_mb: uint32
    max_price_per_gpu_hour: uint256
    duration: uint256
    nodes: uint32
    deposit: uint256
    allocated: uint256
    leases_made: uint32
    open: bool
    created_at: uint256


event OrderCreated:
    order_id: indexed(uint256)
    tenant: indexed(address)
    spec_hash: indexed(bytes32)
    gpu_model: String[64]
    min_gpus: uint32
    min_gpu_memory_mb: uint32
    max_price_per_gpu_hour: uint256
    duration: uint256
    nodes: uint32
    deposit: uint256
    verified: bool


# An order paid for by `payer` (`create_order_for`): its refunds go to the payer.
event OrderSponsored:
    order_id: indexed(uint256)
    tenant: indexed(address)
    payer: indexed(address)


# A refund of such an order (or of one of its leases) sent to its payer.
event Refunded:
    order_id: indexed(uint256)
    payer: indexed(address)
    amount: uint256


event OrderCancelled:
    order_id: indexed(uint256)
    tenant: indexed(address)
    refund: uint256


event LeaseCreated:
    lease_id: indexed(uint256)
    order_id: uint256
    tenant: indexed(address)
    provider: indexed(address)
    price_per_gpu_hour: uint256
    gpus: uint32
    budget: uint256
    start: uint256
    fee_bps: uint256


event LeaseToppedUp:
    lease_id: indexed(uint256)
    tenant: indexed(address)
    amount: uint256
    budget: uint256


event Withdrawn:
    lease_id: indexed(uint256)
    provider: indexed(address)
    amount_to_provider: uint256
    fee: uint256


event LeaseClosed:
    lease_id: indexed(uint256)
    closed_by: indexed(address)
    provider_amount: uint256
    fee: uint256
    refund: uint256


event ResultCommitted:
    lease_id: indexed(uint256)
    provider: indexed(address)
    result_hash: bytes32


event DowntimeClaimed:
    lease_id: indexed(uint256)
    tenant: indexed(address)
    provider: indexed(address)
    epochs: DynArray[uint256, MAX_CLAIM_EPOCHS]
    amount: uint256
    refund: uint256
    overdrawn: uint256
    stake_slashed: uint256
    claimed_by: address


event SettlementSet:
    settlement: indexed(address)


event BidNonceCancelled:
    provider: indexed(address)
    nonce: indexed(uint256)


event FeeChanged:
    old_fee_bps: uint256
    new_fee_bps: uint256


event TreasuryChanged:
    old_treasury: indexed(address)
    new_treasury: indexed(address)


BID_TYPEHASH: public(constant(bytes32)) = keccak256(
    "Bid(uint256 orderId,address provider,uint256 pricePerGpuHour,uint256 nonce,uint256 expiry)"
)
MAX_FEE_BPS: public(constant(uint256)) = 1_000
MAX_CLAIM_EPOCHS: public(constant(uint256)) = 256
BPS: constant(uint256) = 10_000
SECONDS_PER_HOUR: constant(uint256) = 3_600

payment_token: public(immutable(address))
registry: public(immutable(address))
uptime: public(immutable(address))
# Uptime's epoch clock, copied at deploy (both immutable there too).
epoch_genesis: public(immutable(uint256))
epoch_length: public(immutable(uint256))
# Stake (stake-token base units) slashed, and burned, per claimed epoch of downtime.
downtime_slash: public(immutable(uint256))
# Seconds after a lease closes during which its downtime can still be claimed.
claim_window: public(immutable(uint256))

treasury: public(address)
fee_bps: public(uint256)
# Set once by the owner (Settlement is deployed after the Market: it takes its address).
settlement: public(address)

orders: public(HashMap[uint256, Order])
leases: public(HashMap[uint256, IMarket.Lease])
next_order_id: public(uint256)
next_lease_id: public(uint256)

# provider => nonce => used (accepted or cancelled)
bid_nonce_used: public(HashMap[address, HashMap[uint256, bool]])
# order_id => provider => lease_id (0 = none)
lease_of: public(HashMap[uint256, HashMap[address, uint256]])
# lease_id => epoch // 256 => bitmap of the epochs whose downtime was claimed
_claimed: HashMap[uint256, HashMap[uint256, uint256]]
# lease -> whether its start took a hold on the provider's stake (only then does its close end
# one: a lease started while the Market had no slasher role must not end another lease's hold)
_holds_stake: HashMap[uint256, bool]
# order_id => the order's leases are paid by verified round (fixed at creation)
verified: public(HashMap[uint256, bool])
# order_id => who paid its deposit and receives its refunds, when not its tenant (else zero)
refund_to: public(HashMap[uint256, address])
# order_id => all that went back to `refund_to` for it (its leases' refunds included)
refunded: public(HashMap[uint256, uint256])


@deploy
def __init__(
    payment_token_: address,
    registry_: address,
    uptime_: address,
    treasury_: address,
    fee_bps_: uint256,
    downtime_slash_: uint256,
    claim_window_: uint256,
):
    """
    @notice The deployer becomes the owner. The epoch clock is copied from Uptime. Grant
            this contract the registry's slasher role for downtime slashes (without it,
            downtime is still refunded but nobody is slashed). The EIP-712 domain of bids
            is ("TesseraMarket", "1", chain id, this contract).
    @param payment_token_ The ERC-20 orders are paid in (with EIP-2612 permit).
    @param registry_ The ProviderRegistry (who may be leased, and slashed for downtime).
    @param uptime_ The Uptime contract whose `is_up` decides downtime.
    @param treasury_ Where the protocol fee goes.
    @param fee_bps_ The protocol fee, in basis points of every payout (at most MAX_FEE_BPS).
    @param downtime_slash_ Stake slashed (and burned) per claimed epoch of downtime.
    @param claim_window_ Seconds after a lease closes during which downtime can be claimed.
    """
    assert payment_token_ != empty(address), "market: zero payment token"
    assert registry_ != empty(address), "market: zero registry"
    assert uptime_ != empty(address), "market: zero uptime"
    assert treasury_ != empty(address), "market: zero treasury"
    assert fee_bps_ <= MAX_FEE_BPS, "market: fee too high"
    ownable.__init__()
    eip712_domain_separator.__init__("TesseraMarket", "1")
    payment_token = payment_token_
    registry = registry_
    uptime = uptime_
    epoch_genesis = staticcall IUptime(uptime_).genesis()
    epoch_length = staticcall IUptime(uptime_).epoch_length()
    assert epoch_length > 0 and epoch_genesis <= block.timestamp, "market: uptime clock invalid"
    downtime_slash = downtime_slash_
    claim_window = claim_window_
    self.treasury = treasury_
    self.fee_bps = fee_bps_
    self.next_order_id = 1
    self.next_lease_id = 1
    log FeeChanged(old_fee_bps=0, new_fee_bps=fee_bps_)
    log TreasuryChanged(old_treasury=empty(address), new_treasury=treasury_)


# ---------------------------------------------------------------- admin


@external
def set_fee_bps(new_fee_bps: uint256):
    """
    @notice The owner sets the protocol fee of leases created from now on; a lease keeps
            the fee it was created with.
    @param new_fee_bps The fee, in basis points (at most MAX_FEE_BPS).
    """
    assert msg.sender == ownable.owner, "market: caller is not the owner"
    assert new_fee_bps <= MAX_FEE_BPS, "market: fee too high"
    log FeeChanged(old_fee_bps=self.fee_bps, new_fee_bps=new_fee_bps)
    self.fee_bps = new_fee_bps


@external
def set_treasury(new_treasury: address):
    """
    @notice The owner sets where the protocol fee goes.
    @param new_treasury The treasury (not the zero address, not this contract: fees sent here
           would be nobody's).
    """
    assert msg.sender == ownable.owner, "market: caller is not the owner"
    assert new_treasury != empty(address), "market: zero treasury"
    assert new_treasury != self, "market: the Market cannot be its own treasury"
    log TreasuryChanged(old_treasury=self.treasury, new_treasury=new_treasury)
    self.treasury = new_treasury


@external
def set_settlement(settlement_: address):
    """
    @notice Owner, once: the Settlement contract that releases verified leases' pay. Until it
            is set, no verified order can be created.
    @param settlement_ The Settlement contract (deployed for this market).
    """
    assert msg.sender == ownable.owner, "market: caller is not the owner"
    assert self.settlement == empty(address), "market: settlement already set"
    assert settlement_ != empty(address), "market: zero settlement"
    assert staticcall ISettlement(settlement_).market() == self, "market: settlement is for another market"
    self.settlement = settlement_
    log SettlementSet(settlement=settlement_)


# ---------------------------------------------------------------- token helpers


@internal
def _pull(sender: address, amount: uint256):
    assert extcall IERC20(payment_token).transferFrom(sender, self, amount, default_return_value=True), "market: transfer failed"


@internal
def _push(to: address, amount: uint256):
    if amount > 0:
        assert extcall IERC20(payment_token).transfer(to, amount, default_return_value=True), "market: transfer failed"


@internal
def _refund(order_id: uint256, tenant: address, amount: uint256):
    # The one way escrow goes back: to whoever paid the order's deposit.
    payer: address = self.refund_to[order_id]
    if payer == empty(address):
        self._push(tenant, amount)
    elif amount > 0:
        self.refunded[order_id] += amount
        log Refunded(order_id=order_id, payer=payer, amount=amount)
        self._push(payer, amount)


# ---------------------------------------------------------------- orders


@internal
def _create_order(
    tenant: address,
    payer: address,
    spec_hash: bytes32,
    gpu_model: String[64],
    min_gpus: uint32,
    min_gpu_memory_mb: uint32,
    max_price_per_gpu_hour: uint256,
    duration: uint256,
    nodes: uint32,
    deposit: uint256,
    verified: bool,
    sponsored: bool,
) -> uint256:
    assert nodes > 0, "market: nodes must be positive"
    assert duration > 0, "market: duration must be positive"
    assert max_price_per_gpu_hour > 0, "market: max price must be positive"
    assert min_gpus > 0, "market: min_gpus must be positive"
    worst_case: uint256 = (
        max_price_per_gpu_hour * convert(min_gpus, uint256) * convert(nodes, uint256) * duration // SECONDS_PER_HOUR
    )
    assert deposit > 0 and deposit >= worst_case, "market: deposit too small"
    assert not verified or self.settlement != empty(address), "market: settlement not set"

    order_id: uint256 = self.next_order_id
    self.next_order_id = order_id + 1
    self.orders[order_id] = Order(
        tenant=tenant,
        spec_hash=spec_hash,
        gpu_model=gpu_model,
        min_gpus=min_gpus,
        min_gpu_memory_mb=min_gpu_memory_mb,
        max_price_per_gpu_hour=max_price_per_gpu_hour,
        duration=duration,
        nodes=nodes,
        deposit=deposit,
        allocated=0,
        leases_made=0,
        open=True,
        created_at=block.timestamp,
    )
    if verified:
        self.verified[order_id] = True
    if sponsored:
        self.refund_to[order_id] = payer
    log OrderCreated(
        order_id=order_id,
        tenant=tenant,
        spec_hash=spec_hash,
        gpu_model=gpu_model,
        min_gpus=min_gpus,
        min_gpu_memory_mb=min_gpu_memory_mb,
        max_price_per_gpu_hour=max_price_per_gpu_hour,
        duration=duration,
        nodes=nodes,
        deposit=deposit,
        verified=verified,
    )
    if sponsored:
        log OrderSponsored(order_id=order_id, tenant=tenant, payer=payer)
    self._pull(payer, deposit)
    return order_id


@external
@nonreentrant
def create_order(
    spec_hash: bytes32,
    gpu_model: String[64],
    min_gpus: uint32,
    min_gpu_memory_mb: uint32,
    max_price_per_gpu_hour: uint256,
    duration: uint256,
    nodes: uint32,
    deposit: uint256,
    verified: bool,
) -> uint256:
    """
    @notice Post an order and escrow `deposit` (pulled with transferFrom; approve first).
            `gpu_model` "" accepts any model. Returns the order id (ids start at 1).
            `verified`: its leases are paid only for final Verification rounds (`release`).
    @param spec_hash The hash of the job specification (not checked on chain).
    @param gpu_model The GPU model required ("" for any).
    @param min_gpus GPUs per node (more than zero); every lease pays for this many.
    @param min_gpu_memory_mb The least memory per GPU, in MiB.
    @param max_price_per_gpu_hour The highest bid price accepted (more than zero).
    @param duration Seconds each lease's budget covers (more than zero).
    @param nodes How many leases (providers) the order takes (more than zero).
    @param deposit The escrow, at least max price * min_gpus * nodes * duration / 3600.
    @param verified Whether leases are paid by verified round.
    @return uint256 The order id.
    """
    return self._create_order(
        msg.sender, msg.sender, spec_hash, gpu_model, min_gpus, min_gpu_memory_mb, max_price_per_gpu_hour, duration, nodes, deposit,
        verified, False
    )


@external
@nonreentrant
def create_order_with_permit(
    spec_hash: bytes32,
    gpu_model: String[64],
    min_gpus: uint32,
    min_gpu_memory_mb: uint32,
    max_price_per_gpu_hour: uint256,
    duration: uint256,
    nodes: uint32,
    deposit: uint256,
    verified: bool,
    permit_deadline: uint256,
    v: uint8,
    r: bytes32,
    s: bytes32,
) -> uint256:
    """
    @notice Same as `create_order`, but first applies the tenant's EIP-2612 permit
            (owner = caller, spender = this market, value = deposit). If the permit fails
            (for example because someone submitted it first, which spends its nonce), the
            order goes ahead on the allowance already there, so a front-run permit cannot
            block the order.
    @param spec_hash The hash of the job specification (not checked on chain).
    @param gpu_model The GPU model required ("" for any).
    @param min_gpus GPUs per node (more than zero); every lease pays for this many.
    @param min_gpu_memory_mb The least memory per GPU, in MiB.
    @param max_price_per_gpu_hour The highest bid price accepted (more than zero).
    @param duration Seconds each lease's budget covers (more than zero).
    @param nodes How many leases (providers) the order takes (more than zero).
    @param deposit The escrow, at least max price * min_gpus * nodes * duration / 3600.
    @param verified Whether leases are paid by verified round.
    @param permit_deadline The permit's deadline.
    @param v The permit signature's `v`.
    @param r The permit signature's `r`.
    @param s The permit signature's `s`.
    @return uint256 The order id (ids start at 1).
    """
    permitted: bool = raw_call(
        payment_token,
        abi_encode(
            msg.sender, self, deposit, permit_deadline, v, r, s,
            method_id=method_id("permit(address,address,uint256,uint256,uint8,bytes32,bytes32)"),
        ),
        revert_on_failure=False,
    )
    assert permitted or staticcall IERC20(payment_token).allowance(msg.sender, self) >= deposit, "market: permit failed and the allowance is too small"
    return self._create_order(
        msg.sender, msg.sender, spec_hash, gpu_model, min_gpus, min_gpu_memory_mb, max_price_per_gpu_hour, duration, nodes, deposit,
        verified, False
    )


@external
@nonreentrant
def create_order_for(
    tenant: address,
    spec_hash: bytes32,
    gpu_model: String[64],
    min_gpus: uint32,
    min_gpu_memory_mb: uint32,
    max_price_per_gpu_hour: uint256,
    duration: uint256,
    nodes: uint32,
    deposit: uint256,
    verified: bool,
) -> uint256:
    """
    @notice Post an order whose tenant is `tenant`, paid for by the caller: the deposit is
            pulled from the caller (approve first) and every refund of the order and of its
            leases goes back to the caller (`refund_to`, counted in `refunded`, each logged
            as `Refunded`), even when the caller names itself. The tenant runs it as its own
            (accepts bids, closes, cancels) but takes no refund; the payer may cancel it too.
            A bridge adapter uses it to fund an order from another chain in one message.
    @param tenant Who runs the order (not the zero address).
    @param spec_hash The hash of the job specification (not checked on chain).
    @param gpu_model The GPU model required ("" for any).
    @param min_gpus GPUs per node (more than zero); every lease pays for this many.
    @param min_gpu_memory_mb The least memory per GPU, in MiB.
    @param max_price_per_gpu_hour The highest bid price accepted (more than zero).
    @param duration Seconds each lease's budget covers (more than zero).
    @param nodes How many leases (providers) the order takes (more than zero).
    @param deposit The escrow, at least max price * min_gpus * nodes * duration / 3600.
    @param verified Whether leases are paid by verified round.
    @return uint256 The order id.
    """
    assert tenant != empty(address), "market: zero tenant"
    return self._create_order(
        tenant, msg.sender, spec_hash, gpu_model, min_gpus, min_gpu_memory_mb, max_price_per_gpu_hour, duration, nodes,
        deposit, verified, True
    )


@external
@nonreentrant
def cancel_order(order_id: uint256):
    """
    @notice Tenant closes the order for new bids and gets back the unallocated deposit.
            Its leases go on. An order someone else paid for (`create_order_for`) may also
            be cancelled by that payer (its refund is the payer's; a tenant that never acts
            cannot hold it).
    @param order_id The open order.
    """
    # Field by field: the whole record would copy its gpu_model string for nothing.
    tenant: address = self.orders[order_id].tenant
    assert tenant != empty(address), "market: unknown order"
    payer: address = self.refund_to[order_id]
    assert msg.sender == tenant or (payer != empty(address) and msg.sender == payer), "market: caller is not the tenant"
    assert self.orders[order_id].open, "market: order not open"
    refund: uint256 = self.orders[order_id].deposit - self.orders[order_id].allocated
    self.orders[order_id].open = False
    log OrderCancelled(order_id=order_id, tenant=tenant, refund=refund)
    self._refund(order_id, tenant, refund)


# ---------------------------------------------------------------- bids


@internal
@view
def _bid_digest(order_id: uint256, provider: address, price: uint256, nonce: uint256, expiry: uint256) -> bytes32:
    struct_hash: bytes32 = keccak256(abi_encode(BID_TYPEHASH, order_id, provider, price, nonce, expiry))
    return eip712_domain_separator._hash_typed_data_v4(struct_hash)


@external
@view
def bid_digest(order_id: uint256, provider: address, price_per_gpu_hour: uint256, nonce: uint256, expiry: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a provider signs for a bid; for cross-checking off-chain hashing.
    @param order_id The order bid on.
    @param provider The bidding provider.
    @param price_per_gpu_hour The price, in payment-token base units per GPU-hour.
    @param nonce The provider's bid nonce (each usable once).
    @param expiry The last timestamp the bid can be accepted.
    @return bytes32 The digest of the `Bid`.
    """
    return self._bid_digest(order_id, provider, price_per_gpu_hour, nonce, expiry)


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    """
    @notice The EIP-712 domain separator of bids, for the current chain.
    @return bytes32 The domain separator.
    """
    return eip712_domain_separator._domain_separator_v4()


@external
def cancel_bid_nonce(nonce: uint256):
    """
    @notice A provider invalidates one of its own unused bids.
    @param nonce The bid nonce to invalidate.
    """
    assert not self.bid_nonce_used[msg.sender][nonce], "market: bid already used"
    self.bid_nonce_used[msg.sender][nonce] = True
    log BidNonceCancelled(provider=msg.sender, nonce=nonce)


@external
@nonreentrant
def accept_bid(
    order_id: uint256,
    provider: address,
    price_per_gpu_hour: uint256,
    nonce: uint256,
    expiry: uint256,
    signature: Bytes[65],
) -> uint256:
    """
    @notice The order's tenant accepts a provider's signed bid; a lease starts now.
            The provider must be active and match the order's hardware; the lease's
            budget (price * min_gpus * duration / 3600) is allocated from the deposit.
    @param order_id The open order.
    @param provider The provider that signed the bid.
    @param price_per_gpu_hour The signed price, between the provider's floor and the
           order's maximum.
    @param nonce The signed nonce (unused).
    @param expiry The signed expiry (not passed).
    @param signature The provider's 65-byte EIP-712 signature of the bid.
    @return uint256 The lease id (ids start at 1).
    """
    order: Order = self.orders[order_id]
    assert order.tenant != empty(address), "market: unknown order"
    assert msg.sender == order.tenant, "market: caller is not the tenant"
    assert order.open, "market: order not open"
    assert order.leases_made < order.nodes, "market: order fully leased"
    assert block.timestamp <= expiry, "market: bid expired"
    assert price_per_gpu_hour <= order.max_price_per_gpu_hour, "market: price above order max"

    # Shape checks first, so that malformed signatures read as a market error rather than
    # snekmate's generic "ecdsa: ..." message (which remains for unrecoverable points). The
    # `s` bound is snekmate's own malleability threshold (EIP-2: s <= secp256k1n / 2), which
    # `_recover_sig` asserts again.
    assert len(signature) == 65, "market: bad bid signature"
    sig_v: uint256 = convert(slice(signature, 64, 1), uint256)
    sig_s: uint256 = extract32(signature, 32, output_type=uint256)
    assert (sig_v == 27 or sig_v == 28) and sig_s <= ecdsa._MALLEABILITY_THRESHOLD, "market: bad bid signature"
    signer: address = ecdsa._recover_sig(
        self._bid_digest(order_id, provider, price_per_gpu_hour, nonce, expiry), signature
    )
    assert signer != empty(address) and signer == provider, "market: bad bid signature"
    assert not self.bid_nonce_used[provider][nonce], "market: bid already used"
    self.bid_nonce_used[provider][nonce] = True

    info: IProviderRegistry.Offer = staticcall IProviderRegistry(registry).offer(provider)
    assert info.active, "market: provider not active"
    assert info.gpu_count >= order.min_gpus, "market: provider has too few gpus"
    assert info.gpu_memory_mb >= order.min_gpu_memory_mb, "market: provider gpu memory too small"
    assert len(order.gpu_model) == 0 or keccak256(order.gpu_model) == info.gpu_model_hash, "market: gpu model mismatch"
    assert price_per_gpu_hour >= info.price_floor, "market: price below provider floor"
    assert self.lease_of[order_id][provider] == 0, "market: provider already leased this order"

    budget: uint256 = price_per_gpu_hour * convert(order.min_gpus, uint256) * order.duration // SECONDS_PER_HOUR
    assert budget > 0, "market: lease budget is zero"
    assert budget <= order.deposit - order.allocated, "market: deposit exhausted"

    lease_id: uint256 = self.next_lease_id
    self.next_lease_id = lease_id + 1
    self.orders[order_id].allocated = order.allocated + budget
    self.orders[order_id].leases_made = order.leases_made + 1
    self.lease_of[order_id][provider] = lease_id
    fee: uint256 = self.fee_bps
    self.leases[lease_id] = IMarket.Lease(
        order_id=order_id,
        tenant=order.tenant,
        provider=provider,
        price_per_gpu_hour=price_per_gpu_hour,
        gpus=order.min_gpus,
        start=block.timestamp,
        budget=budget,
        paid=0,
        closed_at=0,
        result_hash=empty(bytes32),
        downtime=0,
        downtime_refunded=0,
        fee_bps=fee,
    )
    log LeaseCreated(
        lease_id=lease_id,
        order_id=order_id,
        tenant=order.tenant,
        provider=provider,
        price_per_gpu_hour=price_per_gpu_hour,
        gpus=order.min_gpus,
        budget=budget,
        start=block.timestamp,
        fee_bps=fee,
    )
    # The provider's stake cannot be withdrawn while the lease is open (close releases it).
    if staticcall IProviderRegistry(registry).is_slasher(self):
        self._holds_stake[lease_id] = True
        extcall IProviderRegistry(registry).hold(provider)
    return lease_id


# ---------------------------------------------------------------- leases


@internal
@view
def _read(lease_id: uint256) -> IMarket.Lease:
    # One copy of the record's read, shared by every function (each inline copy costs code).
    return self.leases[lease_id]


@internal
@view
def _lease(lease_id: uint256) -> IMarket.Lease:
    lease: IMarket.Lease = self._read(lease_id)
    assert lease.tenant != empty(address), "market: unknown lease"
    return lease


@internal
@view
def _accrued(lease: IMarket.Lease) -> uint256:
    if lease.tenant == empty(address):
        return 0
    return lease_stream.accrued_at(lease, lease_stream.end(lease))


@internal
@view
def _earned(lease: IMarket.Lease, proven: uint256) -> uint256:
    """
    @dev Pay for live time: the stream less claimed downtime and the pay of rounds proven
         to cheat (zero if those exceed it).
    """
    accrued: uint256 = self._accrued(lease)
    if accrued <= lease.downtime + proven:
        return 0
    return accrued - lease.downtime - proven


@internal
@view
def _release(lease_id: uint256, lease: IMarket.Lease) -> ISettlement.Release:
    """
    @dev A verified lease's release state in Settlement (all zero for other leases).
    """
    if not self.verified[lease.order_id]:
        return empty(ISettlement.Release)
    return staticcall ISettlement(self.settlement).releases(lease_id)


@internal
@view
def _payable(lease_id: uint256, lease: IMarket.Lease) -> uint256:
    """
    @dev Gross pay the provider may have by now, paid or not: for a verified lease only
         released pay (Settlement), for others its pay for live time.
    """
    if self.verified[lease.order_id]:
        return staticcall ISettlement(self.settlement).released_earned(lease_id)
    return self._earned(lease, 0)


@external
@view
def accrued(lease_id: uint256) -> uint256:
    """
    @notice Gross amount streamed by time so far (capped at the budget), downtime included.
    @param lease_id The lease (an unknown one gives 0).
    @return uint256 The amount, in payment-token base units.
    """
    return self._accrued(self._read(lease_id))


@external
@view
def earned(lease_id: uint256) -> uint256:
    """
    @notice Gross amount (fee included) the provider has earned for live time so far,
            paid or not: the stream less claimed downtime and the pay withheld so far (rounds
            proven to cheat, and those walked once a cheat is proven for the lease). For a
            lease with a proven cheat (Verification.cheated) its unreleased time still counts
            here until Settlement walks it: it will be withheld too.
    @param lease_id The lease (an unknown one gives 0).
    @return uint256 The amount, in payment-token base units.
    """
    lease: IMarket.Lease = self._read(lease_id)
    return self._earned(lease, self._release(lease_id, lease).proven)


@external
@view
def withdrawable(lease_id: uint256) -> uint256:
    """
    @notice Gross amount `withdraw` would pay now; for a verified lease only released pay.
    @param lease_id The lease.
    @return uint256 The amount, fee included, in payment-token base units.
    """
    lease: IMarket.Lease = self._read(lease_id)
    if lease.tenant == empty(address):
        return 0
    earned: uint256 = self._payable(lease_id, lease)
    if earned <= lease.paid:
        return 0
    return earned - lease.paid


@external
@view
def shortfall(lease_id: uint256) -> uint256:
    """
    @notice What the provider was paid beyond its pay for live time: downtime claimed after
            the provider had withdrawn that time. While the lease is open the future stream
            nets it; once closed it is final (it is not taken from other leases' escrow, nor
            from the tenant's; the stake slash per epoch is burned, the provider's penalty).
    @param lease_id The lease.
    @return uint256 The amount overpaid, in payment-token base units.
    """
    lease: IMarket.Lease = self._read(lease_id)
    earned: uint256 = self._earned(lease, self._release(lease_id, lease).proven)
    if lease.paid <= earned:
        return 0
    return lease.paid - earned


@external
@view
def downtime_claimed(lease_id: uint256, epoch: uint256) -> bool:
    """
    @notice Whether the downtime of `epoch` was claimed on the lease.
    @param lease_id The lease.
    @param epoch The Uptime epoch.
    @return bool True if it was.
    """
    return (self._claimed[lease_id][epoch >> 8] >> (epoch & 255)) & 1 == 1


@external
@view
def claimed_word(lease_id: uint256, index: uint256) -> uint256:
    """
    @notice Claimed epochs 256*index .. 256*index+255 of a lease as a bitmap (like
            Uptime.beat_word), so that a client finds unclaimed epochs in one call per 256.
    @param lease_id The lease.
    @param index The 256-epoch word's index (epoch >> 8).
    @return uint256 The bitmap.
    """
    return self._claimed[lease_id][index]


@external
@view
def order_count() -> uint256:
    """
    @notice How many orders were created (ids run from 1 to this).
    @return uint256 The count.
    """
    return self.next_order_id - 1


@external
@view
def lease_count() -> uint256:
    """
    @notice How many leases were created (ids run from 1 to this).
    @return uint256 The count.
    """
    return self.next_lease_id - 1


@internal
def _pay_provider(lease: IMarket.Lease, amount: uint256) -> uint256:
    """
    @dev Pays `amount` (gross) of the lease to its provider less the lease's fee, which goes
         to the treasury. Returns the fee.
    """
    fee: uint256 = amount * lease.fee_bps // BPS
    self._push(self.treasury, fee)
    self._push(lease.provider, amount - fee)
    return fee


@external
@nonreentrant
def withdraw(lease_id: uint256):
    """
    @notice Provider takes what it has earned so far, minus the lease's protocol fee. For a
            verified lease: what Settlement has released (also after the lease closed).
    @param lease_id The caller's lease.
    """
    lease: IMarket.Lease = self._lease(lease_id)
    assert msg.sender == lease.provider, "market: caller is not the provider"
    earned: uint256 = self._payable(lease_id, lease)
    assert earned > lease.paid, "market: nothing to withdraw"
    amount: uint256 = earned - lease.paid
    self.leases[lease_id].paid = earned
    fee: uint256 = amount * lease.fee_bps // BPS
    log Withdrawn(lease_id=lease_id, provider=lease.provider, amount_to_provider=amount - fee, fee=fee)
    self._pay_provider(lease, amount)


@external
@nonreentrant
def top_up(lease_id: uint256, amount: uint256):
    """
    @notice The tenant adds `amount` to an open, not yet exhausted lease's budget (pulled
            from the caller with transferFrom: approve first). For an order someone else
            paid for (`create_order_for`) only that payer tops up: every refund of it goes
            to the payer, so the tenant's top-up would too.
    @param lease_id The open lease.
    @param amount The amount, more than zero, in payment-token base units.
    """
    lease: IMarket.Lease = self._lease(lease_id)
    payer: address = self.refund_to[lease.order_id]
    if payer == empty(address):
        assert msg.sender == lease.tenant, "market: caller is not the tenant"
    else:
        assert msg.sender == payer, "market: the order's refunds go to its payer"
    assert lease.closed_at == 0, "market: lease closed"
    assert amount > 0, "market: amount must be positive"
    assert self._accrued(lease) < lease.budget, "market: lease exhausted"
    new_budget: uint256 = lease.budget + amount
    self.leases[lease_id].budget = new_budget
    log LeaseToppedUp(lease_id=lease_id, tenant=lease.tenant, amount=amount, budget=new_budget)
    self._pull(msg.sender, amount)


@external
@nonreentrant
def close_lease(lease_id: uint256):
    """
    @notice Tenant or provider ends the lease now: the provider gets what it earned for
            live time and was not yet paid (minus fee), the tenant gets the rest of the
            lease's escrow back (unspent budget and claimed downtime not yet refunded).
            A verified lease pays only released pay now and keeps the pay accrued but not
            yet released in escrow, for `Settlement.release` (then `withdraw`) or a refund
            later. The provider's stake stays locked for `claim_window` more.
    @param lease_id The open lease.
    """
    lease: IMarket.Lease = self._lease(lease_id)
    assert msg.sender == lease.tenant or msg.sender == lease.provider, "market: caller is not a lease party"
    assert lease.closed_at == 0, "market: lease closed"
    verified: bool = self.verified[lease.order_id]
    held: uint256 = lease.budget - lease.paid - lease.downtime_refunded
    earned: uint256 = self._payable(lease_id, lease)
    lease.closed_at = block.timestamp
    if not verified:
        earned = self._earned(lease, 0)
    owed: uint256 = 0
    if earned > lease.paid:
        owed = earned - lease.paid
    self.leases[lease_id].closed_at = lease.closed_at
    self.leases[lease_id].paid = lease.paid + owed
    refund: uint256 = 0
    if verified:
        # Settlement reads the lease as just recorded and keeps its claims covered.
        refund = extcall ISettlement(self.settlement).close_refund(lease_id)
    else:
        # owed <= budget - downtime - paid <= held, since downtime_refunded <= downtime.
        refund = held - owed
    fee: uint256 = owed * lease.fee_bps // BPS
    log LeaseClosed(lease_id=lease_id, closed_by=msg.sender, provider_amount=owed - fee, fee=fee, refund=refund)
    if self._holds_stake[lease_id]:
        extcall IProviderRegistry(registry).release_hold(lease.provider, block.timestamp + claim_window)
    self._pay_provider(lease, owed)
    self._refund(lease.order_id, lease.tenant, refund)


@external
@nonreentrant
def refund_tenant(lease_id: uint256, amount: uint256):
    """
    @notice Settlement sends `amount` of a verified lease's escrow back to its tenant: the
            pay of rounds proven to cheat (Settlement caps it and records it).
    @param lease_id The verified lease.
    @param amount The amount, in payment-token base units.
    """
    assert msg.sender == self.settlement and msg.sender != empty(address), "market: caller is not the settlement"
    self._refund(self.leases[lease_id].order_id, self.leases[lease_id].tenant, amount)


@external
def commit_result(lease_id: uint256, result_hash: bytes32):
    """
    @notice Provider records the content address (sha256) of the lease's result; a
            later call replaces it.
    @param lease_id The caller's lease.
    @param result_hash The sha256 of the result.
    """
    lease: IMarket.Lease = self._lease(lease_id)
    assert msg.sender == lease.provider, "market: caller is not the provider"
    self.leases[lease_id].result_hash = result_hash
    log ResultCommitted(lease_id=lease_id, provider=msg.sender, result_hash=result_hash)


@external
@nonreentrant
def claim_downtime(lease_id: uint256, epochs: DynArray[uint256, MAX_CLAIM_EPOCHS]):
    """
    @notice Anyone claims, for the lease's tenant, the pay for final Uptime epochs in which
            the lease's provider was not up (`Uptime.is_up`). Each epoch (strictly increasing) must lie
            wholly inside the lease (from its start to now, or to its close), start before
            the budget ran out, and not be claimed before. The pay stops being the
            provider's. It is refunded to the tenant now out of the provider's pay still in
            escrow (never out of the tenant's unspent budget); the rest is netted against the
            provider's later pay (`shortfall` if it cannot be). The provider's stake is slashed
            by `downtime_slash` per epoch and burned: paid to the tenant, a provider's own sybil
            tenant could move the whole stake out of reach of a pending verdict (review 26).
            A closed lease can be claimed on for `claim_window` seconds.
    @param lease_id The lease.
    @param epochs The epochs the provider was down, strictly increasing (1 .. MAX_CLAIM_EPOCHS).
    """
    lease: IMarket.Lease = self._lease(lease_id)
    assert len(epochs) > 0, "market: no epochs"
    if lease.closed_at != 0:
        assert block.timestamp <= lease.closed_at + claim_window, "market: claim window over"
    # Epochs ending at or before `end` have ended (and, for a closed lease, ended before the close).
    ended: uint256 = (lease_stream.end(lease) - epoch_genesis) // epoch_length
    amount: uint256 = 0
    previous: uint256 = 0
    for i: uint256 in range(MAX_CLAIM_EPOCHS):
        if i == len(epochs):
            break
        epoch: uint256 = epochs[i]
        assert i == 0 or epoch > previous, "market: epochs not in increasing order"
        previous = epoch
        assert epoch < ended, "market: epoch not ended inside the lease"
        begin: uint256 = epoch_genesis + epoch * epoch_length
        assert begin >= lease.start, "market: epoch starts before the lease"
        before: uint256 = lease_stream.accrued_at(lease, begin)
        assert before < lease.budget, "market: epoch after the budget ran out"
        assert not staticcall IUptime(uptime).is_up(lease.provider, epoch), "market: provider up (or epoch not final)"
        bit: uint256 = 1 << (epoch & 255)
        claimed: uint256 = self._claimed[lease_id][epoch >> 8]
        assert claimed & bit == 0, "market: epoch already claimed"
        self._claimed[lease_id][epoch >> 8] = claimed | bit
        amount += lease_stream.accrued_at(lease, begin + epoch_length) - before
    lease.downtime += amount
    self.leases[lease_id].downtime = lease.downtime
    # The provider's pay still in escrow: what the lease holds less the tenant's unspent budget.
    rel: ISettlement.Release = self._release(lease_id, lease)
    held: uint256 = 0
    if self.verified[lease.order_id] or lease.closed_at == 0:
        held = lease.budget - lease.paid - lease.downtime_refunded - rel.refunded
    unspent: uint256 = 0
    if lease.closed_at == 0:
        unspent = lease.budget - self._accrued(lease)
    refund: uint256 = 0
    if held > unspent:
        refund = min(amount, held - unspent)
    if self.verified[lease.order_id]:
        refund = min(refund, staticcall ISettlement(self.settlement).excess(lease_id))
    lease.downtime_refunded += refund
    self.leases[lease_id].downtime_refunded = lease.downtime_refunded
    earned: uint256 = self._earned(lease, rel.proven)
    overdrawn: uint256 = 0
    if lease.paid > earned:
        overdrawn = lease.paid - earned
    slashed: uint256 = 0
    if downtime_slash > 0 and staticcall IProviderRegistry(registry).is_slasher(self):
        slashed = extcall IProviderRegistry(registry).slash(
            lease.provider, len(epochs) * downtime_slash, self
        )
    log DowntimeClaimed(
        lease_id=lease_id,
        tenant=lease.tenant,
        provider=lease.provider,
        epochs=epochs,
        amount=amount,
        refund=refund,
        overdrawn=overdrawn,
        stake_slashed=slashed,
        claimed_by=msg.sender,
    )
    self._refund(lease.order_id, lease.tenant, refund)
    if slashed > 0:
        extcall IStakeToken(staticcall IProviderRegistry(registry).stake_token()).burn(slashed)
