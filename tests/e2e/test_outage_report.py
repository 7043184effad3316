"""Outage reports by the validator daemon: a real provider process proves it is up (a beat the
real `tessera validator run` receipts and reports), is stopped, time is moved from epoch to
epoch (evm_setNextBlockTimestamp), and the validator sends `Uptime.report_outage` once
`jail_after` epochs without the provider have become final (report_delay + 1 + answer_epochs
epochs after they end), then again for the next stretch while the provider stays down. The test
never reports anything itself. Also: a report that lost the race to another reporter is
refused, logged and counted; and the stretch finder agrees with the contract's rules
(hypothesis), live bits and finality included."""

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
from tessera.protocol import liveness
from tessera.validator.outages import (
    OutageReporter,
    first_not_final,
    first_reportable,
    first_whole_epoch,
    reportable_from,
)

pytestmark = pytest.mark.e2e

EPOCH = 60
JAIL_AFTER = 3
SETTLE = 3   # epochs after its end an epoch becomes final (report_delay 1 + 1 + answer_epochs 1)
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


def proven(node: ProviderProcess, epoch: int) -> bool:
    live = httpx.get(f"{node.url}/healthz", timeout=5).json()["liveness"]
    return bool(live and live["epoch"] == epoch and live["proven"])


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

    def reports(epoch: int) -> list:
        return chain.events("Uptime", "LivenessReported", network.deploy_block,
                            argument_filters={"epoch": epoch})

    assert uptime.functions.report_delay().call() + 1 + \
        uptime.functions.answer_epochs().call() == SETTLE
    validator.start()
    provider.start()
    try:
        # The provider proves an epoch with a beat the validator receipts, then stops; the
        # validator's report of that epoch is its last sign of life.
        last_up = jump_to_next_epoch(chain)
        wait_until(lambda: proven(provider, last_up), timeout=60,
                   what=f"the provider to prove epoch {last_up}")
        provider.stop()
        jump_to_next_epoch(chain)
        wait_until(lambda: reports(last_up), timeout=90, what=f"the report of epoch {last_up}")
        # Until jail_after epochs after the last one up are final, each new epoch is checked
        # and holds nothing to report.
        while current(chain) < last_up + JAIL_AFTER + SETTLE:
            epoch = jump_to_next_epoch(chain)
            wait_until(lambda e=epoch: validator.health()["outages_checked_epoch"] == e, timeout=90,
                       what=f"the validator to check epoch {epoch}")
            assert outages() == []
        jump_to_next_epoch(chain)
        first = wait_until(outages, timeout=90, what="the validator's outage report")
        # Still down: the next stretch is reported too, extending the jail.
        while current(chain) < last_up + 2 * JAIL_AFTER + SETTLE + 1:
            jump_to_next_epoch(chain)
        both = wait_until(lambda: [logs for logs in [outages()] if len(logs) == 2], timeout=90,
                          what="a second outage report")[0]
        wait_until(lambda: metric(validator.url, SENT) == 2, timeout=90,
                   what="the daemon to count its second report")
        refused = metric(validator.url, REFUSED)
    finally:
        if validator.proc is not None:
            stop(validator.proc)
        provider.stop()
    assert validator.proc.returncode == 0, validator.log.read_text()[-2000:]
    assert uptime.functions.is_up(provider.address, last_up).call()
    assert not uptime.functions.beats(provider.address, last_up).call()   # up by the report

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
    while (now := current(chain)) < expected_first + JAIL_AFTER + SETTLE:
        jump_to_next_epoch(chain)
    assert a.find(silent, now - 1) is None                 # the stretch was not final then
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
def contract_accepts(first: int, now: int, jail_after: int, settle: int, reported_until: int,
                     registered_epoch: int, up: set[int]) -> bool:
    """Uptime.report_outage's checks, restated (docs/uptime.md, "Jailing"): every epoch of the
    stretch final (now > epoch + settle) and not up, the last not more than jail_after + 1
    epochs past its answer end, after the registration and any reported outage."""
    end = first + jail_after
    last_answer_end = end - 1 + settle
    return (now > last_answer_end and now - last_answer_end <= jail_after + 1
            and first >= registered_epoch and first >= reported_until
            and not up & set(range(first, end)))


@settings(max_examples=300, deadline=None)
@given(jail_after=st.integers(1, 6), now=st.integers(0, 40), reported_until=st.integers(0, 40),
       registered_epoch=st.integers(0, 40), beats=st.sets(st.integers(0, 40), max_size=20),
       live=st.sets(st.integers(0, 40), max_size=20), report_delay=st.integers(1, 3),
       answer_epochs=st.integers(1, 3), offset=st.sampled_from([0, 250, 1 << 20]))
def test_first_reportable_is_the_earliest_stretch_the_contract_accepts(
        jail_after, now, reported_until, registered_epoch, beats, live, report_delay,
        answer_epochs, offset):
    shifted = {b + offset for b in beats}                  # cross a 256-epoch word boundary
    words: dict[int, int] = {}
    for epoch in shifted:
        words[epoch >> 8] = words.get(epoch >> 8, 0) | 1 << (epoch & 255)
    settle = liveness.answer_end(0, report_delay, answer_epochs)
    end = first_not_final(now + offset, report_delay, answer_epochs)
    lo = reportable_from(end, jail_after, reported_until + offset, registered_epoch + offset)
    got = first_reportable(words, lo, end, jail_after, {e + offset for e in live})
    valid = [f for f in range(now + 1) if contract_accepts(f, now, jail_after, settle,
                                                           reported_until, registered_epoch,
                                                           beats | live)]
    assert got == (valid[0] + offset if valid else None)


@given(genesis=st.integers(0, 10**9), length=st.integers(1, 10**5), delta=st.integers(-10**6, 10**7))
def test_first_whole_epoch_is_the_first_starting_at_or_after_registration(genesis, length, delta):
    registered_at = max(genesis + delta, 1)
    first = first_whole_epoch(registered_at, genesis, length)
    assert genesis + first * length >= registered_at
    assert first == 0 or genesis + (first - 1) * length < registered_at
