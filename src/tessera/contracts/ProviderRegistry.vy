# pragma version ~=0.4.3
"""
@title Tessera provider registry
@license GNU Affero General Public License v3.0 or later
@notice Providers stake the stake token and publish their hardware offer.
        Stake can be unbonded (released after `unbonding_period`) and slashed
        by addresses holding the slasher role; slashing reaches the unbonding
        bucket too, so unbonding cannot dodge a penalty. Nor can withdrawing: while
        the stake backs something a slash may still come from (an open lease, a
        lease's downtime claim window, an open challenge), slashers hold or lock it
        (`hold`, `release_hold`, `lock`) and `withdraw_unbonded` waits.
"""

from ethereum.ercs import IERC20

from .interfaces import IProviderRegistry
implements: IProviderRegistry

from snekmate.auth import ownable
initializes: ownable

exports: (ownable.owner, ownable.transfer_ownership, ownable.renounce_ownership)


event ProviderRegistered:
    provider: indexed(address)
    stake: uint256
    gpu_model: String[64]
    gpu_count: uint32
    gpu_memory_mb: uint32
    benchmark_score: uint256
    endpoint: String[256]
    price_floor: uint256


event OfferUpdated:
    provider: indexed(address)
    gpu_model: String[64]
    gpu_count: uint32
    gpu_memory_mb: uint32
    benchmark_score: uint256
    endpoint: String[256]
    price_floor: uint256


event StakeAdded:
    provider: indexed(address)
    amount: uint256
    total_stake: uint256


event UnbondRequested:
    provider: indexed(address)
    amount: uint256
    unbonding_total: uint256
    release_at: uint256


event StakeWithdrawn:
    provider: indexed(address)
    amount: uint256


event Slashed:
    provider: indexed(address)
    amount: uint256
    recipient: indexed(address)
    slasher: indexed(address)


event Jailed:
    provider: indexed(address)
    until: uint256
    by: indexed(address)


event StakeHeld:
    provider: indexed(address)
    holds: uint256
    locked_until: uint256
    by: indexed(address)


event SlasherSet:
    slasher: indexed(address)
    enabled: bool


stake_token: public(immutable(address))
min_stake: public(immutable(uint256))
unbonding_period: public(immutable(uint256))

# One record per provider; the struct lives in the interface, so that every contract decoding
# the `providers` getter uses this very layout.
providers: public(HashMap[address, IProviderRegistry.Provider])
is_slasher: public(HashMap[address, bool])
provider_count: public(uint256)
# Open obligations (leases) the stake backs; withdraw_unbonded waits for none.
holds: public(HashMap[address, uint256])
# provider => holder => the holds that holder opened (it alone can release them, also after its
# slasher role is revoked, so that a revoked role never freezes a provider's stake)
held_by: public(HashMap[address, HashMap[address, uint256]])
# withdraw_unbonded waits for this time too (claim windows, votes).
locked_until: public(HashMap[address, uint256])
_provider_list: HashMap[uint256, address]
# provider -> its index in registration order (0-based; what provider_at answers for it):
# the bit Uptime's liveness reports give it (docs/uptime.md)
index_of: public(HashMap[address, uint256])


@deploy
def __init__(stake_token_: address, min_stake_: uint256, unbonding_period_: uint256):
    """
    @notice The deployer becomes the owner (it grants the slasher role).
    @param stake_token_ The ERC-20 providers stake.
    @param min_stake_ The least active stake for a provider to be active.
    @param unbonding_period_ Seconds between an unbond request and the withdrawal.
    """
    assert stake_token_ != empty(address), "registry: zero stake token"
    ownable.__init__()
    stake_token = stake_token_
    min_stake = min_stake_
    unbonding_period = unbonding_period_


@internal
@view
def _check_registered(provider: address):
    assert self.providers[provider].registered_at != 0, "registry: not registered"


@internal
def _check_offer(gpu_count: uint32, endpoint: String[256]):
    assert gpu_count > 0, "registry: gpu_count must be positive"
    assert len(endpoint) > 0, "registry: endpoint required"


