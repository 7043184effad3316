"""Validators: permissionless staked registry, unbonding delay, slasher role, stake weights
checkpointed per block, locks on voters' stake, and property tests: the contract always holds
exactly the stake its records say it holds, every past block's weights read back as they were,
and splitting stake over addresses never adds weight."""

from __future__ import annotations

import boa
import pytest
from boa.contracts.base_evm_contract import BoaError
from contracts_support import CONTRACTS_DIR, MIN_STAKE, TSTK, UNBONDING_PERIOD, events, key_account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="session")
def validators_factory(factories):  # `factories` sets the search paths (snekmate)
    return boa.load_partial(str(CONTRACTS_DIR / "Validators.vy"))


@pytest.fixture
def vals(system, validators_factory):
    contract = validators_factory.deploy(system.stake.address, MIN_STAKE, UNBONDING_PERIOD)
    contract.set_slasher(system.slasher, True)
    for who in VALIDATORS:
        system.stake.mint(who.address, 1_000 * TSTK)
        with boa.env.prank(who.address):
            system.stake.approve(contract.address, 2**256 - 1)
    return contract


VALIDATORS = [key_account(50 + i) for i in range(3)]


def next_block() -> int:
    """End the current block (same time) and return its number: its weights are final."""
    boa.env.evm.patch.block_number += 1
    return boa.env.evm.patch.block_number - 1


def _register(vals, who, amount=MIN_STAKE):
    with boa.env.prank(who.address):
        vals.register(amount)


def test_register_records_everything(system, vals):
    v0 = VALIDATORS[0]
    bal = system.stake.balanceOf(v0.address)
    assert not vals.is_validator(v0.address) and vals.validator_count() == 0
    _register(vals, v0, 150 * TSTK)
    (ev,) = events(vals, "ValidatorRegistered")
    assert (ev.validator, ev.stake) == (v0.address, 150 * TSTK)
    assert vals.is_validator(v0.address)
    assert vals.validator_count() == 1 and vals.validator_at(0) == v0.address
    assert vals.stake_of(v0.address) == 150 * TSTK
    rec = vals.validators(v0.address)
    assert (rec.stake, rec.unbonding, rec.unbond_release, rec.slashed_total) == (150 * TSTK, 0, 0, 0)
    assert rec.registered_at == boa.env.timestamp
    assert system.stake.balanceOf(v0.address) == bal - 150 * TSTK
    assert system.stake.balanceOf(vals.address) == 150 * TSTK


def test_constructor_refusals(system, validators_factory):
    with boa.reverts("validators: zero stake token"):
        validators_factory.deploy("0x" + "00" * 20, MIN_STAKE, UNBONDING_PERIOD)
    with boa.reverts("validators: zero minimum stake"):
        validators_factory.deploy(system.stake.address, 0, UNBONDING_PERIOD)


def test_register_refusals(system, vals):
    v0 = VALIDATORS[0]
    with boa.reverts("validators: stake below minimum"):
        _register(vals, v0, MIN_STAKE - 1)
    with boa.env.prank(system.outsider.address), boa.reverts("erc20: insufficient allowance"):
        vals.register(MIN_STAKE)  # outsider has tokens but approved only the provider registry
    _register(vals, v0)
    with boa.reverts("validators: already registered"):
        _register(vals, v0)
    assert vals.validator_count() == 1 and vals.stake_of(v0.address) == MIN_STAKE


def test_add_stake(vals):
    v0 = VALIDATORS[0]
    with boa.env.prank(v0.address), boa.reverts("validators: not registered"):
        vals.add_stake(TSTK)
    _register(vals, v0)
    with boa.env.prank(v0.address), boa.reverts("validators: amount must be positive"):
        vals.add_stake(0)
    with boa.env.prank(v0.address):
        vals.add_stake(5 * TSTK)
    (ev,) = events(vals, "ValidatorStakeAdded")
    assert (ev.amount, ev.total_stake) == (5 * TSTK, MIN_STAKE + 5 * TSTK)
    assert vals.stake_of(v0.address) == MIN_STAKE + 5 * TSTK


