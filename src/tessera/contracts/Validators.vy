# pragma version ~=0.4.3
"""
@title Tessera validator registry
@license GNU Affero General Public License v3.0 or later
@notice Anyone may become a validator by staking at least `min_stake` of the stake token.
        Stake is unbonded through a bucket released after `unbonding_period`, and can be
        slashed by addresses holding the slasher role (set by the owner, a timelock once
        deployed: docs/contracts.md, "Owner powers"); slashing reaches the unbonding bucket
        too, so unbonding cannot dodge a penalty. Other contracts ask `is_validator` before
        accepting a validator's word (probe reports, challenges).
        Weight: a validator's weight is its active stake when that is at least `min_stake`,
        else 0; `total_stake` is the sum of all weights. Both are checkpointed per block
        (like OpenZeppelin Votes), so Verification and HardwareReports weigh a vote by the
        voter's stake at the block before a round opened (`stake_at`) and set the quorum as a
        share of `total_stake_at` that block: stake added later, and validators registered
        later, do not count. Weight is linear in stake, so splitting stake over many
        addresses never gives more weight than one address (below `min_stake`, less).
        Locks: a slasher may `lock` a voter's stake until the thing it voted on is decided;
        `withdraw_unbonded` waits for the lock, so a voter cannot vote and then take its
        stake out of reach. Where a bridge is deployed, the owner names a withdraw guard (the
        home ForgerySlasher): a member of the bridge's current committee cannot withdraw, so
        its attestations stay backed by stake a forgery proof can take.
        A validator may publish an endpoint where it serves its probe receipts.
"""

from ethereum.ercs import IERC20

from .interfaces import IValidators
implements: IValidators


interface IWithdrawGuard:
    def may_withdraw(validator: address) -> bool: view

from snekmate.auth import ownable
initializes: ownable

exports: (ownable.owner, ownable.transfer_ownership, ownable.renounce_ownership)


struct Validator:
    stake: uint256
    unbonding: uint256
    unbond_release: uint256
    registered_at: uint256
    slashed_total: uint256
    endpoint: String[256]


event WithdrawGuardSet:
    guard: indexed(address)


event ValidatorRegistered:
    validator: indexed(address)
    stake: uint256


event ValidatorStakeAdded:
    validator: indexed(address)
    amount: uint256
    total_stake: uint256


event ValidatorUnbondRequested:
    validator: indexed(address)
    amount: uint256
    unbonding_total: uint256
    release_at: uint256


event ValidatorStakeWithdrawn:
    validator: indexed(address)
    amount: uint256


event ValidatorSlashed:
    validator: indexed(address)
    amount: uint256
    recipient: indexed(address)
    slasher: indexed(address)


event ValidatorEndpointSet:
    validator: indexed(address)
    endpoint: String[256]


event ValidatorSlasherSet:
    slasher: indexed(address)
    enabled: bool


event ValidatorLocked:
    validator: indexed(address)
    locked_until: uint256
    by: indexed(address)


# A weight from `block` on (until the next checkpoint).
struct Checkpoint:
    block: uint256
    value: uint256


# The longest a slasher may lock a validator's stake from now: a bound on what a faulty or
# hostile slasher contract could freeze (a vote or a dispute needs hours, not weeks).
MAX_LOCK: public(constant(uint256)) = 30 * 86_400
# The checkpoints of the total weight live under this key (no validator has the zero address).
_TOTAL: constant(address) = empty(address)


stake_token: public(immutable(address))
min_stake: public(immutable(uint256))
unbonding_period: public(immutable(uint256))

validators: public(HashMap[address, Validator])
is_slasher: public(HashMap[address, bool])
_count: uint256
_list: HashMap[uint256, address]
# who -> i -> checkpoint; `_TOTAL` holds the total weight's
_checkpoints: HashMap[address, HashMap[uint256, Checkpoint]]
checkpoint_count: public(HashMap[address, uint256])
total_stake: public(uint256)
# withdraw_unbonded waits for this time (a vote or report the stake backs is undecided)
locked_until: public(HashMap[address, uint256])
# asked by withdraw_unbonded whether the validator may leave (0: nobody is asked)
withdraw_guard: public(address)


