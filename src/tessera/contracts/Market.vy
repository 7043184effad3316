# pragma version ~=0.4.3
"""
@title Tessera compute market
@license GNU Affero General Public License v3.0 or later
@notice Tenants post orders and fund escrow in the payment token; providers
        sign EIP-712 bids off chain; the tenant accepts one bid per node, which
        creates a lease whose budget streams to the provider by elapsed time.
        A protocol fee (basis points) goes to the treasury on every payout; the
        unspent part of every order and lease always goes back to the tenant.
        Pay is for live time only: anyone may claim, for the tenant, the lease's pay
        for whole epochs in which the provider sent no Uptime heartbeat
        (`claim_downtime`); it is refunded from that lease's escrow and the provider's
        stake is slashed per epoch to the tenant (docs/uptime.md).
        A `verified` order's leases accrue the same way, but the provider is paid only
        for time whose training round is final in `Verification` (`release`); the pay of a
        round proven to cheat goes back to the tenant (docs/verification.md).
@dev Escrow invariant: payment_token.balanceOf(self) ==
        sum(order.deposit - order.allocated for open orders)
      + sum(lease.budget - lease.paid - lease.downtime_refunded for open unverified leases)
      + sum(lease.budget - lease.paid - lease.downtime_refunded - releases[lease].refunded
            for verified leases, open or closed).
"""

from ethereum.ercs import IERC20

from snekmate.tokens.interfaces import IERC20Permit

from .interfaces import IProviderRegistry
from .interfaces import IUptime
from .interfaces import IVerification

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


struct Lease:
    order_id: uint256
    tenant: address
    provider: address
    price_per_gpu_hour: uint256
    gpus: uint32
    start: uint256
    budget: uint256
    paid: uint256
    closed_at: uint256
    result_hash: bytes32
    # Pay (gross) for claimed epochs without a heartbeat; no longer the provider's.
    downtime: uint256
    # The part of `downtime` already sent back to the tenant (the rest is netted at close).
    downtime_refunded: uint256


# A verified lease's release state (all zero for unverified leases).
struct Release:
    # The next Verification round (of the job = the order) to walk.
    next_round: uint256
    # Pay for [start, until) is released (0 = nothing yet).
    until: uint256
    # Gross pay of the rounds proven to cheat: never the provider's.
    proven: uint256
    # Tokens sent back to the tenant besides `downtime_refunded` (proven rounds, the close).
    refunded: uint256


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


event VerificationSet:
    verification: indexed(address)
    challenge_window: uint256
    root_grace: uint256


event PayReleased:
    lease_id: indexed(uint256)
    provider: indexed(address)
    from_round: uint256
    to_round: uint256
    released_until: uint256
    # Gross pay by time newly payable (downtime, if any was claimed, is netted at withdrawal).
    amount: uint256
    # Gross pay of the proven rounds walked, and the part of it sent to the tenant now.
    withheld: uint256
    refund: uint256


event RoundRefunded:
    lease_id: indexed(uint256)
    tenant: indexed(address)
    round_index: indexed(uint256)
    amount: uint256
    refund: uint256


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
MAX_RELEASE_ROUNDS: public(constant(uint256)) = 64
BPS: constant(uint256) = 10_000
SECONDS_PER_HOUR: constant(uint256) = 3_600

payment_token: public(immutable(address))
registry: public(immutable(address))
uptime: public(immutable(address))
# Uptime's epoch clock, copied at deploy (both immutable there too).
epoch_genesis: public(immutable(uint256))
epoch_length: public(immutable(uint256))
# Stake (stake-token base units) slashed to the tenant per claimed epoch of downtime.
downtime_slash: public(immutable(uint256))
# Seconds after a lease closes during which its downtime can still be claimed.
claim_window: public(immutable(uint256))

treasury: public(address)
fee_bps: public(uint256)
# Set once by the owner (Verification is deployed after the Market: it takes its address).
verification: public(address)
root_grace: public(uint256)
# Verification's challenge_window + root_grace: pay for time after the last posted root is
# released once it is this old, so a tenant who stops posting roots cannot freeze pay.
release_delay: public(uint256)

orders: public(HashMap[uint256, Order])
leases: public(HashMap[uint256, Lease])
next_order_id: public(uint256)
next_lease_id: public(uint256)

