"""Uptime heartbeats (only registered providers, only the current epoch, once, with a recent
hash) and outage reports (jail after `jail_after` final epochs in which the provider was not
up). Liveness reports, receipt claims and challenges: test_liveness.py."""

from __future__ import annotations

import boa
import pytest
from contracts_support import (
    ANSWER_EPOCHS,
    CHALLENGE_BOND,
    EPOCH,
    INCLUSION_SLASH,
    JAIL_AFTER,
    JAIL_PERIOD,
    MIN_STAKE,
    REPORT_DELAY,
    SETTLE_EPOCHS,
    UNBONDING_PERIOD,
    events,
    heartbeat,
    uptime_args,
)
from eth_utils import keccak

from tessera.protocol import liveness

beat = heartbeat


@pytest.fixture
def uptime(system):
    """The session's Uptime (deployed before the Market; holds the registry's slasher role)."""
    return system.uptime


def advance(seconds: int) -> None:
    boa.env.time_travel(seconds=seconds, block_delta=2)


def test_heartbeat_records_and_logs(system, uptime):
    provider = system.providers[0].address
    assert uptime.current_epoch() == 0
    advance(EPOCH)
    assert uptime.current_epoch() == 1
    beat(uptime, provider)
    logs = uptime.get_logs()
    assert [type(log).__name__ for log in logs] == ["Heartbeat"]
    assert (logs[0].provider, logs[0].epoch) == (provider, 1)
    assert uptime.beats(provider, 1)
    assert not uptime.beats(provider, 0) and not uptime.beats(provider, 2)
    assert not uptime.beats(system.providers[1].address, 1)
    assert uptime.epoch_start(1) == uptime.genesis() + EPOCH


def test_bitmap_spans_words(system, uptime):
    provider = system.providers[0].address
    for epoch in (255, 256, 513):
        advance(uptime.epoch_start(epoch) - boa.env.timestamp)
        beat(uptime, provider)
    assert [uptime.beats(provider, e) for e in (254, 255, 256, 257, 512, 513)] == \
        [False, True, True, False, False, True]


def test_unregistered_caller_refused(system, uptime):
    with boa.reverts("uptime: not registered"):
        beat(uptime, system.outsider.address)


def test_double_beat_refused(system, uptime):
    provider = system.providers[0].address
    beat(uptime, provider)
    boa.env.time_travel(blocks=1)
    with boa.reverts("uptime: already beat this epoch"):
        beat(uptime, provider)
    advance(EPOCH)
    beat(uptime, provider)  # the next epoch is fine again


@pytest.mark.parametrize("offset", [-1, 1, 5])
def test_wrong_epoch_refused(system, uptime, offset):
    advance(3 * EPOCH)
    with boa.reverts("uptime: not the current epoch"):
        beat(uptime, system.providers[0].address, epoch=uptime.current_epoch() + offset)


def test_wrong_block_hash_refused(system, uptime):
    with boa.reverts("uptime: wrong block hash"):
        beat(uptime, system.providers[0].address, block_hash=keccak(b"made up"))


def test_stale_or_future_block_refused(system, uptime):
    provider = system.providers[0].address
    boa.env.time_travel(blocks=400)
    with boa.reverts("uptime: block too old"):
        beat(uptime, provider, depth=257)
    with boa.reverts("uptime: block not in the past"):
        beat(uptime, provider, depth=0)
    beat(uptime, provider, depth=256)  # the oldest block BLOCKHASH still answers for


def test_gas_per_heartbeat(system, uptime):
    """titanoboa's execution gas (its cold/warm accounting is approximate: the figures in
    docs/uptime.md are receipts from anvil, measured by tests/e2e/test_uptime.py)."""
    provider = system.providers[0].address
    gas = []
    for _ in range(3):
        beat(uptime, provider)
        gas.append(uptime._computation.get_gas_used())
        advance(EPOCH)
    first, later = gas[0], gas[1]
    print(f"heartbeat execution gas: first in a 256-epoch word {first}, later {later}")
    assert later < first <= 50_000


ZERO = "0x" + "00" * 20


