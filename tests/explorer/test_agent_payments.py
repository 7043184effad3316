"""Agent payments in the explorer and the audit (issue 13), on a real anvil devnet: an owner
deposits into the AgentBudget and grants a session key; the key pays a provider twice and a
non-provider once; a wallet pays the provider once with an x402 "exact" EIP-3009 authorization
(and a non-provider once); the owner withdraws. The figures count 3 agent payments to the
provider, each linked to its transaction; the audit agrees and the AgentBudget holds exactly its
owner's unspent deposit; a donation or a forged row makes the audit fail."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from tests.support.explorer import dump, snapshot
from typer.testing import CliRunner

from tessera.chain.accounts import devnet_account
from tessera.chain.agent_budget import AgentBudget
from tessera.chain.client import Chain, tx_hash
from tessera.chain.events import EventReader
from tessera.explorer import db
from tessera.explorer.audit import audit
from tessera.explorer.cli import app
from tessera.explorer.db import make_engine
from tessera.explorer.derive import apply_event, event_columns
from tessera.explorer.indexer import Indexer, database_figures, rollback_to, table_figures
from tessera.explorer.recap import index_and_audit
from tessera.explorer.simulate import TUSD, Workload
from tessera.explorer.web import create_app
from tessera.protocol.agent_payments import agent_payments
from tessera.protocol.events import args_json
from tessera.protocol.figure_book import FigureBook
from tessera.protocol.figures import ALL, compare, compute_figures, figure_unit
from tessera.protocol.holdings import agent_payment_problems

UNIX_TIME = re.compile(r"\b1[0-9]{9}\b")
RAW_BASE_UNITS = re.compile(r"\b[0-9]{13,}\b")


def sign_transfer_authorization(payer, token: str, chain_id: int, to: str, value: int,
                                valid_before: int, nonce: bytes) -> tuple[int, bytes, bytes]:
    """EIP-3009 TransferWithAuthorization in the PaymentToken's EIP-712 domain, (v, r, s)."""
    typed = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"},
                             {"name": "verifyingContract", "type": "address"}],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"}]},
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": "Tessera USD", "version": "1", "chainId": chain_id,
                   "verifyingContract": token},
        "message": {"from": payer.address, "to": to, "value": value, "validAfter": 0,
                    "validBefore": valid_before, "nonce": nonce}}
    signed = payer.sign_typed_data(full_message=typed)
    return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")


@dataclass
class Run:
    work: Workload
    network: object
    devnet: object
    provider: str
    stranger: str          # a payee that is not a provider
    owner: str
    wallet: str            # the exact-scheme payer
    budget_txs: list[str]  # the two budget payments to the provider
    exact_tx: str
    other_txs: list[str]   # the payments to the stranger
    plain_tx: str          # a transfer between two outsiders: never read
    amounts: dict[str, int]


