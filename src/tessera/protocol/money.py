"""Money as integers in base units: the tokens' units, exact parsing and formatting of human amounts,
and the limits every amount and duration read from a spec or config is held to.

The lease's pay rules (stream, budget, fee, downtime epochs) live in protocol/lease.py."""

from __future__ import annotations

import re

# The tokens' symbols and decimals: the deploy passes these to the token constructors, so this
# is their one definition (tests/contracts/test_lease_rules.py checks the deployed tokens agree).
PAYMENT_SYMBOL, PAYMENT_DECIMALS = "TUSD", 6
STAKE_SYMBOL, STAKE_DECIMALS = "TSTK", 18

# -- limits (checked when a job spec or a daemon config is parsed; docs/protocol.md) ----------------
# The hard limit of every on-chain amount: the contracts hold amounts as uint256.
MAX_UINT256 = 2**256 - 1
# A price per GPU-hour above 1,000,000 TUSD is a typo (a data-centre GPU rents for a few TUSD an
# hour: this is 100,000 times that). The bound also keeps the contract's worst-case product
# price x gpus x nodes x duration (below 10^25 with every limit at its maximum) far from uint256.
MAX_PRICE_PER_GPU_HOUR = 1_000_000 * 10**PAYMENT_DECIMALS
# The longest duration any field may give (lease duration, bid window, bid validity, job
# timeout, sweep period): 3 years, the longest term clouds sell reserved GPUs for. Longer
# locks escrow and stake past any plausible job; 8.6e27 s is a typo, not a plan.
MAX_DURATION = 3 * 365 * 86_400
# An amount is written as plain digits with an optional decimal point (no sign, exponent,
# underscores or non-ASCII digits); this many characters is more than uint256 with 18 decimals
# needs (78 + 1 + 18), so longer text is refused before any arithmetic.
MAX_AMOUNT_CHARS = 128
_AMOUNT = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_DURATION = re.compile(r"([0-9]{1,30})([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def shown(value: object) -> str:
    """`value` as an error message shows it: repr, cut short (input may be huge or hostile)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**36:
        return f"of about 10^{int(abs(value).bit_length() * 0.30103)}"   # no 4300-digit str()
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_amount(text: str | int, decimals: int, maximum: int = MAX_UINT256, symbol: str = "") -> int:
    """'2.5' with 6 decimals -> 2_500_000; an int counts whole tokens (3 -> 3_000_000).

    Exact: string arithmetic, no Decimal context to round at 28 digits or overflow on an
    exponent. Refuses floats, signs, exponents ('1e999999'), excess precision ('0.0000001' with
    6 decimals; trailing zeros are exact and allowed) and anything above `maximum` base units
    (default uint256). Every refusal is a ValueError that names the limit it broke."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"amount must be a string like '2.50' or an integer, got {shown(text)}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"amount must not be negative, got {text}")
        if text > maximum // 10**decimals + 1:   # refuse before multiplying a huge int
            raise ValueError(_above(shown(text), maximum, decimals, symbol))
        units = text * 10**decimals
    else:
        raw = text.strip()
        if len(raw) > MAX_AMOUNT_CHARS:
            raise ValueError(f"amount {shown(text)} is longer than {MAX_AMOUNT_CHARS} characters")
        if raw.startswith("-"):
            raise ValueError(f"amount must not be negative, got {shown(text)}")
        if not _AMOUNT.fullmatch(raw):
            raise ValueError(f"{shown(text)} is not an amount: write digits with an optional "
                             "decimal point, like '2.50' (no sign, exponent or separators)")
        whole, _, frac = raw.partition(".")
        frac = frac.rstrip("0")
        if len(frac) > decimals:
            raise ValueError(f"{shown(text)} has more than {decimals} decimal places (the "
                             f"token's smallest unit is 10^-{decimals}; amounts are not rounded)")
        units = int(whole or "0") * 10**decimals + int(frac.ljust(decimals, "0") or "0")
    if units > maximum:
        raise ValueError(_above(shown(text), maximum, decimals, symbol))
    return units


def parse_payment(text: str, what: str) -> int:
    """A TUSD amount a person typed ('0.50') in base units; ValueError naming `what` (the option
    or field) when it is not one."""
    try:
        return parse_amount(text, PAYMENT_DECIMALS, symbol=PAYMENT_SYMBOL)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _above(what: str, maximum: int, decimals: int, symbol: str) -> str:
    why = " (uint256, the most a contract can hold)" if maximum == MAX_UINT256 else ""
    return f"amount {what} is above the limit of {format_amount(maximum, decimals, symbol)}{why}"


def format_amount(base_units: int, decimals: int, symbol: str = "") -> str:
    sign = "-" if base_units < 0 else ""
    whole, frac = divmod(abs(base_units), 10**decimals)
    frac_text = f"{frac:0{decimals}d}".rstrip("0").ljust(2, "0")[:decimals] if decimals else ""
    text = f"{sign}{whole:,}" + (f".{frac_text}" if frac_text else "")
    return f"{text} {symbol}".rstrip()


def show_amount(base_units: int, decimals: int, symbol: str = "", places: int = 6) -> str:
    """An amount for a person to read: at most `places` decimals, rounded half up, marked
    with '≈' when rounding changed it ('≈5 TSTK' for 4.999999999999999998 TSTK). Exact
    values (JSON, audit) use format_amount or base units with the unit named."""
    if places >= decimals:
        return format_amount(base_units, decimals, symbol)
    step = 10 ** (decimals - places)
    sign = -1 if base_units < 0 else 1
    rounded = sign * ((abs(base_units) + step // 2) // step) * step
    if rounded == 0 and base_units != 0:
        return ("-" if sign < 0 else "") + "<" + format_amount(step, decimals, symbol)
    text = format_amount(rounded, decimals, symbol)
    return text if rounded == base_units else "≈" + text


def slash_split(amount: int, active: int) -> tuple[int, int]:
    """(from active stake, from the unbonding bucket) of a slash: ProviderRegistry.slash and
    Validators.slash both take active stake first, then unbonding stake."""
    from_active = min(amount, max(active, 0))
    return from_active, amount - from_active


def format_duration(seconds: int) -> str:
    """The largest whole unit: 94608000 -> '1095d', 5400 -> '90m'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_duration(text: str | int, maximum: int = MAX_DURATION) -> int:
    """'90s', '15m', '2h', '1d' or a bare integer of seconds -> seconds, in 1..`maximum`."""
    hint = "must look like 90s, 15m, 2h, 1d or a whole number of seconds"
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = text
    elif isinstance(text, str):
        match = _DURATION.fullmatch(text.strip().lower())
        if not match:
            raise ValueError(f"duration {shown(text)} {hint}")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"duration {shown(text)} {hint}")
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {shown(text)}")
    if seconds > maximum:
        raise ValueError(f"duration {shown(text)} is above the limit of "
                         f"{format_duration(maximum)} ({maximum} s)")
    return seconds
