"""Market.claim_downtime: a lease's pay for whole final epochs in which the provider was not up
(`Uptime.is_up`: no heartbeat, no validator's report) goes back to the tenant (from that lease's
escrow only), the provider's stake is slashed to the tenant, and every malformed, premature or
repeated claim is refused without changing anything. Claims against validators' reports:
test_liveness.py."""

from __future__ import annotations

import boa
import pytest
from contracts_support import (
    CLAIM_WINDOW,
    DOWNTIME_SLASH,
    EPOCH,
    FEE_BPS,
    HOUR,
    SETTLE_EPOCHS,
    TSTK,
    UNBONDING_PERIOD,
    USD,
    events,
    heartbeat,
)

PRICE, GPUS = 1_800_000, 2        # 3.6 USD per hour = 1,000 base units per second
PER_EPOCH = PRICE * GPUS * EPOCH // HOUR  # 60,000: every whole epoch pays exactly this
BUDGET = PRICE * GPUS * HOUR // HOUR      # a one-hour lease: 60 epochs of pay


def epoch_start(system, epoch: int) -> int:
    return system.uptime.genesis() + epoch * EPOCH


def to_time(t: int) -> None:
    assert t >= boa.env.timestamp
    boa.env.time_travel(seconds=t - boa.env.timestamp, block_delta=2)


def new_lease(system, provider_index: int = 0, offset: int = EPOCH // 2, price: int = PRICE,
              gpus: int = GPUS, duration: int = HOUR, tenant=None,
              nonce: int | None = None) -> tuple[int, int]:
    """A lease that starts `offset` seconds into the next epoch; returns (lease id, its epoch)."""
    epoch = system.uptime.current_epoch() + 1
    to_time(epoch_start(system, epoch) + offset)
    oid = system.create_order(tenant, min_gpus=gpus, max_price=2 * USD, duration=duration)
    lease_id = system.accept(oid, system.providers[provider_index], price, tenant=tenant,
                             nonce=1000 + provider_index if nonce is None else nonce)
    return lease_id, epoch


def run_epochs(system, provider: str, first: int, up: list[bool], settle: bool = True) -> None:
    """Epoch `first + i` holds a heartbeat iff up[i]; time ends a little into the next epoch,
    or (`settle`) into the first epoch in which they are all final (claimable)."""
    for i, alive in enumerate(up):
        to_time(epoch_start(system, first + i) + 1)
        if alive:
            heartbeat(system.uptime, provider)
    to_time(epoch_start(system, first + len(up) + (SETTLE_EPOCHS if settle else 0)) + 1)


def claim(system, lease_id: int, epochs: list[int], caller=None):
    with boa.env.prank((caller or system.tenant).address):
        system.market.claim_downtime(lease_id, epochs)
    (event,) = events(system.market, "DowntimeClaimed")
    return event


def balances(system, who: str) -> tuple[int, int]:
    return system.usd.balanceOf(who), system.stake.balanceOf(who)


