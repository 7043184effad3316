"""The explorer and the audit over both chains of the bridge (docs/explorer.md, "The bridge"), on
the two real anvil nodes of `bridge_env`: `tessera explorer index`'s bridge part (one
BridgeIndexer per chain, each with its cursor, confirmations and reorg rollback), the derived
table of cross-chain transfers, the audit's bridge rules and the `/bridge` pages.

How a rational party would try to get round each check, and the test that tries it:
- a stolen quorum (Ronin: the committee's keys) delivers a transfer its source never sent and
  mints on the home chain with no lock behind it: the audit names the delivery "never sent" and
  the direction's sum breaks (`test_audit_reports_a_delivery_never_sent`; the test signs with the
  devnet committee's own keys, nothing is faked);
- whoever runs the explorer's database edits a row to hide or change a transfer: the audit
  recomputes the table from the chains' logs and names the column
  (`test_transfers_both_ways_are_indexed_with_both_transactions`), and a deleted stored event
  shows as a count that differs from the chain's;
- a reorg on the source removes a send: nothing from a block above the confirmations is indexed,
  and a send indexed at 0 confirmations is rolled back with its row (`test_reorg_on_the_source`);
- a junk page, state, chain id, message id or hash asks the pages for a 500: each is a 4xx;
- a contract of the attacker's emitting TransferReceived-shaped logs: the reader decodes only the
  network file's addresses (chain/events.EventReader), so such logs are never read.
"""

from __future__ import annotations

import json

import pytest
from eth_utils import keccak
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from tests.bridge.conftest import CONFIRMATIONS, GUARDIAN, HOME, PEER, RELAYER, SENDER, TUSD, rpc
from typer.testing import CliRunner

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_deploy import BridgeParams
from tessera.chain.bridge_inbox import sign_attestation
from tessera.chain.client import Chain
from tessera.chain.devnet import BRIDGE_VALIDATORS
from tessera.explorer import db
from tessera.explorer.audit import audit
from tessera.explorer.bridge_index import bridge_indexers, sync_bridge
from tessera.explorer.db import make_engine
from tessera.explorer.indexer import Indexer
from tessera.explorer.web import create_app
from tessera.protocol.bridge import KIND_TRANSFER, Message, sort_signatures, transfer_payload

LARGE = 20_000 * TUSD
DELAY = BridgeParams(guardian=devnet_account(GUARDIAN).address).delay


@pytest.fixture(params=("sqlite", "postgresql"))
def any_db(request, tmp_path):
    """A fresh explorer database URL on SQLite, then on PostgreSQL."""
    from tests.support.postgres import Databases

    cluster = request.getfixturevalue("postgres_cluster") if request.param == "postgresql" else None
    databases = Databases(request.param, tmp_path, cluster)
    yield databases("bridge")
    databases.close()


def index(bridge, url_or_engine, confirmations: int = 0):
    """What `tessera explorer index` does: the market, then every chain's bridge."""
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    Indexer(Chain(bridge.network), engine, confirmations=confirmations).sync()
    done = sync_bridge(bridge_indexers(bridge.network, engine, confirmations), engine)
    return engine, done


def rows(engine) -> dict[str, db.CrossChainTransfer]:
    with Session(engine) as session:
        found = {r.message_id: r for r in session.scalars(select(db.CrossChainTransfer))}
        session.expunge_all()
    return found


def hexid(message_id: bytes) -> str:
    return "0x" + message_id.hex()


def logs_of(bridge, chain_id: int, tx: str) -> list[str]:
    """The topics of a transaction's logs, read from the chain (an independent reading)."""
    receipt = bridge.chain(chain_id).w3.eth.get_transaction_receipt(tx)
    assert receipt["status"] == 1
    return ["0x" + bytes(t).hex() for log in receipt["logs"] for t in log["topics"]]


