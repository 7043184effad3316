# pragma version ~=0.4.3
"""
@title Tessera hardware-challenge reports
@license GNU Affero General Public License v3.0 or later
@notice Validators time each provider's hardware claim off chain (docs/hardware.md). A
        registered validator reports a failed challenge here: `report(provider, epoch,
        outcome, evidence)`, once per (validator, provider, epoch), for the current or the
        previous Uptime epoch. When distinct validators' reports for one (provider, epoch)
        reach the quorum `max(min_reports, ceil(quorum_bps * validator_count / 10000))`, the
        report that completes it slashes the provider `hardware_slash` through the registry
        (this contract holds the slasher role) and jails it for `jail_period`. Of what was
        taken, each of the quorum's reporters may claim `min(reporter_reward, taken // quorum)`
        and the rest is burned (StakeToken.burn). Once per (provider, epoch). One validator
        alone cannot slash anyone; a quorum of colluding validators can (docs/hardware.md).
"""

from .interfaces import IProviderRegistry
from .interfaces import IStakeToken
from .interfaces import IUptime
from .interfaces import IValidators


event HardwareReported:
    provider: indexed(address)
    epoch: indexed(uint256)
    validator: indexed(address)
    outcome: uint8
    evidence: bytes32
    reports: uint256
    quorum: uint256


event HardwareSlashed:
    provider: indexed(address)
    epoch: indexed(uint256)
    slashed: uint256
    reward_per_reporter: uint256
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

# reported[validator][provider][epoch]
_NONE: constant(uint8) = 0
_REPORTED: constant(uint8) = 1
_CLAIMED: constant(uint8) = 2

registry: public(immutable(address))
validators: public(immutable(address))
uptime: public(immutable(address))
stake_token: public(immutable(address))
hardware_slash: public(immutable(uint256))
reporter_reward: public(immutable(uint256))
min_reports: public(immutable(uint256))
quorum_bps: public(immutable(uint256))
jail_period: public(immutable(uint256))

reported: public(HashMap[address, HashMap[address, HashMap[uint256, uint8]]])
report_count: public(HashMap[address, HashMap[uint256, uint256]])
# reward each reporter of a slashed (provider, epoch) may claim; 0 until slashed
reward_per_reporter: public(HashMap[address, HashMap[uint256, uint256]])
slashed_in: public(HashMap[address, HashMap[uint256, bool]])
unclaimed: public(uint256)


@deploy
def __init__(
    uptime_: address,
    validators_: address,
    hardware_slash_: uint256,
    reporter_reward_: uint256,
    min_reports_: uint256,
    quorum_bps_: uint256,
    jail_period_: uint256,
):
    """
    @notice The registry and stake token are read from Uptime. Grant this contract the
            registry's slasher role so that a quorum can slash and jail.
    @param uptime_ The Uptime contract (its epochs, and its registry).
    @param validators_ The Validators registry (who may report; the quorum's base).
    @param hardware_slash_ Stake slashed per (provider, epoch) reaching the quorum (more than zero).
    @param reporter_reward_ The most each reporter of a slashing quorum may claim.
    @param min_reports_ The least number of reports that slash (at least 2).
    @param quorum_bps_ The quorum as a share of the validator list, in basis points (<= 10000).
    @param jail_period_ Seconds a slashed provider is jailed for (more than zero).
    """
    assert uptime_ != empty(address), "hardware: zero uptime"
    assert validators_ != empty(address), "hardware: zero validators"
    assert hardware_slash_ > 0, "hardware: zero slash"
    assert min_reports_ >= 2, "hardware: min_reports below 2"
    assert quorum_bps_ <= BPS, "hardware: quorum_bps above 10000"
    assert jail_period_ > 0, "hardware: zero jail period"
    uptime = uptime_
    validators = validators_
    registry = staticcall IUptime(uptime_).registry()
    stake_token = staticcall IProviderRegistry(registry).stake_token()
    hardware_slash = hardware_slash_
    reporter_reward = reporter_reward_
    min_reports = min_reports_
    quorum_bps = quorum_bps_
    jail_period = jail_period_


@internal
@view
def _quorum() -> uint256:
    listed: uint256 = staticcall IValidators(validators).validator_count()
    return max(min_reports, (listed * quorum_bps + BPS - 1) // BPS)


@external
@view
def quorum() -> uint256:
    """
    @notice Distinct reports that slash, with the validator list as it is now.
    @return uint256 max(min_reports, ceil(quorum_bps * validator_count / 10000)).
    """
    return self._quorum()


@external
@nonreentrant
def report(provider: address, epoch: uint256, outcome: uint8, evidence: bytes32):
    """
    @notice The caller, a validator, says `provider` failed its hardware challenge in
            `epoch`; `evidence` is the hash of its signed request and timing record.
            The report that completes the quorum slashes and jails the provider.
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
    assert not self.slashed_in[provider][epoch], "hardware: already slashed"

    self.reported[msg.sender][provider][epoch] = _REPORTED
    count: uint256 = self.report_count[provider][epoch] + 1
    self.report_count[provider][epoch] = count
    q: uint256 = self._quorum()
    log HardwareReported(
        provider=provider, epoch=epoch, validator=msg.sender, outcome=outcome, evidence=evidence,
        reports=count, quorum=q,
    )
    if count < q:
        return

    self.slashed_in[provider][epoch] = True
    taken: uint256 = extcall IProviderRegistry(registry).slash(provider, hardware_slash, self)
    # never shorten a longer jail set by another contract
    until: uint256 = max(
        block.timestamp + jail_period,
        (staticcall IProviderRegistry(registry).providers(provider)).jailed_until,
    )
    extcall IProviderRegistry(registry).jail(provider, until)
    per: uint256 = min(reporter_reward, taken // count)
    burned: uint256 = taken - per * count
    self.reward_per_reporter[provider][epoch] = per
    self.unclaimed += per * count
    log HardwareSlashed(
        provider=provider, epoch=epoch, slashed=taken, reward_per_reporter=per, reporters=count,
        burned=burned, jailed_until=until,
    )
    if burned > 0:
        extcall IStakeToken(stake_token).burn(burned)


@external
@nonreentrant
def claim(provider: address, epoch: uint256):
    """
    @notice A validator whose report was part of a slashing quorum takes its reward, once.
    @param provider The slashed provider.
    @param epoch The epoch it was slashed for.
    """
    assert self.slashed_in[provider][epoch], "hardware: not slashed"
    state: uint8 = self.reported[msg.sender][provider][epoch]
    assert state != _CLAIMED, "hardware: reward already claimed"
    assert state == _REPORTED, "hardware: no report from caller"
    self.reported[msg.sender][provider][epoch] = _CLAIMED
    amount: uint256 = self.reward_per_reporter[provider][epoch]
    self.unclaimed -= amount
    log HardwareRewardClaimed(validator=msg.sender, provider=provider, epoch=epoch, amount=amount)
    if amount > 0:
        assert extcall IStakeToken(stake_token).transfer(msg.sender, amount, default_return_value=True), "hardware: transfer failed"
