"""HardwareReports.vy: validators report failed hardware challenges; reports weigh stake, and a
quorum of the validator stake for one (provider, epoch) does not slash at once but opens a
dispute period. An undisputed round is slashed by anyone after the period; a disputed one is
decided by the validators who did not report, voting on a fresh timed challenge
(docs/hardware.md, "On chain: HardwareReports.vy"). Each attack of issue 10 has a test here:
small-stake validators below the quorum share cannot slash; an honest provider that disputes and
passes is not slashed; a reporter or juror cannot unbond out of reach before the round is
decided."""

from __future__ import annotations

import boa
import pytest
from contracts_support import CONTRACTS_DIR, EPOCH, MIN_STAKE, TSTK, UNBONDING_PERIOD, events, key_account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SLASH = 50 * TSTK
REWARD = 15 * TSTK      # shared by the reporters, by weight
QUORUM_BPS = 3_000   # 180 of 600 TSTK: two of the six validators
JAIL = 86_400
DISPUTE = 2 * 3_600
VOTE = 3_600
JURY_BPS = 5_000
LATE, WRONG, NO_ANSWER = 1, 2, 3
OPEN, PENDING, DISPUTED, SLASHED, CLEARED = 1, 2, 3, 4, 5
EVIDENCE = b"\xee" * 32
VALIDATORS = [key_account(50 + i) for i in range(6)]   # 100 TSTK each: 600 staked
WHALE = key_account(58)
_UPTIME: list = []  # the session Uptime contract, set by `env`


@pytest.fixture(scope="session")
def partials(factories):  # `factories` has set the search paths (snekmate)
    return {name: boa.load_partial(str(CONTRACTS_DIR / f"{name}.vy"))
            for name in ("Validators", "HardwareReports")}


def deployer(n: int) -> str:
    """A dedicated deployer per use, so that an address always holds the same contract
    (titanoboa decodes storage traces per address with the current layout)."""
    return key_account(70 + n).address


def next_block() -> None:
    """A new block at the same time: stake changed so far is final for the next snapshot."""
    boa.env.evm.patch.block_number += 1


def deploy_reports(system, vals, partials, by: int = 1, **overrides):
    args = dict(uptime_=system.uptime.address, validators_=vals.address,
                hardware_slash_=SLASH, reporter_reward_=REWARD, quorum_bps_=QUORUM_BPS,
                jail_period_=JAIL, dispute_period_=DISPUTE, dispute_vote_period_=VOTE,
                jury_quorum_bps_=JURY_BPS)
    args.update(overrides)
    with boa.env.prank(deployer(by)):
        hw = partials["HardwareReports"].deploy(*args.values())
    system.registry.set_slasher(hw.address, True)
    with boa.env.prank(vals.owner()):
        vals.set_slasher(hw.address, True)
    return hw


def add_validators(stake, vals, accounts, amount=MIN_STAKE) -> None:
    for who in accounts:
        stake.mint(who.address, amount + 1_000 * TSTK)
        with boa.env.prank(who.address):
            stake.approve(vals.address, 2**256 - 1)
            vals.register(amount)


@pytest.fixture
def env(system, partials):
    with boa.env.prank(deployer(0)):
        vals = partials["Validators"].deploy(system.stake.address, MIN_STAKE, UNBONDING_PERIOD)
    add_validators(system.stake, vals, VALIDATORS)
    hw = deploy_reports(system, vals, partials)
    boa.env.time_travel(seconds=5 * EPOCH)  # a few epochs after genesis (and blocks)
    _UPTIME[:] = [system.uptime]
    return system, vals, hw


def report(hw, who, provider, epoch=None, outcome=LATE, evidence=EVIDENCE):
    epoch = hw_epoch(hw) if epoch is None else epoch
    with boa.env.prank(who.address):
        hw.report(provider, epoch, outcome, evidence)


def hw_epoch(hw) -> int:
    """The Uptime epoch as `hw` sees it (the session's Uptime contract, checked)."""
    uptime = _UPTIME[0]
    assert hw.uptime() == uptime.address
    return uptime.current_epoch()


