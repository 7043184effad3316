# pragma version ~=0.4.3
"""
@title Tessera hardware-challenge reports, with a dispute before any slash
@license GNU Affero General Public License v3.0 or later
@notice Validators time each provider's hardware claim off chain (docs/hardware.md). A
        validator reports a failed challenge here: `report(provider, epoch, outcome,
        evidence)`, once per (validator, provider, epoch), for the current or the previous
        Uptime epoch. The first report for a (provider, epoch) opens a round whose snapshot
        is the block before it: a report weighs the reporter's stake then (Validators.stake_at,
        or its stake now if less), and the quorum is `quorum_bps` of the validators' total
        stake then. Stake, not heads: splitting stake over many addresses gives no more weight.
        A quorum does not slash at once. It opens a dispute period (`dispute_period`) during
        which the provider's registry stake is locked (registry.lock) and the provider may
        `dispute`. Without a dispute, anyone may `execute` the slash once the period is over.
        With one, validators who did not report (and are not the provider) run a fresh timed
        challenge and vote pass or fail (`vote_dispute`, weighted by their stake at the
        round's snapshot) until `dispute_vote_period` has passed. The provider is cleared,
        and nobody slashes it, when the pass weight reaches `jury_quorum_bps` of that jury's
        stake and outweighs the fail votes; otherwise (it failed, or nobody answered)
        `execute` slashes `hardware_slash` and jails it for `jail_period`. Of what was taken,
        the reporters share `min(reporter_reward, taken)` by weight (claim) and the rest is
        burned (StakeToken.burn). Reporters and jurors have their validator stake locked
        (Validators.lock) until the round can be decided.
        False reporters lose nothing but gas: a provider sees who challenges it and could fail
        one validator's challenges on purpose and then pass the dispute, so any penalty on
        reporters would let a provider farm or grief honest validators. What a false report
        costs the provider is bounded: one dispute transaction, and its stake locked for the
        dispute and vote periods. This contract holds the registry's and the Validators'
        slasher roles (slash, jail, lock).
"""

from .interfaces import IProviderRegistry
from .interfaces import IStakeToken
from .interfaces import IUptime
from .interfaces import IValidators


struct Round:
    snapshot: uint256          # the block whose stake weighs reports and jury votes
    quorum: uint256            # reported weight that opens the dispute period
    reported: uint256          # weight of the reports so far
    reporters_stake: uint256   # the reporters' stake at the snapshot (kept out of the jury)
    reporters: uint256
    status: uint8
    dispute_deadline: uint256  # PENDING: the provider may dispute before this
    vote_deadline: uint256     # DISPUTED: jurors vote before this
    jury_quorum: uint256       # pass weight that clears the provider
    pass_stake: uint256
    fail_stake: uint256
    reward_pool: uint256       # SLASHED: what the reporters share by weight


event HardwareReported:
    provider: indexed(address)
    epoch: indexed(uint256)
    validator: indexed(address)
    outcome: uint8
    evidence: bytes32
    weight: uint256
    reported: uint256
    quorum: uint256


event HardwareQuorumReached:
    provider: indexed(address)
    epoch: indexed(uint256)
    reported: uint256
    quorum: uint256
    dispute_deadline: uint256


event HardwareDisputed:
    provider: indexed(address)
    epoch: indexed(uint256)
    vote_deadline: uint256
    jury_quorum: uint256


event HardwareDisputeVoted:
    provider: indexed(address)
    epoch: indexed(uint256)
    validator: indexed(address)
    passed: bool
    weight: uint256


event HardwareCleared:
    provider: indexed(address)
    epoch: indexed(uint256)
    pass_stake: uint256
    fail_stake: uint256


event HardwareSlashed:
    provider: indexed(address)
    epoch: indexed(uint256)
    slashed: uint256
    reward_pool: uint256
    reporters: uint256
    burned: uint256
    jailed_until: uint256


event HardwareRewardClaimed:
    validator: indexed(address)
    provider: indexed(address)
    epoch: indexed(uint256)
    amount: uint256


# Outcomes of a failed challenge (validator/hardware.py: late, wrong, no-answer).
LATE: public(constant(uint8)) = 1
WRONG: public(constant(uint8)) = 2
NO_ANSWER: public(constant(uint8)) = 3
BPS: constant(uint256) = 10_000