def test_endpoint(vals):
    v0 = VALIDATORS[0]
    with boa.env.prank(v0.address), boa.reverts("validators: not registered"):
        vals.set_endpoint("http://v0.example")
    _register(vals, v0)
    with boa.env.prank(v0.address):
        vals.set_endpoint("http://v0.example")
    (ev,) = events(vals, "ValidatorEndpointSet")
    assert (ev.validator, ev.endpoint) == (v0.address, "http://v0.example")
    assert vals.validators(v0.address).endpoint == "http://v0.example"


def test_unbond_delay_early_and_double_withdrawal(system, vals):
    v0 = VALIDATORS[0]
    _register(vals, v0, MIN_STAKE + 50 * TSTK)
    with boa.env.prank(v0.address):
        with boa.reverts("validators: amount exceeds stake"):
            vals.request_unbond(MIN_STAKE + 51 * TSTK)
        with boa.reverts("validators: amount must be positive"):
            vals.request_unbond(0)
        with boa.reverts("validators: nothing to withdraw"):
            vals.withdraw_unbonded()
        vals.request_unbond(30 * TSTK)
    (ev,) = events(vals, "ValidatorUnbondRequested")
    assert (ev.amount, ev.unbonding_total, ev.release_at) == (
        30 * TSTK, 30 * TSTK, boa.env.timestamp + UNBONDING_PERIOD)
    assert vals.is_validator(v0.address)  # 120 still >= 100
    boa.env.time_travel(seconds=UNBONDING_PERIOD - 1)
    with boa.env.prank(v0.address), boa.reverts("validators: still unbonding"):
        vals.withdraw_unbonded()  # early
    boa.env.time_travel(seconds=1)
    bal = system.stake.balanceOf(v0.address)
    with boa.env.prank(v0.address):
        vals.withdraw_unbonded()
        (ev,) = events(vals, "ValidatorStakeWithdrawn")
        assert ev.amount == 30 * TSTK
        with boa.reverts("validators: nothing to withdraw"):
            vals.withdraw_unbonded()  # double
    assert system.stake.balanceOf(v0.address) == bal + 30 * TSTK
    rec = vals.validators(v0.address)
    assert (rec.stake, rec.unbonding, rec.unbond_release) == (MIN_STAKE + 20 * TSTK, 0, 0)


def test_unbond_by_unregistered_refused(vals):
    with boa.env.prank(VALIDATORS[0].address):
        with boa.reverts("validators: not registered"):
            vals.request_unbond(1)
        with boa.reverts("validators: not registered"):
            vals.withdraw_unbonded()


def test_unbonding_below_minimum_stops_validating_and_add_stake_restores(vals):
    v0 = VALIDATORS[0]
    _register(vals, v0)
    with boa.env.prank(v0.address):
        vals.request_unbond(1)
    assert not vals.is_validator(v0.address)
    with boa.env.prank(v0.address):
        vals.request_unbond(MIN_STAKE - 1)  # all of it
    assert not vals.is_validator(v0.address) and vals.stake_of(v0.address) == 0
    with boa.env.prank(v0.address):
        vals.add_stake(MIN_STAKE)
    assert vals.is_validator(v0.address)
    assert vals.validator_count() == 1  # a comeback is not a second entry


def test_slash_role(system, vals):
    v0 = VALIDATORS[0]
    _register(vals, v0)
    for caller in (system.outsider.address, system.owner, v0.address):
        with boa.env.prank(caller), boa.reverts("validators: caller is not a slasher"):
            vals.slash(v0.address, 1, caller)
    for caller in (system.outsider.address, system.slasher, v0.address):
        with boa.env.prank(caller), boa.reverts("validators: caller is not the owner"):
            vals.set_slasher(caller, True)
    with boa.reverts("validators: zero address"):
        vals.set_slasher("0x" + "00" * 20, True)
    vals.set_slasher(system.outsider.address, True)
    (ev,) = events(vals, "ValidatorSlasherSet")
    assert (ev.slasher, ev.enabled) == (system.outsider.address, True)
    with boa.env.prank(system.outsider.address):
        vals.slash(v0.address, 1, system.treasury)
    vals.set_slasher(system.outsider.address, False)
    with boa.env.prank(system.outsider.address), boa.reverts("validators: caller is not a slasher"):
        vals.slash(v0.address, 1, system.treasury)
    assert vals.stake_of(v0.address) == MIN_STAKE - 1