@deploy
def __init__(stake_token_: address, min_stake_: uint256, unbonding_period_: uint256):
    """
    @notice The deployer becomes the owner (it grants the slasher role).
    @param stake_token_ The ERC-20 validators stake.
    @param min_stake_ The least active stake (more than zero) for `is_validator`.
    @param unbonding_period_ Seconds between an unbond request and the withdrawal.
    """
    assert stake_token_ != empty(address), "validators: zero stake token"
    assert min_stake_ > 0, "validators: zero minimum stake"
    ownable.__init__()
    stake_token = stake_token_
    min_stake = min_stake_
    unbonding_period = unbonding_period_


@internal
@view
def _check_registered(validator: address):
    assert self.validators[validator].registered_at != 0, "validators: not registered"


@internal
@view
def _weight(who: address) -> uint256:
    v: Validator = self.validators[who]
    if v.registered_at != 0 and v.stake >= min_stake:
        return v.stake
    return 0


@internal
def _push(key: address, amount: uint256):
    n: uint256 = self.checkpoint_count[key]
    if n > 0 and self._checkpoints[key][n - 1].block == block.number:
        self._checkpoints[key][n - 1].value = amount
        return
    self._checkpoints[key][n] = Checkpoint(block=block.number, value=amount)
    self.checkpoint_count[key] = n + 1


@internal
def _reweigh(who: address, before: uint256):
    # Record `who`'s weight (and the total) after a stake change; `before` is the weight
    # read before the change.
    after: uint256 = self._weight(who)
    if after == before:
        return
    self._push(who, after)
    total: uint256 = self.total_stake + after - before
    self.total_stake = total
    self._push(_TOTAL, total)


@internal
@view
def _at(key: address, block_number: uint256) -> uint256:
    assert block_number < block.number, "validators: block not yet final"
    # the last checkpoint at or before `block_number` (binary search)
    low: uint256 = 0
    high: uint256 = self.checkpoint_count[key]
    for _i: uint256 in range(256):
        if low >= high:
            break
        mid: uint256 = (low + high) // 2
        if self._checkpoints[key][mid].block > block_number:
            high = mid
        else:
            low = mid + 1
    if high == 0:
        return 0
    return self._checkpoints[key][high - 1].value


@external
@nonreentrant
def register(stake_amount: uint256):
    """
    @notice Register the caller as a validator with `stake_amount` (pulled with
            transferFrom: approve first). Once per address.
    @param stake_amount The initial stake, at least `min_stake`.
    """
    assert self.validators[msg.sender].registered_at == 0, "validators: already registered"
    assert stake_amount >= min_stake, "validators: stake below minimum"
    self.validators[msg.sender] = Validator(
        stake=stake_amount,
        unbonding=0,
        unbond_release=0,
        registered_at=block.timestamp,
        slashed_total=0,
        endpoint="",
    )
    self._list[self._count] = msg.sender
    self._count += 1
    self._reweigh(msg.sender, 0)
    log ValidatorRegistered(validator=msg.sender, stake=stake_amount)
    assert extcall IERC20(stake_token).transferFrom(msg.sender, self, stake_amount, default_return_value=True), "validators: stake transfer failed"


@external
@nonreentrant
def add_stake(amount: uint256):
    """
    @notice A registered validator adds `amount` to its active stake (pulled with
            transferFrom: approve first).
    @param amount The stake to add, more than zero.
    """
    self._check_registered(msg.sender)
    assert amount > 0, "validators: amount must be positive"
    before: uint256 = self._weight(msg.sender)
    self.validators[msg.sender].stake += amount
    self._reweigh(msg.sender, before)
    log ValidatorStakeAdded(validator=msg.sender, amount=amount, total_stake=self.validators[msg.sender].stake)
    assert extcall IERC20(stake_token).transferFrom(msg.sender, self, amount, default_return_value=True), "validators: stake transfer failed"


