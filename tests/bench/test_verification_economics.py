"""bench/verification_economics.py (the `economics` of bench/results/verification_adversary.json,
a model of the measured rows) on made-up rows whose answers are known by hand.

What a wrong model could hide: a forfeiture that counts rounds before the caught one in the
slow-verdict case (it must not: those may have been released); a catch chance that ignores a
failed payload check (a certain catch); a goal check that calls a strategy 'unprofitable'
while it gains at some stake price; the held fraction of a job longer than the challenge
window taken as the whole pay."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "bench")]
from verification_economics import economics, forfeit_if_slow  # noqa: E402

from tessera.protocol.jobspec import parse_job_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
R, P, N = 10, 0.4, 10   # examples/diloco.toml: 10 rounds, p = 0.4, n = H / k = 10 segments


def spec(duration: str = "30m"):
    """examples/diloco.toml, its order's duration replaced."""
    path = ROOT / "examples" / "diloco.toml"
    text = path.read_text()
    assert 'duration = "30m"' in text
    return parse_job_spec(text.replace('duration = "30m"', f'duration = "{duration}"'), path)


def row(name: str, saved: float, detect: float, failing: list[int], payload_fails=()) -> dict:
    """A strategy failing `failing[r]` segments in round r (and its payload check in the rounds
    of `payload_fails`)."""
    return {"name": name, "compute_saved": saved, "detect_per_job": detect,
            "failure_pattern": [{"round": r, "cheap_ok": True, "payload_ok": r not in payload_fails,
                                 "segments_failed": list(range(m))} for r, m in enumerate(failing)]}


def test_the_slow_verdict_forfeits_the_caught_round_and_later_ones_only():
    assert forfeit_if_slow(row("none", 0, 0, [0] * R), P, N) == 0
    assert forfeit_if_slow(row("round 0", 0, 1, [0] * R, payload_fails=(0,)), P, N) == 1
    assert forfeit_if_slow(row("last round", 0, 1, [0] * R, payload_fails=(R - 1,)), P, N) == \
        pytest.approx(1 / R)
    # one segment in ten every round: caught in round r with 0.04 x 0.96^r, forfeiting (R-r)/R
    by_hand = sum(0.04 * 0.96**r * (R - r) / R for r in range(R))
    assert forfeit_if_slow(row("tenth", 0.1, 0.335, [1] * R), P, N) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(0.1956, abs=1e-4)


def test_a_partial_fake_loses_money_at_any_stake_price_and_the_goal_check_says_which():
    rows = [row("fake-10-percent", 0.1, 0.3372, [1] * R),
            row("free-ride", 1.0, 0.99375, [N] * R),
            row("last-round-only", 0.1, 0.4, [0] * (R - 1) + [N])]
    out = economics(spec(), rows)
    by = {s["name"]: s for s in out["strategies"]}
    assert out["held_fraction_at_verdict"] == 1.0            # 30 min < the 1 h window
    tenth = by["fake-10-percent"]
    assert tenth["loses_at_any_v"] and tenth["G_at_v0_tusd"] == pytest.approx((0.1 - 0.3372) * 1.5)
    assert tenth["loses_at_any_v_if_verdict_slow"]
    # all of a round's segments in the last round only: a prompt verdict takes the whole held
    # pay (loses), a slow one only that round: it gains unless the stake is worth something
    last = by["last-round-only"]
    assert last["loses_at_any_v"] and not last["loses_at_any_v_if_verdict_slow"]
    assert last["break_even_v_if_verdict_slow"] > 0
    assert out["goal_check"]["strategies"] == {"fake-10-percent": "unprofitable at any v",
                                               "free-ride": "caught",
                                               "last-round-only": "unprofitable at any v"}
    assert out["goal_check"]["met"] and not out["goal_check"]["met_if_verdict_slow"]


def test_a_job_longer_than_the_challenge_window_has_only_a_window_of_pay_held():
    out = economics(spec("4h"), [row("fake-10-percent", 0.1, 0.3372, [1] * R)])
    assert out["held_fraction_at_verdict"] == pytest.approx(0.25)   # 1 h of 4 h
    assert out["pay_forfeited_base_units"] == out["C_job_base_units"] // 4
