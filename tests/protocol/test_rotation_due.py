"""protocol.bridge.rotation_due: when the validators hand an inbox to the stake-weighted choice."""

from hypothesis import given
from hypothesis import strategies as st

from tessera.protocol.bridge import BPS, ROTATION_WEIGHT_CHANGE_BPS, rotation_due

A, B, C = ("0x" + c * 40 for c in "abc")
W = 100 * 10**18


def test_members_joining_or_leaving_always_rotate():
    assert rotation_due({A: W, B: W}, {A: W, B: W, C: W})
    assert rotation_due({A: W, B: W, C: W}, {A: W, B: W})
    assert rotation_due({A: W, B: W}, {A: W, C: W})
    assert not rotation_due({A: W, B: W}, {A.upper().replace("0X", "0x"): W, B: W})


def test_nobody_to_hand_over_to_is_never_due():
    assert not rotation_due({A: W}, {})


@given(st.integers(0, 2 * W))
def test_a_weight_moves_the_threshold_share_before_it_rotates(new):
    moved = abs(new - W) * BPS >= W * ROTATION_WEIGHT_CHANGE_BPS
    assert rotation_due({A: W, B: W}, {A: new, B: W}) == moved


def test_the_threshold_edges():
    step = W * ROTATION_WEIGHT_CHANGE_BPS // BPS
    assert not rotation_due({A: W}, {A: W + step - 1})
    assert rotation_due({A: W}, {A: W + step})
    assert rotation_due({A: W}, {A: W - step})


def test_a_committee_is_renewed_a_third_into_the_stall_period():
    from tessera.protocol.bridge import RENEWALS_PER_STALL_PERIOD, renewal_due

    stall = 21 * 86_400
    assert RENEWALS_PER_STALL_PERIOD == 3
    assert not renewal_due(1_000, 1_000, stall)
    assert not renewal_due(1_000, 1_000 + 7 * 86_400 - 1, stall)
    assert renewal_due(1_000, 1_000 + 7 * 86_400, stall)
