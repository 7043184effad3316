"""protocol/lease.py against Market.vy: same inputs, same integers.

Every off-chain reader of a lease's money (tenant, provider, explorer figures, simulators) uses
protocol/lease.py; these properties pin it to the contract: the deposit an order needs, the
budget a lease gets, the stream by the second and its exhaustion, pay for live time, the fee
of each payout, and which downtime epochs can be claimed."""

from __future__ import annotations

import boa
from contracts_support import ANSWER_EPOCHS, EPOCH, HOUR, REPORT_DELAY, USD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.protocol import lease as rules
from tessera.protocol import liveness
from tessera.protocol.money import PAYMENT_DECIMALS, STAKE_DECIMALS

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_deployed_tokens_use_the_protocol_decimals(system):
    assert system.usd.decimals() == PAYMENT_DECIMALS
    assert system.stake.decimals() == STAKE_DECIMALS


@FAST
@given(max_price=st.integers(USD, 40 * USD), gpus=st.integers(1, 8), nodes=st.integers(1, 3),
       duration=st.integers(1, 30 * HOUR))
def test_order_deposit_is_the_least_create_order_accepts(system, max_price, gpus, nodes, duration):
    need = rules.order_deposit(max_price, gpus, nodes, duration)
    with boa.env.anchor():
        if need > 1:
            with boa.reverts("market: deposit too small"):
                system.create_order(min_gpus=gpus, max_price=max_price, duration=duration,
                                    nodes=nodes, deposit=need - 1)
        if need > 0:
            order_id = system.create_order(min_gpus=gpus, max_price=max_price,
                                           duration=duration, nodes=nodes, deposit=need)
            assert system.market.orders(order_id).deposit == need


@FAST
@given(price=st.integers(USD, 7 * USD), gpus=st.integers(1, 8), duration=st.integers(60, 6 * HOUR),
       waits=st.lists(st.integers(0, 4 * HOUR), min_size=1, max_size=4))
def test_budget_stream_earned_and_fee_match_the_market(system, price, gpus, duration, waits):
    m, provider = system.market, system.providers[0]   # 8 GPUs, floor 1 USD
    fee_bps = m.fee_bps()
    with boa.env.anchor():
        order_id = system.create_order(min_gpus=gpus, max_price=7 * USD, duration=duration)
        lease_id = system.accept(order_id, provider, price)
        lease = m.leases(lease_id)
        assert lease.budget == rules.lease_budget(price, gpus, duration)
        paid = 0
        for wait in waits:
            boa.env.time_travel(seconds=wait)
            accrued = rules.accrued_at(price, gpus, lease.budget, lease.start, boa.env.timestamp)
            assert m.accrued(lease_id) == accrued
            assert m.earned(lease_id) == rules.earned(accrued, downtime=0)
            if accrued > paid:  # the payout's fee, to the treasury, rounds down
                before = system.usd.balanceOf(system.treasury)
                with boa.env.prank(provider.address):
                    m.withdraw(lease_id)
                fee = system.usd.balanceOf(system.treasury) - before
                assert fee == rules.protocol_fee(accrued - paid, fee_bps)
                paid = accrued


@FAST
@given(price=st.integers(USD, 7 * USD), gpus=st.integers(1, 8), duration=st.integers(60, 3 * HOUR))
def test_exhaustion_is_the_first_second_at_the_budget(system, price, gpus, duration):
    m = system.market
    with boa.env.anchor():
        order_id = system.create_order(min_gpus=gpus, max_price=7 * USD, duration=duration)
        lease_id = system.accept(order_id, system.providers[0], price)
        lease = m.leases(lease_id)
        at = rules.exhausted_at(lease.start, lease.budget, price, gpus)
        boa.env.time_travel(seconds=at - 1 - boa.env.timestamp)
        assert m.accrued(lease_id) < lease.budget
        boa.env.time_travel(seconds=1)
        assert m.accrued(lease_id) == lease.budget


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offset=st.integers(0, EPOCH - 1), price=st.integers(USD, 7 * USD), gpus=st.integers(1, 8),
       duration=st.integers(EPOCH, 12 * EPOCH), wait=st.integers(0, 16 * EPOCH))
def test_claimable_epochs_are_the_ones_the_market_takes(system, offset, price, gpus, duration,
                                                        wait):
    """With no heartbeat at all, an epoch can be claimed exactly when claimable_epochs holds it:
    checked on the epochs at and around both ends of the range."""
    m, uptime = system.market, system.uptime
    genesis = uptime.genesis()
    with boa.env.anchor():
        epoch = uptime.current_epoch() + 1
        boa.env.time_travel(seconds=genesis + epoch * EPOCH + offset - boa.env.timestamp)
        order_id = system.create_order(min_gpus=gpus, max_price=7 * USD, duration=duration)
        lease_id = system.accept(order_id, system.providers[0], price)
        lease = m.leases(lease_id)
        boa.env.time_travel(seconds=wait)
        claimable = rules.claimable_epochs(lease.start, boa.env.timestamp, price, gpus, lease.budget,
                                           genesis, EPOCH)
        probes = {claimable.start - 1, claimable.start, claimable.stop - 1, claimable.stop}
        for e in sorted(p for p in probes if p >= 0):
            with boa.env.anchor(), boa.env.prank(system.tenant.address):
                try:
                    m.claim_downtime(lease_id, [e])
                    taken = True
                except boa.BoaError:
                    taken = False
            assert taken == (e in claimable and liveness.is_final(
                e, uptime.current_epoch(), REPORT_DELAY, ANSWER_EPOCHS)), (e, claimable)