def reach_quorum(hw, provider, reporters=VALIDATORS[:2]) -> int:
    """Reports enough for the quorum (2 x 100 of 600 TSTK >= 30 %); returns the epoch."""
    epoch = hw_epoch(hw)
    for v in reporters:
        report(hw, v, provider, epoch)
    assert hw.rounds(provider, epoch).status == PENDING
    return epoch


def dispute(hw, provider: str, epoch: int) -> None:
    with boa.env.prank(provider):
        hw.dispute(epoch)


def jury_vote(hw, who, provider: str, epoch: int, passed: bool) -> None:
    with boa.env.prank(who.address):
        hw.vote_dispute(provider, epoch, passed)


def execute(hw, provider: str, epoch: int, caller: str | None = None) -> None:
    with boa.env.prank(caller or key_account(99).address):
        hw.execute(provider, epoch)

# ---------------------------------------------------------------- constructor


@pytest.mark.parametrize(("change", "message"), [
    ({"uptime_": "0x" + "00" * 20}, "zero uptime"),
    ({"validators_": "0x" + "00" * 20}, "zero validators"),
    ({"hardware_slash_": 0}, "zero slash"),
    ({"quorum_bps_": 0}, "quorum_bps out of range"),
    ({"quorum_bps_": 10_001}, "quorum_bps out of range"),
    ({"jail_period_": 0}, "zero jail period"),
    ({"dispute_period_": 0}, "zero dispute period"),
    ({"dispute_vote_period_": 0}, "zero dispute period"),
    ({"jury_quorum_bps_": 0}, "jury_quorum_bps out of range"),
    ({"jury_quorum_bps_": 10_001}, "jury_quorum_bps out of range"),
    ({"dispute_period_": 30 * 86_400}, "periods exceed the 30-day validator lock"),
])
def test_constructor_refuses_bad_parameters(env, partials, change, message):
    system, vals, _ = env
    with boa.reverts(f"hardware: {message}"):
        deploy_reports(system, vals, partials, by=2, **change)


def test_reads_registry_token_and_epoch_through_uptime(env):
    system, vals, hw = env
    assert hw.registry() == system.registry.address
    assert hw.stake_token() == system.stake.address
    assert hw.validators() == vals.address and hw.epoch_length() == EPOCH
    assert (hw.hardware_slash(), hw.reporter_reward(), hw.quorum_bps(), hw.jail_period(),
            hw.dispute_period(), hw.dispute_vote_period(), hw.jury_quorum_bps()) == \
        (SLASH, REWARD, QUORUM_BPS, JAIL, DISPUTE, VOTE, JURY_BPS)
    assert hw.quorum() == (600 * TSTK * QUORUM_BPS + 9_999) // 10_000

# ---------------------------------------------------------------- refusals


def test_refusals_name_the_problem(env):
    system, vals, hw = env
    p = system.providers[0].address
    now = hw_epoch(hw)
    cases = [
        (system.outsider, dict(provider=p), "caller is not a validator"),
        (VALIDATORS[0], dict(provider=VALIDATORS[0].address), "a validator cannot report itself"),
        (VALIDATORS[0], dict(provider=p, outcome=0), "unknown outcome"),
        (VALIDATORS[0], dict(provider=p, outcome=4), "unknown outcome"),
        (VALIDATORS[0], dict(provider=p, evidence=b"\x00" * 32), "empty evidence"),
        (VALIDATORS[0], dict(provider=system.outsider.address), "provider not registered"),
        (VALIDATORS[0], dict(provider=p, epoch=now + 1), "epoch in the future"),
        (VALIDATORS[0], dict(provider=p, epoch=now - 2), "epoch too old"),
    ]
    for who, kwargs, message in cases:
        with boa.reverts(f"hardware: {message}"):
            report(hw, who, **kwargs)
    assert hw.report_count(p, now) == 0 and hw.rounds(p, now).status == 0
    with boa.reverts("hardware: nothing to dispute"):
        dispute(hw, p, now)
    with boa.reverts("hardware: nothing to execute"):
        execute(hw, p, now)
    with boa.reverts("hardware: no dispute to vote on"):
        jury_vote(hw, VALIDATORS[0], p, now, True)