def test_claim_refunds_missed_epochs_and_slashes_stake(system):
    m, tenant, provider = system.market, system.tenant.address, system.providers[0]
    lease_id, k = new_lease(system)
    run_epochs(system, provider.address, k + 1, [True, True, False, False, True])
    usd_before, tstk_before = balances(system, tenant)
    supply = system.stake.totalSupply()
    stake_before = system.registry.providers(provider.address).stake
    earned_before = m.earned(lease_id)
    ev = claim(system, lease_id, [k + 3, k + 4])
    assert (ev.lease_id, ev.tenant, ev.provider, list(ev.epochs), ev.amount, ev.refund,
            ev.overdrawn, ev.stake_slashed, ev.claimed_by) == (
        lease_id, tenant, provider.address, [k + 3, k + 4], 2 * PER_EPOCH, 2 * PER_EPOCH, 0,
        2 * DOWNTIME_SLASH, tenant)
    # the slash is burned, not the tenant's (review 26: tests/contracts/test_market_sybil_claims.py)
    assert balances(system, tenant) == (usd_before + 2 * PER_EPOCH, tstk_before)
    assert system.stake.totalSupply() == supply - 2 * DOWNTIME_SLASH
    assert system.registry.providers(provider.address).stake == stake_before - 2 * DOWNTIME_SLASH
    lease = m.leases(lease_id)
    assert (lease.downtime, lease.downtime_refunded) == (2 * PER_EPOCH, 2 * PER_EPOCH)
    assert m.earned(lease_id) == earned_before - 2 * PER_EPOCH
    assert m.accrued(lease_id) == earned_before
    assert [m.downtime_claimed(lease_id, e) for e in range(k + 2, k + 6)] == \
        [False, True, True, False]
    words = {i: m.claimed_word(lease_id, i) for i in {(k + 3) >> 8, (k + 4) >> 8}}
    assert sum(bin(w).count("1") for w in words.values()) == 2
    assert all(words[e >> 8] >> (e & 255) & 1 for e in (k + 3, k + 4))
    assert system.usd.balanceOf(m.address) == system.held()

    # The provider is then paid for live time only, and the close settles the rest exactly.
    to_time(epoch_start(system, k + 10))
    live = m.accrued(lease_id) - 2 * PER_EPOCH
    p_before = system.usd.balanceOf(provider.address)
    with boa.env.prank(provider.address):
        m.withdraw(lease_id)
    fee = live * FEE_BPS // 10_000
    assert system.usd.balanceOf(provider.address) - p_before == live - fee
    to_time(epoch_start(system, k + 20))
    usd_before = system.usd.balanceOf(tenant)
    with boa.env.prank(tenant):
        m.close_lease(lease_id)
    (closed,) = events(m, "LeaseClosed")
    total_live = m.accrued(lease_id) - 2 * PER_EPOCH
    assert closed.provider_amount + closed.fee == total_live - live
    assert closed.refund == BUDGET - total_live - 2 * PER_EPOCH
    assert system.usd.balanceOf(tenant) - usd_before == closed.refund
    assert m.leases(lease_id).paid == total_live == m.earned(lease_id)
    assert m.shortfall(lease_id) == 0
    assert system.usd.balanceOf(m.address) == system.held()


def test_anyone_may_claim_but_the_refund_goes_to_the_tenant(system):
    lease_id, k = new_lease(system)
    run_epochs(system, system.providers[0].address, k + 1, [False])
    outsider, tenant = system.outsider.address, system.tenant.address
    out_before, tenant_before = balances(system, outsider), balances(system, tenant)
    ev = claim(system, lease_id, [k + 1], caller=system.outsider)
    assert ev.claimed_by == outsider and ev.tenant == tenant
    assert balances(system, outsider) == out_before
    assert balances(system, tenant) == (tenant_before[0] + PER_EPOCH, tenant_before[1])


