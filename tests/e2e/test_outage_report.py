"""Outage reports by the validator daemon: a real provider process is stopped, time is moved
from epoch to epoch (evm_setNextBlockTimestamp), and a real `tessera validator run` process
sends `Uptime.report_outage` once `jail_after` whole epochs have passed without a heartbeat,
then again for the next stretch while the provider stays down. The test never reports anything
itself. Also: a report that lost the race to another reporter is refused, logged and counted;
and the stretch finder agrees with the contract's rules (hypothesis)."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from tests.support.processes import ProviderProcess, ValidatorProcess, wait_until
from web3.logs import DISCARD

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain, tx_hash
from tessera.chain.registry import ProviderRegistry
from tessera.daemons import stop
from tessera.explorer import db
from tessera.explorer.audit import audit
from tessera.explorer.indexer import Indexer, database_figures
from tessera.logs import EventLog
from tessera.validator.outages import (
    OutageReporter,
    first_reportable,
    first_whole_epoch,
    reportable_from,
)

pytestmark = pytest.mark.e2e

EPOCH = 60
JAIL_AFTER = 3
PROVIDER, SILENT, VALIDATOR, RACER_A, RACER_B = 3, 5, 7, 8, 9
SENT = 'tessera_validator_outage_reports_total{outcome="sent"}'
REFUSED = 'tessera_validator_outage_reports_total{outcome="refused"}'


@pytest.fixture(scope="module")
def outage_devnet(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("outages")
    with private_devnet(home, epoch_length=EPOCH, jail_after=JAIL_AFTER) as (devnet, network):
        yield home, devnet, network


def jump_to_next_epoch(chain: Chain) -> int:
    """Mine a block at the first second of the next epoch; returns that epoch."""
    uptime = chain.uptime
    epoch = uptime.functions.current_epoch().call() + 1
    chain.w3.provider.make_request("evm_setNextBlockTimestamp",
                                   [uptime.functions.epoch_start(epoch).call()])
    chain.w3.provider.make_request("evm_mine", [])
    return epoch


def current(chain: Chain) -> int:
    return chain.uptime.functions.current_epoch().call()


def metric(url: str, line_start: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[1])
    return 0.0


def test_validator_jails_a_stopped_provider(outage_devnet):
    home, devnet, network = outage_devnet
    chain = Chain(network)
    uptime, registry = chain.uptime, chain.registry
    assert uptime.functions.jail_after().call() == JAIL_AFTER
    provider = ProviderProcess(home, devnet.network_file, account=PROVIDER, price="1.00",
                               name="p-outage")
    validator = ValidatorProcess(home, devnet.network_file, account=VALIDATOR)
    me = devnet_account(VALIDATOR).address

    def outages() -> list:
        return chain.events("Uptime", "OutageReported", network.deploy_block)

    provider.start()
    validator.start()
    try:
        wait_until(lambda: uptime.functions.beats(provider.address, current(chain)).call(),
                   timeout=60, what="a heartbeat in the current epoch")
        provider.stop()
        # Its last heartbeat is in this epoch, or the one before if wall-clock time just crossed
        # a boundary; every later epoch is missed.
        last_up = current(chain)
        if not uptime.functions.beats(provider.address, last_up).call():
            last_up -= 1
        assert uptime.functions.beats(provider.address, last_up).call()
        # Until jail_after epochs after the last heartbeat have ended, each new epoch is checked
        # and holds nothing to report.
        while current(chain) < last_up + JAIL_AFTER:
            epoch = jump_to_next_epoch(chain)
            wait_until(lambda e=epoch: validator.health()["outages_checked_epoch"] == e, timeout=30,
                       what=f"the validator to check epoch {epoch}")
            assert outages() == []
        jump_to_next_epoch(chain)
        first = wait_until(outages, timeout=30, what="the validator's outage report")
        # Still down: the next stretch is reported too, extending the jail.
        while current(chain) < last_up + 2 * JAIL_AFTER + 1:
            jump_to_next_epoch(chain)
        both = wait_until(lambda: [logs for logs in [outages()] if len(logs) == 2], timeout=30,
                          what="a second outage report")[0]
        wait_until(lambda: metric(validator.url, SENT) == 2, timeout=30,
                   what="the daemon to count its second report")
        refused = metric(validator.url, REFUSED)
    finally:
        if validator.proc is not None:
            stop(validator.proc)
        provider.stop()
    assert validator.proc.returncode == 0, validator.log.read_text()[-2000:]

    assert first[0]["args"]["first_epoch"] == last_up + 1
    stretches = [(log["args"]["first_epoch"], log["args"]["last_epoch"]) for log in both]
    assert stretches == [(last_up + 1, last_up + JAIL_AFTER),
                         (last_up + JAIL_AFTER + 1, last_up + 2 * JAIL_AFTER)]
    assert all(log["args"]["reporter"] == me and log["args"]["provider"] == provider.address
               for log in both)
    assert uptime.functions.reported_until(provider.address).call() == last_up + 2 * JAIL_AFTER + 1
    jailed = chain.events("ProviderRegistry", "Jailed", network.deploy_block)
    assert [(j["args"]["provider"], j["args"]["by"]) for j in jailed] == \
        [(provider.address, uptime.address)] * 2
    record = registry.functions.providers(provider.address).call()
    assert record[10] == both[1]["args"]["jailed_until"]     # jailed_until
    assert not registry.functions.is_active(provider.address).call()
    assert refused == 0

    # The daemon logs each report with its transaction and gas (docs/uptime.md quotes these).
    lines = [json.loads(line) for line in validator.log.read_text().splitlines()
             if line.startswith("{")]
    reported = [line for line in lines if line["event"] == "outage-reported"]
    assert [r["tx"] for r in reported] == [tx_hash(log) for log in both]
    gas = [r["gas"] for r in reported]
    for r, log in zip(reported, both, strict=True):
        receipt = chain.w3.eth.get_transaction_receipt(log["transactionHash"])
        assert r["gas"] == receipt["gasUsed"] and r["jailed_until"] == log["args"]["jailed_until"]
    print(f"report_outage gasUsed from the daemon's receipts (jail_after={JAIL_AFTER}): {gas}")
    assert all(50_000 < g < 150_000 for g in gas)

    # The explorer books both outages with their transactions; the audit agrees.
    engine = db.make_engine(f"sqlite:///{home / 'explorer.db'}")
    Indexer(chain, engine, confirmations=0).sync()
    figures, _ = database_figures(engine)
    txs = tuple(sorted(tx_hash(log) for log in both))
    assert figures[("outages.by_provider.count", provider.address)].value == 2
    assert figures[("outages.by_provider.epochs", provider.address)].value == 2 * JAIL_AFTER
    assert figures[("outages.by_provider.count", provider.address)].txs == txs
    result = audit(chain, engine)
    assert result.agrees, result.problems


def test_a_report_that_lost_the_race_is_refused_logged_and_counted(outage_devnet):
    """Two reporters find the same outage; the second one's send is refused by the chain."""
    _, _, network = outage_devnet
    chain = Chain(network)
    silent = devnet_account(SILENT).address
    ProviderRegistry(Chain(network, devnet_account(SILENT))).register(
        100 * 10**18, "CPU", 1, 1024, 1, "http://127.0.0.1:9", 1)   # never heartbeats

    def reporter(account: int) -> tuple[OutageReporter, io.StringIO, CollectorRegistry]:
        stream, metrics = io.StringIO(), CollectorRegistry()
        r = OutageReporter(Chain(network, devnet_account(account)), EventLog("test", stream), metrics)
        r.prepare()
        return r, stream, metrics

    (a, _, metrics_a), (b, log_b, metrics_b) = reporter(RACER_A), reporter(RACER_B)
    registered_at = chain.registry.functions.providers(silent).call()[9]
    expected_first = first_whole_epoch(registered_at, a.genesis, a.epoch_length)
    while (now := current(chain)) < expected_first + JAIL_AFTER:
        jump_to_next_epoch(chain)
    assert a.find(silent, now - 1) is None                 # the stretch had not ended then
    found_a, found_b = a.find(silent, now), b.find(silent, now)
    assert found_a == found_b and found_a.first_epoch == expected_first
    assert found_a.last_epoch == expected_first + JAIL_AFTER - 1

    receipt = a.report(found_a)
    assert receipt is not None
    [event] = chain.uptime.events.OutageReported().process_receipt(receipt, errors=DISCARD)
    jailed_until = chain.registry.functions.providers(silent).call()[10]
    assert b.report(found_b) is None                       # refused: already reported
    assert chain.registry.functions.providers(silent).call()[10] == jailed_until == \
        event["args"]["jailed_until"]
    [line] = [json.loads(x) for x in log_b.getvalue().splitlines()]
    assert line["event"] == "outage-report-refused" and "already reported" in line["error"]
    assert metrics_b.get_sample_value("tessera_validator_outage_reports_total",
                                      {"outcome": "refused"}) == 1
    assert metrics_a.get_sample_value("tessera_validator_outage_reports_total",
                                      {"outcome": "sent"}) == 1
    assert b.find(silent, now) is None                     # nothing left to report this epoch