def test_previous_epoch_is_accepted_and_duplicates_refused(env):
    system, _, hw = env
    p = system.providers[0].address
    now = hw_epoch(hw)
    report(hw, VALIDATORS[0], p, epoch=now - 1)
    report(hw, VALIDATORS[0], p, epoch=now)  # another epoch: a separate round
    with boa.reverts("hardware: already reported"):
        report(hw, VALIDATORS[0], p, epoch=now - 1, outcome=WRONG)
    assert hw.report_count(p, now - 1) == 1 and hw.report_count(p, now) == 1


def test_unbonded_validator_cannot_report(env):
    system, vals, hw = env
    v = VALIDATORS[0]
    with boa.env.prank(v.address):
        vals.request_unbond(1)
    with boa.reverts("hardware: caller is not a validator"):
        report(hw, v, system.providers[0].address)


def test_a_validator_registered_after_the_round_opened_cannot_report(env):
    """Stake that joins after the first report does not weigh in the round."""
    system, vals, hw = env
    p = system.providers[0].address
    report(hw, VALIDATORS[0], p)
    late = key_account(59)
    add_validators(system.stake, vals, [late], amount=1_000 * TSTK)
    next_block()
    with boa.reverts("hardware: validator joined after the round opened"):
        report(hw, late, p)

# ---------------------------------------------------------------- stake, not heads


def test_three_small_stake_validators_cannot_slash(env, partials):
    """The attack of issue 10: stake three validators at the minimum and report any provider.
    Here one honest validator holds 1,000 TSTK beside them: the three hold 300 of 1,300 TSTK,
    under the 30 % quorum, so no dispute period opens, nothing is locked, nobody is slashed,
    epoch after epoch (with heads counted, their three reports slashed 50 TSTK at once)."""
    system, _, _ = env
    with boa.env.prank(deployer(3)):
        vals = partials["Validators"].deploy(system.stake.address, MIN_STAKE, UNBONDING_PERIOD)
    cartel = [key_account(140 + i) for i in range(3)]
    add_validators(system.stake, vals, cartel)
    add_validators(system.stake, vals, [WHALE], amount=1_000 * TSTK)
    hw = deploy_reports(system, vals, partials, by=4)
    next_block()
    p = system.providers[1].address
    for _ in range(3):
        epoch = hw_epoch(hw)
        for v in cartel:
            report(hw, v, p, epoch, outcome=NO_ANSWER)
        r = hw.rounds(p, epoch)
        assert (r.status, r.reported, r.reporters) == (OPEN, 3 * MIN_STAKE, 3)
        assert r.quorum == (1_300 * TSTK * QUORUM_BPS + 9_999) // 10_000 > r.reported
        with boa.reverts("hardware: nothing to execute"):
            execute(hw, p, epoch)
        boa.env.time_travel(seconds=EPOCH)
    info = system.registry.providers(p)
    assert (info.stake, info.jailed_until, info.slashed_total) == (MIN_STAKE, 0, 0)
    assert system.registry.locked_until(p) == 0 and system.registry.is_active(p)


def test_split_stake_reports_weigh_what_one_address_does(env, partials):
    """Splitting 300 TSTK over three reporters weighs exactly what one reporter with 300 TSTK
    weighs, and earns the same share of the reward."""
    system, _, _ = env
    with boa.env.prank(deployer(5)):
        vals = partials["Validators"].deploy(system.stake.address, MIN_STAKE, UNBONDING_PERIOD)
    split = [key_account(150 + i) for i in range(3)]
    whole = key_account(155)
    add_validators(system.stake, vals, split)
    add_validators(system.stake, vals, [whole], amount=3 * MIN_STAKE)
    hw = deploy_reports(system, vals, partials, by=6, quorum_bps_=10_000)  # all stake must report
    next_block()
    p = system.providers[2].address
    epoch = hw_epoch(hw)
    for v in [*split, whole]:
        report(hw, v, p, epoch)
    r = hw.rounds(p, epoch)
    assert r.status == PENDING and r.reported == 6 * MIN_STAKE
    assert sum(hw.report_weight(v.address, p, epoch) for v in split) == \
        hw.report_weight(whole.address, p, epoch) == 3 * MIN_STAKE
    boa.env.time_travel(seconds=DISPUTE)
    execute(hw, p, epoch)
    split_reward = sum(hw.reward_of(v.address, p, epoch) for v in split)
    assert split_reward <= hw.reward_of(whole.address, p, epoch) == REWARD // 2

