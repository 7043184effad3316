"""ProviderRegistry: registration, offers, stake, unbonding, slashing, jailing."""

from __future__ import annotations

import boa
from contracts_support import MIN_STAKE, TSTK, UNBONDING_PERIOD, events


def _register(system, who, stake=MIN_STAKE, count=2, endpoint="https://p.example"):
    with boa.env.prank(who.address):
        system.registry.register(stake, "L4", count, 24576, 500, endpoint, 123)


def test_register_records_everything(system):
    reg, stake, who = system.registry, system.stake, system.outsider
    n = reg.provider_count()
    bal = stake.balanceOf(who.address)
    _register(system, who, stake=150 * TSTK)
    (ev,) = events(reg, "ProviderRegistered")
    assert ev.provider == who.address and ev.stake == 150 * TSTK
    assert reg.provider_count() == n + 1 and reg.provider_at(n) == who.address
    p = reg.providers(who.address)
    assert (p.stake, p.unbonding, p.gpu_model, p.gpu_count, p.gpu_memory_mb) == (
        150 * TSTK, 0, "L4", 2, 24576)
    assert (p.benchmark_score, p.endpoint, p.price_floor) == (500, "https://p.example", 123)
    assert p.registered_at == boa.env.timestamp and p.jailed_until == 0 and p.slashed_total == 0
    assert stake.balanceOf(who.address) == bal - 150 * TSTK
    assert reg.is_active(who.address) and reg.is_registered(who.address)


def test_register_refusals(system):
    who = system.outsider
    with boa.reverts("registry: stake below minimum"):
        _register(system, who, stake=MIN_STAKE - 1)
    with boa.reverts("registry: gpu_count must be positive"):
        _register(system, who, count=0)
    with boa.reverts("registry: endpoint required"):
        _register(system, who, endpoint="")
    _register(system, who)
    with boa.reverts("registry: already registered"):
        _register(system, who)


def test_register_needs_allowance(system):
    who = system.outsider
    with boa.env.prank(who.address):
        system.stake.approve(system.registry.address, 0)
    with boa.reverts("erc20: insufficient allowance"):
        _register(system, who)


def test_provider_at_out_of_range(system):
    with boa.reverts("registry: index out of range"):
        system.registry.provider_at(system.registry.provider_count())


def test_update_offer(system):
    reg, p0 = system.registry, system.providers[0]
    with boa.env.prank(system.outsider.address), boa.reverts("registry: not registered"):
        reg.update_offer("H200", 8, 141000, 9, "https://x", 5)
    with boa.env.prank(p0.address), boa.reverts("registry: gpu_count must be positive"):
        reg.update_offer("H200", 0, 141000, 9, "https://x", 5)
    with boa.env.prank(p0.address):
        reg.update_offer("H200", 8, 141000, 9, "https://x", 5)
    assert len(events(reg, "OfferUpdated")) == 1
    p = reg.providers(p0.address)
    assert (p.gpu_model, p.gpu_memory_mb, p.benchmark_score, p.endpoint, p.price_floor) == (
        "H200", 141000, 9, "https://x", 5)
    assert p.stake == MIN_STAKE  # untouched


def test_add_stake(system):
    reg, p0 = system.registry, system.providers[0]
    with boa.env.prank(system.outsider.address), boa.reverts("registry: not registered"):
        reg.add_stake(TSTK)
    with boa.env.prank(p0.address), boa.reverts("registry: amount must be positive"):
        reg.add_stake(0)
    with boa.env.prank(p0.address):
        reg.add_stake(5 * TSTK)
    assert reg.providers(p0.address).stake == MIN_STAKE + 5 * TSTK


def test_unbond_delay_and_double_withdraw(system):
    reg, stake, p0 = system.registry, system.stake, system.providers[0]
    with boa.env.prank(p0.address):
        reg.add_stake(50 * TSTK)
        with boa.reverts("registry: amount exceeds stake"):
            reg.request_unbond(MIN_STAKE + 51 * TSTK)
        with boa.reverts("registry: nothing to withdraw"):
            reg.withdraw_unbonded()
        reg.request_unbond(30 * TSTK)
    p = reg.providers(p0.address)
    assert (p.stake, p.unbonding) == (MIN_STAKE + 20 * TSTK, 30 * TSTK)
    assert p.unbond_release == boa.env.timestamp + UNBONDING_PERIOD
    assert reg.is_active(p0.address)  # still >= min

    boa.env.time_travel(seconds=UNBONDING_PERIOD - 10)
    with boa.env.prank(p0.address):
        with boa.reverts("registry: still unbonding"):
            reg.withdraw_unbonded()
        reg.request_unbond(10 * TSTK)  # adds to the bucket and resets the clock
    p = reg.providers(p0.address)
    assert p.unbonding == 40 * TSTK and p.unbond_release == boa.env.timestamp + UNBONDING_PERIOD
    boa.env.time_travel(seconds=20)
    with boa.env.prank(p0.address), boa.reverts("registry: still unbonding"):
        reg.withdraw_unbonded()
    boa.env.time_travel(seconds=UNBONDING_PERIOD)
    bal = stake.balanceOf(p0.address)
    with boa.env.prank(p0.address):
        reg.withdraw_unbonded()
        with boa.reverts("registry: nothing to withdraw"):
            reg.withdraw_unbonded()
    assert stake.balanceOf(p0.address) == bal + 40 * TSTK
    assert reg.providers(p0.address).unbonding == 0


