"""Property test: for any sequence of market operations, tokens are conserved and nobody
receives more than they are owed.

A small Python model predicts every payout exactly (streamed earnings, fee, refunds); the
test checks each balance change against it, and after every step checks that the market's
balance equals what its order and lease records say it holds.
"""

from __future__ import annotations

import boa
from boa.contracts.base_evm_contract import BoaError
from contracts_support import HOUR, USD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FLOORS = [1 * USD, USD // 2, USD // 10, 1 * USD]  # registered in conftest
GPUS = [8, 4, 1, 8]

create_op = st.tuples(st.just("create"), st.integers(0, 1), st.integers(1, 4),
                      st.integers(USD // 2, 3 * USD), st.integers(60, 20 * HOUR),
                      st.integers(1, 3), st.integers(0, 10 * USD))
accept_op = st.tuples(st.just("accept"), st.integers(0, 50), st.integers(0, 3), st.floats(0, 1))
time_op = st.tuples(st.just("time"), st.integers(0, 6 * HOUR))
op = st.one_of(
    create_op,
    accept_op,  # listed several times: leases are where the money moves
    accept_op,
    accept_op,
    accept_op,
    st.tuples(st.just("top_up"), st.integers(0, 50), st.integers(1, 20 * USD)),
    time_op,
    time_op,
    st.tuples(st.just("withdraw"), st.integers(0, 50)),
    st.tuples(st.just("withdraw"), st.integers(0, 50)),
    st.tuples(st.just("close"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
)
op_sequences = st.builds(lambda first, rest: [first, *rest], create_op,
                         st.lists(op, min_size=15, max_size=40))


def _pick(ids: list, i: int):
    """Newest first: hypothesis favours small numbers, so 0 means "the latest one"."""
    return ids[-1 - i % len(ids)] if ids else None


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=op_sequences)
def test_tokens_conserved_for_any_sequence(system, ops):
    with boa.env.anchor():
        _run(system, ops)


def _run(system, ops):
    m, usd = system.market, system.usd
    tenants = [system.tenant, system.tenant2]
    parties = ([t.address for t in tenants] + [p.address for p in system.providers]
               + [system.treasury])

    def balances():
        return {a: usd.balanceOf(a) for a in parties}

    fee_bps = m.fee_bps()
    orders: dict[int, dict] = {}
    leases: dict[int, dict] = {}
    nonces = [100] * 4
    total_in = provider_got = fees_got = refunds_got = 0
    start_market = usd.balanceOf(m.address)
    assert start_market == 0

    def earned(lease):
        t = lease["closed_at"] or boa.env.timestamp
        return min(lease["budget"], lease["price"] * lease["gpus"] * (t - lease["start"]) // HOUR)

    for step in ops:
        kind = step[0]
        before = balances()
        expect = dict.fromkeys(parties, 0)

        if kind == "create":
            _, ti, min_gpus, max_price, duration, nodes, extra = step
            tenant = tenants[ti]
            deposit = max_price * min_gpus * nodes * duration // HOUR + extra
            if deposit == 0:
                continue
            with boa.env.prank(tenant.address):
                oid = m.create_order(b"\x01" * 32, "", min_gpus, 0, max_price, duration, nodes,
                                     deposit)
            orders[oid] = {"tenant": tenant, "min_gpus": min_gpus, "max_price": max_price,
                           "duration": duration, "nodes": nodes, "deposit": deposit,
                           "allocated": 0, "made": 0, "open": True, "providers": set()}
            expect[tenant.address] -= deposit
            total_in += deposit

        elif kind == "accept":
            _, oi, pi, frac = step
            oid = _pick(list(orders), oi)
            if oid is None:
                continue
            o = orders[oid]
            pi = (pi + len(o["providers"])) % 4  # rotate past providers already on the order
            prov = system.providers[pi]
            price = FLOORS[pi] + int((o["max_price"] - FLOORS[pi]) * frac)
            budget = price * o["min_gpus"] * o["duration"] // HOUR
            ok = (o["open"] and o["made"] < o["nodes"] and FLOORS[pi] <= price <= o["max_price"]
                  and GPUS[pi] >= o["min_gpus"] and pi not in o["providers"] and budget > 0)
            nonces[pi] += 1
            try:
                lid = system.accept(oid, prov, price, nonce=nonces[pi], tenant=o["tenant"])
            except BoaError:
                assert not ok, f"valid accept refused: {step}"
                continue
            assert ok, f"invalid accept succeeded: {step}"
            assert budget <= o["deposit"] - o["allocated"]
            o["allocated"] += budget
            o["made"] += 1
            o["providers"].add(pi)
            leases[lid] = {"tenant": o["tenant"], "provider": prov, "price": price,
                           "gpus": o["min_gpus"], "start": boa.env.timestamp, "budget": budget,
                           "paid": 0, "closed_at": 0}

        elif kind == "top_up":
            _, li, amount = step
            lid = _pick(list(leases), li)
            if lid is None:
                continue
            lease = leases[lid]
            ok = lease["closed_at"] == 0 and earned(lease) < lease["budget"]
            try:
                with boa.env.prank(lease["tenant"].address):
                    m.top_up(lid, amount)
            except BoaError:
                assert not ok, f"valid top-up refused: {step}"
                continue
            assert ok, f"invalid top-up succeeded: {step}"
            lease["budget"] += amount
            expect[lease["tenant"].address] -= amount
            total_in += amount

        elif kind == "time":
            boa.env.time_travel(seconds=step[1])
            continue

        elif kind == "withdraw":
            lid = _pick(list(leases), step[1])
            if lid is None:
                continue
            lease = leases[lid]
            amount = earned(lease) - lease["paid"]
            try:
                with boa.env.prank(lease["provider"].address):
                    m.withdraw(lid)
            except BoaError:
                assert amount == 0, f"withdraw of {amount} refused"
                continue
            assert amount > 0, "withdraw of nothing succeeded"
            fee = amount * fee_bps // 10_000
            lease["paid"] += amount
            expect[lease["provider"].address] += amount - fee
            expect[system.treasury] += fee

        elif kind == "close":
            _, li, by_tenant = step
            lid = _pick(list(leases), li)
            if lid is None:
                continue
            lease = leases[lid]
            who = lease["tenant"] if by_tenant else lease["provider"]
            try:
                with boa.env.prank(who.address):
                    m.close_lease(lid)
            except BoaError:
                assert lease["closed_at"] != 0, "close of an open lease refused"
                continue
            assert lease["closed_at"] == 0, "closed a lease twice"
            lease["closed_at"] = boa.env.timestamp
            total = earned(lease)
            owed = total - lease["paid"]
            fee = owed * fee_bps // 10_000
            lease["paid"] = total
            expect[lease["provider"].address] += owed - fee
            expect[system.treasury] += fee
            expect[lease["tenant"].address] += lease["budget"] - total

        elif kind == "cancel":
            oid = _pick(list(orders), step[1])
            if oid is None:
                continue
            o = orders[oid]
            try:
                with boa.env.prank(o["tenant"].address):
                    m.cancel_order(oid)
            except BoaError:
                assert not o["open"], "cancel of an open order refused"
                continue
            assert o["open"], "cancelled an order twice"
            o["open"] = False
            expect[o["tenant"].address] += o["deposit"] - o["allocated"]

        after = balances()
        for a in parties:
            assert after[a] - before[a] == expect[a], (step, a)
        for t in tenants:
            refunds_got += max(0, after[t.address] - before[t.address])
        for p in system.providers:
            provider_got += after[p.address] - before[p.address]
        fees_got += after[system.treasury] - before[system.treasury]

        # Records on chain match the model; market balance matches the records.
        market_balance = usd.balanceOf(m.address)
        assert market_balance == system.held()
        model_held = sum(o["deposit"] - o["allocated"] for o in orders.values() if o["open"])
        model_held += sum(x["budget"] - x["paid"] for x in leases.values() if x["closed_at"] == 0)
        assert market_balance == model_held
        assert total_in == provider_got + fees_got + refunds_got + market_balance

    # Nobody got more than owed: every lease paid at most its budget and at most what time earned.
    for lid, lease in leases.items():
        rec = m.leases(lid)
        assert rec.paid == lease["paid"] <= rec.budget == lease["budget"]
        assert rec.paid <= earned(lease)
        assert m.earned(lid) == earned(lease)
        if rec.closed_at:
            assert rec.paid == earned(lease)
