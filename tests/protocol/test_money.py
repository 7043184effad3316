import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.protocol.lease import accrued_at, lease_budget, protocol_fee
from tessera.protocol.money import format_amount, parse_amount, parse_duration


def test_parse_amount_is_exact():
    assert parse_amount("2.5", 6) == 2_500_000
    assert parse_amount("0.000001", 6) == 1
    assert parse_amount(3, 6) == 3_000_000


@pytest.mark.parametrize("bad", ["0.0000001", "-1", "abc", "nan", "inf", 1.5, True])
def test_parse_amount_refuses(bad):
    with pytest.raises(ValueError):
        parse_amount(bad, 6)


@given(st.integers(min_value=0, max_value=10**30))
def test_format_then_parse_round_trips(units):
    text = format_amount(units, 6).replace(",", "")
    assert parse_amount(text, 6) == units


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400),
                                          ("42", 42), (7, 7)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "10x", "m", "-5s", 0, "0s"])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(price=st.integers(1, 10**12), gpus=st.integers(1, 64), duration=st.integers(1, 10**7),
       t=st.integers(0, 2 * 10**7))
def test_earned_never_exceeds_budget_and_grows(price, gpus, duration, t):
    budget = lease_budget(price, gpus, duration)
    now = accrued_at(price, gpus, budget, 1000, 1000 + t)
    later = accrued_at(price, gpus, budget, 1000, 1000 + t + 1)
    assert 0 <= now <= later <= budget


def test_fee_rounds_down():
    assert protocol_fee(399, 250) == 9
    assert protocol_fee(10_000, 250) == 250


def test_show_amount_rounds_for_people_and_marks_it():
    from tessera.protocol.money import show_amount
    assert show_amount(4_999_999_999_999_999_998, 18, "TSTK") == "≈5.00 TSTK"
    assert show_amount(5 * 10**18, 18, "TSTK") == "5.00 TSTK"
    assert show_amount(334, 6, "TUSD") == "0.000334 TUSD"           # 6 decimals: exact
    assert show_amount(123_456_789, 18, "TSTK") == "<0.000001 TSTK"  # never '0' for a non-zero
    assert show_amount(-1_500_000, 6, "TUSD") == "-1.50 TUSD"
    assert show_amount(1_234_567_500_000_000_000, 18) == "≈1.234568"


def test_format_time_never_raises_for_times_past_any_calendar():
    from tessera.protocol.figures import format_time
    assert format_time(1797032361) == "2026-12-11 23:39:21 UTC"
    assert format_time(2**64).startswith("after 9999-12-31")
    assert format_time(2**255).startswith("after 9999-12-31")


def test_slash_split_takes_active_stake_first():
    from tessera.protocol.money import slash_split
    assert slash_split(30, 100) == (30, 0)
    assert slash_split(130, 100) == (100, 30)
    assert slash_split(5, 0) == (0, 5)
