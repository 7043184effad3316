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


def test_indexer_and_audit_agree_and_match_contract_state(market_run, chain, explorer_db_url):
    _, _, _, work = market_run
    assert len(work.leases) >= 40
    engine = make_engine(explorer_db_url)
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


def test_killed_mid_sync_resumes_to_identical_tables(market_run, chain, explorer_db):
    whole = make_engine(explorer_db("whole"))
    Indexer(chain, whole, confirmations=3, batch_blocks=4).sync()

    broken = make_engine(explorer_db("broken"))
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


def test_sigkill_mid_sync_then_restart(market_run, chain, explorer_db):
    _, devnet, _, _ = market_run
    url = explorer_db("killed")
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
    whole = make_engine(explorer_db("whole"))
    Indexer(chain, whole, confirmations=0, batch_blocks=1).sync()  # same checkpoints
    assert dump(engine) == dump(whole)


def test_cli_index_audit_stats_and_tampering(market_run, explorer_db):
    from typer.testing import CliRunner

    from tessera.explorer.cli import app

    _, devnet, _, _ = market_run
    url = explorer_db("cli")
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
    result = runner.invoke(app, ["stats", "--database", explorer_db("empty")])
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


# -- offers an attacker chooses ---------------------------------------------------------------------
# The registry bounds gpu_model to 64 bytes and endpoint to 256 bytes, but not their content, and
# gpu_count / gpu_memory_mb are uint32, benchmark_score / price_floor uint256. Each offer below is
# a real registration; the indexer must store it (on SQLite and PostgreSQL alike), never stop.
AT_THE_LIMITS = {
    "longest": (("Ж" * 32).encode(), 1, 1, 1, b"http://" + b"e" * 249, 1),
    "largest numbers": (b"H100", 2**32 - 1, 2**32 - 1, 2**256 - 1, b"http://x", 2**256 - 1),
    "NUL byte": (b"H100\x00", 1, 1, 1, b"http://x/\x00", 1),
}
NOT_UTF8 = (b"\xff\xfeH100", 1, 1, 1, b"http://\xc3(", 1)


def _register_raw(work, address: str, offer: tuple) -> dict:
    """A `register` transaction whose strings are raw bytes (ABI-encoded as `string` is)."""
    from eth_abi import encode

    from tessera.explorer.simulate import GAS, TSTK

    model, count, memory, score, endpoint, floor = offer
    selector = work.registry.get_function_by_name("register")(
        100 * TSTK, "", 1, 1, 1, "x", 1)._encode_transaction_data()[:10]
    body = encode(["uint256", "bytes", "uint32", "uint32", "uint256", "bytes", "uint256"],
                  [100 * TSTK, model, count, memory, score, endpoint, floor])
    return {"from": address, "to": work.registry.address, "data": selector + body.hex(),
            "gas": hex(GAS), "_what": f"register{offer!r:.60}"}


@pytest.fixture(scope="module")
def hostile_offers(market_run) -> tuple[dict[str, str], int]:
    """Fresh providers registered with the offers AT_THE_LIMITS in one block, then one whose
    strings are not UTF-8 in the next; ({name: address}, the first block's number)."""
    from eth_account import Account
    from web3 import Web3

    from tessera.explorer.simulate import MAX_UINT, TSTK

    _, _, _, work = market_run
    offers = {**AT_THE_LIMITS, "not UTF-8": NOT_UTF8}
    out = {}
    for name in offers:
        address = Account.from_key(Web3.keccak(text=f"hostile provider {name}")).address
        work._rpc("anvil_impersonateAccount", [address])
        work._rpc("anvil_setBalance", [address, hex(10**20)])
        work.send(work.deployer, work.stake, "transfer", address, 100 * TSTK)
        work.send(address, work.stake, "approve", work.registry.address, MAX_UINT)
        out[name] = address
    work.mine()
    for name in AT_THE_LIMITS:
        work.queue.append(_register_raw(work, out[name], offers[name]))
    limits_block = max(int(r["blockNumber"], 16) for r in work.mine())
    # Longer strings never reach the chain: the contract refuses a 65-byte model.
    too_long = _register_raw(work, out["not UTF-8"], (b"M" * 65, 1, 1, 1, b"http://x", 1))
    with pytest.raises(Exception, match="revert"):
        work.w3.eth.call({k: v for k, v in too_long.items() if not k.startswith("_")})
    work.queue.append(_register_raw(work, out["not UTF-8"], NOT_UTF8))
    work.mine()
    work.mine()
    return out, limits_block


def test_offers_at_the_limits_are_indexed(chain, hostile_offers, explorer_db):
    """On PostgreSQL, uint32 values need int8 columns and NUL cannot be stored as text."""
    addresses, block = hostile_offers
    engine = make_engine(explorer_db("limits"))
    head = chain.block_number()
    report = Indexer(chain, engine, confirmations=head - block).sync()  # must not raise
    assert report.to_block == block
    result = audit(chain, engine)
    assert result.agrees, result.problems
    with Session(engine) as session:
        rows = {name: session.get(db.Provider, addresses[name]) for name in AT_THE_LIMITS}
    assert all(rows.values()), {name: row for name, row in rows.items() if row is None}
    assert rows["longest"].gpu_model == "Ж" * 32
    assert rows["longest"].endpoint == "http://" + "e" * 249
    big = rows["largest numbers"]
    assert (big.gpu_count, big.gpu_memory_mb, big.price_floor) == (2**32 - 1, 2**32 - 1, 2**256 - 1)
    assert "H100" in rows["NUL byte"].gpu_model


def test_offer_strings_that_are_not_utf8_do_not_stop_the_indexer(chain, hostile_offers, explorer_db):
    addresses, _ = hostile_offers
    engine = make_engine(explorer_db("not_utf8"))
    report = Indexer(chain, engine, confirmations=0).sync()
    assert report.to_block == chain.block_number()
    assert audit(chain, engine).agrees
    with Session(engine) as session:
        assert "H100" in session.get(db.Provider, addresses["not UTF-8"]).gpu_model


def test_token_transfers_are_read_only_when_a_tessera_contract_is_a_party(market_run, chain):
    """Transfers between other holders are not Tessera's events (with a real stablecoin they would
    be most of the chain, and zero-value transfers are free spam); transfers and approvals to or
    from a Tessera contract are, since the audit's holdings are computed from them."""
    from tessera.chain.events import EventReader
    from tessera.explorer.simulate import TUSD

    _, _, _, work = market_run
    a, b = work.tenants[0], work.tenants[1]
    start = chain.block_number() + 1
    work.send(a, work.payment, "transfer", b, TUSD)                        # between holders
    work.send(a, work.payment, "transfer", a, 0)                           # spam
    work.send(a, work.payment, "approve", work.market.address, 5 * TUSD)   # the Market as spender
    settlement = chain.contract("Settlement").address
    work.send(a, work.payment, "transfer", settlement, 0)                  # to a Tessera contract
    work.mine()
    records = EventReader(chain).events(start, chain.block_number())
    seen = [(r.event, r.args.get("receiver") or r.args.get("spender")) for r in records]
    assert ("Approval", work.market.address) in seen
    assert ("Transfer", settlement) in seen
    assert not any(r.event == "Transfer" and r.args["receiver"] in (a, b) for r in records), seen