# -- the stretch finder against the contract's rules (no chain) --------------------------------
def contract_accepts(first: int, now: int, jail_after: int, reported_until: int,
                     registered_epoch: int, beats: set[int]) -> bool:
    """Uptime.report_outage's checks, restated (docs/uptime.md, "Jailing")."""
    end = first + jail_after
    return (now - first >= jail_after and now - end <= jail_after and first >= registered_epoch
            and first >= reported_until and not beats & set(range(first, end)))


@settings(max_examples=300, deadline=None)
@given(jail_after=st.integers(1, 6), now=st.integers(0, 40), reported_until=st.integers(0, 40),
       registered_epoch=st.integers(0, 40), beats=st.sets(st.integers(0, 40), max_size=20),
       offset=st.sampled_from([0, 250, 1 << 20]))
def test_first_reportable_is_the_earliest_stretch_the_contract_accepts(
        jail_after, now, reported_until, registered_epoch, beats, offset):
    shifted = {b + offset for b in beats}                  # cross a 256-epoch word boundary
    words: dict[int, int] = {}
    for epoch in shifted:
        words[epoch >> 8] = words.get(epoch >> 8, 0) | 1 << (epoch & 255)
    lo = reportable_from(now + offset, jail_after, reported_until + offset, registered_epoch + offset)
    got = first_reportable(words, lo, now + offset, jail_after)
    valid = [f for f in range(now + 1) if contract_accepts(f, now, jail_after, reported_until,
                                                           registered_epoch, beats)]
    assert got == (valid[0] + offset if valid else None)


@given(genesis=st.integers(0, 10**9), length=st.integers(1, 10**5), delta=st.integers(-10**6, 10**7))
def test_first_whole_epoch_is_the_first_starting_at_or_after_registration(genesis, length, delta):
    registered_at = max(genesis + delta, 1)
    first = first_whole_epoch(registered_at, genesis, length)
    assert genesis + first * length >= registered_at
    assert first == 0 or genesis + (first - 1) * length < registered_at