@external
def set_endpoint(endpoint: String[256]):
    """
    @notice A registered validator publishes (or clears, with "") the URL where it serves
            its probe receipts.
    @param endpoint The URL.
    """
    self._check_registered(msg.sender)
    self.validators[msg.sender].endpoint = endpoint
    log ValidatorEndpointSet(validator=msg.sender, endpoint=endpoint)


@external
def request_unbond(amount: uint256):
    """
    @notice Move `amount` from active stake to the unbonding bucket, withdrawable after
            `unbonding_period`; every request restarts the bucket's release clock.
    @param amount The stake to unbond, more than zero and at most the active stake.
    """
    self._check_registered(msg.sender)
    assert amount > 0, "validators: amount must be positive"
    assert amount <= self.validators[msg.sender].stake, "validators: amount exceeds stake"
    before: uint256 = self._weight(msg.sender)
    self.validators[msg.sender].stake -= amount
    self.validators[msg.sender].unbonding += amount
    self._reweigh(msg.sender, before)
    release: uint256 = block.timestamp + unbonding_period
    self.validators[msg.sender].unbond_release = release
    log ValidatorUnbondRequested(
        validator=msg.sender, amount=amount, unbonding_total=self.validators[msg.sender].unbonding, release_at=release
    )


@external
@nonreentrant
def withdraw_unbonded():
    """
    @notice Once the release time has passed, no lock holds the stake (a vote or report it
            backs is still undecided: `locked_until`) and the withdraw guard (if any) lets the
            caller go (not a member of the bridge's current committee), send the whole
            unbonding bucket back to the caller. The validator stays registered.
    """
    self._check_registered(msg.sender)
    amount: uint256 = self.validators[msg.sender].unbonding
    assert amount > 0, "validators: nothing to withdraw"
    assert block.timestamp >= self.validators[msg.sender].unbond_release, "validators: still unbonding"
    assert block.timestamp >= self.locked_until[msg.sender], "validators: stake locked by an undecided vote"
    guard: address = self.withdraw_guard
    if guard != empty(address):
        assert staticcall IWithdrawGuard(guard).may_withdraw(msg.sender), "validators: a bridge committee member"
    self.validators[msg.sender].unbonding = 0
    self.validators[msg.sender].unbond_release = 0
    log ValidatorStakeWithdrawn(validator=msg.sender, amount=amount)
    assert extcall IERC20(stake_token).transfer(msg.sender, amount, default_return_value=True), "validators: transfer failed"


@external
@nonreentrant
def slash(validator: address, amount: uint256, recipient: address) -> uint256:
    """
    @notice A slasher takes up to `amount` from a registered validator, active stake
            first, then the unbonding bucket, and sends it to `recipient`.
    @param validator The validator to slash.
    @param amount The most to take, in stake-token base units.
    @param recipient Who receives what was taken (not the zero address).
    @return uint256 What was taken (less than `amount` if the validator had less).
    """
    assert self.is_slasher[msg.sender], "validators: caller is not a slasher"
    self._check_registered(validator)
    assert recipient != empty(address), "validators: zero recipient"
    before: uint256 = self._weight(validator)
    v: Validator = self.validators[validator]
    from_stake: uint256 = min(amount, v.stake)
    from_unbonding: uint256 = min(amount - from_stake, v.unbonding)
    total: uint256 = from_stake + from_unbonding
    v.stake -= from_stake
    v.unbonding -= from_unbonding
    v.slashed_total += total
    self.validators[validator] = v
    self._reweigh(validator, before)
    log ValidatorSlashed(validator=validator, amount=total, recipient=recipient, slasher=msg.sender)
    if total > 0:
        assert extcall IERC20(stake_token).transfer(recipient, total, default_return_value=True), "validators: transfer failed"
    return total