def test_slash_refusals(system, vals):
    with boa.env.prank(system.slasher), boa.reverts("validators: not registered"):
        vals.slash(VALIDATORS[0].address, 1, system.treasury)
    _register(vals, VALIDATORS[0])
    with boa.env.prank(system.slasher), boa.reverts("validators: zero recipient"):
        vals.slash(VALIDATORS[0].address, 1, "0x" + "00" * 20)
    assert vals.stake_of(VALIDATORS[0].address) == MIN_STAKE


def test_slash_reaches_unbonding_and_is_capped(system, vals):
    v0 = VALIDATORS[0]
    _register(vals, v0)
    with boa.env.prank(v0.address):
        vals.request_unbond(60 * TSTK)  # 40 active, 60 unbonding
    before = system.stake.balanceOf(system.treasury)
    with boa.env.prank(system.slasher):
        got = vals.slash(v0.address, 70 * TSTK, system.treasury)
    assert got == 70 * TSTK
    (ev,) = events(vals, "ValidatorSlashed")
    assert (ev.validator, ev.amount, ev.recipient, ev.slasher) == (
        v0.address, 70 * TSTK, system.treasury, system.slasher)
    rec = vals.validators(v0.address)
    assert (rec.stake, rec.unbonding, rec.slashed_total) == (0, 30 * TSTK, 70 * TSTK)
    assert system.stake.balanceOf(system.treasury) == before + 70 * TSTK
    with boa.env.prank(system.slasher):
        assert vals.slash(v0.address, 10**30, system.treasury) == 30 * TSTK
    rec = vals.validators(v0.address)
    assert (rec.stake, rec.unbonding, rec.slashed_total) == (0, 0, 100 * TSTK)
    assert not vals.is_validator(v0.address)
    boa.env.time_travel(seconds=UNBONDING_PERIOD)
    with boa.env.prank(v0.address), boa.reverts("validators: nothing to withdraw"):
        vals.withdraw_unbonded()


def test_validator_at_out_of_range(vals):
    with boa.reverts("validators: index out of range"):
        vals.validator_at(0)


def test_ownership_transfer(system, vals):
    with boa.env.prank(system.outsider.address), boa.reverts():
        vals.transfer_ownership(system.outsider.address)
    vals.transfer_ownership(system.outsider.address)
    assert vals.owner() == system.outsider.address
    with boa.reverts("validators: caller is not the owner"):
        vals.set_slasher(system.slasher, False)


# -- property: the contract holds exactly sum(stake + unbonding); nobody gains or loses ------

op = st.one_of(
    st.tuples(st.just("register"), st.integers(0, 2), st.integers(MIN_STAKE - TSTK, 300 * TSTK)),
    st.tuples(st.just("add"), st.integers(0, 2), st.integers(0, 100 * TSTK)),
    st.tuples(st.just("unbond"), st.integers(0, 2), st.integers(0, 300 * TSTK)),
    st.tuples(st.just("withdraw"), st.integers(0, 2)),
    st.tuples(st.just("slash"), st.integers(0, 2), st.integers(0, 400 * TSTK)),
    st.tuples(st.just("time"), st.integers(0, 2 * UNBONDING_PERIOD)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=5, max_size=30))
def test_stake_conserved_for_any_sequence(system, vals, ops):
    with boa.env.anchor():
        _run(system, vals, ops)


