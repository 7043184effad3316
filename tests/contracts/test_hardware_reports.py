"""HardwareReports.vy: validators report failed hardware challenges; a quorum of distinct
reports for one (provider, epoch) slashes and jails the provider once, rewards the reporters
(claimable) and burns the rest (docs/hardware.md, "On chain: HardwareReports.vy")."""

from __future__ import annotations

import boa
import pytest
from contracts_support import CONTRACTS_DIR, EPOCH, MIN_STAKE, TSTK, UNBONDING_PERIOD, key_account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SLASH = 50 * TSTK
REWARD = 5 * TSTK
MIN_REPORTS = 3
QUORUM_BPS = 3_334
JAIL = 86_400
LATE, WRONG, NO_ANSWER = 1, 2, 3
EVIDENCE = b"\xee" * 32
VALIDATORS = [key_account(50 + i) for i in range(5)]
_UPTIME: list = []  # the session Uptime contract, set by `env`


@pytest.fixture(scope="session")
def partials(factories):  # `factories` has set the search paths (snekmate)
    return {name: boa.load_partial(str(CONTRACTS_DIR / f"{name}.vy"))
            for name in ("Validators", "HardwareReports")}


def deployer(n: int) -> str:
    """A dedicated deployer per use, so that an address always holds the same contract
    (titanoboa decodes storage traces per address with the current layout)."""
    return key_account(70 + n).address


def deploy_reports(system, vals, partials, by: int = 1, **overrides):
    args = dict(uptime_=system.uptime.address, validators_=vals.address,
                hardware_slash_=SLASH, reporter_reward_=REWARD, min_reports_=MIN_REPORTS,
                quorum_bps_=QUORUM_BPS, jail_period_=JAIL)
    args.update(overrides)
    with boa.env.prank(deployer(by)):
        return partials["HardwareReports"].deploy(*args.values())


def add_validators(stake, vals, accounts) -> None:
    for who in accounts:
        stake.mint(who.address, 1_000 * TSTK)
        with boa.env.prank(who.address):
            stake.approve(vals.address, 2**256 - 1)
            vals.register(MIN_STAKE)


@pytest.fixture
def env(system, partials):
    with boa.env.prank(deployer(0)):
        vals = partials["Validators"].deploy(system.stake.address, MIN_STAKE, UNBONDING_PERIOD)
    add_validators(system.stake, vals, VALIDATORS)
    hw = deploy_reports(system, vals, partials)
    system.registry.set_slasher(hw.address, True)
    boa.env.time_travel(seconds=5 * EPOCH)  # a few epochs after genesis
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

# ---------------------------------------------------------------- constructor


@pytest.mark.parametrize(("change", "message"), [
    ({"uptime_": "0x" + "00" * 20}, "zero uptime"),
    ({"validators_": "0x" + "00" * 20}, "zero validators"),
    ({"hardware_slash_": 0}, "zero slash"),
    ({"min_reports_": 1}, "min_reports below 2"),
    ({"quorum_bps_": 10_001}, "quorum_bps above 10000"),
    ({"jail_period_": 0}, "zero jail period"),
])
def test_constructor_refuses_bad_parameters(env, partials, change, message):
    system, vals, _ = env
    with boa.reverts(f"hardware: {message}"):
        deploy_reports(system, vals, partials, by=2, **change)


def test_reads_registry_and_token_through_uptime(env):
    system, vals, hw = env
    assert hw.registry() == system.registry.address
    assert hw.stake_token() == system.stake.address
    assert hw.validators() == vals.address
    assert (hw.hardware_slash(), hw.reporter_reward(), hw.min_reports(), hw.quorum_bps(),
            hw.jail_period()) == (SLASH, REWARD, MIN_REPORTS, QUORUM_BPS, JAIL)


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
    assert hw.report_count(p, now) == 0


def test_previous_epoch_is_accepted_and_duplicates_refused(env):
    system, _, hw = env
    p = system.providers[0].address
    now = hw_epoch(hw)
    report(hw, VALIDATORS[0], p, epoch=now - 1)
    report(hw, VALIDATORS[0], p, epoch=now)  # another epoch: a separate report
    with boa.reverts("hardware: already reported"):
        report(hw, VALIDATORS[0], p, epoch=now - 1, outcome=WRONG)
    assert hw.report_count(p, now - 1) == 1 and hw.report_count(p, now) == 1


