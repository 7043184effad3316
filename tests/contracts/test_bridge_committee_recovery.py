"""BridgeInbox.recover_committee (contracts/bridge_committee.vy): the way out when more than a
third of the committee's weight has lost its keys, which no rotation can fix (docs/bridge.md,
"When the committee cannot sign"). On two titanoboa chains, as tests/contracts/test_bridge_inbox.py.

The adversary's strategies tried here: the owner (a Timelock, but also a hostile or hijacked
one) installing its own committee while the real one is alive; doing it with a stale epoch; a
stranger or the guardian recovering; a recovered-out (retired) member coming back by rotation
or by a later recovery; the dead committee's signatures after the recovery. Each refusal leaves
balances and bridge state unchanged."""

from __future__ import annotations

import pytest
from bridge_support import (
    ALICE,
    CHAIN_A,
    COMMITTEE,
    FOREIGN,
    NEXT_COMMITTEE,
    NEXT_WEIGHTS,
    OUTSIDER,
    QUORUM,
    WEIGHTS,
    attest,
    deliver,
    deploy_mock,
    isolated,
    list_sender,
    refused,
    send_raw,
    shared_world,
    sign_rotation,
    unchanged,
)

from tessera.protocol import bridge as pb

DAY = 86_400
STALL = 21 * DAY
# COMMITTEE weighs 10, 20, 30, 40: the two heaviest keys (70 of 100) are lost, so the other
# two (30) can never reach the 66.66 % quorum, not even to rotate themselves out.
LOST = COMMITTEE[2:]
LIVE = COMMITTEE[:2]


@pytest.fixture(scope="module")
def world():
    return shared_world()


@pytest.fixture(autouse=True)
def _isolated(world):
    with isolated(world.envs):
        list_sender(world.b, CHAIN_A, ALICE)
        yield


def _addresses(accounts) -> list[str]:
    return [a.address for a in accounts]


def _recover(b, epoch, members, weights, caller=None, lost=()):
    with b.prank(caller or b.owner):
        b.inbox.recover_committee(epoch, _addresses(members), list(weights), _addresses(lost))


def _rotate(b, epoch, members, weights, signers):
    sigs = sign_rotation(signers, b, epoch, members, weights)
    with b.prank(OUTSIDER):
        b.inbox.rotate(epoch, _addresses(members), list(weights), sigs)


def _wait(b, seconds):
    b.env.time_travel(seconds=seconds)


def test_the_period_and_clock_are_read_from_the_inbox(world):
    b = world.b
    assert b.inbox.STALL_PERIOD() == STALL
    assert b.inbox.rotated_at() > 0 and b.inbox.epoch() == 0


def test_a_live_committee_cannot_be_replaced_by_the_owner(world):
    b = world.b
    with unchanged(b):
        refused("committee not stalled", _recover, b, 1, NEXT_COMMITTEE, NEXT_WEIGHTS)
        _wait(b, STALL - 60)
        refused("committee not stalled", _recover, b, 1, NEXT_COMMITTEE, NEXT_WEIGHTS)
    # a renewal (the same members, the next epoch) restarts the clock
    _rotate(b, 1, COMMITTEE, WEIGHTS, QUORUM)
    renewed_at = b.inbox.rotated_at()
    _wait(b, 120)                               # past the first epoch's 21 days
    with unchanged(b):
        refused("committee not stalled", _recover, b, 2, NEXT_COMMITTEE, NEXT_WEIGHTS)
    assert b.inbox.rotated_at() == renewed_at
    assert not any(b.inbox.retired(a) for a in _addresses(COMMITTEE))


def test_only_the_owner_recovers_and_only_the_next_epoch(world):
    b = world.b
    _wait(b, STALL)
    with unchanged(b):
        for caller in (OUTSIDER.address, b.guardian, COMMITTEE[3].address):
            refused("not owner", _recover, b, 1, NEXT_COMMITTEE, NEXT_WEIGHTS, caller=caller)
        for epoch in (0, 2):
            refused("wrong epoch", _recover, b, epoch, NEXT_COMMITTEE, NEXT_WEIGHTS)
        refused("members not ascending", _recover, b, 1, NEXT_COMMITTEE[::-1], NEXT_WEIGHTS)
        refused("zero weight", _recover, b, 1, NEXT_COMMITTEE, [1, 0, 1])