# Round.status values (0: no report yet).
OPEN: public(constant(uint8)) = 1       # reports coming in, below the quorum
PENDING: public(constant(uint8)) = 2    # quorum reached: the dispute period runs
DISPUTED: public(constant(uint8)) = 3   # the provider disputed: jurors vote
SLASHED: public(constant(uint8)) = 4
CLEARED: public(constant(uint8)) = 5

# reported[validator][provider][epoch] and juror votes
_NONE: constant(uint8) = 0
_REPORTED: constant(uint8) = 1
_CLAIMED: constant(uint8) = 2
_PASS: constant(uint8) = 1
_FAIL: constant(uint8) = 2

registry: public(immutable(address))
validators: public(immutable(address))
uptime: public(immutable(address))
stake_token: public(immutable(address))
epoch_length: public(immutable(uint256))
hardware_slash: public(immutable(uint256))
reporter_reward: public(immutable(uint256))
quorum_bps: public(immutable(uint256))
jail_period: public(immutable(uint256))
dispute_period: public(immutable(uint256))
dispute_vote_period: public(immutable(uint256))
jury_quorum_bps: public(immutable(uint256))

rounds: public(HashMap[address, HashMap[uint256, Round]])
reported: public(HashMap[address, HashMap[address, HashMap[uint256, uint8]]])
# validator -> provider -> epoch -> the weight of its report
report_weight: public(HashMap[address, HashMap[address, HashMap[uint256, uint256]]])
# validator -> provider -> epoch -> its jury vote (_PASS / _FAIL)
jury_votes: public(HashMap[address, HashMap[address, HashMap[uint256, uint8]]])
unclaimed: public(uint256)
# provider -> epoch -> the reported weight whose reward was claimed so far (exact rounding)
claimed_weight: public(HashMap[address, HashMap[uint256, uint256]])


@deploy
def __init__(
    uptime_: address,
    validators_: address,
    hardware_slash_: uint256,
    reporter_reward_: uint256,
    quorum_bps_: uint256,
    jail_period_: uint256,
    dispute_period_: uint256,
    dispute_vote_period_: uint256,
    jury_quorum_bps_: uint256,
):
    """
    @notice The registry, stake token and epoch length are read from Uptime. Grant this
            contract the registry's and the Validators' slasher roles.
    @param uptime_ The Uptime contract (its epochs, and its registry).
    @param validators_ The Validators registry (who may report; stake weights).
    @param hardware_slash_ Stake slashed per (provider, epoch) slash (more than zero).
    @param reporter_reward_ The most the reporters of a slash share, by weight.
    @param quorum_bps_ The reported share of the total validator stake that opens a dispute
           period, in basis points (1 .. 10000).
    @param jail_period_ Seconds a slashed provider is jailed for (more than zero).
    @param dispute_period_ Seconds the provider has to dispute a quorum (more than zero; with
           two epochs and two vote periods, at most 30 days: the longest validator lock).
    @param dispute_vote_period_ Seconds jurors have to vote on a dispute (more than zero).
    @param jury_quorum_bps_ The share of the jury's stake whose pass votes clear the provider,
           in basis points (1 .. 10000).
    """
    assert uptime_ != empty(address), "hardware: zero uptime"
    assert validators_ != empty(address), "hardware: zero validators"
    assert hardware_slash_ > 0, "hardware: zero slash"
    assert quorum_bps_ > 0 and quorum_bps_ <= BPS, "hardware: quorum_bps out of range"
    assert jail_period_ > 0, "hardware: zero jail period"
    assert dispute_period_ > 0 and dispute_vote_period_ > 0, "hardware: zero dispute period"
    assert jury_quorum_bps_ > 0 and jury_quorum_bps_ <= BPS, "hardware: jury_quorum_bps out of range"
    epoch: uint256 = staticcall IUptime(uptime_).epoch_length()
    # a reporter's lock must fit Validators.MAX_LOCK (30 days), or every report would revert
    assert 2 * epoch + dispute_period_ + 2 * dispute_vote_period_ <= 30 * 86_400, "hardware: periods exceed the 30-day validator lock"
    uptime = uptime_
    validators = validators_
    registry = staticcall IUptime(uptime_).registry()
    stake_token = staticcall IProviderRegistry(registry).stake_token()
    epoch_length = epoch
    hardware_slash = hardware_slash_
    reporter_reward = reporter_reward_
    quorum_bps = quorum_bps_
    jail_period = jail_period_
    dispute_period = dispute_period_
    dispute_vote_period = dispute_vote_period_
    jury_quorum_bps = jury_quorum_bps_