@pytest.mark.parametrize("case, message", [
    ("unknown lease", "market: unknown lease"),
    ("no epochs", "market: no epochs"),
    ("epoch with the lease's start inside", "market: epoch starts before the lease"),
    ("epoch before the lease", "market: epoch starts before the lease"),
    ("current epoch", "market: epoch not ended inside the lease"),
    ("future epoch", "market: epoch not ended inside the lease"),
    ("huge epoch", "market: epoch not ended inside the lease"),
    ("ended epoch not final yet", "market: provider up (or epoch not final)"),
    ("epoch with a heartbeat", "market: provider up (or epoch not final)"),
    ("repeated epoch", "market: epochs not in increasing order"),
    ("decreasing epochs", "market: epochs not in increasing order"),
    ("claimed before", "market: epoch already claimed"),
    ("one bad epoch among good ones", "market: provider up (or epoch not final)"),
])
def test_claim_refusals_change_nothing(system, case, message):
    m, tenant = system.market, system.tenant.address
    lease_id, k = new_lease(system)
    run_epochs(system, system.providers[0].address, k + 1, [False, True, False, False])
    claim(system, lease_id, [k + 4])
    now = system.uptime.current_epoch()
    epochs = {
        "unknown lease": [k + 1], "no epochs": [],
        "epoch with the lease's start inside": [k], "epoch before the lease": [k - 1],
        "current epoch": [now], "future epoch": [now + 4], "huge epoch": [2**256 - 1],
        "ended epoch not final yet": [now - SETTLE_EPOCHS],
        "epoch with a heartbeat": [k + 2], "repeated epoch": [k + 1, k + 1],
        "decreasing epochs": [k + 3, k + 1], "claimed before": [k + 4],
        "one bad epoch among good ones": [k + 1, k + 2, k + 3],
    }[case]
    target = 999 if case == "unknown lease" else lease_id
    before = (m.leases(lease_id), balances(system, tenant), system.usd.balanceOf(m.address),
              system.registry.providers(system.providers[0].address).stake)
    with boa.env.prank(tenant), boa.reverts(message):
        m.claim_downtime(target, epochs)
    after = (m.leases(lease_id), balances(system, tenant), system.usd.balanceOf(m.address),
             system.registry.providers(system.providers[0].address).stake)
    assert after == before
    assert not m.downtime_claimed(lease_id, k + 1)


def test_late_claim_is_netted_from_this_lease_only(system):
    """The provider withdrew the time before the claim: nothing of it is left in escrow, so
    nothing is refunded now (the tenant's unspent budget is not the provider's to give back);
    the provider works it off from its later pay, and another lease's escrow is untouched."""
    m, provider = system.market, system.providers[0]
    other_id, _ = new_lease(system, provider_index=1, tenant=system.tenant2, offset=1)
    lease_id, k = new_lease(system)
    run_epochs(system, provider.address, k + 1, [False, False, True])
    with boa.env.prank(provider.address):
        m.withdraw(lease_id)
    paid = m.leases(lease_id).paid
    other = m.leases(other_id)
    ev = claim(system, lease_id, [k + 1, k + 2])
    assert (ev.amount, ev.refund, ev.overdrawn) == (2 * PER_EPOCH, 0, 2 * PER_EPOCH)
    assert m.shortfall(lease_id) == 2 * PER_EPOCH       # for now: the future stream nets it
    assert m.leases(other_id) == other
    assert system.usd.balanceOf(m.address) == system.held()
    with boa.env.prank(provider.address), boa.reverts("market: nothing to withdraw"):
        m.withdraw(lease_id)
    to_time(boa.env.timestamp + 3 * EPOCH)  # three more epochs: two repay, one is paid
    assert m.shortfall(lease_id) == 0
    with boa.env.prank(provider.address):
        m.withdraw(lease_id)
    assert m.leases(lease_id).paid - paid == 3 * PER_EPOCH - 2 * PER_EPOCH
    assert m.leases(lease_id).paid == m.earned(lease_id)
    assert system.usd.balanceOf(m.address) == system.held()


def test_shortfall_when_the_lease_cannot_absorb_the_claim(system):
    """The budget is almost all withdrawn: none of the provider's pay is left to refund, so the
    claim is all shortfall; the close gives the tenant its unspent budget back and nothing
    more (the stake slash per epoch is its compensation)."""
    m, provider, tenant = system.market, system.providers[0], system.tenant.address
    lease_id, k = new_lease(system, offset=0)  # starts on an epoch boundary: 60 whole epochs
    run_epochs(system, provider.address, k, [False, False] + [True] * 57, settle=False)
    with boa.env.prank(provider.address):
        m.withdraw(lease_id)
    paid = m.leases(lease_id).paid
    assert 59 * PER_EPOCH < paid < BUDGET
    ev = claim(system, lease_id, [k, k + 1])
    assert (ev.amount, ev.refund) == (2 * PER_EPOCH, 0)
    to_time(epoch_start(system, k + 61))  # the budget has run out
    assert m.earned(lease_id) == 58 * PER_EPOCH
    assert m.shortfall(lease_id) == paid - 58 * PER_EPOCH
    with boa.env.prank(tenant):
        m.close_lease(lease_id)
    (closed,) = events(m, "LeaseClosed")
    assert (closed.provider_amount, closed.fee, closed.refund) == (0, 0, BUDGET - paid)
    assert m.shortfall(lease_id) == paid - 58 * PER_EPOCH
    assert system.usd.balanceOf(m.address) == system.held()