@pytest.mark.parametrize("position, value, message", [
    (0, ZERO, "uptime: zero registry"),
    (1, ZERO, "uptime: zero validators"),
    (2, 0, "uptime: zero epoch length"),
    (3, 0, "uptime: jail_after out of range"),
    (3, 1025, "uptime: jail_after out of range"),
    (4, 0, "uptime: zero jail period"),
    (5, 0, "uptime: report_delay out of range"),
    (5, 65, "uptime: report_delay out of range"),
    (6, 0, "uptime: answer_epochs out of range"),
    (6, liveness.MAX_ANSWER_EPOCHS + 1, "uptime: answer_epochs out of range"),
    (7, 0, "uptime: zero challenge bond"),
    # (report_delay + answer_epochs + 3) epochs must fit the Validators' unbonding period, or a
    # challenged validator withdraws before the challenge is resolved (nothing locks it)
    (2, UNBONDING_PERIOD // (REPORT_DELAY + ANSWER_EPOCHS + 3) + 1,
     "uptime: unbonding period shorter than a challenge"),
    (2, 2**255, "uptime: unbonding period shorter than a challenge"),
    (5, 64, "uptime: unbonding period shorter than a challenge"),
])
def test_constructor_refuses_bad_arguments(system, factories, position, value, message):
    args = list(uptime_args(system.registry.address, system.validators.address))
    args[position] = value
    with boa.reverts(message):
        factories["Uptime"].deploy(*args)


def test_constructor_views_and_events(system, factories, uptime):
    assert (uptime.jail_after(), uptime.jail_period(), uptime.MAX_JAIL_AFTER()) == \
        (JAIL_AFTER, JAIL_PERIOD, 1024)
    assert uptime.MAX_ANSWERS() == liveness.MAX_ANSWERS   # the answer window's sizing uses it
    assert (uptime.registry(), uptime.validators(), uptime.stake_token()) == (
        system.registry.address, system.validators.address, system.stake.address)
    assert (uptime.report_delay(), uptime.answer_epochs(), uptime.challenge_bond(),
            uptime.inclusion_slash()) == (REPORT_DELAY, ANSWER_EPOCHS, CHALLENGE_BOND, INCLUSION_SLASH)
    fresh = factories["Uptime"].deploy(system.registry.address, system.validators.address,
                                       20, 1024, 1, 64, liveness.MAX_ANSWER_EPOCHS, 1, 0)
    (started,) = events(fresh, "UptimeStarted")
    assert (started.registry, started.epoch_length, started.jail_after, started.jail_period) == (
        system.registry.address, 20, 1024, 1)
    (rules,) = events(fresh, "LivenessRulesSet")
    assert (rules.validators, rules.report_delay, rules.answer_epochs, rules.challenge_bond,
            rules.inclusion_slash) == (system.validators.address, 64, 64, 1, 0)
    longest = UNBONDING_PERIOD // (REPORT_DELAY + ANSWER_EPOCHS + 3)  # the bound, inclusive
    assert system.validators.unbonding_period() == UNBONDING_PERIOD
    factories["Uptime"].deploy(*uptime_args(system.registry.address, system.validators.address,
                                            epoch=longest))


def test_beat_word_is_the_bitmap(system, uptime):
    provider = system.providers[0].address
    for epoch in (3, 7, 300):
        advance(uptime.epoch_start(epoch) - boa.env.timestamp)
        beat(uptime, provider)
    assert uptime.beat_word(provider, 0) == (1 << 3) | (1 << 7)
    assert uptime.beat_word(provider, 1) == 1 << (300 - 256)
    assert uptime.beat_word(provider, 2) == 0


def to_epoch(uptime, epoch: int) -> None:
    """Move time to the start of `epoch` (a little into it, so that it is clearly current)."""
    advance(uptime.epoch_start(epoch) - boa.env.timestamp + 1)


def report(uptime, reporter: str, provider: str, first_epoch: int):
    with boa.env.prank(reporter):
        uptime.report_outage(provider, first_epoch)


# The first epoch in which epochs 0 .. JAIL_AFTER - 1 are all final (no report can change them).
FINAL = JAIL_AFTER + SETTLE_EPOCHS


def test_outage_report_jails_for_the_period(system, uptime):
    provider, reporter = system.providers[1].address, system.outsider.address
    registry = system.registry
    to_epoch(uptime, FINAL)
    assert registry.is_active(provider)
    report(uptime, reporter, provider, 0)
    (reported,) = events(uptime, "OutageReported")
    until = boa.env.timestamp + JAIL_PERIOD
    assert (reported.provider, reported.first_epoch, reported.last_epoch, reported.jailed_until,
            reported.reporter) == (provider, 0, JAIL_AFTER - 1, until, reporter)
    (jailed,) = events(uptime, "Jailed")  # the registry's log, from the same transaction
    assert (jailed.provider, jailed.until, jailed.by) == (provider, until, uptime.address)
    assert registry.providers(provider).jailed_until == until
    assert not registry.is_active(provider)
    assert uptime.reported_until(provider) == JAIL_AFTER
    advance(JAIL_PERIOD - 1)
    assert not registry.is_active(provider)
    advance(1)
    assert registry.is_active(provider)


