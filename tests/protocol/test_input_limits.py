"""One test per input problem of issue 10 ("CLI and file input"), at the parsers: each is refused
when the file is read and parsed, with a SpecError that names the file, the field and the limit,
never a traceback and never silently accepted. (The same through the real CLI:
tests/test_cli_input.py; random inputs: tests/protocol/test_input_fuzz.py.)"""

from __future__ import annotations

import os
import threading

import pytest

from tessera.errors import SpecError
from tessera.files import MAX_TEXT_BYTES, read_text
from tessera.protocol.jobspec import MAX_NESTING, parse_job_spec, parse_toml_model
from tessera.protocol.money import MAX_DURATION, MAX_PRICE_PER_GPU_HOUR, MAX_UINT256
from tessera.provider.config import ProviderConfig, load_provider_config
from tessera.validator.config import ValidatorConfig, load_validator_config

JOB = """name = "t"
[order]
max_price_per_gpu_hour = "3.00"
duration = "10m"
[workload]
kind = "train-charlm"
"""
PROVIDER = """[provider]
account = "devnet:2"
port = 7001
state_dir = "state"
stake = "100"
[pricing]
price_per_gpu_hour = "1.20"
"""
VALIDATOR = """[validator]
account = "devnet:7"
port = 7101
state_dir = "v"
stake = "100"
"""


def job(text: str):
    return parse_job_spec(text, "job.toml")


def provider(text: str):
    return parse_toml_model(ProviderConfig, text, "provider.toml")


def validator(text: str):
    return parse_toml_model(ValidatorConfig, text, "validator.toml")


def refused(parse, text: str, *words: str) -> str:
    """Parse `text`, expect SpecError naming the file and every one of `words`."""
    with pytest.raises(SpecError) as info:
        parse(text)
    message = str(info.value)
    assert message.split(":")[0].endswith(".toml"), message
    for word in words:
        assert word in message, (word, message)
    return message


# -- an amount like "1e999999" (was decimal.Overflow with a traceback) ----------------------------
@pytest.mark.parametrize(("parse", "text", "field"), [
    (job, JOB.replace('"3.00"', '"1e999999"'), "order.max_price_per_gpu_hour"),
    (job, JOB.replace('[workload]', 'deposit = "1e999999"\n[workload]'), "order.deposit"),
    (provider, PROVIDER.replace('"1.20"', '"1e999999"'), "pricing.price_per_gpu_hour"),
    (provider, PROVIDER.replace('stake = "100"', 'stake = "1e999999"'), "provider.stake"),
    (validator, VALIDATOR.replace('stake = "100"', 'stake = "1e999999"'), "validator.stake"),
])
def test_exponent_amount_is_refused_naming_the_field(parse, text, field):
    """An attacker's way round a digit check is another spelling of a huge number: exponent,
    underscores, non-ASCII digits, a sign. All are refused by one strict pattern."""
    refused(parse, text, field, "no sign, exponent or separators")
    for spelling in ("1E5", "1_000", "\u0663", "+1", " 1 2 ", "0x10", "inf", "nan"):
        refused(parse, text.replace("1e999999", spelling), field)


# -- very deep TOML nesting (was RecursionError) ---------------------------------------------------
@pytest.mark.parametrize("deep", ["[" * 100_000 + "]" * 100_000, "{a=" * 5000 + "1" + "}" * 5000])
def test_deep_nesting_is_refused_naming_file_line_and_field(deep):
    """Arrays this deep make tomllib recurse past Python's limit: the line and key are found by
    a scan of the text; inline tables are parsed, then measured: the key path is named."""
    refused(job, JOB.replace('"10m"', deep), "job.toml", "order.duration", "nested too deeply",
            f"limit is {MAX_NESTING}")


def test_nesting_limit_holds_below_the_recursion_too():
    """Just past the limit tomllib copes, so the parsed document is measured (iteratively);
    dotted keys nest tables without a bracket and are measured the same way."""
    at_limit = "x = " + "[" * MAX_NESTING + "]" * MAX_NESTING + "\n"
    assert "nested" not in refused(job, at_limit + JOB, "x")         # refused only as unknown
    refused(job, "x = " + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1) + "\n" + JOB,
            "x.0.0", "nested too deeply")
    refused(job, ".".join(f"k{i}" for i in range(MAX_NESTING + 2)) + " = 1\n" + JOB,
            "k0.k1.k2", "nested too deeply")


def test_integer_past_the_int_conversion_limit_is_named():
    """tomllib raises a plain ValueError (not TOMLDecodeError) for more than 4300 digits."""
    refused(job, JOB.replace("duration = \"10m\"", "duration = " + "9" * 5000), "job.toml",
            "line 4 (order.duration)", "more than 4300 digits")


