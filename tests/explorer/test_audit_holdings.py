"""The audit's money checks on a real anvil devnet (issue 12: "the audit does not catch money with
no way out"): every lease adds up, every contract holds exactly what parties can claim, the
tokens' Transfer logs agree with balanceOf; tokens sent straight to a contract are caught; and a
property test drives random market actions and then takes every claim out, to the last wei."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.support.explorer import snapshot
from typer.testing import CliRunner

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.events import EventReader
from tessera.errors import WorkloadError
from tessera.explorer.audit import audit, money_audit
from tessera.explorer.cli import app
from tessera.explorer.db import make_engine
from tessera.explorer.indexer import Indexer
from tessera.explorer.simulate import TSTK, TUSD, Workload
from tessera.protocol import messages
from tessera.protocol.lease import claimable_epochs, order_deposit

MAX_PRICE = 5 * TUSD




def indexed_audit(chain: Chain, path):
    engine = make_engine(f"sqlite:///{path}")
    Indexer(chain, engine, confirmations=0).sync()
    return audit(chain, engine), f"sqlite:///{path}"


def test_seeded_market_audit_agrees_with_every_holding(market_run, chain, tmp_path):
    report, url = indexed_audit(chain, tmp_path / "a.db")
    assert report.agrees, report.problems
    assert report.ledgers and all(lease.adds_up for lease in report.ledgers.values())
    assert any(lease.closed for lease in report.ledgers.values())
    rows = {(h.contract, h.token): h for h in report.holdings}
    market, registry = rows[("Market", "PaymentToken")], rows[("ProviderRegistry", "StakeToken")]
    assert market.held > 0 and market.surplus == 0 and registry.held > 0 and registry.surplus == 0
    assert set(market.breakdown()) == {"order deposit", "lease escrow"}
    for h in report.holdings:   # the Transfer logs agree with balanceOf, for every contract
        assert report.balances[(h.contract, h.token)] == h.held
    # JSON names its units: amounts as exact decimals with their symbol, base units named.
    runner, network_file = CliRunner(), str(market_run[1].network_file)
    result = runner.invoke(app, ["audit", "--network", network_file, "--database", url, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["agrees"] and out["leases_adding_up"] == out["leases"] == len(report.ledgers)
    held = next(h for h in out["holdings"] if h["contract"] == "Market" and h["token"] == "PaymentToken")
    assert held["held"] == held["owed"] == held["balance_of"]
    assert held["held"]["amount"].endswith(" TUSD") and held["held"]["base_units"] == market.held
    result = runner.invoke(app, ["stats", "--database", url, "--json"])
    figures = {(f["name"], f["key"]): f for f in json.loads(result.output)["figures"]}
    paid = figures[("revenue.total.tenant_paid", "all")]
    assert paid["unit"] == "TUSD" and paid["value"].endswith(" TUSD") and paid["base_units"] > 0
    assert figures[("stake.total.active", "all")]["unit"] == "TSTK"
    assert figures[("leases.total.count", "all")] == {**figures[("leases.total.count", "all")],
                                                      "unit": "count", "value": len(report.ledgers)}


def test_tokens_sent_straight_to_the_market_fail_the_audit(market_run, chain, tmp_path):
    _, devnet, _, work = market_run
    with snapshot(work):
        work.send(work.tenants[0], work.payment, "transfer", work.market.address, 22 * TUSD // 10)
        work.mine()
        report, url = indexed_audit(chain, tmp_path / "b.db")
        (problem,) = report.problems
        assert "Market" in problem and "2.20 TUSD (2200000 base units)" in problem
        assert "no way out" in problem
        assert all(lease.adds_up for lease in report.ledgers.values())
        runner = CliRunner()
        net = ["--network", str(devnet.network_file), "--database", url]
        result = runner.invoke(app, ["audit", *net])
        assert result.exit_code == 1 and "2.20 TUSD" in result.output, result.output
        result = runner.invoke(app, ["audit", *net, "--json"])
        assert result.exit_code == 1
        out = json.loads(result.output)
        market = next(h for h in out["holdings"]
                      if h["contract"] == "Market" and h["token"] == "PaymentToken")
        assert market["surplus"] == {"amount": "2.2 TUSD", "base_units": 2_200_000}
        assert not out["agrees"] and out["leases_adding_up"] == out["leases"]
        # A plain transfer is told apart from a protocol call, with its tx, and a person who has
        # checked it can accept exactly that much stuck money: anyone can strand 1 base unit for
        # the price of a transfer, and an audit that stays red for ever would hide the next fault.
        assert market["unsolicited"]["base_units"] == 2_200_000
        assert "plain transfers" in problem and market["unsolicited_txs"][0] in problem
        accept = ["--accept-stuck", "Market:TUSD:2.2"]
        result = runner.invoke(app, ["audit", *net, *accept])
        assert result.exit_code == 0, result.output
        for wrong in ("Market:TUSD:2.1", "Market:TUSD:2.3"):      # not exactly what is stuck
            assert runner.invoke(app, ["audit", *net, "--accept-stuck", wrong]).exit_code == 1
        # ... and stuck money that comes later is still caught.
        work.send(work.tenants[0], work.payment, "transfer", work.market.address, 1)
        work.mine()
        Indexer(chain, make_engine(url), confirmations=0).sync()
        result = runner.invoke(app, ["audit", *net, *accept])
        assert result.exit_code == 1 and "2.200001 TUSD" in result.output, result.output
        for junk in ("Market:TUSD", "Nowhere:TUSD:1", "Market:ETH:1", "Market:TUSD:-1",
                     "Market:TUSD:0.0000001"):
            result = runner.invoke(app, ["audit", *net, "--accept-stuck", junk])
            assert result.exit_code == 2 and "--accept-stuck" in result.output + str(
                result.exception or ""), (junk, result.output)


def test_stake_sent_straight_to_the_registry_fails_the_audit(market_run, chain, tmp_path):
    _, devnet, _, work = market_run
    provider = next(iter(work.providers))
    with snapshot(work):
        work.send(provider, work.stake, "transfer", work.registry.address, 3 * TSTK)
        work.mine()
        report, url = indexed_audit(chain, tmp_path / "c.db")
        (problem,) = report.problems
        assert "ProviderRegistry" in problem and "3.00 TSTK" in problem and "no way out" in problem
        result = CliRunner().invoke(app, ["audit", "--network", str(devnet.network_file),
                                          "--database", url])
        assert result.exit_code == 1 and "ProviderRegistry" in result.output


def test_verified_market_audit_agrees_and_every_verified_lease_adds_up(verified_market_run, tmp_path):
    _, _, network, _, scenario = verified_market_run
    report, _ = indexed_audit(Chain(network), tmp_path / "v.db")
    assert report.agrees, report.problems
    verified = [lease for lease in report.ledgers.values() if lease.verified]
    assert len(verified) >= 4 and all(lease.adds_up for lease in verified)
    cheater = report.ledgers[scenario.cheater_lease]
    assert cheater.round_refunded > 0 and cheater.proven > 0
    assert cheater.budget == (cheater.provider_paid + cheater.fees + cheater.refunded
                              + cheater.downtime_refunded + cheater.round_refunded
                              + cheater.held + cheater.escrow)
    rows = {(h.contract, h.token): h for h in report.holdings}
    assert all(h.surplus == 0 for h in report.holdings)
    assert rows[("Validators", "StakeToken")].held > 0
    for h in report.holdings:
        assert report.balances[(h.contract, h.token)] == h.held


def test_verified_market_money_adds_up_at_every_block(verified_market_run):
    """The scenario ends with every bond resolved and reward claimed: audit each block on the
    way, where challenge bonds, voters' and reporters' rewards and Settlement holds are open."""
    _, _, network, _, scenario = verified_market_run
    chain = Chain(network)
    reader = EventReader(chain)
    records = reader.events(network.deploy_block, scenario.last_block)
    blocks = sorted({r.block_number for r in records if r.block_number >= scenario.first_block})
    times = {r.block_number: r.timestamp for r in records}
    seen: dict[str, int] = {}
    for block in blocks:
        upto = [r for r in records if r.block_number <= block]
        ledgers, rows, _, problems = money_audit(chain, reader, upto, block, times[block])
        assert problems == [], f"block {block}: {problems}"
        for h in rows:
            for kind, amount in h.breakdown().items():
                seen[kind] = max(seen.get(kind, 0), amount)
        for lease in ledgers.values():
            if lease.held:
                seen["held for Settlement"] = lease.held
    assert {"challenge bond", "voter rewards", "hardware rewards", "settlement hold",
            "validator unbonding", "order deposit"} <= set(seen), seen


# -- property: every wei has a way out ------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    with private_devnet(tmp_path_factory.mktemp("holdings")) as (devnet, network):
        work = Workload(network, seed=5)
        work.setup()
        yield work, Chain(network)


class Driver:
    """Random market actions, one transaction a block; a refused action is skipped (it moves no
    money). The few ids it needs come from the logs of what succeeded."""

    def __init__(self, work: Workload, chain: Chain):
        self.work, self.chain = work, chain
        self.settlement = chain.contract("Settlement")
        self.providers = list(work.providers.values())
        self.orders: dict[int, dict] = {}
        self.leases: dict[int, dict] = {}
        self.claimed: dict[int, set[int]] = {}
        self.genesis = chain.uptime.functions.genesis().call()
        self.epoch_length = chain.uptime.functions.epoch_length().call()
        self.advance = 1

    def tx(self, sender: str, contract, fn: str, *args) -> list | None:
        """Send one transaction in a block `self.advance` seconds after the last one."""
        self.work.send(sender, contract, fn, *args)
        try:
            return self.work.mine(self.advance)
        except WorkloadError as exc:
            if "reverted" not in str(exc):
                raise
            return None

    def pick(self, table: dict, i: int):
        ids = sorted(table)
        return ids[-1 - i % len(ids)] if ids else None

    def order(self, ti: int, nodes: int, duration: int, extra: int, verified: bool) -> int | None:
        tenant = self.work.tenants[ti % len(self.work.tenants)]
        deposit = order_deposit(MAX_PRICE, 1, nodes, duration) + extra
        got = self.tx(tenant, self.work.market, "create_order", b"\x01" * 32, "", 1, 0, MAX_PRICE,
                      duration, nodes, deposit, verified)
        if got is None:
            return None
        (created,) = self.work._logs(got, self.work.market, "OrderCreated")
        self.orders[created["order_id"]] = {"tenant": tenant, "verified": verified, "open": True}
        return created["order_id"]

    def accept(self, oi: int, pi: int, frac: float) -> None:
        oid = self.pick(self.orders, oi)
        if oid is None:
            return
        p = self.providers[pi % len(self.providers)]
        price = p.floor + int((MAX_PRICE - p.floor) * frac)
        nonce = next(self.work.nonce_counter)
        typed = messages.bid_typed_data(self.work.chain_id, self.work.market.address, oid,
                                        p.address, price, nonce, 2**40)
        signature = bytes.fromhex(messages.sign(devnet_account(p.index), typed)[2:])
        got = self.tx(self.orders[oid]["tenant"], self.work.market, "accept_bid", oid, p.address,
                      price, nonce, 2**40, signature)
        for lease in self.work._logs(got or [], self.work.market, "LeaseCreated"):
            self.leases[lease["lease_id"]] = {**lease, "verified": self.orders[oid]["verified"],
                                              "closed_at": 0}
            self.claimed[lease["lease_id"]] = set()

    def lease_action(self, kind: str, li: int, n: int) -> None:
        lid = self.pick(self.leases, li)
        if lid is None:
            return
        lease, market = self.leases[lid], self.work.market
        if kind == "withdraw":
            self.tx(lease["provider"], market, "withdraw", lid)
        elif kind == "close":
            if self.tx(lease["tenant"] if n % 2 else lease["provider"], market, "close_lease", lid):
                lease["closed_at"] = self.work.now
        elif kind == "top_up":
            self.tx(lease["tenant"], market, "top_up", lid, (n % 5 + 1) * TUSD // 2)
        elif kind == "release":   # on a verified lease: the pay of time past the release delay
            verified = {k: v for k, v in self.leases.items() if v["verified"]}
            if verified:
                self.tx(self.work.deployer, self.settlement, "release", self.pick(verified, li), 0)
        elif kind == "downtime":   # nobody sends heartbeats here: every ended epoch is claimable
            budget = market.functions.leases(lid).call()[6]
            end = lease["closed_at"] or self.work.now + self.advance
            epochs = [e for e in claimable_epochs(lease["start"], end, lease["price_per_gpu_hour"],
                                                  lease["gpus"], budget, self.genesis,
                                                  self.epoch_length)
                      if e not in self.claimed[lid]][: n % 4 + 1]
            if epochs and self.tx(self.work.deployer, market, "claim_downtime", lid, epochs):
                self.claimed[lid].update(epochs)

    def stake_action(self, kind: str, pi: int, n: int) -> None:
        p = self.providers[pi % len(self.providers)]
        registry = self.work.registry
        if kind == "slash":
            self.tx(self.work.deployer, registry, "slash", p.address, (n % 150 + 1) * TSTK,
                    self.work.deployer)
        elif kind == "unbond":
            stake = registry.functions.providers(p.address).call()[0]
            if stake:
                self.tx(p.address, registry, "request_unbond", max(stake * (n % 4 + 1) // 4, 1))
        elif kind == "add":
            self.tx(p.address, registry, "add_stake", (n % 50 + 1) * TSTK)
        else:
            self.tx(p.address, registry, "withdraw_unbonded")

    def cancel(self, oi: int) -> None:
        oid = self.pick(self.orders, oi)
        if oid is not None and self.tx(self.orders[oid]["tenant"], self.work.market, "cancel_order", oid):
            self.orders[oid]["open"] = False

    def mine_all(self, advance: int = 1) -> None:
        """Mine what is queued in one block; some may be refused (the balances tell after)."""
        try:
            self.work.mine(advance)
        except WorkloadError as exc:
            if "reverted" not in str(exc):
                raise

    def drain(self) -> None:
        """Every party takes out everything it can claim, in five blocks: all leases closed and
        orders cancelled; verified pay released past every delay; pay withdrawn and stake
        unbonded; the unbonded stake withdrawn."""
        market, registry, w = self.work.market, self.work.registry, self.work
        for lid, lease in self.leases.items():
            if not lease["closed_at"]:
                w.send(lease["tenant"], market, "close_lease", lid)
        for oid, o in self.orders.items():
            if o["open"]:
                w.send(o["tenant"], market, "cancel_order", oid)
        self.mine_all()
        for lid, lease in self.leases.items():
            if lease["verified"]:
                w.send(w.deployer, self.settlement, "release", lid, 0)
        self.mine_all(2 * 86_400)                     # past every release delay and claim window
        for lid, lease in self.leases.items():
            if market.functions.withdrawable(lid).call():
                w.send(lease["provider"], market, "withdraw", lid)
        for p in self.providers:
            stake = registry.functions.providers(p.address).call()[0]
            if stake:
                w.send(p.address, registry, "request_unbond", stake)
        self.mine_all()
        for p in self.providers:
            if registry.functions.providers(p.address).call()[1]:
                w.send(p.address, registry, "withdraw_unbonded")
        self.mine_all(3_601)


def check_money(chain: Chain) -> None:
    reader = EventReader(chain)
    head = chain.block_number()
    records = reader.events(chain.network.deploy_block, head)
    as_of = chain.block_timestamp(head)
    ledgers, rows, balances, problems = money_audit(chain, reader, records, head, as_of)
    assert problems == []
    assert all(lease.adds_up for lease in ledgers.values())
    assert all(balances[(h.contract, h.token)] == h.held for h in rows)


# Kinds listed more than once are drawn more often: leases are where the money moves.
KINDS = ("fit", "fit", "fit", "withdraw", "withdraw", "close", "top_up", "release", "downtime",
         "downtime", "order", "accept", "cancel", "slash", "unbond", "add", "withdraw_unbonded")
# (kind, which order/lease/provider, a number for amounts and choices, a price fraction, whether
# a new order is verified, the seconds that pass before the step's block)
step = st.tuples(st.sampled_from(KINDS), st.integers(0, 5), st.integers(0, 200), st.floats(0, 1),
                 st.booleans(),
                 st.sampled_from([60, 1, 300, 600, 1_800, 3_600, 4 * 3_600, 9_000, 30_000]))


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(actions=st.lists(step, min_size=6, max_size=20))
@example(actions=[   # a verified lease: topped up, downtime, released, withdrawn, closed, more downtime
    ("fit", 0, 1, 0.3, True, 60), ("top_up", 0, 3, 0, False, 600), ("downtime", 0, 2, 0, False, 600),
    ("release", 0, 0, 0, False, 9_000), ("withdraw", 0, 0, 0, False, 60),
    ("fit", 1, 2, 0.9, False, 1), ("close", 1, 1, 0, False, 3_600), ("downtime", 1, 3, 0, False, 60),
    ("release", 1, 0, 0, False, 9_000), ("withdraw", 1, 0, 0, False, 1),
    ("downtime", 0, 1, 0, False, 600), ("slash", 0, 120, 0, False, 1), ("unbond", 1, 2, 0, False, 1)])
@example(actions=[   # unverified: downtime netted against later pay, overdrawn, closed by the provider
    ("fit", 2, 0, 0.0, False, 1), ("withdraw", 0, 0, 0, False, 3_600),
    ("downtime", 0, 3, 0, False, 60), ("top_up", 0, 1, 0, False, 60), ("withdraw", 0, 0, 0, False, 600),
    ("close", 0, 0, 0, False, 600), ("downtime", 0, 3, 0, False, 60), ("cancel", 0, 0, 0, False, 1),
    ("withdraw_unbonded", 0, 0, 0, False, 1)])
def test_every_wei_has_a_way_out(world, actions):
    work, chain = world
    with snapshot(work):
        d = Driver(work, chain)
        d.order(0, 1, 3_600, 0, False)
        d.accept(0, 0, 0.5)
        assert d.leases, "the first lease of every example must be accepted"
        for kind, i, n, frac, verified, advance in actions:
            d.advance = advance
            if kind == "fit":
                if d.order(i, n % 3 + 1, 4 * 3_600 + n * 300, n * TUSD // 50, verified) is not None:
                    d.accept(0, i, frac)
            elif kind == "order":
                d.order(i, n % 3 + 1, 4 * 3_600 + n * 300, n * TUSD // 50, verified)
            elif kind == "accept":
                d.accept(i, n, frac)
            elif kind == "cancel":
                d.cancel(i)
            elif kind in ("slash", "unbond", "add", "withdraw_unbonded"):
                d.stake_action(kind, i, n)
            else:
                d.lease_action(kind, i, n)
        check_money(chain)
        d.drain()
        check_money(chain)
        # Every claim was taken: the Market and the registry hold nothing.
        assert work.payment.functions.balanceOf(work.market.address).call() == 0
        assert work.stake.functions.balanceOf(work.registry.address).call() == 0

