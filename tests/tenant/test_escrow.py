"""Escrow running low (tenant/escrow.py) and a lease's whole money (tenant/lease_money.py),
against a real anvil devnet with the contracts `tessera devnet up` deploys: leases are accepted
from real signed bids of registered providers (no provider process is needed: nothing here runs
a job), and time is moved with anvil's `evm_increaseTime`."""

from __future__ import annotations

import pytest

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.market import Market
from tessera.chain.registry import ProviderRegistry
from tessera.errors import TenantError
from tessera.protocol import messages
from tessera.protocol.jobspec import EscrowSpec
from tessera.protocol.lease import SECONDS_PER_HOUR, exhausted_at
from tessera.protocol.wire import BidMessage
from tessera.tenant.client import Tenant
from tessera.tenant.escrow import (
    EscrowWatch,
    lease_times,
    listing_order,
    my_lease_ids,
    parse_top_up,
    parse_warn_within,
    top_up,
    topped_up,
)
from tessera.tenant.lease_money import lease_money, money_lines
from tessera.tenant.lease_views import close_lines, status_report

TENANT, OTHER_TENANT, PROVIDERS = 5, 6, (2, 3)
PRICE = 1_200_000                 # 1.20 TUSD per device-hour
HOUR_BUDGET = PRICE               # a one-hour lease at PRICE x 1 GPU


@pytest.fixture(scope="module")
def network(tmp_path_factory, private_devnet):
    # day-long uptime epochs: no whole epoch fits in these leases, so `Tenant.close` claims no
    # downtime (no provider here sends heartbeats) and never slashes the providers inactive
    with private_devnet(tmp_path_factory.mktemp("escrow"), epoch_length=86_400) as (_, network):
        for index in PROVIDERS:
            registry = ProviderRegistry(Chain(network, devnet_account(index)))
            registry.register(registry.min_stake(), "cpu-x86_64", 1, 16_000, 1000,
                              f"http://127.0.0.1:{19000 + index}", PRICE)
        yield network


def tenant_of(network, index: int = TENANT) -> Tenant:
    return Tenant(Chain(network, devnet_account(index)))


def lease(network, tenant: Tenant, provider: int = PROVIDERS[0], duration: int = 3600) -> int:
    """A one-node order at PRICE for `duration` s and its lease, from a real signed bid."""
    market = tenant.market
    budget = PRICE * duration // SECONDS_PER_HOUR
    order_id, _ = market.create_order(b"\x01" * 32, "", 1, 0, PRICE, duration, 1, budget)
    account = devnet_account(provider)
    expiry = tenant.chain.block_timestamp() + 3600
    typed = messages.bid_typed_data(network.chain_id, market.address, order_id, account.address,
                                    PRICE, order_id, expiry)
    bid = BidMessage(order_id=order_id, provider=account.address, price_per_gpu_hour=PRICE,
                     nonce=order_id, expiry=expiry, signature=messages.sign(account, typed))
    return market.accept_bid(bid)[0]


