"""Fuzzing the job spec and daemon config parsers (issue 10, "CLI and file input").

The property, for `parse_job_spec` and for the provider and validator configs: whatever the text
(arbitrary characters, TOML-ish fragments, a valid file with any field set to any TOML value,
arbitrary bytes in the file), parsing either returns a config that keeps every limit, or raises
SpecError whose message names the file and the field. Never another exception (decimal.Overflow,
RecursionError, UnicodeDecodeError, a plain ValueError from tomllib were all found this way).

How an attacker would get round the checks, and what here answers it: a value the parser turns
into something out of range (a float, a bool, an exponent, a 4300+ digit integer, a NUL byte,
non-ASCII digits, a key of control characters) - `values` draws all of these for every field;
a file the reader chokes on (invalid UTF-8, a FIFO, a directory, deep nesting) - the byte fuzz
and tests/protocol/test_input_limits.py. The fields are read from the models, so a field added
later is fuzzed without editing this file."""

from __future__ import annotations

import copy
import datetime as dt
import math
from decimal import Decimal, localcontext

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tessera.errors import SpecError
from tessera.files import read_text
from tessera.protocol.daemon_config import MAX_ENDPOINT_BYTES
from tessera.protocol.jobspec import MAX_UINT32, JobSpec, parse_job_spec, parse_toml_model
from tessera.protocol.money import (
    MAX_DURATION,
    MAX_PRICE_PER_GPU_HOUR,
    MAX_UINT256,
    STAKE_DECIMALS,
    parse_amount,
    parse_duration,
    shown,
)
from tessera.provider.config import ProviderConfig
from tessera.validator.config import ValidatorConfig

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

JOB = {"name": "t", "order": {"max_price_per_gpu_hour": "3.00", "duration": "10m"},
       "workload": {"kind": "train-charlm"}}
PROVIDER = {"provider": {"account": "devnet:2", "port": 7001, "state_dir": "state", "stake": "100"},
            "pricing": {"price_per_gpu_hour": "1.20"}}
VALIDATOR = {"validator": {"account": "devnet:7", "port": 7101, "state_dir": "v", "stake": "100"}}


def parse_job(text: str, source: str):
    return parse_job_spec(text, source)


def parse_provider(text: str, source: str):
    return parse_toml_model(ProviderConfig, text, source)


def parse_validator(text: str, source: str):
    return parse_toml_model(ValidatorConfig, text, source)


PARSERS = {"job": (JobSpec, JOB, parse_job), "provider": (ProviderConfig, PROVIDER, parse_provider),
           "validator": (ValidatorConfig, VALIDATOR, parse_validator)}


# -- TOML rendering (the fuzz writes files as a person would, then parses the text) ---------------
def toml_key(key: str) -> str:
    return key if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key) \
        else toml_string(key)


def toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


class Deep:
    """A value nested `depth` levels deep, as arrays or inline tables (tomllib recurses per
    level: deep enough raised RecursionError)."""

    def __init__(self, depth: int, tables: bool):
        self.depth, self.tables = depth, tables

    def __repr__(self):
        return f"Deep({self.depth}, tables={self.tables})"

    def toml(self) -> str:
        if self.tables:
            return "{a = " * self.depth + "1" + "}" * self.depth
        return "[" * self.depth + "1" + "]" * self.depth


class Raw(str):
    """TOML text written as is: an integer of more digits than Python's str() will write
    (tomllib raised a plain ValueError past 4300 digits)."""


