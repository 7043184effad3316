"""Timelock.vy (snekmate's TimelockController) owning the ProviderRegistry and the Validators,
as deploy_all leaves them: an owner action that touches a party's money (granting a slasher,
which may slash, jail, hold and lock stake) takes effect only through the timelock, after its
delay, with a CallScheduled event everyone can watch for first (issue 10, "Owner powers").

The attack each test closes: the owner (or whoever steals its key) grants itself or a contract
of its own the slasher role and slashes or jails a provider, or locks a validator, at once."""

from __future__ import annotations

import boa
import pytest
from contracts_support import CONTRACTS_DIR, MIN_STAKE, UNBONDING_PERIOD, events, key_account
from eth_abi import encode as abi_encode
from eth_utils import keccak

DELAY = 2 * 86_400
PROPOSER = key_account(400)
STRANGER = key_account(401)
ZERO = "0x" + "00" * 20
NO_PREDECESSOR = b"\x00" * 32
SALT = b"\x00" * 32


@pytest.fixture
def owned(system, factories):
    """The session registry and a fresh Validators, both handed to a fresh Timelock (the
    deployer proposes and executes, nobody administers it but itself)."""
    with boa.env.prank(key_account(402).address):
        vals = boa.load_partial(str(CONTRACTS_DIR / "Validators.vy")).deploy(
            system.stake.address, MIN_STAKE, UNBONDING_PERIOD)
        timelock = factories["Timelock"].deploy(DELAY, [PROPOSER.address], [PROPOSER.address], ZERO)
        vals.transfer_ownership(timelock.address)
    system.registry.transfer_ownership(timelock.address)
    return system.registry, vals, timelock


TYPES = {"set_slasher": ["address", "bool"], "update_delay": ["uint256"]}


def _call(target, fn: str, *args) -> tuple:
    """(target, value, payload, predecessor, salt): the timelock's arguments for one call."""
    selector = keccak(f"{fn}({','.join(TYPES[fn])})".encode())[:4]
    return (target.address, 0, selector + abi_encode(TYPES[fn], list(args)), NO_PREDECESSOR, SALT)


@pytest.mark.parametrize("which", ["registry", "validators"])
def test_set_slasher_waits_for_the_delay_through_the_timelock(system, owned, which):
    registry, vals, timelock = owned
    target = registry if which == "registry" else vals
    old_owner = system.owner if which == "registry" else key_account(402).address
    grab = system.outsider.address
    # the former owner can no longer act directly, nor can anyone else
    for who in (old_owner, PROPOSER.address, grab):
        with boa.env.prank(who), boa.reverts():
            target.set_slasher(grab, True)
    call = _call(target, "set_slasher", grab, True)
    # only a proposer schedules, and never with less than the minimum delay
    with boa.env.prank(STRANGER.address), boa.reverts():
        timelock.schedule(*call, DELAY)
    with boa.env.prank(PROPOSER.address), boa.reverts():
        timelock.schedule(*call, DELAY - 1)
    with boa.env.prank(PROPOSER.address):
        timelock.schedule(*call, DELAY)
    (scheduled,) = events(timelock, "CallScheduled")
    assert (scheduled.target, scheduled.payload, scheduled.delay) == (target.address, call[2], DELAY)
    op = timelock.hash_operation(*call)
    assert timelock.get_timestamp(op) == boa.env.timestamp + DELAY
    boa.env.time_travel(seconds=DELAY - 1)
    with boa.env.prank(PROPOSER.address), boa.reverts():
        timelock.execute(*call)       # not yet
    assert not target.is_slasher(grab)
    boa.env.time_travel(seconds=1)
    with boa.env.prank(STRANGER.address), boa.reverts():
        timelock.execute(*call)       # only an executor
    with boa.env.prank(PROPOSER.address):
        timelock.execute(*call)
    assert target.is_slasher(grab)
    logged = target.get_logs(computation=timelock._computation, strict=False)
    names = [type(e).__name__ for e in logged]
    assert ("SlasherSet" if which == "registry" else "ValidatorSlasherSet") in names
    assert len(events(timelock, "CallExecuted")) == 1
    with boa.env.prank(PROPOSER.address), boa.reverts():
        timelock.execute(*call)       # once


def test_a_scheduled_grant_can_be_cancelled(owned):
    registry, _, timelock = owned
    call = _call(registry, "set_slasher", STRANGER.address, True)
    with boa.env.prank(PROPOSER.address):
        timelock.schedule(*call, DELAY)
        timelock.cancel(timelock.hash_operation(*call))
    boa.env.time_travel(seconds=DELAY)
    with boa.env.prank(PROPOSER.address), boa.reverts():
        timelock.execute(*call)
    assert not registry.is_slasher(STRANGER.address)


def test_the_delay_itself_only_changes_through_the_delay(owned):
    """Shortening the delay is an owner action on the timelock itself: it waits the delay."""
    _, _, timelock = owned
    with boa.env.prank(PROPOSER.address), boa.reverts():
        timelock.update_delay(0)
    call = _call(timelock, "update_delay", 0)
    with boa.env.prank(PROPOSER.address):
        timelock.schedule(*call, DELAY)
        boa.env.time_travel(seconds=DELAY)
        timelock.execute(*call)
    assert timelock.get_minimum_delay() == 0
