"""Probes: one report per validator per finished epoch, only from staked validators, with
sorted per-provider tallies of registered providers; the receipt digest matches Python's."""

from __future__ import annotations

import boa
import pytest
from contracts_support import CONTRACTS_DIR, MIN_STAKE, TSTK, UNBONDING_PERIOD, events, key_account
from eth_account import Account
from eth_account.messages import encode_typed_data

from tessera.protocol import messages

MAX_DELAY = 4
VALIDATORS = [key_account(60 + i) for i in range(2)]
ROOT = b"\xab" * 32


@pytest.fixture(scope="session")
def probe_factories(factories):  # `factories` sets the search paths (snekmate)
    return {name: boa.load_partial(str(CONTRACTS_DIR / f"{name}.vy")) for name in ("Validators", "Probes")}


@pytest.fixture
def probes(system, probe_factories):
    vals = probe_factories["Validators"].deploy(system.stake.address, MIN_STAKE, UNBONDING_PERIOD)
    for who in VALIDATORS:
        system.stake.mint(who.address, 1_000 * TSTK)
        with boa.env.prank(who.address):
            system.stake.approve(vals.address, 2**256 - 1)
            vals.register(MIN_STAKE)
    contract = probe_factories["Probes"].deploy(vals.address, system.uptime.address, MAX_DELAY)
    contract.vals = vals
    return contract


def providers(system, n=None) -> list[str]:
    return sorted((p.address for p in system.providers[:n]), key=lambda a: int(a, 16))


def to_epoch(probes, epoch: int) -> None:
    """Move time to the start of `epoch`."""
    boa.env.time_travel(seconds=probes.genesis() + epoch * probes.epoch_length() - boa.env.timestamp)


def report(probes, who, epoch, tallies, root=ROOT, count=None):
    count = sum(a + m for _, a, m in tallies) if count is None else count
    with boa.env.prank(who.address):
        probes.report(epoch, root, count, tallies)


def test_clock_is_uptimes(system, probes):
    assert probes.genesis() == system.uptime.genesis()
    assert probes.epoch_length() == system.uptime.epoch_length()
    assert probes.registry() == system.registry.address
    to_epoch(probes, 7)
    assert probes.current_epoch() == system.uptime.current_epoch() == 7


def test_report_records_and_logs(system, probes):
    to_epoch(probes, 3)
    p = providers(system, 3)
    tallies = [(p[0], 1, 0), (p[1], 0, 2), (p[2], 3, 1)]
    report(probes, VALIDATORS[0], 2, tallies)
    logs = probes.get_logs()
    assert [type(e).__name__ for e in logs] == ["ProbeTally"] * 3 + ["ProbeReport"]
    assert [(e.validator, e.provider, e.epoch, e.answered, e.missed) for e in logs[:3]] == [
        (VALIDATORS[0].address, a, 2, n, m) for a, n, m in tallies]
    rep = logs[3]
    assert (rep.validator, rep.epoch, rep.receipts_root, rep.receipt_count, rep.provider_count,
            rep.answered_total, rep.missed_total) == (VALIDATORS[0].address, 2, ROOT, 7, 3, 4, 3)
    assert probes.reported(VALIDATORS[0].address, 2)
    assert not probes.reported(VALIDATORS[0].address, 1)
    assert not probes.reported(VALIDATORS[1].address, 2)
    report(probes, VALIDATORS[1], 2, tallies[:1])  # another validator, same epoch: fine
    assert probes.reported(VALIDATORS[1].address, 2)


def test_epoch_refusals(system, probes):
    tallies = [(providers(system, 1)[0], 1, 0)]
    to_epoch(probes, 10)
    v = VALIDATORS[0]
    with boa.reverts("probes: epoch not over"):
        report(probes, v, 10, tallies)  # current
    with boa.reverts("probes: epoch not over"):
        report(probes, v, 11, tallies)  # future
    with boa.reverts("probes: epoch too old"):
        report(probes, v, 10 - MAX_DELAY - 1, tallies)
    report(probes, v, 10 - MAX_DELAY, tallies)  # the oldest still accepted
    with boa.reverts("probes: already reported"):
        report(probes, v, 10 - MAX_DELAY, tallies)
    with boa.reverts("probes: already reported"):
        report(probes, v, 10 - MAX_DELAY, tallies, root=b"\x01" * 32)


