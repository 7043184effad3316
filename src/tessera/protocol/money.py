"""Money as integers in base units: the tokens' units, exact parsing and formatting of human amounts.

The lease's pay rules (stream, budget, fee, downtime epochs) live in protocol/lease.py."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# The tokens' symbols and decimals: the deploy passes these to the token constructors, so this
# is their one definition (tests/contracts/test_lease_rules.py checks the deployed tokens agree).
PAYMENT_SYMBOL, PAYMENT_DECIMALS = "TUSD", 6
STAKE_SYMBOL, STAKE_DECIMALS = "TSTK", 18


def parse_amount(text: str | int, decimals: int) -> int:
    """'2.5' with 6 decimals -> 2_500_000. Refuses floats, negatives and excess precision."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"amount must be a string like '2.50' or an integer, got {text!r}")
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"amount must be a non-negative finite number, got {text!r}")
    scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{text!r} has more than {decimals} decimal places")
    return int(scaled)


def format_amount(base_units: int, decimals: int, symbol: str = "") -> str:
    sign = "-" if base_units < 0 else ""
    whole, frac = divmod(abs(base_units), 10**decimals)
    frac_text = f"{frac:0{decimals}d}".rstrip("0").ljust(2, "0")[:decimals] if decimals else ""
    text = f"{sign}{whole:,}" + (f".{frac_text}" if frac_text else "")
    return f"{text} {symbol}".rstrip()


def parse_duration(text: str | int) -> int:
    """'90s', '15m', '2h' or a bare integer of seconds -> seconds."""
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = text
    elif isinstance(text, str) and text.strip():
        raw = text.strip().lower()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        factor = units.get(raw[-1], None)
        number = raw[:-1] if factor else raw
        if not number.isdigit():
            raise ValueError(f"duration {text!r} must look like 90s, 15m, 2h, 1d or a number of seconds")
        seconds = int(number) * (factor or 1)
    else:
        raise ValueError(f"duration {text!r} must look like 90s, 15m, 2h, 1d or a number of seconds")
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return seconds