# ---------------------------------------------------------------- quorum, dispute period


def test_fewer_than_quorum_reports_never_slash(env):
    """An honest provider that one validator wrongly reports (under load) keeps its stake."""
    system, _, hw = env
    p = system.providers[0].address
    for _ in range(4):
        report(hw, VALIDATORS[0], p, outcome=NO_ANSWER)
        boa.env.time_travel(seconds=EPOCH)
    info = system.registry.providers(p)
    assert info.stake == MIN_STAKE and info.jailed_until == 0 and info.slashed_total == 0


def test_undisputed_quorum_is_slashed_after_the_period(env):
    """A provider that does not dispute is slashed once the dispute period is over, by anyone;
    meanwhile its stake is locked in the registry, and it is not slashed early."""
    system, _, hw = env
    stake, registry = system.stake, system.registry
    p = system.providers[0].address
    epoch = hw_epoch(hw)
    report(hw, VALIDATORS[0], p, epoch, outcome=LATE)
    (ev,) = events(hw, "HardwareReported")
    assert (ev.weight, ev.reported, ev.quorum) == (MIN_STAKE, MIN_STAKE, 180 * TSTK)
    report(hw, VALIDATORS[1], p, epoch, outcome=WRONG)
    (reached,) = events(hw, "HardwareQuorumReached")
    deadline = boa.env.timestamp + DISPUTE
    assert reached.dispute_deadline == deadline
    assert registry.locked_until(p) == deadline + 2 * VOTE
    # refused once the quorum is reached: the jury is fixed (review 25: copiers emptied it)
    with boa.reverts("hardware: quorum reached"):
        report(hw, VALIDATORS[2], p, epoch, outcome=NO_ANSWER)
    assert hw.rounds(p, epoch).reporters == 2
    assert registry.providers(p).stake == MIN_STAKE and not hw.slashed_in(p, epoch)
    assert hw.decision(p, epoch) == PENDING
    boa.env.time_travel(seconds=DISPUTE - 1)
    with boa.reverts("hardware: not decided yet"):
        execute(hw, p, epoch)
    boa.env.time_travel(seconds=1)
    assert hw.decision(p, epoch) == SLASHED
    supply0 = stake.totalSupply()
    execute(hw, p, epoch)
    (ev,) = events(hw, "HardwareSlashed")
    assert (ev.slashed, ev.reward_pool, ev.reporters, ev.burned) == (SLASH, REWARD, 2, SLASH - REWARD)
    assert ev.jailed_until == boa.env.timestamp + JAIL
    info = registry.providers(p)
    assert info.stake == MIN_STAKE - SLASH and info.slashed_total == SLASH
    assert not registry.is_active(p)
    assert stake.totalSupply() == supply0 - (SLASH - REWARD)
    assert stake.balanceOf(hw.address) == hw.unclaimed() == REWARD
    with boa.reverts("hardware: epoch too old"):  # two hours later, whatever the round
        report(hw, VALIDATORS[3], p, epoch)
    with boa.reverts("hardware: nothing to execute"):
        execute(hw, p, epoch)
    got = 0
    for v in VALIDATORS[:2]:
        before = stake.balanceOf(v.address)
        with boa.env.prank(v.address):
            hw.claim(p, epoch)
        share = stake.balanceOf(v.address) - before
        assert REWARD // 2 <= share <= REWARD // 2 + 1  # equal weights: a half each, to the unit
        got += share
    with boa.env.prank(VALIDATORS[0].address), boa.reverts("hardware: reward already claimed"):
        hw.claim(p, epoch)
    with boa.env.prank(VALIDATORS[3].address), boa.reverts("hardware: no report from caller"):
        hw.claim(p, epoch)
    # every base unit of the pool had an owner: no rounding dust is left behind
    assert got == REWARD and stake.balanceOf(hw.address) == hw.unclaimed() == 0