def test_transfers_both_ways_are_indexed_with_both_transactions(bridge, any_db):
    """A transfer each way: one row each, its send on the source and its delivery on the
    destination (both checked in the chains' receipts), the audit agrees and its sums per
    direction add up; the pages list both sides; an edited row is caught."""
    to_home = bridge.send(PEER, SENDER, 5 * TUSD)
    bridge.settle()
    to_peer = bridge.send(HOME, SENDER, 2 * TUSD)
    bridge.settle()
    engine, done = index(bridge, any_db)
    assert set(done.reports) == {HOME, PEER} and done.transfers == 2
    found = rows(engine)
    for mid, source, destination, amount in ((to_home, PEER, HOME, 5 * TUSD),
                                             (to_peer, HOME, PEER, 2 * TUSD)):
        row = found[hexid(mid)]
        sent = [s for s in bridge.outbox(source).messages(0, "latest") if s.message.id == mid]
        assert (row.source_chain, row.destination_chain, row.amount, row.state) == (
            source, destination, amount, "delivered")
        assert row.sender == row.recipient == devnet_account(SENDER).address
        assert row.source_tx == sent[0].tx
        assert row.delivery_chain == destination
        assert hexid(mid) in logs_of(bridge, destination, row.delivery_tx)
        assert row.received == amount and row.deliveries == 1

    report = audit(Chain(bridge.network), engine)
    assert report.agrees, report.problems
    sums = {(d.source, d.destination, d.token): d for d in report.bridge.directions}
    assert set(sums) == {(s, d, t) for s, d in ((HOME, PEER), (PEER, HOME)) for t in ("TUSD", "TSTK")}
    assert (sums[(PEER, HOME, "TUSD")].locked, sums[(PEER, HOME, "TUSD")].received) == (5 * TUSD, 5 * TUSD)
    assert (sums[(HOME, PEER, "TUSD")].locked, sums[(HOME, PEER, "TUSD")].received) == (2 * TUSD, 2 * TUSD)
    assert all(d.in_flight == d.refunded == 0 for d in sums.values())
    assert all(d.locked == 0 for (_, _, token), d in sums.items() if token == "TSTK")

    client = TestClient(create_app(engine))
    page = client.get("/bridge").text
    for row in found.values():
        assert row.source_tx in page and row.delivery_tx in page and row.message_id in page
    api = client.get("/api/bridge/transfers", params={"chain": PEER}).json()
    assert {t["message_id"] for t in api["transfers"]} == set(found)
    assert {t["state"] for t in api["transfers"]} == {"delivered"}
    detail = client.get(f"/bridge/{hexid(to_home)}").text
    assert "MessageSent" in detail and "MessageDelivered" in detail and "TransferReceived" in detail
    assert client.get(f"/bridge/tx/{found[hexid(to_home)].delivery_tx}").status_code == 200
    for junk in ("/bridge?page=0", "/bridge?page=x", "/bridge?state=stolen", "/bridge?chain=-1",
                 f"/bridge?chain={2**64}", "/bridge?page=99", "/bridge/0x12", "/bridge/" + "0x" + "ab" * 32,
                 "/bridge/tx/nothex", "/bridge/tx/0x" + "cd" * 32, "/api/bridge/transfers?state=x",
                 "/api/bridge/transfers?page=2", "/bridge/%00", "/bridge/tx/%3Cscript%3E"):
        assert 400 <= client.get(junk).status_code < 500, junk

    with Session(engine) as session, session.begin():   # the database's keeper hides 3 TUSD
        session.execute(update(db.CrossChainTransfer).where(
            db.CrossChainTransfer.message_id == hexid(to_home)).values(amount=2 * TUSD))
    problems = audit(Chain(bridge.network), engine).problems
    assert any("derived table vs logs" in p and "amount" in p and hexid(to_home) in p for p in problems)
    with Session(engine) as session, session.begin():   # and drops the peer's TransferSent
        session.execute(delete(db.BridgeEvent).where(db.BridgeEvent.chain_id == PEER,
                                                     db.BridgeEvent.event == "TransferSent"))
    problems = audit(Chain(bridge.network), engine).problems
    assert any(f"chain {PEER}:" in p and "bridge events on chain" in p for p in problems), problems


