"""A committee that lost more than a third of its keys, on two real anvil nodes (docs/bridge.md,
"When the committee cannot sign"): the validators' rotation duty renews a live committee
before the inbox's STALL_PERIOD can pass; a committee that cannot sign is replaced by
`tessera bridge recover-committee` through the chain's Timelock once it has stalled, the lost
keys retired; the transfer stuck meanwhile is then delivered, and the duty never proposes the
retired keys again."""

from __future__ import annotations

from tests.bridge.conftest import GUARDIAN, HOME, OWNER, PEER, SENDER, TUSD
from tests.bridge.test_rotation_duty import committees, rotate_round
from typer.testing import CliRunner

from tessera.chain.accounts import devnet_account
from tessera.chain.devnet import BRIDGE_VALIDATORS
from tessera.cli import app
from tessera.protocol.bridge import RENEWALS_PER_STALL_PERIOD

LIVE = BRIDGE_VALIDATORS[0]
LOST = BRIDGE_VALIDATORS[1:]          # 2 of 3 equal weights: the last one is 33 %, no quorum


def recover(bridge, *lost: int) -> tuple[int, str]:
    args = ["bridge", "recover-committee", "--chain", str(HOME), "--network",
            str(bridge.env.devnet.network_file), "--account", f"devnet:{OWNER}"]
    for index in lost:
        args += ["--lost", devnet_account(index).address]
    result = CliRunner().invoke(app, args)
    return result.exit_code, " ".join(result.output.split())


def test_the_duty_renews_a_live_committee_before_it_could_be_replaced(bridge):
    relayer = bridge.relayer()
    before = committees(bridge)
    rotate_round(bridge, relayer)
    assert committees(bridge) == before                 # nothing due yet
    period = bridge.inbox(HOME).stall_period()
    began = {cid: bridge.inbox(cid).rotated_at() for cid in (HOME, PEER)}
    for cid in (HOME, PEER):
        bridge.warp(cid, period // RENEWALS_PER_STALL_PERIOD)
    rotate_round(bridge, relayer)
    after = committees(bridge)
    for cid in (HOME, PEER):
        assert after[cid] == (before[cid][0] + 1, before[cid][1]), cid   # same members
        assert bridge.inbox(cid).rotated_at() >= began[cid] + period // RENEWALS_PER_STALL_PERIOD
    rotate_round(bridge, relayer)
    assert committees(bridge) == after                  # renewed: nothing more is due


def test_lost_keys_are_replaced_through_the_timelock_and_the_stuck_transfer_lands(bridge):
    relayer = bridge.relayer()
    home = bridge.inbox(HOME)
    epoch = home.epoch()
    message_id = bridge.send(PEER, SENDER, 3 * TUSD)
    lost = [devnet_account(i).address for i in LOST]

    def settle_live_only():
        for _ in range(3):
            bridge.mine(HOME)
            bridge.mine(PEER)
            bridge.attest(only=(LIVE,))                 # the other two keys are gone
            relayer.poll_once()

    settle_live_only()
    assert not home.delivered(message_id)              # 1 of 3 is no quorum

    code, said = recover(bridge, *LOST)
    assert code != 0 and "recovery is allowed from" in said and "scheduled from" in said
    delay = bridge.timelock(HOME).min_delay()
    bridge.warp(HOME, home.stalled_since() - delay - bridge.chain(HOME).block_timestamp())
    code, said = recover(bridge, *LOST)
    assert code == 0 and "scheduled through its Timelock" in said, said
    assert all(a in said for a in lost)                 # it says whom it retires
    code, said = recover(bridge, *LOST)
    assert code == 0 and "waits its Timelock" in said and home.epoch() == epoch
    bridge.warp(HOME, delay)
    code, said = recover(bridge, *LOST)
    assert code == 0 and "recovered" in said, said

    live = devnet_account(LIVE).address
    assert home.epoch() == epoch + 1 and home.committee() == [live]
    assert [home.retired(a) for a in lost] == [True, True] and not home.retired(live)
    settle_live_only()
    assert home.delivered(message_id)                   # the stuck transfer got out
    before = committees(bridge)
    rotate_round(bridge, relayer)
    assert committees(bridge)[HOME] == before[HOME]    # the lost keys are not proposed again
    code, said = recover(bridge)
    assert code != 0 and "recovery is allowed from" in said   # the new committee is fresh
    code, said = recover(bridge, *LOST)     # retired already: only left out, nothing to do yet
    assert code != 0 and "recovery is allowed from" in said


def test_a_paused_inbox_is_renewed_with_the_same_members(bridge):
    """Review 17, M1: a pause stopped the renewals, so three weeks of pause opened the owner's
    recovery against a live committee. A paused inbox is renewed as any other (the same members:
    a forger its held reports name stays one), so recovery stays closed."""
    relayer = bridge.relayer()
    home = bridge.inbox(HOME)
    bridge.inbox(HOME, GUARDIAN).pause()
    before = committees(bridge)[HOME]
    period = home.stall_period()
    for week in range(1, RENEWALS_PER_STALL_PERIOD + 1):
        bridge.warp(HOME, period // RENEWALS_PER_STALL_PERIOD)
        rotate_round(bridge, relayer)
        assert committees(bridge)[HOME] == (before[0] + week, before[1]), week
    assert home.paused() and bridge.chain(HOME).block_timestamp() < home.stalled_since()
    code, said = recover(bridge, *LOST)
    assert code != 0 and "recovery is allowed from" in said


def test_only_a_member_s_key_can_be_named_lost(bridge):
    code, said = recover(bridge, SENDER)
    assert code != 0 and "is neither a member of chain" in said and "Traceback" not in said