def test_copying_a_report_that_reached_the_quorum_cannot_empty_the_jury(env):
    """Review 25: reports used to count until the provider disputed, and jurors are not paid,
    so every other validator copied a report that had reached the quorum (a share of the
    reward, no challenge run): the honest provider's dispute had a jury of nobody and it was
    slashed. Now a report after the quorum is refused, and the four who did not report are the
    jury: their votes clear the provider."""
    system, _, hw = env
    p = system.providers[1].address
    epoch = reach_quorum(hw, p)                       # two liars
    for copier in VALIDATORS[2:]:
        with boa.reverts("hardware: quorum reached"):
            report(hw, copier, p, epoch)
    dispute(hw, p, epoch)
    assert hw.rounds(p, epoch).jury_quorum > 0
    for juror in VALIDATORS[2:]:
        jury_vote(hw, juror, p, epoch, passed=True)
    boa.env.time_travel(seconds=VOTE)
    assert hw.decision(p, epoch) == CLEARED
    execute(hw, p, epoch)
    assert system.registry.providers(p).stake == MIN_STAKE


def test_claim_before_slash_is_refused(env):
    system, _, hw = env
    p = system.providers[0].address
    epoch = reach_quorum(hw, p)
    with boa.env.prank(VALIDATORS[0].address), boa.reverts("hardware: not slashed"):
        hw.claim(p, epoch)

# ---------------------------------------------------------------- disputes


def test_an_honest_provider_that_disputes_and_passes_is_not_slashed(env):
    """Two validators (a third of the stake) report an honest provider. It disputes; the four
    validators who did not report time it afresh and vote pass: nobody slashes it, its stake
    unlocks after the vote, the reporters get nothing (and lose nothing but gas)."""
    system, _, hw = env
    registry = system.registry
    p = system.providers[0].address
    epoch = reach_quorum(hw, p)
    unlocked_at = boa.env.timestamp + DISPUTE + 2 * VOTE  # the longest the round can take
    with boa.env.prank(VALIDATORS[2].address), boa.reverts("hardware: nothing to dispute"):
        hw.dispute(epoch)  # only the provider disputes
    dispute(hw, p, epoch)
    (ev,) = events(hw, "HardwareDisputed")
    assert ev.vote_deadline == boa.env.timestamp + VOTE
    assert ev.jury_quorum == (4 * MIN_STAKE * JURY_BPS + 9_999) // 10_000  # 600 - 200 reported
    with boa.reverts("hardware: round disputed"):
        report(hw, VALIDATORS[2], p, epoch)  # the jury is fixed now
    with boa.reverts("hardware: a reporter cannot vote"):
        jury_vote(hw, VALIDATORS[0], p, epoch, False)
    with boa.env.prank(p), boa.reverts("hardware: the provider cannot vote"):
        hw.vote_dispute(p, epoch, True)
    with boa.reverts("hardware: nothing to dispute"):
        dispute(hw, p, epoch)
    for v in VALIDATORS[2:5]:
        jury_vote(hw, v, p, epoch, True)
    with boa.reverts("hardware: already voted"):
        jury_vote(hw, VALIDATORS[2], p, epoch, False)
    jury_vote(hw, VALIDATORS[5], p, epoch, False)  # one dissenting juror
    with boa.reverts("hardware: not decided yet"):
        execute(hw, p, epoch)
    boa.env.time_travel(seconds=VOTE)
    with boa.reverts("hardware: voting closed"):
        jury_vote(hw, VALIDATORS[5], p, epoch, True)
    assert hw.decision(p, epoch) == CLEARED
    execute(hw, p, epoch)
    (cleared,) = events(hw, "HardwareCleared")
    assert (cleared.pass_stake, cleared.fail_stake) == (3 * MIN_STAKE, MIN_STAKE)
    info = registry.providers(p)
    assert (info.stake, info.slashed_total, info.jailed_until) == (MIN_STAKE, 0, 0)
    assert registry.is_active(p) and not hw.slashed_in(p, epoch)
    with boa.env.prank(VALIDATORS[0].address), boa.reverts("hardware: not slashed"):
        hw.claim(p, epoch)
    with boa.reverts("hardware: epoch too old"):  # a cleared round takes no more reports
        report(hw, VALIDATORS[3], p, epoch)
    # the stake stays locked for the longest the round could have taken, no longer
    assert registry.locked_until(p) == unlocked_at