def advance(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    chain.w3.provider.make_request("evm_mine", [])


def test_time_left_is_the_stream_rule_against_the_chain_clock(network):
    tenant = tenant_of(network)
    lease_id = lease(network, tenant)
    chain_lease = tenant.market.lease(lease_id)
    [t] = lease_times(tenant, [lease_id])
    assert t.runs_out_at == exhausted_at(chain_lease.start, chain_lease.budget, PRICE, 1)
    assert t.left_s == t.runs_out_at - tenant.chain.block_timestamp() and 3590 <= t.left_s <= 3600
    advance(tenant.chain, 1000)
    [later] = lease_times(tenant, [lease_id])
    assert later.left_s == t.left_s - (later.now - t.now) and later.state == "open"
    advance(tenant.chain, 3000)
    [gone] = lease_times(tenant, [lease_id])
    assert gone.left_s == 0 and gone.state == "ran out" and gone.runs_out_within(1)


def test_job_list_shows_open_leases_first_soonest_to_run_out_first(network):
    tenant = tenant_of(network)
    long_lease = lease(network, tenant, duration=7200)
    short_lease = lease(network, tenant, duration=1200)
    closed = lease(network, tenant, duration=3600)
    tenant.close(closed)
    other = lease(network, tenant_of(network, OTHER_TENANT))
    mine = my_lease_ids(tenant)
    assert {long_lease, short_lease, closed} <= set(mine) and other not in mine
    order = [t.lease_id for t in listing_order(lease_times(tenant, mine))]
    assert order.index(short_lease) < order.index(long_lease) < order.index(closed)
    times = {t.lease_id: t for t in lease_times(tenant, mine)}
    assert times[closed].state == "closed" and times[closed].left_s == 0
    assert all(times[a].is_open for a in order[:order.index(closed)] if times[a].state != "ran out")


@pytest.mark.parametrize("text, problem", [
    ("0", "above zero"), ("-1", "negative"), ("abc", "not an amount"),
    ("0.0000001", "more than 6 decimal places"), ("1e6", "not an amount")])
def test_a_bad_top_up_is_refused_before_any_transaction(text, problem):
    with pytest.raises(ValueError, match=problem) as caught:
        parse_top_up(text)
    assert str(caught.value).startswith("top-up amount")


@pytest.mark.parametrize("text", ["0s", "soon", "-5m", "5 years"])
def test_a_bad_warn_within_is_refused_naming_the_option(text):
    with pytest.raises(ValueError, match="--warn-within"):
        parse_warn_within(text)


def test_top_up_by_hand_extends_the_lease_by_the_stream_rule(network):
    tenant = tenant_of(network)
    lease_id = lease(network, tenant)
    done = top_up(tenant, lease_id, parse_top_up("0.60"))
    assert done.amount == 600_000 and done.budget == HOUR_BUDGET + 600_000
    assert done.after.runs_out_at - done.before.runs_out_at == 1800    # half an hour at 1.20/h
    assert "topped up by 0.60 TUSD" in done.text()
    assert topped_up(tenant, [lease_id]) == 600_000


def test_top_ups_that_cannot_happen_are_refused_and_change_nothing(network):
    tenant = tenant_of(network)
    market = tenant.market
    lease_id = lease(network, tenant)
    other = lease(network, tenant_of(network, OTHER_TENANT))
    nonce = tenant.chain.w3.eth.get_transaction_count(tenant.chain.address)
    with pytest.raises(TenantError, match="belongs to"):
        top_up(tenant, other, 1_000_000)
    with pytest.raises(TenantError, match="above zero"):
        top_up(tenant, lease_id, 0)
    with pytest.raises(Exception, match="not enough TUSD"):
        top_up(tenant, lease_id, 10**30)
    assert tenant.chain.w3.eth.get_transaction_count(tenant.chain.address) == nonce
    assert market.lease(lease_id).budget == HOUR_BUDGET
    advance(tenant.chain, 3700)                       # past the lease's last paid second
    with pytest.raises(TenantError, match="ran out at .* UTC"):
        top_up(tenant, lease_id, 1_000_000)
    tenant.close(lease_id)
    with pytest.raises(TenantError, match="is closed"):
        top_up(tenant, lease_id, 1_000_000)
    assert market.lease(lease_id).budget == HOUR_BUDGET


def test_automatic_top_ups_never_pass_the_ceiling(network):
    """0.50 a time with a 1.20 ceiling: 0.50, 0.50, then the 0.20 left, then nothing; a manual
    top-up of another lease of the job counts against the same ceiling."""
    tenant = tenant_of(network)
    first, second = lease(network, tenant), lease(network, tenant, provider=PROVIDERS[1])
    top_up(tenant, second, 100_000)                   # by hand, before the watch: counts too
    policy = EscrowSpec(top_up="0.50", top_up_ceiling="1.30", top_up_when_left="1d")
    notices: list[str] = []
    watch = EscrowWatch(tenant, policy, notices.append)
    for _ in range(6):
        watch.check([first, second], force=True)
        assert topped_up(tenant, [first, second]) <= policy.top_up_ceiling
    assert topped_up(tenant, [first, second]) == 1_300_000
    assert sorted(u.amount for u in watch.top_ups) == [200_000, 500_000, 500_000]
    budgets = tenant.market.lease(first).budget + tenant.market.lease(second).budget
    assert budgets == 2 * HOUR_BUDGET + 1_300_000
    assert sum("ceiling is 1.30 TUSD" in n for n in notices) == 1       # said once
    assert watch.summary()["top_ups"][0]["amount_base_units"] in (200_000, 500_000)


def test_the_watch_warns_once_before_a_lease_runs_out_and_again_after_a_top_up(network,
                                                                               monkeypatch):
    tenant = tenant_of(network)
    lease_id = lease(network, tenant, duration=600)   # 10 minutes of escrow
    notices: list[str] = []
    watch = EscrowWatch(tenant, EscrowSpec(warn_within="5m"), notices.append)
    watch.check([lease_id], force=True)
    assert notices == []                              # 10 minutes left: no warning yet
    advance(tenant.chain, 450)                        # 2.5 minutes left
    watch.check([lease_id], force=True)
    watch.check([lease_id], force=True)
    assert len(notices) == 1 and f"lease {lease_id} runs out of escrow in" in notices[0]
    assert f"tessera job top-up {lease_id}" in notices[0]
    top_up(tenant, lease_id, 30_000)                  # 1.5 more minutes: still within 5
    watch.check([lease_id], force=True)
    assert len(notices) == 2
    # a watch that runs often reads the chain at most every `every_s` seconds
    clock, reads, read = iter([0.0, 1.0, 2.0, 20.0]), [], tenant.market.lease
    monkeypatch.setattr(tenant.market, "lease", lambda i: reads.append(i) or read(i))
    slow = EscrowWatch(tenant, EscrowSpec(), every_s=10, clock=lambda: next(clock))
    for _ in range(4):
        slow.check([lease_id])
    assert reads == [lease_id, lease_id]              # at t = 0 and t = 20


def test_status_and_close_tell_the_same_whole_money(network):
    """The provider withdraws mid-lease, then the tenant closes: `job close` used to report
    only what the close paid, disagreeing with `job status`. Both print `money_lines` now, and
    the parts add up to the budget."""
    tenant = tenant_of(network)
    lease_id = lease(network, tenant)
    top_up(tenant, lease_id, 300_000)
    advance(tenant.chain, 600)
    provider = Market(Chain(network, devnet_account(PROVIDERS[0])))
    provider.withdraw(lease_id)
    t, m, open_lines = status_report(tenant, lease_id)
    assert m.ledger.adds_up and m.withdrawn > 0 and m.ledger.escrow > 0
    assert any("still in escrow" in line for line in open_lines)
    assert any("of it 0.30 TUSD topped up" in line for line in open_lines)
    advance(tenant.chain, 300)
    settlement = tenant.close(lease_id)
    lines, closed = close_lines(tenant, settlement)
    _, again, status_lines = status_report(tenant, lease_id)
    assert money_lines(closed) == money_lines(again) == status_lines[-len(money_lines(again)):]
    led = closed.ledger
    assert led.adds_up and led.closed and led.escrow == 0
    assert closed.withdrawn == m.withdrawn and closed.paid_at_close == settlement.provider_amount
    assert led.provider_paid == m.withdrawn + settlement.provider_amount
    assert led.budget == HOUR_BUDGET + 300_000 == (led.provider_paid + led.fees + led.refunded)
    assert "withdrawn by the provider" in " ".join(lines)
    assert lines[-2].endswith("adds up to the budget")
    assert f"claimable with `tessera job claim {lease_id}`" in lines[-1]   # the last epochs
    assert closed.tenant_cost == led.provider_paid + led.fees
    assert lease_money(tenant.chain, lease_id).closed_by == tenant.chain.address