def test_bitmap_spans_words(system, probes):
    tallies = [(providers(system, 1)[0], 1, 0)]
    for epoch in (255, 256, 513):
        to_epoch(probes, epoch + 1)
        report(probes, VALIDATORS[0], epoch, tallies)
    for epoch in (255, 256, 513):
        assert probes.reported(VALIDATORS[0].address, epoch)
    for epoch in (254, 257, 512, 1):
        assert not probes.reported(VALIDATORS[0].address, epoch)


def test_only_validators(system, probes):
    to_epoch(probes, 2)
    tallies = [(providers(system, 1)[0], 1, 0)]
    for outsider in (system.outsider, system.providers[0]):
        with boa.reverts("probes: not a validator"):
            report(probes, outsider, 1, tallies)
    v = VALIDATORS[0]
    with boa.env.prank(v.address):
        probes.vals.request_unbond(1)  # below the minimum: no longer a validator
    with boa.reverts("probes: not a validator"):
        report(probes, v, 1, tallies)
    assert not probes.reported(v.address, 1)


def test_tally_refusals(system, probes):
    to_epoch(probes, 2)
    v, p = VALIDATORS[0], providers(system, 2)
    with boa.reverts("probes: empty root"):
        report(probes, v, 1, [(p[0], 1, 0)], root=b"\x00" * 32)
    with boa.reverts("probes: no tallies"):
        report(probes, v, 1, [])
    with boa.reverts("probes: providers not sorted"):
        report(probes, v, 1, [(p[1], 1, 0), (p[0], 1, 0)])
    with boa.reverts("probes: providers not sorted"):
        report(probes, v, 1, [(p[0], 1, 0), (p[0], 1, 0)])  # duplicate
    with boa.reverts("probes: providers not sorted"):
        report(probes, v, 1, [("0x" + "00" * 20, 1, 0)])
    with boa.reverts("probes: empty tally"):
        report(probes, v, 1, [(p[0], 1, 0), (p[1], 0, 0)])
    with boa.reverts("probes: unknown provider"):
        report(probes, v, 1, [(system.outsider.address, 1, 0)])
    with boa.reverts("probes: receipt count mismatch"):
        report(probes, v, 1, [(p[0], 1, 1)], count=1)
    assert not probes.reported(v.address, 1)
    report(probes, v, 1, [(p[0], 2**32 - 1, 2**32 - 1)])  # widest counts add up in uint256
    (rep,) = events(probes, "ProbeReport")
    assert rep.answered_total + rep.missed_total == 2 * (2**32 - 1)


def test_constructor_refusals(system, probes, probe_factories):
    zero = "0x" + "00" * 20
    with boa.reverts("probes: zero validators"):
        probe_factories["Probes"].deploy(zero, system.uptime.address, 1)
    with boa.reverts("probes: zero uptime"):
        probe_factories["Probes"].deploy(probes.vals.address, zero, 1)
    with boa.reverts("probes: zero report delay"):
        probe_factories["Probes"].deploy(probes.vals.address, system.uptime.address, 0)


def test_receipt_digest_matches_python(system, probes):
    provider, validator = system.providers[0], VALIDATORS[0]
    challenge, deadline = bytes(range(32)), 1_700_000_000
    typed = messages.probe_receipt_typed_data(system.chain_id, probes.address, provider.address,
                                              validator.address, 9, challenge, deadline)
    assert probes.receipt_digest(provider.address, validator.address, 9, challenge, deadline) == (
        messages.digest(typed))
    signature = messages.sign(provider, typed)
    assert messages.recover(typed, signature) == provider.address
    # any field changed gives another digest, so a receipt cannot be replayed elsewhere
    other = messages.probe_receipt_typed_data(system.chain_id + 1, probes.address, provider.address,
                                              validator.address, 9, challenge, deadline)
    assert Account.recover_message(encode_typed_data(full_message=other), signature=signature) != (
        provider.address)