def _run(system, vals, ops):
    token = system.stake
    parties = [v.address for v in VALIDATORS] + [system.treasury]
    total = sum(token.balanceOf(a) for a in parties) + token.balanceOf(vals.address)
    model = {v.address: [0, 0, 0] for v in VALIDATORS}  # stake, unbonding, release
    history: list[tuple[int, dict]] = []  # (block, weights at its end)
    for step in ops:
        kind = step[0]
        who = VALIDATORS[step[1]].address if kind != "time" else None
        before = {a: token.balanceOf(a) for a in parties}
        try:
            if kind == "register":
                with boa.env.prank(who):
                    vals.register(step[2])
                model[who][0] = step[2]
            elif kind == "add":
                with boa.env.prank(who):
                    vals.add_stake(step[2])
                model[who][0] += step[2]
            elif kind == "unbond":
                with boa.env.prank(who):
                    vals.request_unbond(step[2])
                model[who][0] -= step[2]
                model[who][1] += step[2]
                model[who][2] = boa.env.timestamp + UNBONDING_PERIOD
            elif kind == "withdraw":
                with boa.env.prank(who):
                    vals.withdraw_unbonded()
                assert boa.env.timestamp >= model[who][2]
                assert token.balanceOf(who) == before[who] + model[who][1]
                model[who][1] = 0
            elif kind == "slash":
                with boa.env.prank(system.slasher):
                    got = vals.slash(who, step[2], system.treasury)
                assert got == min(step[2], model[who][0] + model[who][1])
                taken = min(step[2], model[who][0])
                model[who][0] -= taken
                model[who][1] -= got - taken
                assert token.balanceOf(system.treasury) == before[system.treasury] + got
            else:
                boa.env.time_travel(seconds=step[1])
        except BoaError:
            # a refusal changes nothing
            assert {a: token.balanceOf(a) for a in parties} == before
        for v in VALIDATORS:
            rec = vals.validators(v.address)
            assert (rec.stake, rec.unbonding) == tuple(model[v.address][:2])
            assert vals.is_validator(v.address) == (rec.registered_at != 0 and rec.stake >= MIN_STAKE)
        held = sum(s + u for s, u, _ in model.values())
        assert token.balanceOf(vals.address) == held
        assert sum(token.balanceOf(a) for a in parties) + held == total
        weights = {a: (m[0] if m[0] >= MIN_STAKE else 0) for a, m in model.items()}
        assert all(vals.weight_of(a) == w for a, w in weights.items())
        assert vals.total_stake() == sum(weights.values())
        history.append((next_block(), weights))
    # every past block reads back as it was (binary search over the checkpoints)
    for block, weights in history:
        assert vals.total_stake_at(block) == sum(weights.values())
        for a, w in weights.items():
            assert vals.stake_at(a, block) == w


# -- weights at past blocks, locks, splitting ------------------------------------------------


def test_weights_are_read_at_past_blocks_only(system, vals):
    """A quorum reads stake at the block before a round opened. The attack: add stake (or
    register) and open or vote in the same block. Weights of the current block cannot be read,
    and a later change never rewrites a past block's weight."""
    v0, v1 = VALIDATORS[:2]
    before = next_block()
    _register(vals, v0)
    with boa.reverts("validators: block not yet final"):
        vals.stake_at(v0.address, boa.env.evm.patch.block_number)
    with boa.reverts("validators: block not yet final"):
        vals.total_stake_at(boa.env.evm.patch.block_number)
    with boa.env.prank(v0.address):
        vals.add_stake(50 * TSTK)  # same block: one checkpoint, the block's last value
    first = next_block()
    _register(vals, v1, MIN_STAKE + 1)
    with boa.env.prank(v0.address):
        vals.request_unbond(60 * TSTK)  # 90 left: below the minimum, no weight
    second = next_block()
    assert vals.checkpoint_count(v0.address) == 2
    assert (vals.stake_at(v0.address, before), vals.total_stake_at(before)) == (0, 0)
    assert vals.stake_at(v0.address, first) == MIN_STAKE + 50 * TSTK
    assert vals.total_stake_at(first) == MIN_STAKE + 50 * TSTK
    assert (vals.stake_at(v0.address, second), vals.stake_at(v1.address, second)) == \
        (0, MIN_STAKE + 1)
    assert vals.total_stake_at(second) == vals.total_stake() == MIN_STAKE + 1
    assert vals.weight_of(v0.address) == 0 and vals.stake_of(v0.address) == 90 * TSTK
    with boa.env.prank(system.slasher):
        vals.slash(v1.address, 2, system.treasury)  # a slash below the minimum ends its weight
    third = next_block()
    assert vals.stake_at(v1.address, third) == 0 and vals.total_stake_at(third) == 0
    assert vals.stake_at(v1.address, second) == MIN_STAKE + 1  # the past is kept
    with boa.reverts("validators: zero address"):
        vals.stake_at("0x" + "00" * 20, second)