@external
@nonreentrant
def register(
    stake: uint256,
    gpu_model: String[64],
    gpu_count: uint32,
    gpu_memory_mb: uint32,
    benchmark_score: uint256,
    endpoint: String[256],
    price_floor: uint256,
):
    """
    @notice Register the caller as a provider with an initial `stake` (pulled with
            transferFrom: approve first) and its hardware offer. Once per address.
    @param stake The initial stake, at least `min_stake` and more than zero.
    @param gpu_model The GPU model offered (e.g. "H100"), matched exactly by orders that name one.
    @param gpu_count How many GPUs are offered (more than zero).
    @param gpu_memory_mb Memory per GPU, in MiB.
    @param benchmark_score The provider's own benchmark figure (not checked on chain).
    @param endpoint The URL where the provider serves bids and jobs (not empty).
    @param price_floor The lowest price per GPU-hour it accepts, in payment-token base units.
    """
    assert self.providers[msg.sender].registered_at == 0, "registry: already registered"
    assert stake >= min_stake and stake > 0, "registry: stake below minimum"
    self._check_offer(gpu_count, endpoint)

    self.providers[msg.sender] = IProviderRegistry.Provider(
        stake=stake,
        unbonding=0,
        unbond_release=0,
        gpu_model=gpu_model,
        gpu_count=gpu_count,
        gpu_memory_mb=gpu_memory_mb,
        benchmark_score=benchmark_score,
        endpoint=endpoint,
        price_floor=price_floor,
        registered_at=block.timestamp,
        jailed_until=0,
        slashed_total=0,
    )
    self.index_of[msg.sender] = self.provider_count
    self._provider_list[self.provider_count] = msg.sender
    self.provider_count += 1
    log ProviderRegistered(
        provider=msg.sender,
        stake=stake,
        gpu_model=gpu_model,
        gpu_count=gpu_count,
        gpu_memory_mb=gpu_memory_mb,
        benchmark_score=benchmark_score,
        endpoint=endpoint,
        price_floor=price_floor,
    )
    assert extcall IERC20(stake_token).transferFrom(msg.sender, self, stake, default_return_value=True), "registry: stake transfer failed"


@external
def update_offer(
    gpu_model: String[64],
    gpu_count: uint32,
    gpu_memory_mb: uint32,
    benchmark_score: uint256,
    endpoint: String[256],
    price_floor: uint256,
):
    """
    @notice A registered provider replaces its whole hardware offer (stake is unchanged).
    @param gpu_model The GPU model offered.
    @param gpu_count How many GPUs are offered (more than zero).
    @param gpu_memory_mb Memory per GPU, in MiB.
    @param benchmark_score The provider's own benchmark figure (not checked on chain).
    @param endpoint The URL where the provider serves bids and jobs (not empty).
    @param price_floor The lowest price per GPU-hour it accepts, in payment-token base units.
    """
    self._check_registered(msg.sender)
    self._check_offer(gpu_count, endpoint)
    p: IProviderRegistry.Provider = self.providers[msg.sender]
    p.gpu_model = gpu_model
    p.gpu_count = gpu_count
    p.gpu_memory_mb = gpu_memory_mb
    p.benchmark_score = benchmark_score
    p.endpoint = endpoint
    p.price_floor = price_floor
    self.providers[msg.sender] = p
    log OfferUpdated(
        provider=msg.sender,
        gpu_model=gpu_model,
        gpu_count=gpu_count,
        gpu_memory_mb=gpu_memory_mb,
        benchmark_score=benchmark_score,
        endpoint=endpoint,
        price_floor=price_floor,
    )


@external
@nonreentrant
def add_stake(amount: uint256):
    """
    @notice A registered provider adds `amount` to its active stake (pulled with
            transferFrom: approve first).
    @param amount The stake to add, more than zero.
    """
    self._check_registered(msg.sender)
    assert amount > 0, "registry: amount must be positive"
    self.providers[msg.sender].stake += amount
    log StakeAdded(provider=msg.sender, amount=amount, total_stake=self.providers[msg.sender].stake)
    assert extcall IERC20(stake_token).transferFrom(msg.sender, self, amount, default_return_value=True), "registry: stake transfer failed"