@pytest.fixture(scope="module")
def run(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("agents")
    with private_devnet(home) as (devnet, network):
        work = Workload(network, seed=5, providers=range(2, 4), tenants=(8, 9))
        work.run(leases=3, orders_per_round=3)
        work.mine()
        work._rpc("evm_setAutomine", [True])
        owner, wallet, relayer = devnet_account(8), devnet_account(9), devnet_account(1)
        provider = devnet_account(2).address
        stranger = Account.from_key(b"\x11" * 32).address
        key = Account.create()
        budget = AgentBudget(Chain(network, owner))
        budget.deposit(100 * TUSD)
        now = budget.chain.block_timestamp()
        grant_id, _ = budget.grant(key.address, budget=50 * TUSD, period=86_400, cap=10 * TUSD,
                                   start=now, expiry=now + 30 * 86_400, payees=[stranger],
                                   any_provider=True)
        amounts = {"budget1": 3 * TUSD, "budget2": 2_500_000, "exact": 4 * TUSD, "other": TUSD,
                   "other_exact": 500_000, "withdraw": 20 * TUSD}
        txs = [budget.pay(budget.sign_payment(key, grant_id, provider, amounts[k])).tx
               for k in ("budget1", "budget2")]
        other = [budget.pay(budget.sign_payment(key, grant_id, stranger, amounts["other"])).tx]
        submitter = Chain(network, relayer)
        token = submitter.payment_token
        exact = []
        for to, value in ((provider, amounts["exact"]), (stranger, amounts["other_exact"])):
            nonce = secrets.token_bytes(32)
            v, r, s = sign_transfer_authorization(wallet, token.address, network.chain_id, to, value,
                                                  now + 3_600, nonce)
            receipt = submitter.send(token.functions.transferWithAuthorization(
                wallet.address, to, value, 0, now + 3_600, nonce, v, r, s))
            exact.append(tx_hash(receipt))
        plain = tx_hash(Chain(network, wallet).send(token.functions.transfer(stranger, 7)))
        budget.withdraw(amounts["withdraw"])
        second, _ = budget.grant(Account.create().address, budget=TUSD, period=3_600, cap=TUSD,
                                 start=now, expiry=now + 86_400, payees=[provider])
        budget.set_paused(second, True)
        budget.revoke(second)
        yield Run(work, network, devnet, provider, stranger, owner.address, wallet.address, txs, exact[0],
                  [*other, exact[1]], plain, amounts)


@pytest.fixture(scope="module")
def indexed(run, explorer_module_db):
    """The run indexed into SQLite and into PostgreSQL (each test that uses it runs on both)."""
    url = explorer_module_db("agents")
    engine = make_engine(url)
    Indexer(Chain(run.network), engine, confirmations=0, batch_blocks=3).sync()
    return engine, url


def test_every_agent_budget_event_and_only_the_payments_transfers_are_read(run):
    chain = Chain(run.network)
    reader = EventReader(chain)
    budget = chain.contract("AgentBudget")
    assert "AgentBudget" in reader.addresses.values()
    events = {abi["name"] for abi in budget.abi if abi.get("type") == "event"}
    assert events == {"Deposited", "Withdrawn", "Granted", "PayeeAllowed", "GrantPaused",
                      "GrantRevoked", "AgentPaid"}
    records = reader.events(run.network.deploy_block, chain.block_number())
    seen = {(r.contract, r.event) for r in records}
    assert {("AgentBudget", name) for name in events} == {x for x in seen if x[0] == "AgentBudget"}
    # The exact payments' transfers (wallet -> provider, wallet -> stranger) are read; a plain
    # transfer between the same two outsiders is not (no token transfer is read wholesale).
    transfers = {r.tx_hash for r in records if r.event == "Transfer" and r.contract == "PaymentToken"}
    assert run.exact_tx in transfers and run.other_txs[1] in transfers
    assert run.plain_tx not in transfers
    payments = agent_payments(records)
    assert [(p.scheme, p.payee, p.amount) for p in payments] == [
        ("budget", run.provider, run.amounts["budget1"]), ("budget", run.provider, run.amounts["budget2"]),
        ("budget", run.stranger, run.amounts["other"]), ("exact", run.provider, run.amounts["exact"]),
        ("exact", run.stranger, run.amounts["other_exact"])]
    assert [p.to_provider for p in payments] == [True, True, False, True, False]
    assert agent_payment_problems(records, {"AgentBudget": budget.address}) == []
    # The figures' fold resumes through its saved state wherever it is cut (the exact payment's
    # AuthorizationUsed and Transfer included): the same figures as one pass.
    as_of = records[-1].timestamp
    whole = compute_figures(records, as_of)
    for cut in [i for i, r in enumerate(records) if r.contract in ("AgentBudget", "PaymentToken")]:
        book = FigureBook().apply(records[:cut])
        book = FigureBook.from_json(json.loads(json.dumps(book.to_json()))).apply(records[cut:])
        assert book.figures(as_of) == whole, cut
    # A reader that missed a payment's Transfer is caught, for either scheme.
    for tx in (run.budget_txs[0], run.exact_tx):
        forged = [r for r in records if not (r.tx_hash == tx and r.event == "Transfer")]
        (problem,) = agent_payment_problems(forged, {"AgentBudget": budget.address})
        assert tx in problem


def test_figures_count_three_agent_payments_to_the_provider(run, indexed):
    engine, _ = indexed
    figures, _ = database_figures(engine)
    v = {k: f.value for k, f in figures.items()}
    p, a = run.provider, run.amounts
    paid = a["budget1"] + a["budget2"] + a["exact"]
    txs = tuple(sorted([*run.budget_txs, run.exact_tx]))
    for key in (p, ALL):
        scope = "by_provider" if key == p else "total"
        assert v[(f"agent_payments.{scope}.count", key)] == 3
        assert v[(f"agent_payments.{scope}.amount", key)] == paid
        assert figures[(f"agent_payments.{scope}.amount", key)].txs == txs
        assert v[(f"agent_payments.{scope}.payers", key)] == 2          # the owner and the wallet
        assert v[(f"agent_payments.{scope}.self_count", key)] == 0
    by_scheme = "agent_payments.by_scheme.count"
    assert (v[(by_scheme, "budget")], v[(by_scheme, "exact")]) == (2, 1)
    assert v[("agent_payments.by_scheme.amount", "exact")] == a["exact"]
    assert ("agent_payments.by_provider.count", run.stranger) not in v
    spent = a["budget1"] + a["budget2"] + a["other"]
    assert v[("agent_budget.total.deposits", ALL)] == 100 * TUSD
    assert v[("agent_budget.total.withdrawals", ALL)] == a["withdraw"]
    assert v[("agent_budget.total.paid", ALL)] == spent and v[("agent_budget.total.payments", ALL)] == 3
    assert v[("agent_budget.total.balance", ALL)] == 100 * TUSD - a["withdraw"] - spent
    assert v[("agent_budget.total.grants", ALL)] == 2
    assert figure_unit("agent_payments.by_provider.amount") == "TUSD"
    assert figure_unit("agent_payments.by_provider.count") == "count"
    # Lease revenue is the Market's alone: agent payments are beside it, not in it.
    market = Chain(run.network).market
    leases = v[("leases.total.count", ALL)]
    assert v[("revenue.total.tenant_paid", ALL)] == sum(market.functions.leases(i).call()[7]
                                                         for i in range(1, leases + 1))
    # The derived tables hold the same (the audit compares them).
    tables = table_figures(engine)
    assert compare({k: f for k, f in figures.items() if k in tables}, tables, check_txs=False) == []
    with Session(engine) as session:
        rows = list(session.scalars(select(db.AgentPayment).order_by(db.AgentPayment.block_number)))
        grant, second = session.get(db.AgentGrant, 1), session.get(db.AgentGrant, 2)
        owner = session.get(db.AgentOwner, run.owner)
        assert [(r.scheme, r.to_provider) for r in rows] == [
            ("budget", True), ("budget", True), ("budget", False), ("exact", True), ("exact", False)]
        assert grant.any_provider and grant.payees == 1 and not grant.revoked
        assert second.paused and second.revoked and second.payees == 1 and not second.any_provider
        assert (owner.deposited, owner.withdrawn) == (100 * TUSD, a["withdraw"])


def test_audit_agrees_and_the_agent_budget_holds_its_owners_deposits(run, indexed, tmp_path):
    engine, url = indexed
    chain = Chain(run.network)
    report = audit(chain, engine)
    assert report.agrees, report.problems
    rows = {(h.contract, h.token): h for h in report.holdings}
    held = rows[("AgentBudget", "PaymentToken")]
    balance = AgentBudget(chain).balance_of(run.owner)
    a = run.amounts
    assert balance == 100 * TUSD - a["withdraw"] - a["budget1"] - a["budget2"] - a["other"]
    assert held.held == held.owed == balance == report.balances[("AgentBudget", "PaymentToken")]
    assert held.breakdown() == {"agent budget deposit": balance}
    assert [c.address for c in held.claims] == [run.owner]
    runner = CliRunner()
    net = ["--network", str(run.devnet.network_file), "--database", url]
    result = runner.invoke(app, ["audit", *net])
    assert result.exit_code == 0 and "3 payments to registered providers" in result.output, result.output
    result = runner.invoke(app, ["stats", "--database", url, "--json"])
    out = {(f["name"], f["key"]): f for f in json.loads(result.output)["figures"]}
    amount = out[("agent_payments.by_provider.amount", run.provider)]
    assert amount["unit"] == "TUSD" and amount["base_units"] == a["budget1"] + a["budget2"] + a["exact"]
    assert amount["value"] == "9.5 TUSD" and sorted(amount["txs"]) == sorted([*run.budget_txs, run.exact_tx])
    assert out[("agent_payments.by_provider.count", run.provider)]["value"] == 3
    result = runner.invoke(app, ["stats", "--database", url])
    assert result.exit_code == 0 and "Agent payments per provider" in result.output
    recap = index_and_audit(chain, tmp_path / "recap.db")       # what `tessera demo` ends with
    assert recap["audit_agrees"] and recap["agent_payments"]["count"] == 3
    assert recap["agent_payments"]["amount"] == "9.5 TUSD"
    assert recap["agent_payments"]["by_scheme"]["exact"] == {"count": 1, "amount_base_units": a["exact"]}


def test_a_donation_to_the_agent_budget_and_a_forged_row_fail_the_audit(run, tmp_path):
    chain = Chain(run.network)
    runner = CliRunner()
    with snapshot(run.work):
        Chain(run.network, devnet_account(9)).send(
            chain.payment_token.functions.transfer(chain.contract("AgentBudget").address, 1_500_000))
        url = f"sqlite:///{tmp_path / 'd.db'}"
        engine = make_engine(url)
        Indexer(chain, engine, confirmations=0).sync()
        report = audit(chain, engine)
        (problem,) = report.problems
        assert "AgentBudget" in problem and "1.50 TUSD (1500000 base units)" in problem
        assert "no way out" in problem and "plain transfers" in problem
        net = ["--network", str(run.devnet.network_file), "--database", url]
        assert runner.invoke(app, ["audit", *net]).exit_code == 1
        assert runner.invoke(app, ["audit", *net, "--accept-stuck", "AgentBudget:TUSD:1.5"]).exit_code == 0
    # A forged derived row: the audit names the figure and exits 1.
    url = f"sqlite:///{tmp_path / 'f.db'}"
    engine = make_engine(url)
    Indexer(chain, engine, confirmations=0).sync()
    with Session(engine) as session, session.begin():
        session.execute(update(db.AgentPayment).where(db.AgentPayment.tx_hash == run.exact_tx)
                        .values(amount=5 * TUSD))
    result = runner.invoke(app, ["audit", "--network", str(run.devnet.network_file), "--database", url])
    assert result.exit_code == 1 and "agent_payments.total.amount[all]" in result.output, result.output


def test_pages_show_agent_payments_with_units(run, indexed):
    engine, _ = indexed
    client = TestClient(create_app(engine, page_size=2))
    p, a = run.provider, run.amounts
    detail = client.get(f"/api/providers/{p}").json()
    assert detail["agent_payments"]["count"]["value"] == "3"
    assert detail["agent_payments"]["amount"] | {"txs": None} == {
        **detail["agent_payments"]["amount"], "value": str(a["budget1"] + a["budget2"] + a["exact"]),
        "unit": "TUSD", "decimals": 6, "txs": None}
    assert detail["agent_payments_paging"] == {"page": 1, "pages": 2, "total": 3, "size": 2}
    first = [x["tx_hash"] for x in detail["agent_payment_list"]]
    second = [x["tx_hash"] for x in client.get(f"/api/providers/{p}?agent_payments=2").json()[
        "agent_payment_list"]]
    assert first + second == [run.exact_tx, *reversed(run.budget_txs)]       # newest first
    assert client.get(f"/api/providers/{p}?agent_payments=3").status_code == 404
    assert client.get(f"/api/providers/{p}?agent_payments=0").status_code == 422
    html = client.get(f"/providers/{p}").text
    assert "Agent payments (beside lease revenue)" in html and "self-payments" in html.lower()
    assert f"/tx/{run.exact_tx}" in html and "4.00 TUSD" in html
    overview = client.get("/api/overview").json()
    assert overview["agent_payments"]["count"]["value"] == "3"
    includes = overview["revenue_includes"]
    assert "agent_payments" in includes and "self-payments not excluded" in includes
    assert "beside lease revenue" in client.get("/").text
    # A budget payment's transaction page shows the payment, an exact one's too.
    tx = client.get(f"/api/tx/{run.budget_txs[0]}").json()
    (paid,) = tx["agent_payments"]
    assert paid | {"nonce": None} == {**paid, "scheme": "budget", "payer": run.owner, "payee": p,
                                      "grant_id": 1, "amount_base_units": str(a["budget1"]),
                                      "token": "TUSD", "to_provider": True, "nonce": None}
    assert {e["event"] for e in tx["events"]} >= {"AgentPaid"}
    html = client.get(f"/tx/{run.budget_txs[0]}").text
    assert "Agent payments in this transaction" in html and "3.00 TUSD" in html
    (exact,) = client.get(f"/api/tx/{run.exact_tx}").json()["agent_payments"]
    assert (exact["scheme"], exact["payer"], exact["amount_base_units"]) == ("exact", run.wallet,
                                                                           str(a["exact"]))
    # The agents page: owners with balance, grants with what they spent.
    agents = client.get("/api/agents").json()
    (owner,) = agents["owners"]
    spent = a["budget1"] + a["budget2"] + a["other"]
    assert owner["balance_base_units"] == str(100 * TUSD - a["withdraw"] - spent)
    assert (owner["paid_base_units"], owner["payments"]) == (str(spent), 3)
    revoked, grant = agents["grants"]                                      # newest first
    assert grant["status"] == "active" and grant["spent_in_period_base_units"] == str(spent)
    assert (revoked["status"], revoked["spent_base_units"], revoked["payments"]) == ("revoked", "0", 0)
    assert agents["payments_paging"]["total"] == 5
    for path in ("/agents", f"/providers/{p}", f"/tx/{run.budget_txs[0]}", f"/tx/{run.exact_tx}", "/"):
        page = client.get(path)
        assert page.status_code == 200, path
        text = re.sub(r"<[^>]+>", " ", page.text.split("<main>", 1)[1])
        assert not UNIX_TIME.search(text), (path, UNIX_TIME.search(text))
        assert not RAW_BASE_UNITS.search(text), (path, RAW_BASE_UNITS.search(text))
    assert "TUSD" in client.get("/agents").text
    for junk in ("/agents?owners=0", "/agents?grants=x", "/api/agents?payments=99"):
        assert 400 <= client.get(junk).status_code < 500, junk


def _index(engine, records) -> None:
    """What Indexer.sync writes for these events (no cursor, no block hashes)."""
    with Session(engine) as session, session.begin():
        for r in records:
            session.add(db.Event(block_number=r.block_number, block_hash=r.block_hash, timestamp=r.timestamp,
                                 tx_hash=r.tx_hash, log_index=r.log_index, contract=r.contract, event=r.event,
                                 args=args_json(r.args), **event_columns(session, r)))
            apply_event(session, r)


def test_a_rollback_through_the_agent_payments_gives_what_indexing_up_to_there_gives(run, tmp_path):
    """A reorg's rollback deletes the removed payments' rows and rebuilds the grants and owners
    they changed from the kept events: at every cut, the rows equal a fresh index up to it."""
    chain = Chain(run.network)
    records = EventReader(chain).events(run.network.deploy_block, chain.block_number())
    first = min(r.block_number for r in records if r.contract == "AgentBudget")
    full = make_engine(f"sqlite:///{tmp_path}/full.db")
    _index(full, records)
    want = dump(full)
    assert len(want["explorer_agent_payments"]) == 5 and want["explorer_agent_grants"]
    for keep in range(records[-1].block_number, first - 2, -1):
        with Session(full) as session, session.begin():
            rollback_to(session, keep)
        fresh = make_engine(f"sqlite:///{tmp_path}/fresh-{keep}.db")
        _index(fresh, [r for r in records if r.block_number <= keep])
        assert dump(full) == dump(fresh), f"rolled back to block {keep}"
        _index(full, [r for r in records if r.block_number > keep])
        assert dump(full) == want, f"re-indexed after the rollback to {keep}"