def test_close_after_a_partly_refunded_claim_takes_nothing_from_other_escrow(system):
    """Withdrawn through epoch 50 of 60, then 20 epochs claimed: the provider's pay is all
    withdrawn, so nothing is refunded now; a close before the budget runs out owes the provider
    nothing and gives the tenant exactly its unspent budget, while another tenant's lease keeps
    every token of its escrow."""
    m, provider, tenant = system.market, system.providers[0], system.tenant.address
    other_id, _ = new_lease(system, provider_index=1, tenant=system.tenant2, offset=1)
    lease_id, k = new_lease(system, offset=0)
    run_epochs(system, provider.address, k, [False] * 20 + [True] * 30, settle=False)
    with boa.env.prank(provider.address):
        m.withdraw(lease_id)
    paid = m.leases(lease_id).paid
    ev = claim(system, lease_id, list(range(k, k + 20)))
    assert (ev.amount, ev.refund) == (20 * PER_EPOCH, 0)
    other = m.leases(other_id)
    to_time(epoch_start(system, k + 55))
    usd_before = system.usd.balanceOf(tenant)
    with boa.env.prank(tenant):
        m.close_lease(lease_id)
    (closed,) = events(m, "LeaseClosed")
    assert (closed.provider_amount, closed.fee, closed.refund) == (0, 0, BUDGET - paid)
    assert system.usd.balanceOf(tenant) == usd_before + BUDGET - paid
    assert m.shortfall(lease_id) == paid - (55 * PER_EPOCH - 20 * PER_EPOCH)
    assert m.leases(other_id) == other
    assert system.usd.balanceOf(m.address) == system.held()


def test_claims_after_close(system):
    """Within `claim_window` of the close, downtime can still be claimed (so a provider cannot
    dodge the slash by closing first); nothing is left to refund, so it is all shortfall."""
    m, provider, tenant = system.market, system.providers[0], system.tenant.address
    lease_id, k = new_lease(system)
    run_epochs(system, provider.address, k + 1, [True, False, True], settle=False)
    to_time(epoch_start(system, k + 4) + 5)
    with boa.env.prank(provider.address):
        m.close_lease(lease_id)
    paid = m.leases(lease_id).paid
    to_time(epoch_start(system, k + 6))
    with boa.env.prank(tenant), boa.reverts("market: epoch not ended inside the lease"):
        m.claim_downtime(lease_id, [k + 4])  # ended after the close
    usd_before, tstk_before = balances(system, tenant)
    supply = system.stake.totalSupply()
    ev = claim(system, lease_id, [k + 2])
    assert (ev.amount, ev.refund, ev.overdrawn, ev.stake_slashed) == (
        PER_EPOCH, 0, PER_EPOCH, DOWNTIME_SLASH)
    assert balances(system, tenant) == (usd_before, tstk_before)
    assert system.stake.totalSupply() == supply - DOWNTIME_SLASH
    assert m.leases(lease_id).paid == paid and m.shortfall(lease_id) == PER_EPOCH
    to_time(m.leases(lease_id).closed_at + CLAIM_WINDOW + 1)
    with boa.env.prank(tenant), boa.reverts("market: claim window over"):
        m.claim_downtime(lease_id, [k + 3])