def toml_value(value) -> str:
    if isinstance(value, Deep):
        return value.toml()
    if isinstance(value, Raw):
        return str.__str__(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(doc: dict) -> str:
    """Scalars (and anything not a table) first, then one [section] per table."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for key, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(key)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# -- what the fuzz draws ------------------------------------------------------------------------
NASTY_STRINGS = [
    "1e999999", "-5", "lots", "0", "nan", "inf", "-inf", "1" * 35, "1" + "0" * 80, "0.0000001",
    "3.1234567", "12345678901234567890123456789012345.1234567", "1.0000000000000000001",
    "a\x00b", "", " ", "\u0663", "\u00b2", "2_000", "0x10", "+1", "1d", "1096d", "0s",
    "8600000000000000000000000000s", "[/x]", "\x1b[2J", "http://" + "a" * 300, "builtin:stdlib",
    "https://v.example", "diloco", "single", "int8", "median", "train-charlm", "devnet:1",
    str(MAX_UINT256), str(MAX_UINT256 + 1), "1000000", "1000000.000001", "\u00e9" * 40,
]
NASTY_INTS = [0, 1, -1, 2**31, 2**32, 2**63, 2**64, 10**80, MAX_UINT256, MAX_UINT256 + 1,
              8_600_000_000_000_000_000_000_000_000, MAX_DURATION, MAX_DURATION + 1,
              MAX_PRICE_PER_GPU_HOUR, MAX_PRICE_PER_GPU_HOUR + 1, 10**4299]
NASTY_OTHERS = [1.5, 3.0, 8.6e27, 1e308, math.inf, -math.inf, math.nan, -0.0, True, False,
                dt.date(2000, 1, 1), dt.datetime(1979, 5, 27, 7, 32, tzinfo=dt.UTC), [], {},
                ["3.00"], {"a": 1}, Deep(17, False), Deep(17, True), Deep(3000, False),
                Deep(3000, True), Raw("1" + "0" * 4300), Raw("-" + "9" * 5000)]
NASTY = NASTY_STRINGS + NASTY_INTS + NASTY_OTHERS

scalars = st.one_of(
    st.sampled_from(NASTY),
    st.builds(Deep, st.integers(1, 2000), st.booleans()),
    st.from_regex(r"\A-?[0-9]{0,40}(\.[0-9]{0,25})?([eE][+-]?[0-9]{1,7})?\Z"),
    st.from_regex(r"\A[0-9]{0,30}[smhdSMHDx]?\Z"),
    st.text(max_size=30),
    st.sampled_from(NASTY_INTS),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.dates(),
)
keys = st.one_of(st.text(max_size=12), st.sampled_from(["order", "kind", "x", "[/x]"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(keys, inner, max_size=3), max_leaves=6)


def field_paths(model: type[BaseModel]) -> list[tuple[str, ...]]:
    """Every field as a path from the top: ("name",), ("order",), ("order", "duration"), ..."""
    paths = []
    for name, info in model.model_fields.items():
        paths.append((name,))
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            paths += [(name, sub) for sub in inner.model_fields]
    return paths


# -- what a parsed config must satisfy -----------------------------------------------------------
def check_limits(cfg) -> None:
    """A config that parsed keeps every limit: money and time are ints in range, paths and
    on-chain strings fit."""
    if isinstance(cfg, JobSpec):
        o = cfg.order
        price = o.max_price_per_gpu_hour
        assert type(price) is int and 0 < price <= MAX_PRICE_PER_GPU_HOUR
        for seconds in (o.duration, o.bid_window, cfg.diloco.round_timeout):
            assert type(seconds) is int and 0 < seconds <= MAX_DURATION
        assert o.worst_case_cost <= o.escrow <= MAX_UINT256 and type(o.escrow) is int
        assert len(o.gpu_model.encode()) <= 64 and 0 <= o.min_gpu_memory_mb <= MAX_UINT32
        assert "\x00" not in cfg.dataset.source
        assert len(cfg.spec_hash()) == 32
        return
    daemon = cfg.provider if isinstance(cfg, ProviderConfig) else cfg.validator
    assert 0 < daemon.stake_base_units <= MAX_UINT256
    assert parse_amount(daemon.stake, STAKE_DECIMALS) == daemon.stake_base_units
    assert "\x00" not in str(daemon.state_dir) and "\x00" not in str(daemon.network or "")
    assert len(daemon.endpoint.encode()) <= MAX_ENDPOINT_BYTES
    if isinstance(cfg, ProviderConfig):
        assert type(cfg.pricing.price_per_gpu_hour) is int
        assert 0 <= cfg.pricing.price_per_gpu_hour <= MAX_PRICE_PER_GPU_HOUR
        for seconds in (cfg.pricing.bid_validity, cfg.limits.max_job_seconds, cfg.payouts.sweep_every):
            assert type(seconds) is int and 0 < seconds <= MAX_DURATION
        assert cfg.limits.memory_limit_mb * 2**20 < 2**63      # setrlimit takes 64 bits
    else:
        for number in (cfg.probes.timeout_s, cfg.probes.max_delay_s or 1.0, cfg.hardware.target_s,
                       cfg.hardware.slack, cfg.hardware.allowance_s):
            assert math.isfinite(number)
        assert "\x00" not in str(cfg.challenges.datasets_dir or "")


def parse_or_refuse(parse, text: str, source: str):
    """The parse result, or None when refused; any exception but SpecError fails the test."""
    try:
        cfg = parse(text, source)
    except SpecError as exc:
        assert str(exc).startswith(source + ":"), str(exc)
        return None
    check_limits(cfg)
    return cfg


# -- the fuzz ---------------------------------------------------------------------------------------
def set_field(kind: str, path: tuple[str, ...], value) -> str:
    """The valid base document of `kind` with the field at `path` set to `value`, as TOML."""
    doc = copy.deepcopy(PARSERS[kind][1])
    if len(path) == 1:
        doc[path[0]] = value
    else:
        doc.setdefault(path[0], {})[path[1]] = value
    return to_toml(doc)


def parse_field(kind: str, path: tuple[str, ...], value) -> None:
    """Parse the base document with one field changed: a config within limits, or SpecError that
    names the file and every part of the field's path."""
    try:
        cfg = PARSERS[kind][2](set_field(kind, path, value), f"{kind}.toml")
    except SpecError as exc:
        message = str(exc)
        assert message.startswith(f"{kind}.toml:"), message
        assert all(part in message for part in path), (path, value, message)
        return
    check_limits(cfg)


@pytest.mark.parametrize("kind", list(PARSERS))
def test_every_field_against_every_nasty_value(kind):
    """Exhaustive, not random: each field of the model x each value that broke a parser once
    (or was silently accepted), so no rare draw is needed to find them again."""
    failures = []
    for path in field_paths(PARSERS[kind][0]):
        for value in NASTY:
            try:
                parse_field(kind, path, value)
            except Exception as exc:  # noqa: BLE001 - collected, reported together below
                failures.append(f"{'.'.join(path)} = {shown(value)}: {type(exc).__name__}: {exc!s:.200}")
    assert not failures, "\n".join(failures[:30]) + f"\n({len(failures)} in all)"


@pytest.mark.parametrize("kind", list(PARSERS))
@FUZZ
@given(data=st.data())
def test_any_value_in_any_field_parses_within_limits_or_is_refused_by_name(kind, data):
    path = data.draw(st.sampled_from(field_paths(PARSERS[kind][0])), label="field")
    parse_field(kind, path, data.draw(values, label="value"))


@pytest.mark.parametrize("kind", list(PARSERS))
@FUZZ
@given(data=st.data())
def test_several_changes_at_once_never_raise_anything_but_spec_error(kind, data):
    model, base, parse = PARSERS[kind]
    doc = copy.deepcopy(base)
    for path in data.draw(st.lists(st.sampled_from(field_paths(model)), min_size=1, max_size=5)):
        target = doc if len(path) == 1 else doc.setdefault(path[0], {})
        if not isinstance(target, dict):
            continue
        if data.draw(st.booleans(), label="delete"):
            target.pop(path[-1], None)
        else:
            target[path[-1]] = data.draw(values, label="value")
    parse_or_refuse(parse, to_toml(doc), f"{kind}.toml")


TOML_BITS = ["[order]", "[provider]", "[pricing]", "[[order]]", "[order.x]", "a = ", "a.b.c = 1",
             '"', "'''", '"""', "[", "]", "{", "}", ",", "=", "\n", " ", "#", "\\", "\\u0000",
             "1e999999", "nan", "inf", "1979-05-27T07:32:00Z", "9" * 5000, "[" * 600, "{a=" * 400,
             "max_price_per_gpu_hour", "duration", "stake", "state_dir", "\x00", "\ufeff", "\ud7ff"]


@pytest.mark.parametrize("kind", list(PARSERS))
@FUZZ
@given(text=st.one_of(st.text(max_size=200),
                      st.lists(st.sampled_from(TOML_BITS) | st.text(max_size=8), max_size=30)
                      .map("".join)))
def test_any_text_parses_or_is_refused_naming_the_file(kind, text):
    _, _, parse = PARSERS[kind]
    parse_or_refuse(parse, text, f"{kind}.toml")


@FUZZ
@given(junk=st.binary(max_size=64), at=st.integers(0, 200))
def test_any_bytes_in_the_file_are_read_and_parsed_or_refused_naming_the_file(tmp_path, junk, at):
    """What `tessera job submit` does: read the file (files.read_text), then parse it."""
    good = to_toml(JOB).encode()
    path = tmp_path / "job.toml"
    path.write_bytes(good[:at] + junk + good[at:])
    try:
        spec = parse_job_spec(read_text(path, SpecError), path)
    except SpecError as exc:
        assert str(exc).startswith(f"{path}:")
        return
    check_limits(spec)


# -- the two number parsers on their own -------------------------------------------------------
@given(text=st.one_of(st.text(max_size=60), scalars), decimals=st.sampled_from([0, 6, 18]))
def test_parse_amount_gives_an_int_in_range_or_a_value_error(text, decimals):
    try:
        units = parse_amount(text, decimals)
    except ValueError:
        return
    assert type(units) is int and 0 <= units <= MAX_UINT256


@given(units=st.integers(0, MAX_UINT256), decimals=st.sampled_from([0, 6, 18]),
       zeros=st.integers(0, 5))
def test_parse_amount_is_exact_past_28_digits(units, decimals, zeros):
    """Decimal's default context rounds at 28 digits; the parse must not. Checked against
    Decimal with a context wide enough to be exact, and trailing zeros change nothing."""
    whole, frac = divmod(units, 10**decimals)
    text = str(whole) + ("." + f"{frac:0{decimals}d}" + "0" * zeros if decimals else "")
    assert parse_amount(text, decimals) == units
    with localcontext() as ctx:
        ctx.prec = 200
        assert int(Decimal(text).scaleb(decimals)) == units


@given(units=st.integers(1, 10**60), decimals=st.sampled_from([0, 6, 18]))
def test_one_digit_too_many_is_refused_not_rounded(units, decimals):
    whole, frac = divmod(units, 10**decimals)
    text = f"{whole}." + (f"{frac:0{decimals}d}" if decimals else "") + "1"
    with pytest.raises(ValueError, match=f"more than {decimals} decimal places"):
        parse_amount(text, decimals)


@given(text=st.one_of(st.text(max_size=40), scalars))
def test_parse_duration_gives_seconds_in_range_or_a_value_error(text):
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert type(seconds) is int and 0 < seconds <= MAX_DURATION
