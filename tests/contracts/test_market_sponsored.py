"""Market.create_order_for: an order run by its tenant and paid for by someone else (BridgeOrders,
funding it from another chain). Every way escrow goes back (cancel, close, a downtime claim) goes
to the payer, counted in `refunded`; the tenant runs the order but can take nothing out of it,
and cannot top up its leases (the top-up's refund would be the payer's)."""

from __future__ import annotations

import boa
from contracts_support import EPOCH, HOUR, USD, events
from test_market_downtime import PER_EPOCH, balances, claim, epoch_start, run_epochs, to_time

ZERO = "0x" + "00" * 20


def sponsored(system, payer=None, tenant=None, deposit=10 * USD, duration=HOUR) -> int:
    payer, tenant = payer or system.outsider, tenant or system.tenant
    with boa.env.prank(payer.address):
        return system.market.create_order_for(tenant.address, b"\x44" * 32, "", 2, 0, 2 * USD,
                                              duration, 1, deposit, False)


def test_the_payer_pays_and_gets_every_refund(system):
    m, usd, payer, tenant = system.market, system.usd, system.outsider, system.tenant
    p0, t0 = usd.balanceOf(payer.address), usd.balanceOf(tenant.address)
    oid = sponsored(system, deposit=10 * USD)
    (ev,) = events(m, "OrderSponsored")
    assert (ev.order_id, ev.tenant, ev.payer) == (oid, tenant.address, payer.address)
    assert m.orders(oid).tenant == tenant.address and m.refund_to(oid) == payer.address
    assert usd.balanceOf(payer.address) == p0 - 10 * USD and usd.balanceOf(tenant.address) == t0
    lease_id = system.accept(oid, system.providers[1], USD)      # by the tenant: 2 GPUs x 1 USD
    boa.env.time_travel(seconds=HOUR // 4)
    with boa.env.prank(tenant.address), boa.reverts("market: the order's refunds go to its payer"):
        m.top_up(lease_id, USD)
    with boa.env.prank(tenant.address):
        m.close_lease(lease_id)
        m.cancel_order(oid)
    (cancelled,) = events(m, "OrderCancelled")
    lease = m.leases(lease_id)
    assert usd.balanceOf(tenant.address) == t0                   # the tenant took nothing out
    assert m.refunded(oid) == 10 * USD - lease.paid == usd.balanceOf(payer.address) - (p0 - 10 * USD)
    assert cancelled.refund == 10 * USD - 2 * USD                # the lease had taken 2 USD
    assert usd.balanceOf(m.address) == system.held()


def test_a_downtime_refund_goes_to_the_payer(system):
    m, usd, payer, tenant = system.market, system.usd, system.outsider, system.tenant
    epoch = system.uptime.current_epoch() + 1
    to_time(epoch_start(system, epoch) + EPOCH // 2)
    oid = sponsored(system, deposit=4 * USD)
    lease_id = system.accept(oid, system.providers[0], 1_800_000, nonce=77)
    run_epochs(system, system.providers[0].address, epoch + 1, [True, False, True])
    payer_before, tenant_before = usd.balanceOf(payer.address), balances(system, tenant.address)
    ev = claim(system, lease_id, [epoch + 2])
    assert ev.refund == PER_EPOCH and ev.tenant == tenant.address
    assert usd.balanceOf(payer.address) == payer_before + PER_EPOCH == payer_before + m.refunded(oid)
    # the escrow is the payer's; the stake slashed for the downtime is burned (review 26)
    assert balances(system, tenant.address) == tenant_before
    assert ev.stake_slashed > 0 and system.stake.balanceOf(m.address) == 0
    assert usd.balanceOf(m.address) == system.held()


def test_refusals(system):
    m = system.market
    with boa.env.prank(system.outsider.address), boa.reverts("market: zero tenant"):
        m.create_order_for(ZERO, b"\x44" * 32, "", 1, 0, USD, HOUR, 1, USD, False)
    with boa.env.prank(system.outsider.address), boa.reverts("market: deposit too small"):
        m.create_order_for(system.tenant.address, b"\x44" * 32, "", 1, 0, USD, HOUR, 1, USD - 1, False)
    # paying for an order one runs oneself still records the payer: its refunds are counted
    with boa.env.prank(system.tenant.address):
        oid = m.create_order_for(system.tenant.address, b"\x44" * 32, "", 1, 0, USD, HOUR, 1, USD, False)
    assert events(m, "OrderSponsored") and m.refund_to(oid) == system.tenant.address
    with boa.env.prank(system.tenant2.address), boa.reverts("market: caller is not the tenant"):
        m.cancel_order(sponsored(system))                        # neither tenant nor payer
    # a plain order has no payer: only its tenant cancels it
    plain = system.create_order()
    assert m.refund_to(plain) == ZERO
    with boa.env.prank(system.outsider.address), boa.reverts("market: caller is not the tenant"):
        m.cancel_order(plain)


def test_the_payer_may_cancel_what_it_paid_for(system):
    m, usd, payer = system.market, system.usd, system.outsider
    oid = sponsored(system, deposit=10 * USD)
    before = usd.balanceOf(payer.address)
    with boa.env.prank(payer.address):
        m.cancel_order(oid)
    (ev,) = events(m, "Refunded")
    assert (ev.order_id, ev.payer, ev.amount) == (oid, payer.address, 10 * USD)
    assert usd.balanceOf(payer.address) == before + 10 * USD == before + m.refunded(oid)
