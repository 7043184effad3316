"""Downtime end to end, with real processes: a provider holding a lease is stopped for known
epochs and the tenant's `tessera job close` refunds exactly those epochs' pay; a provider down
for `jail_after` epochs is jailed by a permissionless report and then does not bid.

Time is moved with evm_increaseTime, so the test does not wait for epochs to pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from tests.support.jobs import SMALL_JOB, lease_for
from tests.support.processes import ProviderProcess, wait_until
from web3 import Web3
from web3.logs import DISCARD

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain, tx_hash
from tessera.explorer import db
from tessera.explorer.audit import audit
from tessera.explorer.indexer import Indexer, database_figures
from tessera.protocol.figures import ALL
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.money import format_amount
from tessera.tenant.client import Tenant

pytestmark = pytest.mark.e2e

EPOCH = 30
STOPPED_EPOCHS = 3
TENANT, REPORTER = 6, 8
JOB = {**SMALL_JOB, "order": {**SMALL_JOB["order"], "duration": "30m"}}


@pytest.fixture
def short_epoch_devnet(tmp_path, private_devnet):
    with private_devnet(tmp_path, epoch_length=EPOCH) as (devnet, network):
        yield devnet, network


def next_epoch(w3: Web3, epochs: int = 1) -> None:
    w3.provider.make_request("evm_increaseTime", [EPOCH * epochs])
    w3.provider.make_request("evm_mine", [])


def settle_epochs(uptime) -> int:
    """Epochs after an epoch ends before it is final (Uptime.is_final)."""
    return uptime.functions.report_delay().call() + 1 + uptime.functions.answer_epochs().call()


def metric(node: ProviderProcess, name: str) -> float:
    for line in httpx.get(f"{node.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def log_events(node: ProviderProcess) -> list[dict]:
    lines = (node.home / f"{node.name}.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_stopped_provider_loses_exactly_the_missed_epochs(short_epoch_devnet, tmp_path):
    devnet, network = short_epoch_devnet
    chain = Chain(network, devnet_account(TENANT))
    uptime, w3, tenant = chain.uptime, chain.w3, Tenant(chain)
    node = ProviderProcess(tmp_path, devnet.network_file, account=3, price="1.00", name="p-down")

    def current() -> int:
        return uptime.functions.current_epoch().call()

    def beat_now() -> bool:
        return uptime.functions.beats(node.address, current()).call()

    node.start()
    try:
        lease_id = lease_for(tenant, JobSpec.model_validate(JOB))
        for _ in range(2):
            wait_until(beat_now, timeout=60, what="a heartbeat in the current epoch")
            next_epoch(w3)
        wait_until(beat_now, timeout=60, what="a heartbeat in the current epoch")
        node.stop()
        stopped_from = current() + 1
        next_epoch(w3, STOPPED_EPOCHS + 1)  # down for STOPPED_EPOCHS whole epochs, back in the next
        resumed = current()
        node.start()
        wait_until(beat_now, timeout=60, what="a heartbeat after the restart")
        # Up again until the stopped epochs are final (Uptime.is_final: reports, receipt claims
        # and challenges over): only final epochs can be claimed.
        for _ in range(settle_epochs(uptime)):
            next_epoch(w3)
            wait_until(beat_now, timeout=60, what="a heartbeat in an epoch after the restart")

        # What the contracts say: every whole epoch of the lease without a heartbeat, and its pay.
        lease = tenant.market.lease(lease_id)
        genesis = uptime.functions.genesis().call()
        first_whole = -(-(lease.start - genesis) // EPOCH)
        missed = [e for e in range(first_whole, current())
                  if not uptime.functions.is_up(node.address, e).call()]
        # Stopped for STOPPED_EPOCHS warped epochs; wall-clock time can add the ones at the edges.
        assert set(range(stopped_from, stopped_from + STOPPED_EPOCHS)) <= set(missed)
        assert set(missed) <= set(range(stopped_from - 1, resumed + 1))
        rate = lease.price_per_gpu_hour * lease.gpus

        def stream(t: int) -> int:
            return min(lease.budget, rate * (t - lease.start) // 3600)

        pay = sum(stream(genesis + (e + 1) * EPOCH) - stream(genesis + e * EPOCH) for e in missed)
        assert pay > 0

        # The tenant closes from the command line: downtime claimed first, then the close.
        usd_before = tenant.market.payment_token.balance_of(chain.address)
        tstk_before = chain.call(chain.stake_token.functions.balanceOf(chain.address))
        supply_before = chain.call(chain.stake_token.functions.totalSupply())
        def job(command: str) -> str:
            """`tessera job <command> <lease>` as the tenant; its output, unwrapped."""
            run = subprocess.run(
                [sys.executable, "-m", "tessera.cli", "job", command, str(lease_id), "--network",
                 str(devnet.network_file), "--account", f"devnet:{TENANT}"],
                capture_output=True, text=True, timeout=120,
                env={**os.environ, "TESSERA_HOME": str(tmp_path)})
            assert run.returncode == 0, run.stdout + run.stderr
            return " ".join(run.stdout.split())  # rich wraps long lines

        said = job("close")
        assert f"provider missed {len(missed)} epoch(s) of the lease: downtime refund " \
               f"{format_amount(pay, 6, 'TUSD')}" in said
        assert f"claimable with `tessera job claim {lease_id}`" in said  # the last, not final
        assert "no final epoch without the provider up is left to claim" in job("claim")

        start = network.deploy_block
        [claimed] = chain.events("Market", "DowntimeClaimed", start,
                                 argument_filters={"lease_id": lease_id})
        [closed] = chain.events("Market", "LeaseClosed", start,
                                argument_filters={"lease_id": lease_id})
        claim = claimed["args"]
        assert list(claim["epochs"]) == missed
        assert claim["amount"] == claim["refund"] == pay
        assert claim["stake_slashed"] == len(missed) * 10**18
        refund = closed["args"]["refund"]
        assert tenant.market.payment_token.balance_of(chain.address) - usd_before == pay + refund
        # the slash is burned, not paid to the tenant (review 26: a sybil tenant's claims moved
        # a provider's stake out of reach of a pending verdict)
        assert chain.call(chain.stake_token.functions.balanceOf(chain.address)) == tstk_before
        assert supply_before - chain.call(chain.stake_token.functions.totalSupply()) \
            == len(missed) * 10**18
        lease = tenant.market.lease(lease_id)
        assert lease.downtime == pay and lease.paid == stream(lease.closed_at) - pay
        assert lease.paid + pay + refund == lease.budget

        # Slashed below the minimum stake, the running node notices it cannot be leased.
        wait_until(lambda: metric(node, "tessera_provider_registry_active") == 0, timeout=90,
                   what="the provider to see it is inactive")
        assert any(e["event"] == "inactive" for e in log_events(node))
    finally:
        node.stop()

    # The explorer: the refund is the tenant's, not provider income, and audit agrees.
    engine = db.make_engine(f"sqlite:///{tmp_path / 'explorer.db'}")
    Indexer(chain, engine, confirmations=0).sync()
    figures, _ = database_figures(engine)
    assert figures[("downtime.total.refunds", ALL)].value == pay
    assert figures[("downtime.by_provider.epochs", node.address)].value == len(missed)
    assert figures[("downtime.by_provider.forfeited", node.address)].txs == \
        (tx_hash(claimed),)
    income = figures[("revenue.by_provider.provider_income", node.address)].value
    fees = figures[("revenue.by_provider.protocol_fees", node.address)].value
    assert income + fees == lease.paid
    report = audit(chain, engine)
    assert report.agrees, report.problems


def test_long_outage_jails_the_provider_and_it_stops_bidding(short_epoch_devnet, tmp_path):
    devnet, network = short_epoch_devnet
    reporter = Chain(network, devnet_account(REPORTER))
    uptime, registry, w3 = reporter.uptime, reporter.registry, reporter.w3
    jail_after = uptime.functions.jail_after().call()
    node = ProviderProcess(tmp_path, devnet.network_file, account=4, price="1.00", name="p-jail")

    def current() -> int:
        return uptime.functions.current_epoch().call()

    node.start()
    try:
        wait_until(lambda: uptime.functions.beats(node.address, current()).call(), timeout=60,
                   what="a heartbeat in the current epoch")
        assert metric(node, "tessera_provider_jailed_until") == 0
        node.stop()
        first = current() + 1
        next_epoch(w3, jail_after + 1 + settle_epochs(uptime))  # the stretch is final
        receipt = reporter.send(uptime.functions.report_outage(node.address, first))
        [reported] = uptime.events.OutageReported().process_receipt(receipt, errors=DISCARD)
        until = reported["args"]["jailed_until"]
        assert reported["args"]["first_epoch"] == first
        assert until == w3.eth.get_block(receipt["blockNumber"])["timestamp"] + \
            uptime.functions.jail_period().call()
        assert not registry.functions.is_active(node.address).call()

        node.start()
        wait_until(lambda: metric(node, "tessera_provider_jailed_until") == until, timeout=90,
                   what="the provider to export its jail")
        assert any(e["event"] == "jailed" and e["until"] == until for e in log_events(node))
        tenant = Tenant(Chain(network, devnet_account(TENANT)))
        order_id, _ = tenant.post_order(JobSpec.model_validate(JOB))
        wait_until(lambda: any(e["event"] == "no-bid" and e.get("order_id") == order_id
                               for e in log_events(node)), timeout=90,
                   what="the jailed provider to pass on the order")
        [no_bid] = [e for e in log_events(node)
                    if e["event"] == "no-bid" and e.get("order_id") == order_id]
        assert no_bid["reason"] == f"jailed until {until}"
        assert httpx.get(f"{node.url}/orders/{order_id}/bid", timeout=5).status_code == 404
        assert tenant.collect_bids(order_id, window_s=1) == []
        assert metric(node, "tessera_provider_bids_total") == 0
        # Jailed, it still proves liveness: heartbeats are not refused.
        wait_until(lambda: uptime.functions.beats(node.address, current()).call(), timeout=60,
                   what="a heartbeat while jailed")
    finally:
        node.stop()