def test_unbond_below_minimum_deactivates(system):
    reg, p0 = system.registry, system.providers[0]
    with boa.env.prank(p0.address):
        reg.request_unbond(1)
    assert not reg.is_active(p0.address)


def test_unbond_by_unregistered(system):
    with boa.env.prank(system.outsider.address), boa.reverts("registry: not registered"):
        system.registry.request_unbond(1)


def test_slash_role(system):
    reg, p0 = system.registry, system.providers[0]
    for caller in (system.outsider.address, system.owner, p0.address):
        with boa.env.prank(caller), boa.reverts("registry: caller is not a slasher"):
            reg.slash(p0.address, 1, caller)
    with boa.env.prank(system.outsider.address), boa.reverts("registry: caller is not the owner"):
        reg.set_slasher(system.outsider.address, True)
    reg.set_slasher(system.outsider.address, True)
    assert reg.is_slasher(system.outsider.address)
    with boa.env.prank(system.outsider.address):
        reg.slash(p0.address, 1, system.treasury)
    reg.set_slasher(system.outsider.address, False)
    with boa.env.prank(system.outsider.address), boa.reverts("registry: caller is not a slasher"):
        reg.slash(p0.address, 1, system.treasury)


def test_slash_reaches_unbonding_bucket(system):
    reg, stake, p0 = system.registry, system.stake, system.providers[0]
    with boa.env.prank(p0.address):
        reg.request_unbond(60 * TSTK)  # 40 active, 60 unbonding
    before = stake.balanceOf(system.treasury)
    with boa.env.prank(system.slasher):
        got = reg.slash(p0.address, 70 * TSTK, system.treasury)
    assert got == 70 * TSTK
    (ev,) = events(reg, "Slashed")
    assert (ev.provider, ev.amount, ev.recipient, ev.slasher) == (
        p0.address, 70 * TSTK, system.treasury, system.slasher)
    p = reg.providers(p0.address)
    assert (p.stake, p.unbonding, p.slashed_total) == (0, 30 * TSTK, 70 * TSTK)
    assert stake.balanceOf(system.treasury) == before + 70 * TSTK
    # capped at what exists
    with boa.env.prank(system.slasher):
        got = reg.slash(p0.address, 10**30, system.treasury)
    assert got == 30 * TSTK
    p = reg.providers(p0.address)
    assert (p.stake, p.unbonding, p.slashed_total) == (0, 0, 100 * TSTK)
    boa.env.time_travel(seconds=UNBONDING_PERIOD + 1)
    with boa.env.prank(p0.address), boa.reverts("registry: nothing to withdraw"):
        reg.withdraw_unbonded()
    assert not reg.is_active(p0.address)


def test_slash_unregistered_refused(system):
    with boa.env.prank(system.slasher), boa.reverts("registry: not registered"):
        system.registry.slash(system.outsider.address, 1, system.treasury)


def test_jail(system):
    """Only slashers jail (contracts that proved a fault). The attack this closes: an owner
    (or a stolen owner key) jailing any provider for any length. The owner may still grant
    itself the slasher role, but only through the Timelock's delay, in the open
    (test_timelock.py)."""
    reg, p0 = system.registry, system.providers[0]
    until = boa.env.timestamp + 1000
    for caller in (system.outsider.address, p0.address, system.owner):
        with boa.env.prank(caller), boa.reverts("registry: caller cannot jail"):
            reg.jail(p0.address, until)
    assert reg.owner() == system.owner and not reg.is_slasher(system.owner)
    with boa.env.prank(system.slasher):
        reg.jail(p0.address, until)
    (ev,) = events(reg, "Jailed")
    assert (ev.provider, ev.until, ev.by) == (p0.address, until, system.slasher)
    assert reg.providers(p0.address).jailed_until == until
    assert not reg.is_active(p0.address)
    # a jail never shortens: a slasher cannot unjail, nor cut another's jail short
    with boa.env.prank(system.slasher):
        reg.jail(p0.address, 0)
        reg.jail(p0.address, until - 500)
    assert reg.providers(p0.address).jailed_until == until
    boa.env.time_travel(seconds=1000)
    assert reg.is_active(p0.address)


def test_ownership_transfer(system):
    reg = system.registry
    with boa.env.prank(system.outsider.address), boa.reverts():
        reg.transfer_ownership(system.outsider.address)
    reg.transfer_ownership(system.outsider.address)
    assert reg.owner() == system.outsider.address
    with boa.reverts("registry: caller is not the owner"):
        reg.set_slasher(system.owner, True)