@internal
@pure
def _share(amount: uint256, bps: uint256) -> uint256:
    return (amount * bps + BPS - 1) // BPS


@internal
@view
def _weight(who: address, snapshot: uint256) -> uint256:
    # stake at the snapshot, or now if less: added stake does not count, unbonded stake neither
    return min(staticcall IValidators(validators).weight_of(who),
               staticcall IValidators(validators).stake_at(who, snapshot))


@external
@view
def quorum() -> uint256:
    """
    @notice The reported weight that would open a dispute period for a round opened now
            (a round's own quorum is fixed at its snapshot: `rounds`).
    @return uint256 ceil(quorum_bps * total validator stake at the last block / 10000).
    """
    return self._share(staticcall IValidators(validators).total_stake_at(block.number - 1), quorum_bps)


@external
@view
def report_count(provider: address, epoch: uint256) -> uint256:
    """
    @notice How many validators reported `provider` for `epoch`.
    @param provider The provider.
    @param epoch The Uptime epoch.
    @return uint256 The number of reports.
    """
    return self.rounds[provider][epoch].reporters


@external
@view
def slashed_in(provider: address, epoch: uint256) -> bool:
    """
    @notice Whether `provider` was slashed for `epoch`.
    @param provider The provider.
    @param epoch The Uptime epoch.
    @return bool True once slashed.
    """
    return self.rounds[provider][epoch].status == SLASHED


@internal
def _lock_validator(who: address, until: uint256):
    # A lost role (a timelocked owner action) must not stop reports or jury votes: without
    # votes a disputed round is slashed, so an honest provider would pay for it. A call that
    # fails while the role is held (a caller starving it of gas) reverts instead.
    ok: bool = raw_call(
        validators,
        abi_encode(who, until, method_id=method_id("lock(address,uint256)")),
        revert_on_failure=False,
    )
    assert ok or not staticcall IValidators(validators).is_slasher(self), "hardware: lock failed"


@external
@nonreentrant
def report(provider: address, epoch: uint256, outcome: uint8, evidence: bytes32):
    """
    @notice The caller, a validator, says `provider` failed its hardware challenge in
            `epoch`; `evidence` is the hash of its signed request and timing record. The
            report that brings the reported weight to the round's quorum opens the dispute
            period and locks the provider's stake; later reports are refused: the jury is
            fixed when the quorum is reached, so copying a report that reached it (a share of
            the reward without running the challenge) cannot empty the provider's jury
            (review 25). The caller's own stake is locked until the round can be decided.
    @param provider The provider reported (registered, not the caller).
    @param epoch The Uptime epoch of the challenge: the current or the previous one.
    @param outcome How the challenge failed: LATE, WRONG or NO_ANSWER.
    @param evidence The hash of the validator's signed request and timing record (not zero).
    """
    assert staticcall IValidators(validators).is_validator(msg.sender), "hardware: caller is not a validator"
    assert provider != msg.sender, "hardware: a validator cannot report itself"
    assert outcome >= LATE and outcome <= NO_ANSWER, "hardware: unknown outcome"
    assert evidence != empty(bytes32), "hardware: empty evidence"
    assert staticcall IProviderRegistry(registry).is_registered(provider), "hardware: provider not registered"
    now: uint256 = staticcall IUptime(uptime).current_epoch()
    assert epoch <= now, "hardware: epoch in the future"
    assert epoch + 1 >= now, "hardware: epoch too old"
    assert self.reported[msg.sender][provider][epoch] == _NONE, "hardware: already reported"
    r: Round = self.rounds[provider][epoch]
    assert r.status != SLASHED, "hardware: already slashed"
    assert r.status != CLEARED, "hardware: round cleared"
    # the jury (every validator that did not report) is fixed once the quorum is reached
    assert r.status != PENDING, "hardware: quorum reached"
    assert r.status != DISPUTED, "hardware: round disputed"
    if r.status == 0:
        r.snapshot = block.number - 1
        r.quorum = self._share(staticcall IValidators(validators).total_stake_at(r.snapshot), quorum_bps)
        r.status = OPEN
    weight: uint256 = self._weight(msg.sender, r.snapshot)
    assert weight > 0, "hardware: validator joined after the round opened"
    r.reported += weight
    r.reporters_stake += staticcall IValidators(validators).stake_at(msg.sender, r.snapshot)
    r.reporters += 1
    self.reported[msg.sender][provider][epoch] = _REPORTED
    self.report_weight[msg.sender][provider][epoch] = weight
    log HardwareReported(
        provider=provider, epoch=epoch, validator=msg.sender, outcome=outcome, evidence=evidence,
        weight=weight, reported=r.reported, quorum=r.quorum,
    )
    if r.status == OPEN and r.reported >= r.quorum:
        r.status = PENDING
        r.dispute_deadline = block.timestamp + dispute_period
        log HardwareQuorumReached(
            provider=provider, epoch=epoch, reported=r.reported, quorum=r.quorum,
            dispute_deadline=r.dispute_deadline,
        )
        # a dispute may start at the deadline's last second; one more vote period to execute
        extcall IProviderRegistry(registry).lock(provider, r.dispute_deadline + 2 * dispute_vote_period)
    self.rounds[provider][epoch] = r
    # the round reaches its quorum by the end of epoch + 1 at the latest (2 epochs from now)
    self._lock_validator(msg.sender, block.timestamp + 2 * epoch_length + dispute_period + 2 * dispute_vote_period)