def test_cancelled_large_transfer_bounces_and_every_step_adds_up(bridge, tmp_path):
    """A large transfer queued, cancelled by the guardian, its bounce delivered: the row goes
    queued -> cancelled -> bounced with each transaction, in flight until the refund lands, and
    the audit agrees at each step (locked = received + in flight + refunded)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'explorer.db'}")
    sender = devnet_account(SENDER).address
    mid = bridge.send(PEER, SENDER, LARGE)
    relayer = bridge.settle()
    index(bridge, engine)
    row = rows(engine)[hexid(mid)]
    assert row.state == "queued" and row.queued_tx and row.release_at and row.delivery_tx is None
    report = audit(Chain(bridge.network), engine)
    assert report.agrees, report.problems
    peer_home = next(d for d in report.bridge.directions
                     if (d.source, d.destination, d.token) == (PEER, HOME, "TUSD"))
    assert (peer_home.locked, peer_home.in_flight) == (LARGE, LARGE)

    sent = [s for s in bridge.outbox(PEER).messages(0, "latest") if s.message.id == mid][0]
    bridge.inbox(HOME, GUARDIAN).cancel(sent.message, sent.payload)
    bridge.settle(relayer)
    index(bridge, engine)
    row = rows(engine)[hexid(mid)]
    assert row.state == "cancelled" and row.cancelled_tx and row.bounce_id
    assert audit(Chain(bridge.network), engine).agrees

    bridge.warp(PEER, DELAY + 1)          # the bounce is large too: it waits the delay on the peer
    bridge.settle(relayer)
    assert bridge.tusd(PEER, sender) > 0 and relayer.state["open"] == {}
    index(bridge, engine)
    found = rows(engine)
    row = found[hexid(mid)]
    assert (row.state, row.refunded) == ("bounced", LARGE) and row.bounce_tx
    assert hexid(mid) in logs_of(bridge, PEER, row.bounce_tx)
    bounce = found[row.bounce_id]
    assert bounce.bounce_of == hexid(mid) and bounce.state == "delivered" and bounce.delivery_chain == PEER
    report = audit(Chain(bridge.network), engine)
    assert report.agrees, report.problems
    peer_home = next(d for d in report.bridge.directions
                     if (d.source, d.destination, d.token) == (PEER, HOME, "TUSD"))
    assert (peer_home.locked, peer_home.received, peer_home.in_flight, peer_home.refunded) == (
        LARGE, 0, 0, LARGE)
    page = TestClient(create_app(engine)).get("/bridge", params={"state": "bounced"}).text
    assert row.bounce_tx in page and row.cancelled_tx in page and row.source_tx in page


def test_reorg_on_the_source(bridge, tmp_path):
    """A send removed by a reorg before its confirmations is never indexed; one indexed at 0
    confirmations and then removed is rolled back, its row with it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'explorer.db'}")
    fork = rpc(bridge.net(PEER), "evm_snapshot")
    gone = bridge.send(PEER, SENDER, 7 * TUSD)
    bridge.mine(PEER, CONFIRMATIONS - 1)
    index(bridge, engine, confirmations=CONFIRMATIONS)
    with Session(engine) as session:
        assert session.scalar(select(db.BridgeEvent).where(db.BridgeEvent.message_id == hexid(gone))) is None
    assert rpc(bridge.net(PEER), "evm_revert", fork)
    bridge.mine(PEER, 3)
    kept = bridge.send(PEER, SENDER, 3 * TUSD)
    bridge.settle()
    bridge.mine(PEER, CONFIRMATIONS)
    bridge.mine(HOME, CONFIRMATIONS)
    index(bridge, engine, confirmations=CONFIRMATIONS)
    assert set(rows(engine)) == {hexid(kept)} and rows(engine)[hexid(kept)].state == "delivered"

    fork = rpc(bridge.net(PEER), "evm_snapshot")   # now a hasty index at 0 confirmations
    hasty = bridge.send(PEER, SENDER, 4 * TUSD)
    _, done = index(bridge, engine, confirmations=0)
    assert hexid(hasty) in rows(engine)
    assert rpc(bridge.net(PEER), "evm_revert", fork)
    bridge.mine(PEER, 2)
    _, done = index(bridge, engine, confirmations=0)
    assert done.reports[PEER].reorg_rolled_back_to is not None
    assert set(rows(engine)) == {hexid(kept)}
    with Session(engine) as session:
        assert session.scalar(select(db.BridgeEvent).where(db.BridgeEvent.message_id == hexid(hasty))) is None
    assert audit(Chain(bridge.network), engine).agrees


def test_audit_reports_a_delivery_never_sent(bridge, tmp_path):
    """The committee's keys sign a transfer the peer's outbox never emitted (a stolen quorum);
    the home inbox delivers it and mints 1 TUSD to the thief. The audit names the delivery as
    never sent and the peer -> home sum as broken; the page marks it."""
    thief = devnet_account(RELAYER).address
    payload = transfer_payload(thief, thief)
    inbox = bridge.inbox(HOME, RELAYER)
    forged = Message(source_chain=PEER, source_outbox=bridge.outbox(PEER).address,
                     sender=bridge.token_bridge(PEER).address, nonce=10_000, destination_chain=HOME,
                     recipient=bridge.token_bridge(HOME).address, kind=KIND_TRANSFER, amount=1 * TUSD,
                     payload_hash=keccak(payload))
    signed = {devnet_account(i).address: sign_attestation(devnet_account(i), HOME, inbox.address, forged.id,
                                                          inbox.epoch()) for i in BRIDGE_VALIDATORS}
    before = bridge.tusd(HOME, thief)
    assert inbox.deliver(forged, payload, sort_signatures(signed))[0]
    assert bridge.tusd(HOME, thief) == before + 1 * TUSD
    engine = make_engine(f"sqlite:///{tmp_path / 'explorer.db'}")
    index(bridge, engine)
    row = rows(engine)[hexid(forged.id)]
    assert row.source_tx is None and row.state == "delivered" and row.delivery_chain == HOME

    problems = audit(Chain(bridge.network), engine).problems
    assert any(hexid(forged.id) in p and "never sent" in p for p in problems), problems
    assert any(f"conservation {PEER} -> {HOME}" in p for p in problems), problems
    assert "delivered, never sent" in TestClient(create_app(engine)).get("/bridge").text