def test_a_lost_validators_role_does_not_silence_the_jury(env):
    """Found by the outside review: when the timelock revoked HardwareReports' slasher role in
    Validators, every jury vote reverted (it locks the juror), so a disputed round had no votes
    and was slashed: an honest provider would have paid. Votes now go through without the lock
    once the role is really gone, and the honest provider is cleared."""
    system, vals, hw = env
    p = system.providers[0].address
    epoch = reach_quorum(hw, p)
    dispute(hw, p, epoch)
    with boa.env.prank(vals.owner()):
        vals.set_slasher(hw.address, False)
    for v in VALIDATORS[2:5]:
        jury_vote(hw, v, p, epoch, True)
    boa.env.time_travel(seconds=VOTE)
    assert hw.decision(p, epoch) == CLEARED
    execute(hw, p, epoch)
    assert system.registry.providers(p).slashed_total == 0


@pytest.mark.parametrize("jury", ["fail", "nobody", "too-few-pass"])
def test_a_disputed_provider_that_fails_or_gets_no_answer_is_slashed(env, jury):
    """After a dispute the slash goes ahead unless enough of the jury's stake says pass: when
    the jurors find it failing, when nobody votes, and when the pass votes are under the jury
    quorum (one juror colluding with the provider cannot save it)."""
    system, _, hw = env
    p = system.providers[1].address
    epoch = reach_quorum(hw, p)
    dispute(hw, p, epoch)
    if jury == "fail":
        for v in VALIDATORS[2:5]:
            jury_vote(hw, v, p, epoch, False)
    elif jury == "too-few-pass":
        jury_vote(hw, VALIDATORS[2], p, epoch, True)  # 100 of 400 TSTK: under half
    boa.env.time_travel(seconds=VOTE)
    assert hw.decision(p, epoch) == SLASHED
    execute(hw, p, epoch)
    assert hw.slashed_in(p, epoch)
    assert system.registry.providers(p).slashed_total == SLASH


def test_dispute_after_the_period_is_refused(env):
    system, _, hw = env
    p = system.providers[0].address
    epoch = reach_quorum(hw, p)
    boa.env.time_travel(seconds=DISPUTE)
    with boa.reverts("hardware: dispute period over"):
        dispute(hw, p, epoch)
    execute(hw, p, epoch)
    assert hw.slashed_in(p, epoch)


def test_jurors_weigh_their_stake_at_the_round_snapshot(env):
    """Stake a juror adds after the round opened does not count, and a validator registered
    after it cannot vote: the reporters cannot buy a jury, nor can the provider."""
    system, vals, hw = env
    p = system.providers[0].address
    epoch = reach_quorum(hw, p)
    late = key_account(59)
    add_validators(system.stake, vals, [late], amount=1_000 * TSTK)
    with boa.env.prank(VALIDATORS[2].address):
        vals.add_stake(500 * TSTK)
    next_block()
    dispute(hw, p, epoch)
    with boa.reverts("hardware: validator joined after the round opened"):
        jury_vote(hw, late, p, epoch, False)
    jury_vote(hw, VALIDATORS[2], p, epoch, True)
    (ev,) = events(hw, "HardwareDisputeVoted")
    assert ev.weight == MIN_STAKE


def test_reporters_and_jurors_cannot_unbond_out_of_reach(env):
    """A reporter (and a juror) requests its unbond right after voting: withdraw_unbonded waits
    until the round can be decided."""
    system, vals, hw = env
    p = system.providers[0].address
    epoch = reach_quorum(hw, p)
    dispute(hw, p, epoch)
    jury_vote(hw, VALIDATORS[2], p, epoch, True)
    for v in (VALIDATORS[0], VALIDATORS[2]):
        assert vals.locked_until(v.address) > boa.env.timestamp + UNBONDING_PERIOD
        with boa.env.prank(v.address):
            vals.request_unbond(MIN_STAKE)
    boa.env.time_travel(seconds=UNBONDING_PERIOD)
    for v in (VALIDATORS[0], VALIDATORS[2]):
        with boa.env.prank(v.address), boa.reverts("validators: stake locked by an undecided vote"):
            vals.withdraw_unbonded()
    boa.env.time_travel(seconds=vals.locked_until(VALIDATORS[0].address) - boa.env.timestamp)
    with boa.env.prank(VALIDATORS[0].address):
        vals.withdraw_unbonded()