def test_lost_keys_are_recovered_from_and_retired_for_good(world):
    b = world.b
    mock = deploy_mock(b)
    m, p = send_raw(world.a, b, mock.address)
    # the live members alone are not a quorum: neither delivery nor rotation works
    with unchanged(b, ids=[m.id]):
        refused("no quorum", deliver, b, m, p, signers=LIVE)
        refused("no quorum", _rotate, b, 1, LIVE, [10, 20], LIVE)
    with b.prank(b.guardian):
        b.inbox.pause()                         # recovery works while paused
    _wait(b, STALL)
    stalled_since = b.inbox.rotated_at() + STALL
    new = sorted(LIVE + NEXT_COMMITTEE[:1], key=lambda a: int(a.address, 16))
    weights = [5] * len(new)
    with unchanged(b):
        refused("lost key not a member", _recover, b, 1, new, weights, lost=[OUTSIDER])
        refused("lost key kept", _recover, b, 1, new, weights, lost=[LIVE[0]])
        refused("lost key twice", _recover, b, 1, new, weights, lost=[LOST[0], LOST[0]])
    _recover(b, 1, new, weights, lost=LOST)
    [event] = [e for e in b.inbox.get_logs() if type(e).__name__ == "CommitteeRecovered"]
    assert (event.epoch, event.by, event.stalled_since) == (1, b.owner, stalled_since)
    assert sorted(event.retired) == sorted(_addresses(LOST))
    [rotated] = [e for e in b.inbox.get_logs() if type(e).__name__ == "CommitteeRotated"]
    assert rotated.committee == pb.committee_hash(_addresses(new), weights)
    assert b.inbox.epoch() == 1 and b.inbox.committee(1) == _addresses(new)
    assert [b.inbox.retired(a) for a in _addresses(COMMITTEE)] == [False, False, True, True]
    with b.prank(b.owner):
        b.inbox.unpause()
    with unchanged(b, ids=[m.id]):
        # the dead committee's quorum (say its keys turn up in a thief's hands) is refused
        refused(FOREIGN, deliver, b, m, p, signers=QUORUM, epoch=0)
        refused("not a member", deliver, b, m, p, signers=QUORUM, epoch=1)
    deliver(b, m, p, signers=new[:2], epoch=1)  # 10 of 15: the message gets out
    assert mock.calls() == 1 and b.inbox.delivered(m.id)
    # a retired key never comes back: not by rotation, not by a later recovery
    back = sorted(new + LOST[:1], key=lambda a: int(a.address, 16))
    with unchanged(b):
        refused("retired member", _rotate, b, 2, back, [1] * len(back), new)
        _wait(b, STALL)
        refused("retired member", _recover, b, 2, back, [1] * len(back))


def test_a_member_only_left_out_by_a_recovery_may_come_back(world):
    """Only the keys named lost are retired (review 17, M2): a member whose stake was below the
    minimum at the recovery leaves the committee, and rotates back in later."""
    b = world.b
    _wait(b, STALL)
    new = NEXT_COMMITTEE
    _recover(b, 1, new, NEXT_WEIGHTS, lost=LOST)
    assert [b.inbox.retired(a) for a in _addresses(COMMITTEE)] == [False, False, True, True]
    back = sorted(NEXT_COMMITTEE + LIVE[:1], key=lambda a: int(a.address, 16))
    _rotate(b, 2, back, [1] * len(back), NEXT_COMMITTEE)
    assert b.inbox.committee(2) == _addresses(back)


def test_a_hostile_owner_is_stopped_by_a_committee_that_renews(world):
    """The owner schedules its own committee through the Timelock; the live committee sees
    it coming (the delay is public) and renews: the recovery, when executed, is refused."""
    b = world.b
    _wait(b, STALL - 2 * DAY)                  # the owner schedules now, 2 days' delay
    _rotate(b, 1, COMMITTEE, WEIGHTS, QUORUM)  # the validators' duty renews meanwhile
    _wait(b, 2 * DAY)
    with unchanged(b):
        refused("wrong epoch", _recover, b, 1, NEXT_COMMITTEE, NEXT_WEIGHTS)
        refused("committee not stalled", _recover, b, 2, NEXT_COMMITTEE, NEXT_WEIGHTS)


def test_attesting_an_old_signature_is_not_enough_to_renew(world):
    """A renewal needs a quorum of fresh Rotation signatures: attestations of messages, or a
    rotation signed for the past epoch, do not restart the clock."""
    b = world.b
    addrs, weights = _addresses(COMMITTEE), WEIGHTS
    stale = sign_rotation(QUORUM, b, 1, COMMITTEE, WEIGHTS)
    _rotate(b, 1, COMMITTEE, WEIGHTS, QUORUM)
    with b.prank(OUTSIDER), unchanged(b):
        refused("wrong epoch", b.inbox.rotate, 1, addrs, list(weights), stale)
        att = attest(QUORUM, b.chain_id, b.inbox.address, pb.committee_hash(addrs, weights), 2)
        refused(FOREIGN, b.inbox.rotate, 2, addrs, list(weights), att)
