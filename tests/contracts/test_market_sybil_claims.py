"""Review 26: a provider's own sybil tenant and the downtime slash.

The attack (HIGH, reproduced by the reviewer against the earlier Market): the downtime slash was
paid to the lease's tenant, per claimed epoch, per lease. A provider leased itself through a
sybil tenant at a price floor of one base unit, missed a heartbeat once (or 100 times, never ten
in a row, so never jailed) and kept the claim for later. When a verified lease's challenge went
against it, the sybil claimed before anyone resolved: the whole stake moved to the sybil (holds
and challenge locks stop withdrawals, not slashes) and the guilty verdict slashed nothing. The
slash is burned now: the same moves destroy the stake instead of moving it.

And (LOW) a lease started while the Market had no slasher role took no hold, but its close still
ended one: another open lease's hold, so the provider withdrew stake backing that lease.
"""

from __future__ import annotations

import boa
from contracts_support import (
    DOWNTIME_SLASH,
    EPOCH,
    HOUR,
    MIN_STAKE,
    SETTLE_EPOCHS,
    UNBONDING_PERIOD,
    USD,
    heartbeat,
)
from test_market_verified import bare, new_job, ver  # noqa: F401 (fixtures)

UPHELD = 2


def to_time(t: int) -> None:
    assert t >= boa.env.timestamp
    boa.env.time_travel(seconds=t - boa.env.timestamp, block_delta=2)


def sybil_lease(system, provider, nonce: int) -> int:
    """A 1000-hour lease of `provider` at 1 base unit per GPU-hour, by the sybil tenant."""
    with boa.env.prank(system.tenant2.address):
        order = system.market.create_order(b"\x22" * 32, "", 1, 0, 1, 1000 * HOUR, 1, 1000, False)
    return system.accept(order, provider, price=1, nonce=nonce, tenant=system.tenant2)


def test_a_sybil_tenants_claims_burn_the_stake_and_move_none(system):
    """One sybil lease, 100 missed epochs (a beat in every tenth, so never jailable), one claim:
    the provider's whole stake is taken and burned; the sybil gets nothing."""
    m, reg, stake, up = system.market, system.registry, system.stake, system.uptime
    p = system.providers[0]
    ep = lambda e: up.genesis() + e * EPOCH  # noqa: E731
    with boa.env.prank(p.address):
        reg.update_offer("H100", 8, 81920, 1000, "https://x", 1)   # a price floor of 1
    k = up.current_epoch() + 1
    to_time(ep(k) + 1)
    lease = sybil_lease(system, p, nonce=77)
    missed, e = [], k + 1
    while len(missed) < 100:
        to_time(ep(e) + 1)
        if (e - k) % 10 == 0:
            heartbeat(up, p.address)
        else:
            missed.append(e)
        e += 1
    to_time(ep(e + SETTLE_EPOCHS) + 1)
    sybil, supply = stake.balanceOf(system.tenant2.address), stake.totalSupply()
    with boa.env.prank(system.tenant2.address):
        m.claim_downtime(lease, missed)
    assert reg.providers(p.address).stake == 0                 # slashed ...
    assert stake.totalSupply() == supply - MIN_STAKE            # ... and burned
    assert stake.balanceOf(system.tenant2.address) == sybil     # the sybil gained no stake
    assert stake.balanceOf(m.address) == 0


def test_claims_before_a_verdict_cannot_move_the_stake_out_of_its_reach(system, ver):  # noqa: F811
    """The reviewer's full strategy: 100 tiny sybil leases sharing one missed epoch, kept for
    the moment a verified lease's challenge goes against the provider. The sybil's claims before
    `resolve` now burn the stake: the provider keeps nothing, the sybil gains nothing."""
    m, reg, stake, up = system.market, system.registry, system.stake, system.uptime
    p = system.providers[0]
    ep = lambda e: up.genesis() + e * EPOCH  # noqa: E731
    with boa.env.prank(p.address):
        reg.update_offer("H100", 8, 81920, 1000, "https://x", 1)
    n = reg.providers(p.address).stake // DOWNTIME_SLASH
    k = up.current_epoch() + 1
    to_time(ep(k) + 1)
    leases = [sybil_lease(system, p, nonce=9000 + i) for i in range(n)]
    to_time(ep(k + 2) + 1)                  # epoch k + 1 missed; up from k + 2 on
    heartbeat(up, p.address)
    job = new_job(system, ver, nodes=1)
    first = up.current_epoch()
    e = first + 1
    while boa.env.timestamp < ep(first) + 2 * HOUR:
        to_time(ep(e) + 1)
        heartbeat(up, p.address)
        e += 1
    job.post_round()
    cid = job.challenge(0, 0, guilty=True)
    assert ver.verdict(cid) == UPHELD
    with boa.env.prank(p.address):
        reg.request_unbond(1)
    boa.env.time_travel(seconds=UNBONDING_PERIOD)
    with boa.env.prank(p.address), boa.reverts("registry: stake backs an open lease"):
        reg.withdraw_unbonded()
    sybil, supply = stake.balanceOf(system.tenant2.address), stake.totalSupply()
    for lease in leases:
        with boa.env.prank(system.tenant2.address):
            m.claim_downtime(lease, [k + 1])
    assert stake.balanceOf(system.tenant2.address) == sybil
    assert stake.totalSupply() == supply - MIN_STAKE
    assert reg.providers(p.address).stake == 0 and reg.providers(p.address).unbonding == 0
    job.resolve(cid)   # the verdict still jails; there was nothing left to slash
    assert reg.providers(p.address).jailed_until > boa.env.timestamp


def test_closing_a_lease_that_took_no_hold_ends_no_other_hold(system):
    m, reg, p = system.market, system.registry, system.providers[0]
    reg.set_slasher(m.address, False)          # a timelocked owner action (a migration)
    unheld = system.accept(system.create_order(), p, price=USD, nonce=1)
    assert reg.holds(p.address) == 0
    reg.set_slasher(m.address, True)
    held = system.accept(system.create_order(), p, price=USD, nonce=2)
    assert reg.holds(p.address) == 1
    with boa.env.prank(p.address):
        reg.request_unbond(reg.providers(p.address).stake)
        m.close_lease(unheld)
    assert reg.holds(p.address) == 1 and m.leases(held).closed_at == 0
    boa.env.time_travel(seconds=max(UNBONDING_PERIOD, 3 * HOUR))
    with boa.env.prank(p.address), boa.reverts("registry: stake backs an open lease"):
        reg.withdraw_unbonded()
    with boa.env.prank(p.address):
        m.close_lease(held)                     # its own hold ends with it
    assert reg.holds(p.address) == 0


def test_a_cheaters_own_sybil_wins_back_at_most_the_challenger_share():
    """Review 28: a cheater leasing itself through a sybil tenant that challenges it, and
    resolving first, took back the challenger and tenant shares of its own slash (75 % at the
    earlier defaults) and left a pending honest verdict nothing to slash. At the deployed
    defaults the tenant's share is 0: the sybil wins back the challenger share, a quarter of
    what the voters leave, and the cheater loses S_net = 71.25 TSTK (docs/verification.md)."""
    from tessera.chain.verification import VerificationParams

    p = VerificationParams()
    assert p.tenant_bps == 0 and p.challenger_bps <= 2_500
    won_back = (p.slash_amount - p.voter_reward) * (p.challenger_bps + p.tenant_bps) // 10_000
    assert p.slash_amount - won_back - p.voter_reward == 71_250_000_000_000_000_000