@external
def lock(validator: address, until: uint256):
    """
    @notice A slasher (Verification, HardwareReports) keeps a voter's stake from being
            withdrawn before `until`: the time the vote or report it cast is decided. A lock
            never shortens, and reaches at most MAX_LOCK from now.
    @param validator The registered validator.
    @param until The timestamp (merged by max with the current lock).
    """
    assert self.is_slasher[msg.sender], "validators: caller is not a slasher"
    self._check_registered(validator)
    assert until <= block.timestamp + MAX_LOCK, "validators: lock too long"
    locked: uint256 = max(self.locked_until[validator], until)
    self.locked_until[validator] = locked
    log ValidatorLocked(validator=validator, locked_until=locked, by=msg.sender)


@external
def set_withdraw_guard(guard: address):
    """
    @notice The owner names the contract asked before each withdrawal (the home ForgerySlasher,
            which refuses members of the bridge's current committee); zero: none. After
            deployment the owner is the Timelock: a change waits its delay.
    @param guard The guard, or the zero address.
    """
    assert msg.sender == ownable.owner, "validators: caller is not the owner"
    self.withdraw_guard = guard
    log WithdrawGuardSet(guard=guard)


@external
def set_slasher(slasher: address, enabled: bool):
    """
    @notice The owner grants or revokes the slasher role (slash and lock). After deployment
            the owner is the Timelock: a grant waits its delay (docs/contracts.md).
    @param slasher The address (not the zero address).
    @param enabled True to grant, False to revoke.
    """
    assert msg.sender == ownable.owner, "validators: caller is not the owner"
    assert slasher != empty(address), "validators: zero address"
    self.is_slasher[slasher] = enabled
    log ValidatorSlasherSet(slasher=slasher, enabled=enabled)


@external
@view
def is_validator(addr: address) -> bool:
    """
    @notice Whether `addr` is registered and its active stake is at least `min_stake`:
            whether other contracts accept its word.
    @param addr The address asked about.
    @return bool True if it is a validator now.
    """
    v: Validator = self.validators[addr]
    return v.registered_at != 0 and v.stake >= min_stake


@external
@view
def validator_count() -> uint256:
    """
    @notice How many addresses ever registered (active or not): the length of the list.
    @return uint256 The count.
    """
    return self._count


@external
@view
def validator_at(i: uint256) -> address:
    """
    @notice The `i`-th registered validator, in registration order.
    @param i The index, below `validator_count()`.
    @return address The validator's address.
    """
    assert i < self._count, "validators: index out of range"
    return self._list[i]


@external
@view
def stake_of(addr: address) -> uint256:
    """
    @notice A validator's active stake (the unbonding bucket excluded).
    @param addr The validator's address.
    @return uint256 The stake, in stake-token base units.
    """
    return self.validators[addr].stake


@external
@view
def weight_of(addr: address) -> uint256:
    """
    @notice A validator's weight now: its active stake if at least `min_stake`, else 0.
    @param addr The validator's address.
    @return uint256 The weight, in stake-token base units.
    """
    return self._weight(addr)


@external
@view
def stake_at(addr: address, block_number: uint256) -> uint256:
    """
    @notice A validator's weight at the end of block `block_number` (a past block): its
            active stake then if at least `min_stake`, else 0.
    @param addr The validator's address (not the zero address).
    @param block_number A block before the current one.
    @return uint256 The weight then.
    """
    assert addr != _TOTAL, "validators: zero address"
    return self._at(addr, block_number)


@external
@view
def total_stake_at(block_number: uint256) -> uint256:
    """
    @notice The total weight of all validators at the end of block `block_number` (a past
            block): the base of stake-weighted quorums.
    @param block_number A block before the current one.
    @return uint256 The total weight then.
    """
    return self._at(_TOTAL, block_number)