# -- a file that cannot be read as text: invalid UTF-8, a directory, not a file -------------------
def load_job(path):
    return parse_job_spec(read_text(path, SpecError), path)


@pytest.mark.parametrize("load", [load_job, load_provider_config, load_validator_config])
def test_invalid_utf8_names_the_file_byte_and_line(tmp_path, load):
    path = tmp_path / "bad.toml"
    path.write_bytes(JOB.encode().replace(b"10m", b"10\xff\xfem"))
    with pytest.raises(SpecError) as info:
        load(path)
    assert str(info.value) == f"{path}: not UTF-8 text (byte 0xff at offset 65, line 4)"


@pytest.mark.parametrize("load", [load_job, load_provider_config, load_validator_config])
def test_a_directory_is_named_as_one(tmp_path, load):
    with pytest.raises(SpecError, match=f"^{tmp_path}: is a directory, not a file$"):
        load(tmp_path)


def test_fifo_and_devices_are_refused_without_waiting_or_reading(tmp_path):
    """Opening a FIFO blocks until a writer comes and /dev/zero never ends: both would hang the
    command. The reader opens without blocking and checks the kind of file first."""
    fifo = tmp_path / "job.toml"
    os.mkfifo(fifo)
    outcome: list[str] = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(fifo)), daemon=True)
    reader.start()
    reader.join(10)
    assert outcome == [f"{fifo}: not a regular file"]
    assert _error_of("/dev/zero") == "/dev/zero: not a regular file"


def _error_of(path) -> str:
    try:
        read_text(path, SpecError)
    except SpecError as exc:
        return str(exc)
    return "read"


