"""Indexer and audit on a real anvil devnet with a seeded, randomized market (~40 leases)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session
from tests.support.explorer import dump

from tessera.explorer import db
from tessera.explorer.audit import audit
from tessera.explorer.db import make_engine
from tessera.explorer.indexer import Indexer, database_figures, indexed_state
from tessera.protocol.figures import compare


def test_indexer_and_audit_agree_and_match_contract_state(market_run, chain, tmp_path):
    _, _, _, work = market_run
    assert len(work.leases) >= 40
    engine = make_engine(f"sqlite:///{tmp_path}/a.db")
    report = Indexer(chain, engine, confirmations=0, batch_blocks=7).sync()
    assert report.batches > 1 and report.to_block == chain.block_number()
    result = audit(chain, engine)
    assert result.agrees, result.problems
    figures, _ = database_figures(engine)
    v = {k: f.value for k, f in figures.items()}
    events = {f.name for f in figures.values()}
    assert {"revenue.by_day.tenant_paid", "utilization.by_day_model.registered_gpu_seconds",
            "price.by_model.median", "stake.by_provider.slashed"} <= events
    # Independent check against the contracts' own state at the same (head) block.
    market, registry = chain.market, chain.registry
    paid = sum(market.functions.leases(i).call()[7] for i in range(1, len(work.leases) + 1))
    assert v[("revenue.total.tenant_paid", "all")] == paid
    assert v[("revenue.total.tenant_paid", "all")] == (v[("revenue.total.provider_income", "all")]
                                                       + v[("revenue.total.protocol_fees", "all")])
    for address in work.providers:
        record = registry.functions.providers(address).call()
        assert v[("stake.by_provider.active", address)] == record[0]
        assert v[("stake.by_provider.unbonding", address)] == record[1]
        assert v[("stake.by_provider.slashed", address)] == record[11]
    assert v[("slashes.total.count", "all")] >= 1
    assert v[("leases.total.count", "all")] == len(work.leases)
    closed = sum(lease.closed for lease in work.leases.values())
    assert v[("leases.closed.count", "all")] == closed
    for name, key in figures:
        if name.startswith("utilization.") and name.endswith("leased_gpu_seconds"):
            assert 0 <= v[(name, key)]
    # Indexing again changes nothing.
    before = dump(engine)
    assert Indexer(chain, engine, confirmations=0).sync().batches == 0
    assert dump(engine) == before


def test_killed_mid_sync_resumes_to_identical_tables(market_run, chain, tmp_path):
    whole = make_engine(f"sqlite:///{tmp_path}/whole.db")
    Indexer(chain, whole, confirmations=3, batch_blocks=4).sync()

    broken = make_engine(f"sqlite:///{tmp_path}/broken.db")
    indexer = Indexer(chain, broken, confirmations=3, batch_blocks=4)
    assert indexer.sync(max_batches=3).batches == 3
    cursor = indexed_state(broken).last_block

    def die(session, batch):  # a crash after the batch's rows are written, before commit
        raise KeyboardInterrupt

    indexer.before_commit = die
    with pytest.raises(KeyboardInterrupt):
        indexer.sync()
    assert indexed_state(broken).last_block == cursor  # the half-written batch left no trace
    indexer.before_commit = None
    indexer.sync()
    assert dump(broken) == dump(whole)
    assert compare(database_figures(whole)[0], database_figures(broken)[0]) == []


def test_sigkill_mid_sync_then_restart(market_run, chain, tmp_path):
    _, devnet, _, _ = market_run
    url = f"sqlite:///{tmp_path}/killed.db"
    cmd = [sys.executable, "-m", "tessera.explorer.cli", "explorer", "index", "--network",
           str(devnet.network_file), "--database", url, "--confirmations", "0", "--batch-blocks", "1"]
    engine = make_engine(url)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        state = indexed_state(engine)
        if state is not None and state.last_block >= chain.network.deploy_block + 5:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the indexer finished before it could be killed"
    assert indexed_state(engine).last_block < chain.block_number()
    subprocess.run(cmd, check=True, capture_output=True)
    assert audit(chain, engine).agrees
    whole = make_engine(f"sqlite:///{tmp_path}/whole.db")
    Indexer(chain, whole, confirmations=0, batch_blocks=1).sync()  # same checkpoints
    assert dump(engine) == dump(whole)


def test_cli_index_audit_stats_and_tampering(market_run, tmp_path):
    from typer.testing import CliRunner

    from tessera.explorer.cli import app

    _, devnet, _, _ = market_run
    url = f"sqlite:///{tmp_path}/cli.db"
    net = ["--network", str(devnet.network_file)]
    runner = CliRunner()
    result = runner.invoke(app, ["explorer", "index", *net, "--database", url, "--confirmations", "2"])
    assert result.exit_code == 0, result.output
    assert "indexed blocks" in result.output
    result = runner.invoke(app, ["audit", *net, "--database", url])
    assert result.exit_code == 0, result.output
    assert "agree" in result.output
    result = runner.invoke(app, ["stats", "--database", url])
    assert result.exit_code == 0, result.output
    assert "Tessera overview" in result.output and "Revenue per day" in result.output
    result = runner.invoke(app, ["stats", "--database", url, "--json"])
    assert result.exit_code == 0 and '"revenue.total.tenant_paid"' in result.output
    # Tamper with one payment: the audit names the difference and exits 1.
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        session.execute(update(db.Payment).where(db.Payment.id == 1).values(fee=10**9))
    result = runner.invoke(app, ["audit", *net, "--database", url])
    assert result.exit_code == 1
    assert "revenue.total.protocol_fees[all]" in result.output
    result = runner.invoke(app, ["stats", "--database", f"sqlite:///{tmp_path}/empty.db"])
    assert result.exit_code == 1 and "nothing indexed" in result.output


def test_every_event_of_every_deployed_contract_is_read(chain):
    """Issue 12: the reader decodes every event in the ABI of every contract the network file
    names (a contract or event added later and not read fails here)."""
    from eth_utils import event_abi_to_log_topic

    from tessera.chain.events import EventReader

    reader = EventReader(chain)
    deployed = set(chain.network.contracts)
    assert set(reader.addresses.values()) == deployed
    for name in deployed:
        contract = chain.contract(name)
        for abi in (a for a in contract.abi if a.get("type") == "event"):
            key = (contract.address.lower(), event_abi_to_log_topic(abi))
            assert key in reader.by_topic, f"{name}.{abi['name']} is not read by the indexer"