def test_the_commands_index_and_audit_both_chains(bridge, tmp_path):
    """`tessera explorer index` and `tessera audit --json` on the two-chain network file; a
    junk or unknown `--chain-confirmations` is one readable line and exit code 1."""
    from tessera.cli import app

    def tessera(*args: str):
        result = CliRunner().invoke(app, list(args), env={"TESSERA_HOME": str(tmp_path)})
        return result.exit_code, result.stdout + result.stderr

    mid = bridge.send(PEER, SENDER, 3 * TUSD)
    bridge.settle()
    network = str(bridge.env.devnet.network_file)
    database = f"sqlite:///{tmp_path / 'explorer.db'}"
    code, out = tessera("explorer", "index", "--network", network, "--database", database,
                        "--confirmations", "0", "--chain-confirmations", f"{PEER}=0")
    assert code == 0, out
    assert f"bridge on {HOME}: indexed" in out and f"bridge on {PEER}: indexed" in out
    code, out = tessera("audit", "--network", network, "--database", database, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["agrees"] and report["bridge"]["transfers"] == 1
    directions = report["bridge"]["directions"]
    assert {(d["source"], d["destination"], d["locked"], d["received"]) for d in directions
            if d["locked"]} == {(PEER, HOME, 3 * TUSD, 3 * TUSD)}
    assert rows(make_engine(database))[hexid(mid)].state == "delivered"
    for junk, why in ((f"{PEER}", "write CHAIN_ID=N"), ("31339=1", "names chain 31339"),
                      (f"{PEER}=-1", ">= 0")):
        code, out = tessera("explorer", "index", "--network", network, "--database", database,
                            "--chain-confirmations", junk)
        assert code == 1 and why in out, out


def test_audit_reports_a_forged_refund_of_a_queued_transfer(bridge, tmp_path):
    """A stolen quorum's subtler theft: while a large transfer waits its delay on the home
    chain, it forges the home side's bounce of it, so the peer refunds the sender; were the
    queued transfer then executed, the same tokens would exist twice. The audit names the refund
    of a transfer never cancelled, the bounce never sent, and the broken peer -> home sum."""
    from tessera.protocol.bridge import KIND_BOUNCE, bounce_payload

    mid = bridge.send(PEER, SENDER, LARGE)
    bridge.settle()
    assert bridge.inbox(HOME).pending(mid) > 0                     # queued on home
    payload = bounce_payload(mid)
    inbox = bridge.inbox(PEER, RELAYER)
    forged = Message(source_chain=HOME, source_outbox=bridge.outbox(HOME).address,
                     sender=bridge.token_bridge(HOME).address, nonce=10_000, destination_chain=PEER,
                     recipient=bridge.token_bridge(PEER).address, kind=KIND_BOUNCE, amount=LARGE,
                     payload_hash=keccak(payload))
    signed = {devnet_account(i).address: sign_attestation(devnet_account(i), PEER, inbox.address, forged.id,
                                                          inbox.epoch()) for i in BRIDGE_VALIDATORS}
    sender = devnet_account(SENDER).address
    before = bridge.tusd(PEER, sender)
    inbox.deliver(forged, payload, sort_signatures(signed))       # large: queued on the peer too
    bridge.warp(PEER, DELAY + 1)
    inbox.execute(forged, payload)
    assert bridge.tusd(PEER, sender) == before + LARGE            # refunded while still queued on home

    engine = make_engine(f"sqlite:///{tmp_path / 'explorer.db'}")
    index(bridge, engine)
    row = rows(engine)[hexid(mid)]
    assert row.state == "queued" and row.cancelled_tx is None and row.refunded == LARGE
    problems = audit(Chain(bridge.network), engine).problems
    assert any(hexid(mid) in p and "never cancelled" in p for p in problems), problems
    assert any(hexid(forged.id) in p and "never sent" in p for p in problems), problems
    assert any(f"conservation {PEER} -> {HOME}" in p for p in problems), problems