def test_exhausted_budget_bounds_the_claimable_epochs(system):
    m = system.market
    lease_id, k = new_lease(system)  # starts half an epoch in: the budget runs out mid-epoch
    run_epochs(system, system.providers[0].address, k + 1, [False] * 62)
    ev = claim(system, lease_id, [k + 59, k + 60])
    assert ev.amount == PER_EPOCH + PER_EPOCH // 2  # k+60 was half paid when the money ran out
    with boa.env.prank(system.tenant.address), boa.reverts("market: epoch after the budget ran out"):
        m.claim_downtime(lease_id, [k + 61])
    with boa.env.prank(system.tenant.address), boa.reverts("market: lease exhausted"):
        m.top_up(lease_id, USD)


def test_top_up_does_not_change_claimed_pay(system):
    m = system.market
    lease_id, k = new_lease(system)
    run_epochs(system, system.providers[0].address, k + 1, [False, False])
    first = claim(system, lease_id, [k + 1]).amount
    with boa.env.prank(system.tenant.address):
        m.top_up(lease_id, 10 * USD)
    assert claim(system, lease_id, [k + 2]).amount == first == PER_EPOCH
    assert m.leases(lease_id).downtime == 2 * PER_EPOCH
    assert system.usd.balanceOf(m.address) == system.held()