@external
def dispute(epoch: uint256):
    """
    @notice The reported provider disputes the quorum against it for `epoch`, before the
            dispute period ends: validators who did not report then run a fresh timed
            challenge and vote (`vote_dispute`) until `dispute_vote_period` has passed.
    @param epoch The epoch of the round (its status PENDING).
    """
    r: Round = self.rounds[msg.sender][epoch]
    assert r.status == PENDING, "hardware: nothing to dispute"
    assert block.timestamp < r.dispute_deadline, "hardware: dispute period over"
    # the jury: every validator's stake at the snapshot but the reporters' and the provider's
    jury: uint256 = staticcall IValidators(validators).total_stake_at(r.snapshot) - r.reporters_stake
    jury -= min(jury, staticcall IValidators(validators).stake_at(msg.sender, r.snapshot))
    r.status = DISPUTED
    r.vote_deadline = block.timestamp + dispute_vote_period
    r.jury_quorum = self._share(jury, jury_quorum_bps)
    self.rounds[msg.sender][epoch] = r
    log HardwareDisputed(provider=msg.sender, epoch=epoch, vote_deadline=r.vote_deadline, jury_quorum=r.jury_quorum)
    extcall IProviderRegistry(registry).lock(msg.sender, r.vote_deadline + dispute_vote_period)


@external
def vote_dispute(provider: address, epoch: uint256, passed: bool):
    """
    @notice A validator that did not report this round (and is not the provider) says
            whether the provider passed the fresh timed challenge it ran, once, weighing its
            stake at the round's snapshot (or now, if less). Its stake is locked until the
            round can be executed.
    @param provider The provider that disputed.
    @param epoch The epoch of the round (its status DISPUTED).
    @param passed True: the provider answered in time and right.
    """
    r: Round = self.rounds[provider][epoch]
    assert r.status == DISPUTED, "hardware: no dispute to vote on"
    assert block.timestamp < r.vote_deadline, "hardware: voting closed"
    assert msg.sender != provider, "hardware: the provider cannot vote"
    assert self.reported[msg.sender][provider][epoch] == _NONE, "hardware: a reporter cannot vote"
    assert self.jury_votes[msg.sender][provider][epoch] == _NONE, "hardware: already voted"
    assert staticcall IValidators(validators).is_validator(msg.sender), "hardware: caller is not a validator"
    weight: uint256 = self._weight(msg.sender, r.snapshot)
    assert weight > 0, "hardware: validator joined after the round opened"
    if passed:
        self.jury_votes[msg.sender][provider][epoch] = _PASS
        self.rounds[provider][epoch].pass_stake = r.pass_stake + weight
    else:
        self.jury_votes[msg.sender][provider][epoch] = _FAIL
        self.rounds[provider][epoch].fail_stake = r.fail_stake + weight
    log HardwareDisputeVoted(provider=provider, epoch=epoch, validator=msg.sender, passed=passed, weight=weight)
    self._lock_validator(msg.sender, r.vote_deadline + dispute_vote_period)