def test_unregistered_validator_after_unbonding_cannot_report(env):
    system, vals, hw = env
    v = VALIDATORS[0]
    with boa.env.prank(v.address):
        vals.request_unbond(1)
    with boa.reverts("hardware: caller is not a validator"):
        report(hw, v, system.providers[0].address)


# ---------------------------------------------------------------- quorum, split, burn


def test_fewer_than_quorum_reports_never_slash(env):
    """An honest provider that some validators wrongly report (under load) keeps its stake:
    two reports per epoch for many epochs change nothing."""
    system, _, hw = env
    p = system.providers[0].address
    for _ in range(6):
        for v in VALIDATORS[:2]:
            report(hw, v, p, outcome=NO_ANSWER)
        boa.env.time_travel(seconds=EPOCH)
    info = system.registry.providers(p)
    assert info.stake == MIN_STAKE and info.jailed_until == 0 and info.slashed_total == 0
    assert system.registry.is_active(p)


def test_quorum_slashes_jails_splits_and_burns_once(env):
    system, _, hw = env
    stake, registry = system.stake, system.registry
    p = system.providers[0].address
    epoch = hw_epoch(hw)
    assert hw.quorum() == MIN_REPORTS  # ceil(5 * 33.34 %) = 2 < 3
    supply0 = stake.totalSupply()
    report(hw, VALIDATORS[0], p, outcome=LATE)
    report(hw, VALIDATORS[1], p, outcome=WRONG)
    assert registry.providers(p).stake == MIN_STAKE and not hw.slashed_in(p, epoch)
    report(hw, VALIDATORS[2], p, outcome=NO_ANSWER)
    events = hw.get_logs()
    slashed = [e for e in events if type(e).__name__ == "HardwareSlashed"]
    assert len(slashed) == 1
    ev = slashed[0]
    assert (ev.slashed, ev.reward_per_reporter, ev.reporters, ev.burned) == \
        (SLASH, REWARD, 3, SLASH - 3 * REWARD)
    assert ev.jailed_until == boa.env.timestamp + JAIL
    info = registry.providers(p)
    assert info.stake == MIN_STAKE - SLASH and info.slashed_total == SLASH
    assert info.jailed_until == boa.env.timestamp + JAIL and not registry.is_active(p)
    assert stake.totalSupply() == supply0 - (SLASH - 3 * REWARD)
    assert stake.balanceOf(hw.address) == hw.unclaimed() == 3 * REWARD
    assert hw.slashed_in(p, epoch)

    with boa.reverts("hardware: already slashed"):
        report(hw, VALIDATORS[3], p)
    for v in VALIDATORS[:3]:
        before = stake.balanceOf(v.address)
        with boa.env.prank(v.address):
            hw.claim(p, epoch)
        assert stake.balanceOf(v.address) == before + REWARD
    with boa.env.prank(VALIDATORS[0].address), boa.reverts("hardware: reward already claimed"):
        hw.claim(p, epoch)
    with boa.env.prank(VALIDATORS[3].address), boa.reverts("hardware: no report from caller"):
        hw.claim(p, epoch)
    assert stake.balanceOf(hw.address) == hw.unclaimed() == 0
    assert registry.providers(p).stake == MIN_STAKE - SLASH  # no double slash


def test_claim_before_slash_is_refused(env):
    system, _, hw = env
    p = system.providers[0].address
    report(hw, VALIDATORS[0], p)
    with boa.env.prank(VALIDATORS[0].address), boa.reverts("hardware: not slashed"):
        hw.claim(p, hw_epoch(hw))


def test_quorum_grows_with_the_validator_list(env):
    system, vals, hw = env
    add_validators(system.stake, vals, [key_account(60 + i) for i in range(7)])  # 12 listed
    assert hw.quorum() == 5  # ceil(12 * 0.3334) = ceil(4.0008)
    p = system.providers[1].address
    for v in VALIDATORS[:4]:
        report(hw, v, p)
    assert not hw.slashed_in(p, hw_epoch(hw))
    report(hw, key_account(60), p)
    assert hw.slashed_in(p, hw_epoch(hw))


