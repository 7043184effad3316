"""Bad files through the real command line (`python -m tessera.cli`, a separate process): one
readable line naming the file and field, exit code 1, no traceback, nothing sent (each fails in
parsing, before any network file is looked for: TESSERA_HOME is empty, so there is no devnet).

An attacker's way round the CLI's error handling is an error message that itself breaks the
printer: rich reads '[/x]' in a message as markup and raised MarkupError (a traceback) - a key
named '[/x]' is tested below."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def tessera(*args: str, home, cwd=None) -> subprocess.CompletedProcess:
    # wide columns: rich would otherwise wrap the one-line error at 80 characters
    env = {**os.environ, "TESSERA_HOME": str(home), "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "tessera.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def refused(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


JOB = ('name = "t"\n[order]\nmax_price_per_gpu_hour = "3.00"\nduration = "10m"\n'
       '[workload]\nkind = "train-charlm"\n')
PROVIDER = ('[provider]\naccount = "devnet:2"\nport = 7001\nstate_dir = "s"\nstake = "100"\n'
            '[pricing]\nprice_per_gpu_hour = "1.20"\n')


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    path.mkdir()
    return path


def test_job_submit_of_a_directory_names_it(tmp_path, home):
    refused(tessera("job", "submit", str(tmp_path), home=home),
            f"{tmp_path}: is a directory, not a file")


def test_provider_run_with_a_directory_as_config_names_it(tmp_path, home):
    refused(tessera("provider", "run", "--config", str(tmp_path), home=home),
            f"{tmp_path}: is a directory, not a file")


def test_job_submit_with_an_exponent_amount_names_the_field(tmp_path, home):
    spec = tmp_path / "job.toml"
    spec.write_text(JOB.replace('"3.00"', '"1e999999"'))
    refused(tessera("job", "submit", str(spec), home=home),
            f"{spec}: order.max_price_per_gpu_hour", "'1e999999' is not an amount")


def test_provider_run_with_an_exponent_stake_names_the_field(tmp_path, home):
    config = tmp_path / "provider.toml"
    config.write_text(PROVIDER.replace('stake = "100"', 'stake = "1e999999"'))
    refused(tessera("provider", "run", "--config", str(config), home=home),
            f"{config}: provider.stake", "'1e999999' is not an amount")


def test_job_submit_of_invalid_utf8_names_file_and_line(tmp_path, home):
    spec = tmp_path / "job.toml"
    spec.write_bytes(JOB.encode().replace(b'"t"', b'"\xc3\x28"'))
    refused(tessera("job", "submit", str(spec), home=home),
            f"{spec}: not UTF-8 text (byte 0xc3 at offset 8, line 1)")


def test_markup_and_deep_nesting_in_a_spec_are_plain_errors(tmp_path, home):
    spec = tmp_path / "job.toml"
    spec.write_text('"[/x]" = 1\n' + JOB.replace('"10m"', "[" * 50_000 + "]" * 50_000))
    refused(tessera("job", "submit", str(spec), home=home), f"{spec}: line 5 (order.duration)",
            "nested too deeply")
    spec.write_text('"[/x]" = 1\n' + JOB)
    refused(tessera("job", "submit", str(spec), home=home), "[/x]: Extra inputs are not permitted")


@pytest.mark.parametrize("amount, problem", [
    ("abc", "'abc' is not an amount"), ("0", "must be above zero"),
    ("1.0000001", "more than 6 decimal places"), ("1e3", "is not an amount")])
def test_job_top_up_refuses_a_bad_amount_before_connecting(home, amount, problem):
    # no devnet exists here: an amount that got past parsing would fail on the network file
    refused(tessera("job", "top-up", "1", amount, home=home), "top-up amount", problem)


def test_job_list_and_status_refuse_a_bad_warn_within(home):
    refused(tessera("job", "list", "--warn-within", "soon", home=home), "--warn-within")
    refused(tessera("job", "status", "1", "--warn-within", "0s", home=home),
            "--warn-within", "must be positive")


def test_an_escrow_top_up_without_a_ceiling_is_refused_naming_the_field(tmp_path, home):
    spec = tmp_path / "job.toml"
    spec.write_text(JOB + '[escrow]\ntop_up = "1.00"\n')
    refused(tessera("job", "submit", str(spec), home=home), f"{spec}: escrow",
            "top_up needs top_up_ceiling")