# provider => nonce => used (accepted or cancelled)
bid_nonce_used: public(HashMap[address, HashMap[uint256, bool]])
# order_id => provider => lease_id (0 = none)
lease_of: public(HashMap[uint256, HashMap[address, uint256]])
# lease_id => epoch // 256 => bitmap of the epochs whose downtime was claimed
_claimed: HashMap[uint256, HashMap[uint256, uint256]]
# order_id => the order's leases are paid by verified round (fixed at creation)
verified: public(HashMap[uint256, bool])
releases: public(HashMap[uint256, Release])


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
    @param uptime_ The Uptime contract whose heartbeats decide downtime.
    @param treasury_ Where the protocol fee goes.
    @param fee_bps_ The protocol fee, in basis points of every payout (at most MAX_FEE_BPS).
    @param downtime_slash_ Stake slashed to the tenant per claimed epoch of downtime.
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
    @notice The owner sets the protocol fee; it applies to every later payout, of open
            leases too.
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
    @param new_treasury The treasury (not the zero address).
    """
    assert msg.sender == ownable.owner, "market: caller is not the owner"
    assert new_treasury != empty(address), "market: zero treasury"
    log TreasuryChanged(old_treasury=self.treasury, new_treasury=new_treasury)
    self.treasury = new_treasury


@external
def set_verification(verification_: address, root_grace_: uint256):
    """
    @notice Owner, once: the Verification contract whose rounds release verified leases' pay,
            and the grace (seconds) after its challenge window for time no root covers.
    @param verification_ The Verification contract (deployed for this market).
    @param root_grace_ Seconds added to its challenge window to make `release_delay`.
    """
    assert msg.sender == ownable.owner, "market: caller is not the owner"
    assert self.verification == empty(address), "market: verification already set"
    assert verification_ != empty(address), "market: zero verification"
    assert staticcall IVerification(verification_).market() == self, "market: verification is for another market"
    window: uint256 = staticcall IVerification(verification_).challenge_window()
    self.verification = verification_
    self.root_grace = root_grace_
    self.release_delay = window + root_grace_
    log VerificationSet(verification=verification_, challenge_window=window, root_grace=root_grace_)


# ---------------------------------------------------------------- token helpers


@internal
def _pull(sender: address, amount: uint256):
    assert extcall IERC20(payment_token).transferFrom(sender, self, amount, default_return_value=True), "market: transfer failed"


@internal
def _push(to: address, amount: uint256):
    if amount > 0:
        assert extcall IERC20(payment_token).transfer(to, amount, default_return_value=True), "market: transfer failed"


# ---------------------------------------------------------------- orders


@internal
def _create_order(
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
    assert nodes > 0, "market: nodes must be positive"
    assert duration > 0, "market: duration must be positive"
    assert max_price_per_gpu_hour > 0, "market: max price must be positive"
    assert min_gpus > 0, "market: min_gpus must be positive"
    worst_case: uint256 = (
        max_price_per_gpu_hour * convert(min_gpus, uint256) * convert(nodes, uint256) * duration // SECONDS_PER_HOUR
    )
    assert deposit > 0 and deposit >= worst_case, "market: deposit too small"
    assert not verified or self.verification != empty(address), "market: verification not set"

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
    self._pull(tenant, deposit)
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
        msg.sender, spec_hash, gpu_model, min_gpus, min_gpu_memory_mb, max_price_per_gpu_hour, duration, nodes, deposit,
        verified
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
            (owner = caller, spender = this market, value = deposit).
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
    extcall IERC20Permit(payment_token).permit(msg.sender, self, deposit, permit_deadline, v, r, s)
    return self._create_order(
        msg.sender, spec_hash, gpu_model, min_gpus, min_gpu_memory_mb, max_price_per_gpu_hour, duration, nodes, deposit,
        verified
    )


@external
@nonreentrant
def cancel_order(order_id: uint256):
    """
    @notice Tenant closes the order for new bids and gets back the unallocated deposit.
            Its leases go on.
    @param order_id The open order.
    """
    order: Order = self.orders[order_id]
    assert order.tenant != empty(address), "market: unknown order"
    assert msg.sender == order.tenant, "market: caller is not the tenant"
    assert order.open, "market: order not open"
    refund: uint256 = order.deposit - order.allocated
    self.orders[order_id].open = False
    log OrderCancelled(order_id=order_id, tenant=order.tenant, refund=refund)
    self._push(order.tenant, refund)


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

    assert staticcall IProviderRegistry(registry).is_active(provider), "market: provider not active"
    info: IProviderRegistry.Provider = staticcall IProviderRegistry(registry).providers(provider)
    assert info.gpu_count >= order.min_gpus, "market: provider has too few gpus"
    assert info.gpu_memory_mb >= order.min_gpu_memory_mb, "market: provider gpu memory too small"
    assert len(order.gpu_model) == 0 or keccak256(order.gpu_model) == keccak256(info.gpu_model), "market: gpu model mismatch"
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
    self.leases[lease_id] = Lease(
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
    )
    return lease_id


# ---------------------------------------------------------------- leases


@internal
@view
def _accrued_at(lease: Lease, t: uint256) -> uint256:
    """
    @dev The stream: pay (gross) for [start, t), capped at the budget. Every amount of pay,
         streamed or claimed back, is a difference of this one rounding rule.
    """
    if t <= lease.start:
        return 0
    return min(
        lease.price_per_gpu_hour * convert(lease.gpus, uint256) * (t - lease.start) // SECONDS_PER_HOUR,
        lease.budget,
    )


@internal
@view
def _end(lease: Lease) -> uint256:
    if lease.closed_at != 0:
        return lease.closed_at
    return block.timestamp


@internal
@view
def _accrued(lease: Lease) -> uint256:
    if lease.tenant == empty(address):
        return 0
    return self._accrued_at(lease, self._end(lease))


@internal
@view
def _earned(lease: Lease, proven: uint256) -> uint256:
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
def _released_earned(lease: Lease, rel: Release) -> uint256:
    """
    @dev A verified lease's pay for released, unproven, live time: all it may be paid so far.
    """
    gross: uint256 = self._accrued_at(lease, rel.until)
    if gross <= rel.proven + lease.downtime:
        return 0
    return gross - rel.proven - lease.downtime


@internal
@view
def _excess(lease: Lease, rel: Release) -> uint256:
    """
    @dev What a verified lease holds beyond the most its provider could still be paid (all of
         its time released unproven: up to the close, or the whole budget while open). Every
         refund of a verified lease is capped by it, so the provider's claims stay covered;
         the subtraction reverting would mean the escrow does not cover them.
    """
    horizon: uint256 = lease.budget
    if lease.closed_at != 0:
        horizon = self._accrued_at(lease, lease.closed_at)
    reserve: uint256 = 0
    if horizon > rel.proven + lease.downtime + lease.paid:
        reserve = horizon - rel.proven - lease.downtime - lease.paid
    return lease.budget - lease.paid - lease.downtime_refunded - rel.refunded - reserve


@internal
@view
def _held(lease: Lease) -> uint256:
    """
    @dev Tokens this lease still holds in escrow (zero once closed: all of it was paid out).
    """
    if lease.tenant == empty(address) or lease.closed_at != 0:
        return 0
    return lease.budget - lease.paid - lease.downtime_refunded


@external
@view
def accrued(lease_id: uint256) -> uint256:
    """
    @notice Gross amount streamed by time so far (capped at the budget), downtime included.
    @param lease_id The lease (an unknown one gives 0).
    @return uint256 The amount, in payment-token base units.
    """
    return self._accrued(self.leases[lease_id])


@external
@view
def earned(lease_id: uint256) -> uint256:
    """
    @notice Gross amount (fee included) the provider has earned for live time so far,
            paid or not: the stream less claimed downtime and the pay of rounds proven to cheat.
    @param lease_id The lease (an unknown one gives 0).
    @return uint256 The amount, in payment-token base units.
    """
    return self._earned(self.leases[lease_id], self.releases[lease_id].proven)


@external
@view
def withdrawable(lease_id: uint256) -> uint256:
    """
    @notice Gross amount `withdraw` would pay now; for a verified lease only released pay.
    @param lease_id The lease.
    @return uint256 The amount, fee included, in payment-token base units.
    """
    lease: Lease = self.leases[lease_id]
    earned: uint256 = self._earned(lease, 0)
    if self.verified[lease.order_id]:
        earned = self._released_earned(lease, self.releases[lease_id])
    if earned <= lease.paid:
        return 0
    return earned - lease.paid


@external
@view
def shortfall(lease_id: uint256) -> uint256:
    """
    @notice What the provider was paid beyond its pay for live time: downtime claimed after
            the provider had withdrawn that time. While the lease is open the future stream
            nets it; once closed it is final (it is not taken from other leases' escrow).
    @param lease_id The lease.
    @return uint256 The amount overpaid, in payment-token base units.
    """
    lease: Lease = self.leases[lease_id]
    earned: uint256 = self._earned(lease, self.releases[lease_id].proven)
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
def _pay_provider(provider: address, amount: uint256) -> (uint256, uint256):
    fee: uint256 = amount * self.fee_bps // BPS
    net: uint256 = amount - fee
    self._push(self.treasury, fee)
    self._push(provider, net)
    return net, fee


@external
@nonreentrant
def withdraw(lease_id: uint256):
    """
    @notice Provider takes what it has earned so far, minus the protocol fee. For a
            verified lease: what `release` has released (also after the lease closed).
    @param lease_id The caller's lease.
    """
    lease: Lease = self.leases[lease_id]
    assert lease.tenant != empty(address), "market: unknown lease"
    assert msg.sender == lease.provider, "market: caller is not the provider"
    earned: uint256 = 0
    if self.verified[lease.order_id]:
        earned = self._released_earned(lease, self.releases[lease_id])
    else:
        earned = self._earned(lease, 0)
    assert earned > lease.paid, "market: nothing to withdraw"
    amount: uint256 = earned - lease.paid
    self.leases[lease_id].paid = lease.paid + amount
    fee: uint256 = amount * self.fee_bps // BPS
    log Withdrawn(lease_id=lease_id, provider=lease.provider, amount_to_provider=amount - fee, fee=fee)
    self._pay_provider(lease.provider, amount)


@external
@nonreentrant
def top_up(lease_id: uint256, amount: uint256):
    """
    @notice Tenant adds `amount` to an open, not yet exhausted lease's budget (pulled
            with transferFrom: approve first).
    @param lease_id The open lease.
    @param amount The amount, more than zero, in payment-token base units.
    """
    lease: Lease = self.leases[lease_id]
    assert lease.tenant != empty(address), "market: unknown lease"
    assert msg.sender == lease.tenant, "market: caller is not the tenant"
    assert lease.closed_at == 0, "market: lease closed"
    assert amount > 0, "market: amount must be positive"
    assert self._accrued(lease) < lease.budget, "market: lease exhausted"
    new_budget: uint256 = lease.budget + amount
    self.leases[lease_id].budget = new_budget
    log LeaseToppedUp(lease_id=lease_id, tenant=lease.tenant, amount=amount, budget=new_budget)
    self._pull(lease.tenant, amount)


@external
@nonreentrant
def close_lease(lease_id: uint256):
    """
    @notice Tenant or provider ends the lease now: the provider gets what it earned for
            live time and was not yet paid (minus fee), the tenant gets the rest of the
            lease's escrow back (unspent budget and claimed downtime not yet refunded).
            A verified lease pays only released pay now and keeps the pay accrued but not
            yet released in escrow, for `release` (then `withdraw`) or a refund later.
    @param lease_id The open lease.
    """
    lease: Lease = self.leases[lease_id]
    assert lease.tenant != empty(address), "market: unknown lease"
    assert msg.sender == lease.tenant or msg.sender == lease.provider, "market: caller is not a lease party"
    assert lease.closed_at == 0, "market: lease closed"
    if self.verified[lease.order_id]:
        self._close_verified(lease_id, lease)
        return
    held: uint256 = self._held(lease)
    lease.closed_at = block.timestamp
    earned: uint256 = self._earned(lease, 0)
    owed: uint256 = 0
    if earned > lease.paid:
        owed = earned - lease.paid
    # owed <= budget - downtime - paid <= held, since downtime_refunded <= downtime.
    refund: uint256 = held - owed
    self.leases[lease_id].closed_at = lease.closed_at
    self.leases[lease_id].paid = lease.paid + owed
    fee: uint256 = owed * self.fee_bps // BPS
    log LeaseClosed(lease_id=lease_id, closed_by=msg.sender, provider_amount=owed - fee, fee=fee, refund=refund)
    self._pay_provider(lease.provider, owed)
    self._push(lease.tenant, refund)


@internal
def _close_verified(lease_id: uint256, lease: Lease):
    rel: Release = self.releases[lease_id]
    lease.closed_at = block.timestamp
    earned: uint256 = self._released_earned(lease, rel)
    owed: uint256 = 0
    if earned > lease.paid:
        owed = earned - lease.paid
    lease.paid += owed
    refund: uint256 = self._excess(lease, rel)
    self.leases[lease_id].closed_at = lease.closed_at
    self.leases[lease_id].paid = lease.paid
    self.releases[lease_id].refunded = rel.refunded + refund
    fee: uint256 = owed * self.fee_bps // BPS
    log LeaseClosed(lease_id=lease_id, closed_by=msg.sender, provider_amount=owed - fee, fee=fee, refund=refund)
    self._pay_provider(lease.provider, owed)
    self._push(lease.tenant, refund)


@external
@nonreentrant
def release(lease_id: uint256, up_to_round: uint256):
    """
    @notice Anyone releases a verified lease's pay, round by round of its job (the order),
            from `releases(lease).next_round` up to, not including, `up_to_round` (at most
            MAX_RELEASE_ROUNDS at once). Each round whose interval holds pay of this lease
            (from the previous round's root, or the lease start, to this round's root,
            clamped to the close) must be final in Verification; its pay becomes the
            provider's, or, if `proven` for this lease, goes back to the tenant now (capped
            by what the lease holds beyond the provider's claims). Once every posted round is
            walked, pay for time older than `release_delay` is released too: a tenant who
            stops posting roots cannot freeze pay. Withdraw with `withdraw`.
    @param lease_id The verified lease.
    @param up_to_round The first round not walked (at most Verification's `rounds_posted(job)`).
    """
    lease: Lease = self.leases[lease_id]
    assert lease.tenant != empty(address), "market: unknown lease"
    assert self.verified[lease.order_id], "market: lease not verified"
    rel: Release = self.releases[lease_id]
    job: uint256 = lease.order_id
    ver: address = self.verification
    posted: uint256 = staticcall IVerification(ver).rounds_posted(job)
    assert up_to_round <= posted, "market: round not posted"
    assert up_to_round <= rel.next_round + MAX_RELEASE_ROUNDS, "market: too many rounds at once"
    end: uint256 = self._end(lease)
    until: uint256 = max(rel.until, lease.start)
    before: uint256 = until
    released: uint256 = 0
    withheld: uint256 = 0
    refund: uint256 = 0
    first: uint256 = rel.next_round
    for i: uint256 in range(MAX_RELEASE_ROUNDS):
        r: uint256 = first + i
        if r >= up_to_round:
            break
        t: uint256 = min((staticcall IVerification(ver).rounds(job, r)).posted_at, end)
        if t > until:
            assert staticcall IVerification(ver).round_finalized(job, r), "market: round not final"
            amount: uint256 = self._accrued_at(lease, t) - self._accrued_at(lease, until)
            if staticcall IVerification(ver).proven(job, r, lease_id):
                rel.proven += amount
                back: uint256 = min(amount, self._excess(lease, rel))
                rel.refunded += back
                withheld += amount
                refund += back
                log RoundRefunded(lease_id=lease_id, tenant=lease.tenant, round_index=r, amount=amount, refund=back)
            else:
                released += amount
            until = t
    rel.next_round = max(first, up_to_round)
    if rel.next_round == posted and block.timestamp > self.release_delay:
        tail: uint256 = min(end, block.timestamp - self.release_delay)
        if tail > until:
            released += self._accrued_at(lease, tail) - self._accrued_at(lease, until)
            until = tail
    rel.until = until
    assert rel.next_round > first or until > before, "market: nothing to release"
    self.releases[lease_id] = rel
    log PayReleased(
        lease_id=lease_id,
        provider=lease.provider,
        from_round=first,
        to_round=rel.next_round,
        released_until=until,
        amount=released,
        withheld=withheld,
        refund=refund,
    )
    self._push(lease.tenant, refund)


@external
def commit_result(lease_id: uint256, result_hash: bytes32):
    """
    @notice Provider records the content address (sha256) of the lease's result; a
            later call replaces it.
    @param lease_id The caller's lease.
    @param result_hash The sha256 of the result.
    """
    lease: Lease = self.leases[lease_id]
    assert lease.tenant != empty(address), "market: unknown lease"
    assert msg.sender == lease.provider, "market: caller is not the provider"
    self.leases[lease_id].result_hash = result_hash
    log ResultCommitted(lease_id=lease_id, provider=msg.sender, result_hash=result_hash)


@external
@nonreentrant
def claim_downtime(lease_id: uint256, epochs: DynArray[uint256, MAX_CLAIM_EPOCHS]):
    """
    @notice Anyone claims, for the lease's tenant, the pay for Uptime epochs in which the
            lease's provider sent no heartbeat. Each epoch (strictly increasing) must lie
            wholly inside the lease (from its start to now, or to its close), start before
            the budget ran out, and not be claimed before. The pay stops being the
            provider's; as much of it as the lease still holds goes to the tenant now, the
            rest is netted against the provider's later stream (`shortfall` if it cannot
            be). The provider's stake is slashed by `downtime_slash` per epoch, to the
            tenant. A closed lease can be claimed on for `claim_window` seconds.
    @param lease_id The lease.
    @param epochs The epochs without a heartbeat, strictly increasing (1 .. MAX_CLAIM_EPOCHS).
    """
    lease: Lease = self.leases[lease_id]
    assert lease.tenant != empty(address), "market: unknown lease"
    assert len(epochs) > 0, "market: no epochs"
    if lease.closed_at != 0:
        assert block.timestamp <= lease.closed_at + claim_window, "market: claim window over"
    # Epochs ending at or before `end` have ended (and, for a closed lease, ended before the close).
    ended: uint256 = (self._end(lease) - epoch_genesis) // epoch_length
    amount: uint256 = 0
    previous: uint256 = 0
    beat_index: uint256 = 0
    beat_word: uint256 = 0
    for i: uint256 in range(MAX_CLAIM_EPOCHS):
        if i == len(epochs):
            break
        epoch: uint256 = epochs[i]
        assert i == 0 or epoch > previous, "market: epochs not in increasing order"
        previous = epoch
        assert epoch < ended, "market: epoch not ended inside the lease"
        begin: uint256 = epoch_genesis + epoch * epoch_length
        assert begin >= lease.start, "market: epoch starts before the lease"
        before: uint256 = self._accrued_at(lease, begin)
        assert before < lease.budget, "market: epoch after the budget ran out"
        if i == 0 or epoch >> 8 != beat_index:
            beat_index = epoch >> 8
            beat_word = staticcall IUptime(uptime).beat_word(lease.provider, beat_index)
        bit: uint256 = 1 << (epoch & 255)
        assert beat_word & bit == 0, "market: provider was up in that epoch"
        claimed: uint256 = self._claimed[lease_id][beat_index]
        assert claimed & bit == 0, "market: epoch already claimed"
        self._claimed[lease_id][beat_index] = claimed | bit
        amount += self._accrued_at(lease, begin + epoch_length) - before
    lease.downtime += amount
    refund: uint256 = 0
    proven: uint256 = 0
    if self.verified[lease.order_id]:
        rel: Release = self.releases[lease_id]
        proven = rel.proven
        refund = min(amount, self._excess(lease, rel))
    else:
        refund = min(amount, self._held(lease))
    lease.downtime_refunded += refund
    self.leases[lease_id].downtime = lease.downtime
    self.leases[lease_id].downtime_refunded = lease.downtime_refunded
    earned: uint256 = self._earned(lease, proven)
    overdrawn: uint256 = 0
    if lease.paid > earned:
        overdrawn = lease.paid - earned
    slashed: uint256 = 0
    if downtime_slash > 0 and staticcall IProviderRegistry(registry).is_slasher(self):
        slashed = extcall IProviderRegistry(registry).slash(
            lease.provider, len(epochs) * downtime_slash, lease.tenant
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
    self._push(lease.tenant, refund)