def test_oversized_file_missing_file_nul_path_and_no_permission(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_TEXT_BYTES + 1))
    assert _error_of(big) == f"{big}: larger than {MAX_TEXT_BYTES} bytes, the limit for this file"
    big.write_bytes(b"#" * MAX_TEXT_BYTES)
    assert read_text(big, SpecError) == "#" * MAX_TEXT_BYTES         # exactly the limit is read
    assert _error_of(tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: file not found"
    assert _error_of(f"{tmp_path}/a\x00b").startswith(f"{tmp_path}/a\x00b: cannot be read")
    if os.geteuid() != 0:            # root reads anything: the check cannot be seen as root
        locked = tmp_path / "locked.toml"
        locked.write_text(JOB)
        locked.chmod(0)
        assert _error_of(locked) == f"{locked}: permission denied"


# -- silently accepted before: stake "lots" / "-5", NUL in a path --------------------------------
@pytest.mark.parametrize(("parse", "text", "field"), [
    (provider, PROVIDER, "provider.stake"), (validator, VALIDATOR, "validator.stake")])
@pytest.mark.parametrize(("stake", "why"), [
    ('"lots"', "not an amount"), ('"-5"', "must not be negative"), ('"0"', "above zero"),
    ('"0.0"', "above zero"), ("100", 'as a string of TSTK, like "100"'),
    ('"1.0000000000000000001"', "more than 18 decimal places"),
    (f'"{MAX_UINT256 // 10**18 + 1}"', "uint256"),
])
def test_bad_stake_is_refused_at_parse_time(parse, text, field, stake, why):
    refused(parse, text.replace('stake = "100"', f"stake = {stake}"), field, why)


def test_stake_at_the_uint256_limit_is_exact():
    cfg = provider(PROVIDER.replace('"100"', f'"{MAX_UINT256 // 10**18}"'))
    assert cfg.provider.stake_base_units == MAX_UINT256 // 10**18 * 10**18


NUL_CASES = [
    (provider, PROVIDER.replace('"state"', '"st{nul}ate"'), "provider.state_dir"),
    (provider, PROVIDER.replace("port", 'network = "n{nul}.json"\nport'), "provider.network"),
    (validator, VALIDATOR.replace('"v"', '"v{nul}"'), "validator.state_dir"),
    (validator, VALIDATOR + '[challenges]\ndatasets_dir = "d{nul}"\n', "challenges.datasets_dir"),
    (job, JOB + '[dataset]\nsource = "data{nul}.txt"\n', "dataset.source"),
]


@pytest.mark.parametrize(("parse", "text", "field"), NUL_CASES)
def test_nul_byte_in_a_path_is_refused(parse, text, field):
    """A TOML escape is the way to get a NUL into a path; the check is on the parsed string,
    so every spelling is caught. Without the NUL the same file parses."""
    for nul in ("\\u0000", "\\U00000000"):
        refused(parse, text.replace("{nul}", nul), field, "NUL byte")
    parse(text.replace("{nul}", ""))


# -- excess decimals (were rounded) and 35-digit amounts (were rounded at 28 digits) -------------
@pytest.mark.parametrize(("parse", "text", "field", "amount", "decimals"), [
    (job, JOB, "order.max_price_per_gpu_hour", "3.00", 6),
    (job, JOB.replace("[workload]", 'deposit = "1000"\n[workload]'), "order.deposit", "1000", 6),
    (provider, PROVIDER, "pricing.price_per_gpu_hour", "1.20", 6),
    (provider, PROVIDER, "provider.stake", "100", 18),
])
def test_excess_decimals_are_refused_not_rounded(parse, text, field, amount, decimals):
    """'1234567890123456789012.1234567' has 29 significant digits: Decimal's default context
    rounded it to 28 and the excess digit vanished. A smaller amount has the same problem."""
    assert text.count(f'"{amount}"') == 1
    for value in ("1." + "0" * decimals + "1", "1234567890123456789012." + "1" * (decimals + 1)):
        refused(parse, text.replace(f'"{amount}"', f'"{value}"'), field,
                f"more than {decimals} decimal places")


def test_35_digit_amounts_are_exact():
    digits = "12345678901234567890123456789012345"
    spec = job(JOB.replace("[workload]", f'deposit = "{digits}.123456"\n[workload]'))
    assert spec.order.deposit == int(digits) * 10**6 + 123456
    cfg = provider(PROVIDER.replace('stake = "100"', f'stake = "{digits}.000000000000000001"'))
    assert cfg.provider.stake_base_units == int(digits) * 10**18 + 1
    # trailing zeros past the token's decimals are exact, so they are taken
    assert job(JOB.replace('"3.00"', '"3.000000000000"')).order.max_price_per_gpu_hour == 3_000_000


# -- a price of 10^80 and a duration of 8.6e27 s ---------------------------------------------------
@pytest.mark.parametrize(("parse", "text", "field", "price"), [
    (job, JOB, "order.max_price_per_gpu_hour", '"3.00"'),
    (provider, PROVIDER, "pricing.price_per_gpu_hour", '"1.20"')])
def test_price_over_the_practical_limit_is_refused(parse, text, field, price):
    for too_much in ('"1' + "0" * 80 + '"', "1" + "0" * 80, '"1000000.000001"',
                     str(MAX_PRICE_PER_GPU_HOUR + 1), '"12345678901234567890123456789012345"'):
        refused(parse, text.replace(price, too_much), field, "limit of 1,000,000.00 TUSD")
    at_limit = parse(text.replace(price, '"1000000"'))
    assert MAX_PRICE_PER_GPU_HOUR in (getattr(at_limit, "order", None) or at_limit.pricing
                                      ).model_dump().values()
    refused(parse, text.replace(price, "3.0"), field, "a string like '3.00'")     # a float


@pytest.mark.parametrize(("parse", "text", "field", "duration"), [
    (job, JOB, "order.duration", '"10m"'),
    (job, JOB.replace("[order]", '[order]\nbid_window = "4s"'), "order.bid_window", '"4s"'),
    (provider, PROVIDER + "[limits]\nmax_job_seconds = 60\n", "limits.max_job_seconds", "60")])
def test_duration_over_the_limit_is_refused(parse, text, field, duration):
    for too_long in ("8600000000000000000000000000", '"8600000000000000000000000000s"',
                     '"100000000000000000000000000d"', '"1096d"', str(MAX_DURATION + 1)):
        refused(parse, text.replace(duration, too_long), field, "limit of 1095d (94608000 s)")
    refused(parse, text.replace(duration, "8.6e27"), field, "must look like 90s")
    parse(text.replace(duration, '"1095d"'))


# -- what an attacker tries next: bytes on chain, control characters in errors ---------------------
def test_on_chain_strings_are_measured_in_bytes():
    """A 64-character model name of 2-byte characters is 128 bytes: too long for String[64]."""
    refused(job, JOB.replace("[order]", '[order]\ngpu_model = "' + "\u00e9" * 64 + '"'),
            "order.gpu_model", "64 bytes")
    refused(provider, PROVIDER.replace("port", 'public_url = "http://' + "a" * 250 + '"\nport'),
            "provider", "longer than 256 bytes")
    refused(provider, PROVIDER.replace("port", 'public_url = "ftp://x"\nport'),
            "provider.public_url", "http:// or https://")
    refused(provider, PROVIDER.replace("port", 'host = "a b"\nport'), "provider.host")


def test_hostile_keys_are_escaped_and_errors_capped():
    """A key of terminal control sequences is shown escaped; a thousand bad keys give a message
    of ten errors, not a thousand."""
    message = refused(job, JOB.replace("[workload]", '"\\u001b[2J" = 1\n[workload]'), "job.toml")
    assert "\x1b" not in message and "\\x1b[2J" in message
    many = "".join(f"k{i} = 1\n" for i in range(1000))
    message = refused(job, many + JOB, "and 990 more errors")
    assert len(message) < 2000