def test_pay_per_epoch_uses_the_streaming_rounding(system):
    """An awkward rate (1 USD/h on 1 GPU: 16,666.67 per epoch): the claimed epochs and the live
    time add up to the stream to the base unit."""
    m = system.market
    price = USD
    lease_id, k = new_lease(system, price=price, gpus=1, offset=7)
    up = [i % 3 == 0 for i in range(12)]
    run_epochs(system, system.providers[0].address, k + 1, up)
    missed = [k + 1 + i for i, alive in enumerate(up) if not alive]
    start = m.leases(lease_id).start

    def stream(t: int) -> int:
        return price * (t - start) // HOUR

    expected = sum(stream(epoch_start(system, e) + EPOCH) - stream(epoch_start(system, e))
                   for e in missed)
    assert claim(system, lease_id, missed).amount == expected
    assert {expected // len(missed), -(-expected // len(missed))} <= {16_666, 16_667}
    assert m.earned(lease_id) + expected == m.accrued(lease_id) == stream(boa.env.timestamp)


def test_without_the_slasher_role_refunds_still_work(system):
    system.registry.set_slasher(system.market.address, False)
    lease_id, k = new_lease(system)
    run_epochs(system, system.providers[0].address, k + 1, [False])
    ev = claim(system, lease_id, [k + 1])
    assert (ev.refund, ev.stake_slashed) == (PER_EPOCH, 0)


def test_slash_is_capped_by_the_stake_left(system):
    provider = system.providers[0].address
    stake = system.registry.providers(provider).stake
    lease_id, k = new_lease(system)
    with boa.env.prank(system.slasher):
        system.registry.slash(provider, stake - TSTK // 2, system.slasher)
    run_epochs(system, provider, k + 1, [False, False])
    ev = claim(system, lease_id, [k + 1, k + 2])
    assert ev.stake_slashed == TSTK // 2 and ev.refund == 2 * PER_EPOCH
    assert system.registry.providers(provider).stake == 0


def test_gas_of_a_claim(system):
    """titanoboa's execution gas; the anvil receipt figures are measured by bench/gas.py."""
    lease_id, k = new_lease(system)
    run_epochs(system, system.providers[0].address, k + 1, [False] * 10)
    claim(system, lease_id, [k + 1])
    one = system.market._computation.get_gas_used()
    claim(system, lease_id, list(range(k + 2, k + 11)))
    nine = system.market._computation.get_gas_used()
    print(f"claim_downtime execution gas: 1 epoch {one}, 9 epochs {nine}")
    assert nine < 9 * one


# ---------------------------------------------------------------- stake held while it can be slashed


def _unbond_all(system, provider) -> None:
    reg = system.registry
    with boa.env.prank(provider.address):
        reg.request_unbond(reg.providers(provider.address).stake)


def test_provider_cannot_unbond_out_of_a_downtime_slash(system):
    """The attack: a provider goes dark on an open lease, unbonds its whole stake and withdraws
    it after the unbonding period, so that the tenant's downtime claim slashes nothing. While a
    lease is open the Market holds the stake; after the close it stays locked for the claim
    window; a claim in that time slashes what the provider unbonded."""
    m, reg, provider = system.market, system.registry, system.providers[0]
    lease_id, k = new_lease(system)
    assert reg.holds(provider.address) == 1
    run_epochs(system, provider.address, k + 1, [False, False])
    _unbond_all(system, provider)
    to_time(boa.env.timestamp + UNBONDING_PERIOD + 1)
    with boa.env.prank(provider.address), boa.reverts("registry: stake backs an open lease"):
        reg.withdraw_unbonded()
    with boa.env.prank(provider.address):
        m.close_lease(lease_id)  # the provider closes first: the claim window still holds it
    closed_at = m.leases(lease_id).closed_at
    assert reg.holds(provider.address) == 0 and reg.locked_until(provider.address) == closed_at + CLAIM_WINDOW
    with boa.env.prank(provider.address), boa.reverts(
            "registry: stake locked by a claim window or challenge"):
        reg.withdraw_unbonded()
    tstk, supply = system.stake.balanceOf(system.tenant.address), system.stake.totalSupply()
    ev = claim(system, lease_id, [k + 1, k + 2])
    assert ev.stake_slashed == 2 * DOWNTIME_SLASH  # taken from the unbonding bucket
    assert system.stake.totalSupply() == supply - 2 * DOWNTIME_SLASH   # burned (review 26)
    assert system.stake.balanceOf(system.tenant.address) == tstk
    assert system.stake.balanceOf(m.address) == 0
    to_time(closed_at + CLAIM_WINDOW)
    left = reg.providers(provider.address).unbonding
    before = system.stake.balanceOf(provider.address)
    with boa.env.prank(provider.address):
        reg.withdraw_unbonded()  # honest exit: the window is over, the rest is its own
    assert system.stake.balanceOf(provider.address) == before + left


def test_holds_count_every_open_lease(system):
    m, reg, provider = system.market, system.registry, system.providers[0]
    first, _ = new_lease(system)
    second, _ = new_lease(system, tenant=system.tenant2, nonce=7)
    assert reg.holds(provider.address) == 2
    with boa.env.prank(system.tenant.address):
        m.close_lease(first)
    assert reg.holds(provider.address) == 1
    with boa.env.prank(system.tenant2.address):
        m.close_lease(second)
    assert reg.holds(provider.address) == 0


def test_a_revoked_market_still_closes_and_releases_its_holds(system):
    """Every wei has a way out: the registry owner revoking the Market's slasher role must not
    freeze a lease (close still works) nor the provider's stake (the Market's hold is released)."""
    m, reg, provider = system.market, system.registry, system.providers[0]
    lease_id, _ = new_lease(system)
    reg.set_slasher(m.address, False)
    with boa.env.prank(system.tenant.address):
        m.close_lease(lease_id)
    assert reg.holds(provider.address) == 0
    # and a Market without the role opens no hold at all
    plain, _ = new_lease(system, tenant=system.tenant2, nonce=7)
    assert reg.holds(provider.address) == 0 and m.leases(plain).tenant == system.tenant2.address


def test_only_a_holder_or_slasher_can_hold_or_lock(system):
    """The attack: a stranger locks a provider's stake forever (a griefing lock). hold and lock
    need the slasher role; release_hold only undoes the caller's own holds."""
    reg, provider, outsider = system.registry, system.providers[0].address, system.outsider.address
    with boa.env.prank(outsider), boa.reverts("registry: caller is not a slasher"):
        reg.hold(provider)
    with boa.env.prank(outsider), boa.reverts("registry: caller is not a slasher"):
        reg.lock(provider, 2**255)
    lease_id, _ = new_lease(system)
    with boa.env.prank(outsider):
        reg.release_hold(provider, 2**255)  # not its hold: nothing changes
    assert reg.holds(provider) == 1 and reg.locked_until(provider) == 0