@external
def request_unbond(amount: uint256):
    """
    @notice Move `amount` from active stake to the unbonding bucket, withdrawable after
            `unbonding_period`; every request restarts the bucket's release clock.
            Unbonding stake can still be slashed.
    @param amount The stake to unbond, more than zero and at most the active stake.
    """
    self._check_registered(msg.sender)
    assert amount > 0, "registry: amount must be positive"
    assert amount <= self.providers[msg.sender].stake, "registry: amount exceeds stake"
    self.providers[msg.sender].stake -= amount
    self.providers[msg.sender].unbonding += amount
    release: uint256 = block.timestamp + unbonding_period
    self.providers[msg.sender].unbond_release = release
    log UnbondRequested(
        provider=msg.sender, amount=amount, unbonding_total=self.providers[msg.sender].unbonding, release_at=release
    )


@external
@nonreentrant
def withdraw_unbonded():
    """
    @notice Once the release time has passed, send the whole unbonding bucket back to
            the caller. The provider stays registered.
    """
    self._check_registered(msg.sender)
    amount: uint256 = self.providers[msg.sender].unbonding
    assert amount > 0, "registry: nothing to withdraw"
    assert block.timestamp >= self.providers[msg.sender].unbond_release, "registry: still unbonding"
    assert self.holds[msg.sender] == 0, "registry: stake backs an open lease"
    assert block.timestamp >= self.locked_until[msg.sender], "registry: stake locked by a claim window or challenge"
    self.providers[msg.sender].unbonding = 0
    self.providers[msg.sender].unbond_release = 0
    log StakeWithdrawn(provider=msg.sender, amount=amount)
    assert extcall IERC20(stake_token).transfer(msg.sender, amount, default_return_value=True), "registry: transfer failed"


@external
@nonreentrant
def slash(provider: address, amount: uint256, recipient: address) -> uint256:
    """
    @notice A slasher takes up to `amount` from a registered provider, active stake
            first, then the unbonding bucket, and sends it to `recipient`.
    @param provider The provider to slash.
    @param amount The most to take, in stake-token base units.
    @param recipient Who receives what was taken (not the zero address).
    @return uint256 What was taken (less than `amount` if the provider had less).
    """
    assert self.is_slasher[msg.sender], "registry: caller is not a slasher"
    self._check_registered(provider)
    assert recipient != empty(address), "registry: zero recipient"
    p: IProviderRegistry.Provider = self.providers[provider]
    from_stake: uint256 = min(amount, p.stake)
    from_unbonding: uint256 = min(amount - from_stake, p.unbonding)
    total: uint256 = from_stake + from_unbonding
    p.stake -= from_stake
    p.unbonding -= from_unbonding
    p.slashed_total += total
    self.providers[provider] = p
    log Slashed(provider=provider, amount=total, recipient=recipient, slasher=msg.sender)
    if total > 0:
        assert extcall IERC20(stake_token).transfer(recipient, total, default_return_value=True), "registry: transfer failed"
    return total


@external
def hold(provider: address):
    """
    @notice A slasher marks the provider's stake as backing one more open obligation (the
            Market, when a lease starts): none of it can be withdrawn while any hold is open.
    @param provider The registered provider.
    """
    assert self.is_slasher[msg.sender], "registry: caller is not a slasher"
    self._check_registered(provider)
    holds: uint256 = self.holds[provider] + 1
    self.holds[provider] = holds
    self.held_by[provider][msg.sender] += 1
    log StakeHeld(provider=provider, holds=holds, locked_until=self.locked_until[provider], by=msg.sender)


@external
def release_hold(provider: address, until: uint256):
    """
    @notice The holder ends one hold it opened (the Market, when a lease closes), keeping the
            stake locked until `until`: the end of what can still be claimed against it. A
            caller with no open hold on the provider changes nothing (a Market that had no
            slasher role when the lease started).
    @param provider The provider.
    @param until The timestamp before which the stake stays locked (merged by max).
    """
    mine: uint256 = self.held_by[provider][msg.sender]
    if mine == 0:
        return
    holds: uint256 = self.holds[provider] - 1
    locked: uint256 = max(self.locked_until[provider], until)
    self.held_by[provider][msg.sender] = mine - 1
    self.holds[provider] = holds
    self.locked_until[provider] = locked
    log StakeHeld(provider=provider, holds=holds, locked_until=locked, by=msg.sender)