def test_a_longer_jail_is_not_shortened(env):
    system, _, hw = env
    p = system.providers[0].address
    far = boa.env.timestamp + 30 * JAIL
    with boa.env.prank(system.slasher):
        system.registry.jail(p, far)  # as Verification would, for longer
    epoch = reach_quorum(hw, p)
    boa.env.time_travel(seconds=DISPUTE)
    execute(hw, p, epoch)
    assert system.registry.providers(p).jailed_until == far


def test_small_stake_reward_is_shared_and_remainder_burned(env, partials):
    """A provider with less left than the reward: the reporters share what was taken, nothing
    is burned or minted beyond it."""
    system, vals, _ = env
    hw = deploy_reports(system, vals, partials, by=7, hardware_slash_=10 * TSTK + 1,
                        reporter_reward_=100 * TSTK)
    p = system.providers[3].address
    supply0 = system.stake.totalSupply()
    epoch = reach_quorum(hw, p, VALIDATORS[:2])
    boa.env.time_travel(seconds=DISPUTE)
    execute(hw, p, epoch)
    assert hw.rounds(p, epoch).reward_pool == 10 * TSTK + 1
    assert system.stake.totalSupply() == supply0
    assert hw.reward_of(VALIDATORS[0].address, p, epoch) == (10 * TSTK + 1) // 2

# ---------------------------------------------------------------- property


ops = st.lists(st.one_of(
    st.tuples(st.just("report"), st.integers(0, 5), st.integers(0, 1)),
    st.tuples(st.just("dispute"), st.just(0), st.integers(0, 1)),
    st.tuples(st.just("vote"), st.integers(0, 5), st.integers(0, 1), st.booleans()),
    st.tuples(st.just("execute"), st.just(0), st.integers(0, 1)),
    st.tuples(st.just("claim"), st.integers(0, 5), st.integers(0, 1)),
    st.tuples(st.just("tick"), st.sampled_from([EPOCH, VOTE, DISPUTE])),
), min_size=1, max_size=30)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=ops)
def test_supply_changes_only_by_the_burn(env, steps):
    """For any sequence of reports, disputes, jury votes, executions, claims and time: the
    stake-token supply shrinks by exactly what was burned, the contract holds exactly the
    unclaimed rewards, and a provider is slashed only for a round whose reports reached the
    quorum and that was not cleared by a jury."""
    system, _, hw = env
    with boa.env.anchor():
        stake = system.stake
        providers = [system.providers[0].address, system.providers[1].address]
        supply0 = stake.totalSupply()
        burned = 0
        rounds: dict[tuple[str, int], int] = {}   # (provider, epoch) -> an epoch seen
        for step in steps:
            kind = step[0]
            if kind == "tick":
                boa.env.time_travel(seconds=step[1])
                continue
            p = providers[step[2]]
            epoch = max([e for (q, e) in rounds if q == p], default=hw_epoch(hw))
            try:
                if kind == "report":
                    epoch = hw_epoch(hw)
                    report(hw, VALIDATORS[step[1]], p, epoch)
                    rounds[(p, epoch)] = epoch
                elif kind == "dispute":
                    dispute(hw, p, epoch)
                elif kind == "vote":
                    jury_vote(hw, VALIDATORS[step[1]], p, epoch, step[3])
                elif kind == "execute":
                    r = hw.rounds(p, epoch)
                    before = stake.balanceOf(system.registry.address)
                    execute(hw, p, epoch)
                    after = hw.rounds(p, epoch)
                    taken = before - stake.balanceOf(system.registry.address)
                    if after.status == SLASHED:
                        assert r.reported >= r.quorum
                        assert not (r.status == DISPUTED and r.pass_stake >= r.jury_quorum
                                    and r.pass_stake > r.fail_stake)
                        burned += taken - after.reward_pool
                    else:
                        assert after.status == CLEARED and taken == 0
                else:
                    with boa.env.prank(VALIDATORS[step[1]].address):
                        hw.claim(p, epoch)
            except Exception as exc:  # a refusal: the checks below show it changed nothing
                if "revert" not in type(exc).__name__.lower() and "BoaError" not in repr(type(exc)):
                    raise
            assert stake.totalSupply() == supply0 - burned
            assert stake.balanceOf(hw.address) == hw.unclaimed()