@external
@view
def decision(provider: address, epoch: uint256) -> uint8:
    """
    @notice What `execute` would do now: SLASHED or CLEARED, or the round's status while
            undecided (0, OPEN, PENDING before its deadline, DISPUTED before the vote ends).
    @param provider The provider.
    @param epoch The epoch of the round.
    @return uint8 The decision.
    """
    return self._decision(self.rounds[provider][epoch])


@internal
@view
def _decision(r: Round) -> uint8:
    if r.status == PENDING and block.timestamp >= r.dispute_deadline:
        return SLASHED
    if r.status == DISPUTED and block.timestamp >= r.vote_deadline:
        if r.pass_stake >= r.jury_quorum and r.pass_stake > r.fail_stake:
            return CLEARED
        return SLASHED
    return r.status


@external
@nonreentrant
def execute(provider: address, epoch: uint256):
    """
    @notice Carry out a decided round; anyone may call it (the outcome is fixed by the
            reports, the jury and the clock). Undisputed after the dispute period, or
            disputed and not cleared by the jury: slash `hardware_slash`, jail, keep the
            reporters' reward and burn the rest. Cleared: nobody is slashed.
    @param provider The reported provider.
    @param epoch The epoch of the round.
    """
    r: Round = self.rounds[provider][epoch]
    assert r.status == PENDING or r.status == DISPUTED, "hardware: nothing to execute"
    outcome: uint8 = self._decision(r)
    assert outcome == SLASHED or outcome == CLEARED, "hardware: not decided yet"
    self.rounds[provider][epoch].status = outcome
    if outcome == CLEARED:
        log HardwareCleared(provider=provider, epoch=epoch, pass_stake=r.pass_stake, fail_stake=r.fail_stake)
        return
    taken: uint256 = extcall IProviderRegistry(registry).slash(provider, hardware_slash, self)
    # never shorten a longer jail set by another contract
    until: uint256 = max(
        block.timestamp + jail_period,
        (staticcall IProviderRegistry(registry).providers(provider)).jailed_until,
    )
    extcall IProviderRegistry(registry).jail(provider, until)
    pool: uint256 = min(reporter_reward, taken)
    burned: uint256 = taken - pool
    self.rounds[provider][epoch].reward_pool = pool
    self.unclaimed += pool
    log HardwareSlashed(
        provider=provider, epoch=epoch, slashed=taken, reward_pool=pool, reporters=r.reporters,
        burned=burned, jailed_until=until,
    )
    if burned > 0:
        extcall IStakeToken(stake_token).burn(burned)


@external
@view
def reward_of(validator: address, provider: address, epoch: uint256) -> uint256:
    """
    @notice What `validator` may claim for its report on a slashed round (0 if nothing).
    @param validator The reporter.
    @param provider The slashed provider.
    @param epoch The epoch of the round.
    @return uint256 About reward_pool * its weight // the reported weight (claims round on
            the running total, so the last claims may get one base unit more).
    """
    r: Round = self.rounds[provider][epoch]
    if r.status != SLASHED or self.reported[validator][provider][epoch] != _REPORTED:
        return 0
    return r.reward_pool * self.report_weight[validator][provider][epoch] // r.reported


@external
@nonreentrant
def claim(provider: address, epoch: uint256):
    """
    @notice A reporter of a slashed round takes its share of the reward, by weight, once.
    @param provider The slashed provider.
    @param epoch The epoch it was slashed for.
    """
    r: Round = self.rounds[provider][epoch]
    assert r.status == SLASHED, "hardware: not slashed"
    state: uint8 = self.reported[msg.sender][provider][epoch]
    assert state != _CLAIMED, "hardware: reward already claimed"
    assert state == _REPORTED, "hardware: no report from caller"
    self.reported[msg.sender][provider][epoch] = _CLAIMED
    # Rounded on the running total of claimed weight: the shares add up to the pool exactly.
    before: uint256 = self.claimed_weight[provider][epoch]
    after: uint256 = before + self.report_weight[msg.sender][provider][epoch]
    self.claimed_weight[provider][epoch] = after
    amount: uint256 = r.reward_pool * after // r.reported - r.reward_pool * before // r.reported
    self.unclaimed -= amount
    log HardwareRewardClaimed(validator=msg.sender, provider=provider, epoch=epoch, amount=amount)
    if amount > 0:
        assert extcall IStakeToken(stake_token).transfer(msg.sender, amount, default_return_value=True), "hardware: transfer failed"