def test_outage_refusals(system, uptime):
    p0, p1, p2 = (p.address for p in system.providers[:3])
    reporter = system.outsider.address
    to_epoch(uptime, JAIL_AFTER - 1)  # epochs 0 .. JAIL_AFTER - 2 have ended, not JAIL_AFTER - 1
    beat(uptime, p1)                  # p1 is up in epoch JAIL_AFTER - 1
    for current in (JAIL_AFTER - 1, FINAL - 1):  # not ended; ended but not final (reports due)
        to_epoch(uptime, current)
        with boa.reverts("uptime: outage epochs not final"):
            report(uptime, reporter, p0, 0)
    with boa.reverts("uptime: outage epochs not final"):
        report(uptime, reporter, p0, 2**256 - 1)
    to_epoch(uptime, FINAL)
    with boa.reverts("uptime: not registered"):
        report(uptime, reporter, system.outsider.address, 0)
    with boa.reverts("uptime: provider was up in that stretch"):
        report(uptime, reporter, p1, 0)
    report(uptime, reporter, p0, 0)
    # Overlapping or repeated reports of the same stretch jail nobody twice.
    to_epoch(uptime, FINAL + JAIL_AFTER - 1)
    for first in (0, 1, JAIL_AFTER - 1):
        with boa.reverts("uptime: outage already reported"):
            report(uptime, reporter, p0, first)
    # Too old: the stretch must be final for at most `jail_after` epochs (+1).
    to_epoch(uptime, FINAL + JAIL_AFTER + 1)
    with boa.reverts("uptime: outage too old to report"):
        report(uptime, reporter, p2, 0)
    report(uptime, reporter, p2, 1)
    # Nothing changed by the refusals: p1 was never jailed.
    assert system.registry.providers(p1).jailed_until == 0


def test_epochs_before_registration_do_not_count(system, uptime):
    newcomer = system.outsider
    to_epoch(uptime, 3)
    advance(EPOCH // 2)  # register in the middle of epoch 3
    with boa.env.prank(newcomer.address):
        system.registry.register(MIN_STAKE, "H100", 1, 1, 1, "https://new.example", 1)
    to_epoch(uptime, 4 + FINAL)
    with boa.reverts("uptime: epoch before registration"):
        report(uptime, newcomer.address, newcomer.address, 3)
    report(uptime, newcomer.address, newcomer.address, 4)  # anyone may report, even itself


def test_a_continuing_outage_is_jailed_again_and_a_jail_is_never_shortened(system, uptime):
    provider, reporter, registry = system.providers[0].address, system.outsider.address, \
        system.registry
    to_epoch(uptime, FINAL)
    report(uptime, reporter, provider, 0)
    first_until = registry.providers(provider).jailed_until
    to_epoch(uptime, FINAL + JAIL_AFTER)
    report(uptime, reporter, provider, JAIL_AFTER)  # the next stretch of the same outage
    second_until = registry.providers(provider).jailed_until
    assert second_until == boa.env.timestamp + JAIL_PERIOD > first_until
    with boa.env.prank(system.slasher):  # another slasher's longer jail
        registry.jail(provider, second_until + 10 * JAIL_PERIOD)
    to_epoch(uptime, FINAL + 2 * JAIL_AFTER)
    report(uptime, reporter, provider, 2 * JAIL_AFTER)
    assert registry.providers(provider).jailed_until == second_until + 10 * JAIL_PERIOD
    (reported,) = events(uptime, "OutageReported")
    assert reported.jailed_until == second_until + 10 * JAIL_PERIOD


def test_outage_report_needs_the_slasher_role(system, factories):
    lone = factories["Uptime"].deploy(*uptime_args(system.registry.address,
                                                   system.validators.address))
    provider = system.providers[0].address
    to_epoch(lone, FINAL)
    with boa.reverts("registry: caller cannot jail"):
        report(lone, system.outsider.address, provider, 0)
    assert lone.reported_until(provider) == 0


def test_gas_of_an_outage_report(system, uptime):
    """titanoboa's execution gas; the anvil receipt figure is measured by bench/gas.py."""
    to_epoch(uptime, FINAL)
    report(uptime, system.outsider.address, system.providers[0].address, 0)
    gas = uptime._computation.get_gas_used()
    print(f"report_outage execution gas (jail_after={JAIL_AFTER}): {gas}")
    assert gas < 100_000