@external
def lock(provider: address, until: uint256):
    """
    @notice A slasher keeps the provider's stake from being withdrawn before `until`
            (Verification, while a challenge against it is open). A lock never shortens.
    @param provider The registered provider.
    @param until The timestamp.
    """
    assert self.is_slasher[msg.sender], "registry: caller is not a slasher"
    self._check_registered(provider)
    locked: uint256 = max(self.locked_until[provider], until)
    self.locked_until[provider] = locked
    log StakeHeld(provider=provider, holds=self.holds[provider], locked_until=locked, by=msg.sender)


@external
def jail(provider: address, until: uint256):
    """
    @notice A slasher (a contract that proved a fault: Uptime, Verification, HardwareReports)
            jails a registered provider: it is not active before `until`. Only slashers jail:
            the owner cannot. A jail never shortens (merged by max), so no slasher can cut
            short another's jail, nor unjail anyone.
    @param provider The provider to jail.
    @param until The timestamp the jail ends (the later of it and the current one is kept).
    """
    assert self.is_slasher[msg.sender], "registry: caller cannot jail"
    self._check_registered(provider)
    jailed: uint256 = max(self.providers[provider].jailed_until, until)
    self.providers[provider].jailed_until = jailed
    log Jailed(provider=provider, until=jailed, by=msg.sender)


@external
def set_slasher(slasher: address, enabled: bool):
    """
    @notice The owner grants or revokes the slasher role (slash, jail, hold and lock). After
            deployment the owner is the Timelock, so a grant waits its delay, in the open
            (docs/contracts.md, "Owner powers").
    @param slasher The address (not the zero address).
    @param enabled True to grant, False to revoke.
    """
    assert msg.sender == ownable.owner, "registry: caller is not the owner"
    assert slasher != empty(address), "registry: zero address"
    self.is_slasher[slasher] = enabled
    log SlasherSet(slasher=slasher, enabled=enabled)


@internal
@view
def _is_active(p: IProviderRegistry.Provider) -> bool:
    # The one rule of who may take leases (is_active, offer).
    return p.registered_at != 0 and p.stake >= min_stake and p.stake > 0 and block.timestamp >= p.jailed_until


@external
@view
def is_active(provider: address) -> bool:
    """
    @notice Whether `provider` may take leases now: registered, active stake at least
            `min_stake` and above zero, and not jailed.
    @param provider The provider's address.
    @return bool True if it is active.
    """
    p: IProviderRegistry.Provider = self.providers[provider]
    return self._is_active(p)


@external
@view
def offer(provider: address) -> IProviderRegistry.Offer:
    """
    @notice Whether the provider may take leases now (`is_active`) and its offer, with the GPU
            model as its keccak256 hash (what the Market checks before a lease).
    @param provider The provider's address.
    @return IProviderRegistry.Offer Its activity, GPU model hash, GPU count, memory per GPU
            and price floor.
    """
    p: IProviderRegistry.Provider = self.providers[provider]
    return IProviderRegistry.Offer(
        active=self._is_active(p),
        gpu_model_hash=keccak256(p.gpu_model),
        gpu_count=p.gpu_count,
        gpu_memory_mb=p.gpu_memory_mb,
        price_floor=p.price_floor,
    )


@external
@view
def is_registered(provider: address) -> bool:
    """
    @notice Whether `provider` has registered (jailed, slashed or unbonded providers included).
    @param provider The provider's address.
    @return bool True once it has registered.
    """
    return self.providers[provider].registered_at != 0


@external
@view
def provider_at(i: uint256) -> address:
    """
    @notice The `i`-th registered provider, in registration order (for enumeration).
    @param i The index, below `provider_count`.
    @return address The provider's address.
    """
    assert i < self.provider_count, "registry: index out of range"
    return self._provider_list[i]