def test_a_second_epoch_can_slash_again(env):
    system, _, hw = env
    p = system.providers[2].address
    for _ in range(2):
        for v in VALIDATORS[:3]:
            report(hw, v, p)
        assert hw.slashed_in(p, hw_epoch(hw))
        boa.env.time_travel(seconds=EPOCH)
    assert system.registry.providers(p).slashed_total == 2 * SLASH


def test_a_longer_jail_is_not_shortened(env):
    system, _, hw = env
    p = system.providers[0].address
    far = boa.env.timestamp + 30 * JAIL
    system.registry.jail(p, far)  # the owner may jail (as Verification would, for 7 days)
    for v in VALIDATORS[:3]:
        report(hw, v, p)
    assert system.registry.providers(p).jailed_until == far


def test_small_stake_reward_is_split_and_remainder_burned(env, partials):
    """A provider with less left than quorum × reward: each reporter gets an equal share of what
    was taken, the indivisible remainder is burned, nothing is minted."""
    system, vals, _ = env
    hw = deploy_reports(system, vals, partials, by=3, hardware_slash_=10 * TSTK + 1)
    system.registry.set_slasher(hw.address, True)
    p = system.providers[3].address
    supply0 = system.stake.totalSupply()
    for v in VALIDATORS[:3]:
        report(hw, v, p)
    per = (10 * TSTK + 1) // 3
    assert hw.reward_per_reporter(p, hw_epoch(hw)) == per
    assert system.stake.totalSupply() == supply0 - (10 * TSTK + 1 - 3 * per)
    assert system.stake.balanceOf(hw.address) == hw.unclaimed() == 3 * per


# ---------------------------------------------------------------- property


ops = st.lists(st.one_of(
    st.tuples(st.just("report"), st.integers(0, 4), st.integers(0, 1), st.sampled_from([1, 2, 3])),
    st.tuples(st.just("claim"), st.integers(0, 4), st.integers(0, 1), st.just(0)),
    st.tuples(st.just("tick"), st.just(0), st.just(0), st.just(0)),
), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops)
def test_supply_changes_only_by_the_burn(env, steps):
    """For any sequence of reports, claims and epochs: the stake-token supply shrinks by exactly
    what was burned, the contract holds exactly the unclaimed rewards, and a provider is slashed
    in an epoch only when a quorum of distinct validators reported it there."""
    system, _, hw = env
    with boa.env.anchor():
        stake = system.stake
        providers = [system.providers[0].address, system.providers[1].address]
        supply0 = stake.totalSupply()
        burned = 0
        reporters: dict[tuple[str, int], set[str]] = {}
        slashed: set[tuple[str, int]] = set()
        owed = 0
        claimed: set[tuple[str, str, int]] = set()
        for kind, vi, pi, outcome in steps:
            v, p, epoch = VALIDATORS[vi], providers[pi], hw_epoch(hw)
            key = (p, epoch)
            if kind == "tick":
                boa.env.time_travel(seconds=EPOCH)
            elif kind == "report":
                if v.address in reporters.get(key, set()) or key in slashed:
                    with boa.reverts():
                        report(hw, v, p, outcome=outcome)
                    continue
                before = stake.balanceOf(system.registry.address)
                report(hw, v, p, outcome=outcome)
                reporters.setdefault(key, set()).add(v.address)
                if len(reporters[key]) >= MIN_REPORTS:
                    slashed.add(key)
                    taken = before - stake.balanceOf(system.registry.address)
                    per = min(REWARD, taken // len(reporters[key]))
                    owed += per * len(reporters[key])
                    burned += taken - per * len(reporters[key])
                assert hw.slashed_in(p, epoch) == (key in slashed)
            else:
                ok = key in slashed and v.address in reporters[key] and \
                    (v.address, p, epoch) not in claimed
                if not ok:
                    with boa.reverts():
                        with boa.env.prank(v.address):
                            hw.claim(p, epoch)
                    continue
                with boa.env.prank(v.address):
                    hw.claim(p, epoch)
                claimed.add((v.address, p, epoch))
                owed -= hw.reward_per_reporter(p, epoch)
            assert stake.totalSupply() == supply0 - burned
            assert stake.balanceOf(hw.address) == hw.unclaimed() == owed
        for p in providers:
            assert system.registry.providers(p).slashed_total == \
                SLASH * len([k for k in slashed if k[0] == p]) or \
                system.registry.providers(p).stake + system.registry.providers(p).unbonding == 0
