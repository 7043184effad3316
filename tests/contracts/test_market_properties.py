"""Property test: for any sequence of market operations, heartbeats, missed epochs and downtime
claims, tokens are conserved and nobody receives more than they are owed.

A small Python model predicts every payout exactly (streamed earnings, fee, refunds, downtime
refunds and stake slashes) and decides on its own which downtime claims are valid; the test
checks each balance change and each refusal against it, and after every step checks that the
market's balance equals what its order and lease records say it holds.
"""

from __future__ import annotations

import boa
from boa.contracts.base_evm_contract import BoaError
from contracts_support import (
    CLAIM_WINDOW,
    DOWNTIME_SLASH,
    EPOCH,
    HOUR,
    MIN_STAKE,
    SETTLE_EPOCHS,
    TSTK,
    USD,
    heartbeat,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FLOORS = [1 * USD, USD // 2, USD // 10, 1 * USD]  # registered in conftest
GPUS = [8, 4, 1, 8]

create_op = st.tuples(st.just("create"), st.integers(0, 1), st.integers(1, 4),
                      st.integers(USD // 2, 3 * USD), st.integers(60, 20 * HOUR),
                      st.integers(1, 3), st.integers(0, 10 * USD))
accept_op = st.tuples(st.just("accept"), st.integers(0, 50), st.integers(0, 3), st.floats(0, 1))
time_op = st.tuples(st.just("time"), st.integers(0, 6 * HOUR))
# n epochs pass; the providers in `mask` (bit i = provider i) send a heartbeat in each of them
tick_op = st.tuples(st.just("tick"), st.integers(1, 4), st.integers(0, 15))
# claim on a lease: picks index into the epochs the model holds claimable; `spoil` 1 adds an
# epoch the model holds unclaimable, 2 repeats or reverses the list, 3 sends no epochs
claim_op = st.tuples(st.just("claim"), st.integers(0, 50),
                     st.lists(st.integers(0, 10_000), min_size=1, max_size=4), st.booleans(),
                     st.sampled_from([0, 0, 0, 0, 0, 1, 2, 3]), st.integers(0, 10_000))
# an order that provider `pi` fits, accepted at once: expands to a create and an accept
fit_op = st.tuples(st.just("fit"), st.integers(0, 1), st.integers(0, 3), st.integers(60, 4 * HOUR),
                   st.floats(0, 1))
op = st.one_of(
    fit_op,
    fit_op,
    tick_op,
    tick_op,
    claim_op,
    claim_op,
    claim_op,
    st.tuples(st.just("stake"), st.integers(0, 3)),
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


def _expand(ops: list) -> list:
    """Replace each "fit" step by the create and accept steps it stands for."""
    out = []
    for step in ops:
        if step[0] == "fit":
            _, ti, pi, duration, frac = step
            out.append(("create", ti, min(GPUS[pi], 2), 3 * USD, duration, 1, 0))
            out.append(("accept", 0, pi, frac))
        else:
            out.append(step)
    return out


def _run(system, ops):
    ops = _expand(ops)
    m, usd, uptime, registry = system.market, system.usd, system.uptime, system.registry
    tenants = [system.tenant, system.tenant2]
    parties = ([t.address for t in tenants] + [p.address for p in system.providers]
               + [system.treasury])
    genesis = uptime.genesis()
    beats: set[tuple[int, int]] = set()   # (provider index, epoch) with a heartbeat

    def balances():
        return {a: usd.balanceOf(a) for a in parties}

    fee_bps = m.fee_bps()
    orders: dict[int, dict] = {}
    leases: dict[int, dict] = {}
    nonces = [100] * 4
    total_in = provider_got = fees_got = refunds_got = 0
    start_market = usd.balanceOf(m.address)
    assert start_market == 0

    def accrued_at(lease, t):
        if t <= lease["start"]:
            return 0
        return min(lease["budget"], lease["price"] * lease["gpus"] * (t - lease["start"]) // HOUR)

    def accrued(lease):
        return accrued_at(lease, lease["closed_at"] or boa.env.timestamp)

    def earned(lease):
        return max(accrued(lease) - lease["downtime"], 0)

    def held(lease):
        return 0 if lease["closed_at"] else lease["budget"] - lease["paid"] - lease["refunded"]

    def claim_ok(lease, epochs) -> bool:
        """The claim rules of docs/uptime.md, written independently of the contract."""
        now = boa.env.timestamp
        if not epochs or (lease["closed_at"] and now > lease["closed_at"] + CLAIM_WINDOW):
            return False
        ended = ((lease["closed_at"] or now) - genesis) // EPOCH
        current = (now - genesis) // EPOCH
        for i, e in enumerate(epochs):
            begin = genesis + e * EPOCH
            if (i and e <= epochs[i - 1]) or e >= ended or begin < lease["start"] \
                    or current <= e + SETTLE_EPOCHS \
                    or accrued_at(lease, begin) >= lease["budget"] \
                    or (lease["pi"], e) in beats or e in lease["claimed"]:
                return False
        return True

    def candidates(lease) -> list[int]:
        """Epochs worth trying: around the lease's start, its recent past and the present."""
        start_epoch = (lease["start"] - genesis) // EPOCH
        now_epoch = (boa.env.timestamp - genesis) // EPOCH
        near = set(range(start_epoch - 1, start_epoch + 6)) | set(range(now_epoch - 6, now_epoch + 2))
        near |= {e for (pi, e) in beats if pi == lease["pi"] and e >= start_epoch}
        return sorted(e for e in near | lease["claimed"] if e >= 0)

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
                                     deposit, False)
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
            active = registry.providers(prov.address).stake >= MIN_STAKE
            ok = (o["open"] and o["made"] < o["nodes"] and FLOORS[pi] <= price <= o["max_price"]
                  and GPUS[pi] >= o["min_gpus"] and pi not in o["providers"] and budget > 0
                  and active)
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
            leases[lid] = {"tenant": o["tenant"], "provider": prov, "pi": pi, "price": price,
                           "gpus": o["min_gpus"], "start": boa.env.timestamp, "budget": budget,
                           "paid": 0, "closed_at": 0, "downtime": 0, "refunded": 0,
                           "claimed": set(), "paid_through": 0, "late": 0}

        elif kind == "top_up":
            _, li, amount = step
            lid = _pick(list(leases), li)
            if lid is None:
                continue
            lease = leases[lid]
            ok = lease["closed_at"] == 0 and accrued(lease) < lease["budget"]
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

        elif kind == "tick":
            _, n, mask = step
            for _ in range(n):
                epoch = uptime.current_epoch()
                for pi, prov in enumerate(system.providers):
                    if mask >> pi & 1:
                        heartbeat(uptime, prov.address)
                        beats.add((pi, epoch))
                boa.env.time_travel(seconds=genesis + (epoch + 1) * EPOCH + 1 - boa.env.timestamp,
                                    block_delta=1)
            continue

        elif kind == "stake":
            prov = system.providers[step[1]]
            with boa.env.prank(prov.address):
                registry.add_stake(10 * TSTK)
            continue

        elif kind == "claim":
            _, li, picks, by_outsider, spoil, bad = step
            pools = {lid: candidates(lease) for lid, lease in leases.items()}
            claimable = {lid: [e for e in pool if claim_ok(leases[lid], [e])]
                         for lid, pool in pools.items()}
            # Prefer leases with something to claim; the spoilers below cover the refusals.
            lid = _pick([i for i in leases if claimable[i]] or list(leases), li)
            if lid is None:
                continue
            lease, pool, good = leases[lid], pools[lid], claimable[lid]
            wrong = [e for e in pool if e not in good]
            epochs = sorted({good[p % len(good)] for p in picks}) if good else []
            if spoil == 1 and wrong:
                epochs = sorted({*epochs, wrong[bad % len(wrong)]})
            elif spoil == 2 and epochs:
                epochs = epochs[::-1] if len(epochs) > 1 else epochs * 2
            elif spoil == 3:
                epochs = []
            ok = claim_ok(lease, epochs)
            record = registry.providers(lease["provider"].address)
            caller = system.outsider if by_outsider else lease["tenant"]
            tstk_before = system.stake.balanceOf(lease["tenant"].address)
            supply_before = system.stake.totalSupply()
            try:
                with boa.env.prank(caller.address):
                    m.claim_downtime(lid, epochs)
            except BoaError:
                assert not ok, f"valid claim refused: {step} {epochs}"
                continue
            assert ok, f"invalid claim succeeded: {step} {epochs}"
            amount = late = 0
            for e in epochs:
                begin = genesis + e * EPOCH
                pay = accrued_at(lease, begin + EPOCH) - accrued_at(lease, begin)
                amount += pay
                if begin < lease["paid_through"]:
                    late += pay
            # Only the provider's pay still in escrow is refunded, never the tenant's unspent
            # budget (which the close returns anyway).
            unspent = 0 if lease["closed_at"] else lease["budget"] - accrued(lease)
            refund = min(amount, max(0, held(lease) - unspent))
            lease["downtime"] += amount
            lease["refunded"] += refund
            lease["claimed"].update(epochs)
            lease["late"] += late
            expect[lease["tenant"].address] += refund
            slashed = min(len(epochs) * DOWNTIME_SLASH, record.stake + record.unbonding)
            # burned, never the tenant's (review 26: a sybil tenant moved the stake away)
            assert system.stake.balanceOf(lease["tenant"].address) == tstk_before
            assert supply_before - system.stake.totalSupply() == slashed

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
                assert amount <= 0, f"withdraw of {amount} refused"
                continue
            assert amount > 0, "withdraw of nothing succeeded"
            fee = amount * fee_bps // 10_000
            lease["paid"] += amount
            lease["paid_through"] = boa.env.timestamp
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
            escrow = held(lease)
            lease["closed_at"] = lease["paid_through"] = boa.env.timestamp
            owed = max(earned(lease) - lease["paid"], 0)
            fee = owed * fee_bps // 10_000
            lease["paid"] += owed
            expect[lease["provider"].address] += owed - fee
            expect[system.treasury] += fee
            expect[lease["tenant"].address] += escrow - owed

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
        model_held += sum(held(x) for x in leases.values())
        assert market_balance == model_held
        assert total_in == provider_got + fees_got + refunds_got + market_balance

    # Nobody got more than owed: every lease paid at most its budget, and a provider at most its
    # pay for live time, except for downtime claimed on time it had already been paid for.
    for lid, lease in leases.items():
        rec = m.leases(lid)
        assert rec.paid == lease["paid"] and rec.paid + rec.downtime_refunded <= rec.budget
        assert rec.budget == lease["budget"]
        assert (rec.downtime, rec.downtime_refunded) == (lease["downtime"], lease["refunded"])
        assert rec.downtime_refunded <= rec.downtime
        assert m.earned(lid) == earned(lease) and m.accrued(lid) == accrued(lease)
        for e in lease["claimed"]:
            assert m.downtime_claimed(lid, e)
        shortfall = m.shortfall(lid)
        assert shortfall == max(rec.paid - earned(lease), 0)
        assert shortfall <= lease["late"]            # only claims on already-paid time
        assert rec.paid <= earned(lease) + shortfall
        if rec.closed_at and shortfall == 0:
            assert rec.paid == earned(lease)
        # Live time x rate bounds the pay (within one base unit of rounding per stretch of time).
        end = rec.closed_at or boa.env.timestamp
        live = end - lease["start"] - EPOCH * len(lease["claimed"])
        rate = lease["price"] * lease["gpus"]
        assert earned(lease) * HOUR <= rate * live + HOUR * (len(lease["claimed"]) + 1)