def test_lock_keeps_a_voter_from_withdrawing(system, vals):
    """The attack: vote (or report), then unbond and withdraw before the verdict, so that the
    stake behind the vote is out of reach. A slasher (Verification, HardwareReports) locks it;
    withdraw_unbonded waits for the lock, which never shortens and is bounded by MAX_LOCK."""
    v0 = VALIDATORS[0]
    _register(vals, v0)
    until = boa.env.timestamp + 3 * UNBONDING_PERIOD
    for caller in (system.outsider.address, system.owner, v0.address):
        with boa.env.prank(caller), boa.reverts("validators: caller is not a slasher"):
            vals.lock(v0.address, until)
    with boa.env.prank(system.slasher):
        with boa.reverts("validators: not registered"):
            vals.lock(system.outsider.address, until)
        with boa.reverts("validators: lock too long"):
            vals.lock(v0.address, boa.env.timestamp + vals.MAX_LOCK() + 1)
        vals.lock(v0.address, until)
        (ev,) = events(vals, "ValidatorLocked")
        assert (ev.validator, ev.locked_until, ev.by) == (v0.address, until, system.slasher)
        vals.lock(v0.address, until - 100)  # never shortens
    assert vals.locked_until(v0.address) == until
    with boa.env.prank(v0.address):
        vals.request_unbond(MIN_STAKE)
    boa.env.time_travel(seconds=UNBONDING_PERIOD)
    with boa.env.prank(v0.address), boa.reverts("validators: stake locked by an undecided vote"):
        vals.withdraw_unbonded()
    with boa.env.prank(system.slasher):  # still slashable meanwhile
        assert vals.slash(v0.address, TSTK, system.treasury) == TSTK
    boa.env.time_travel(seconds=2 * UNBONDING_PERIOD)
    bal = system.stake.balanceOf(v0.address)
    with boa.env.prank(v0.address):
        vals.withdraw_unbonded()
    assert system.stake.balanceOf(v0.address) == bal + MIN_STAKE - TSTK


SPLITTERS = [key_account(200 + i) for i in range(6)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.integers(MIN_STAKE // 2, 3 * MIN_STAKE), min_size=1, max_size=6))
def test_splitting_stake_never_adds_weight(system, vals, parts):
    """The attack: stake the same tokens from many addresses to count more. Weight is the
    stake itself (0 below the minimum), so the parts together weigh exactly what one address
    staking their sum weighs, or less when a part is below the minimum."""
    with boa.env.anchor():
        for who, amount in zip(SPLITTERS, parts, strict=False):
            system.stake.mint(who.address, amount)
            with boa.env.prank(who.address):
                system.stake.approve(vals.address, amount)
                if amount >= MIN_STAKE:
                    vals.register(amount)
                else:
                    with boa.reverts("validators: stake below minimum"):
                        vals.register(amount)
        whole = VALIDATORS[0]
        one_address = MIN_STAKE <= sum(parts) <= 1_000 * TSTK
        if one_address:
            _register(vals, whole, sum(parts))
        block = next_block()
        split = sum(vals.stake_at(w.address, block) for w in SPLITTERS[:len(parts)])
        assert split == sum(p for p in parts if p >= MIN_STAKE) <= sum(parts)
        if one_address:
            assert vals.stake_at(whole.address, block) == sum(parts) >= split
        assert vals.total_stake_at(block) == split + vals.stake_at(whole.address, block)
