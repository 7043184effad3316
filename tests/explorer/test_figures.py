"""The figure definitions on hand-made events (no chain)."""

from __future__ import annotations

import itertools

from tessera.protocol.events import EventRecord, json_safe
from tessera.protocol.figures import (
    compare,
    compute_figures,
    day_of,
    figure_unit,
    nearest_rank,
    split_by_day,
)
from tessera.protocol.lease import accrued_at, exhausted_at

D0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC
_log = itertools.count()


def ev(event: str, ts: int, contract: str = "Market", **args) -> EventRecord:
    n = next(_log)
    return EventRecord(block_number=n, block_hash=f"0x{n:064x}", timestamp=ts, tx_hash=f"0x{n:064x}",
                       log_index=0, contract=contract, event=event, args=args)


def test_helpers():
    assert day_of(D0) == "2026-01-01" and day_of(D0 - 1) == "2025-12-31"
    assert list(split_by_day(D0 - 10, D0 + 5)) == [("2025-12-31", 10), ("2026-01-01", 5)]
    assert nearest_rank([1, 2, 3, 4], 50) == 2 and nearest_rank([1, 2, 3, 4], 75) == 3
    assert nearest_rank([5], 0) == 5 and nearest_rank([1, 2, 3], 100) == 3
    assert json_safe({"a": b"\x01\xff", "b": [1, True]}) == {"a": "0x01ff", "b": [1, True]}
    # exhausted_at is the first second at which the contract's `earned` reaches the budget.
    for price, gpus, budget in [(1_000_000, 1, 500_000), (3_333_333, 3, 7_777_777), (7, 1, 1)]:
        t = exhausted_at(0, budget, price, gpus)
        assert accrued_at(price, gpus, budget, 0, t) == budget
        assert price * gpus * (t - 1) // 3600 < budget


def test_revenue_utilization_and_stake():
    alice = "0x" + "a" * 40
    reg = "ProviderRegistry"
    events = [
        ev("ProviderRegistered", D0 - 3600, reg, provider=alice, stake=200, gpu_model="H100",
           gpu_count=2, gpu_memory_mb=1, benchmark_score=1, endpoint="x", price_floor=1),
        ev("LeaseCreated", D0 - 1800, lease_id=1, order_id=1, tenant="0xt", provider=alice,
           price_per_gpu_hour=3600, gpus=1, budget=3600, start=D0 - 1800),
        ev("Withdrawn", D0 - 900, lease_id=1, provider=alice, amount_to_provider=880, fee=20),
        ev("LeaseClosed", D0 + 900, lease_id=1, closed_by=alice, provider_amount=1760, fee=40,
           refund=900),
        ev("Slashed", D0 + 1000, reg, provider=alice, amount=200, recipient="0xr", slasher="0xs"),
    ]
    # The slash (all 200 active) empties the stake, so capacity ends at D0 + 1000.
    figs = compute_figures(events, as_of=D0 + 3600)
    v = {k: f.value for k, f in figs.items()}
    assert v[("revenue.by_day.tenant_paid", "2025-12-31")] == 900
    assert v[("revenue.by_day.tenant_paid", "2026-01-01")] == 1800
    assert v[("revenue.by_provider.provider_income", alice)] == 2640
    assert v[("revenue.total.protocol_fees", "all")] == 60
    assert v[("utilization.by_day.leased_gpu_seconds", "2025-12-31")] == 1800
    assert v[("utilization.by_day.leased_gpu_seconds", "2026-01-01")] == 900
    assert v[("utilization.by_day.registered_gpu_seconds", "2025-12-31")] == 2 * 3600
    assert v[("utilization.by_day.registered_gpu_seconds", "2026-01-01")] == 2 * 1000
    assert v[("stake.by_provider.active", alice)] == 0
    assert v[("stake.by_provider.unbonding", alice)] == 0
    assert v[("stake.by_provider.slashed", alice)] == 200
    assert v[("leases.active.count", "all")] == 0
    assert figs[("revenue.total.tenant_paid", "all")].txs == (events[2].tx_hash, events[3].tx_hash)
    assert v[("price.by_model.median", "H100")] == 3600
    assert compare(figs, figs) == []
    other = dict(figs)
    key = ("revenue.total.tenant_paid", "all")
    other[key] = type(figs[key])(key[0], key[1], figs[key].value + 1, figs[key].txs)
    assert compare(figs, other) == [f"{key[0]}[all]: 2700 != 2701 (diff 1)"]


def test_verified_lease_release_and_proven_refund():
    """A verified lease (docs/verification.md): released pay is not income until withdrawn,
    also after the close; a proven round's pay goes back to the tenant."""
    alice = "0x" + "b" * 40
    events = [
        ev("LeaseCreated", D0, lease_id=1, order_id=1, tenant="0xt", provider=alice,
           price_per_gpu_hour=3600, gpus=1, budget=7200, start=D0),
        ev("LeaseClosed", D0 + 2000, lease_id=1, closed_by="0xt", provider_amount=0, fee=0,
           refund=5200),
        ev("RoundRefunded", D0 + 6000, lease_id=1, tenant="0xt", round_index=1, amount=800,
           refund=800),
        ev("PayReleased", D0 + 6000, lease_id=1, provider=alice, from_round=0, to_round=2,
           released_until=D0 + 2000, amount=1200, withheld=800, refund=800),
        ev("Withdrawn", D0 + 6100, lease_id=1, provider=alice, amount_to_provider=1170, fee=30),
    ]
    v = {k: f.value for k, f in compute_figures(events, as_of=D0 + 7000).items()}
    assert v[("verified.total.released", "all")] == 1200
    assert v[("verified.total.withheld", "all")] == 800
    assert v[("verified.total.refunds", "all")] == 800
    assert v[("verified.total.proven_rounds", "all")] == 1
    assert v[("revenue.by_provider.provider_income", alice)] == 1170
    assert v[("revenue.total.tenant_paid", "all")] == 1200
    assert v[("leases.closed.refunds", "all")] == 5200
    assert ("verified.total.forfeited_rounds", "all") not in v


def test_forfeited_rounds_are_counted_apart_from_proven_ones():
    """Issue 11: once a cheat is proven for a lease (round 1 here), Settlement releases none of
    its pay: round 0 (final, not yet released) and the time after the last root (round_index =
    the rounds posted, 2) go back to the tenant too, flagged `forfeited`. The proven figure
    counts only the round proven to cheat, `forfeited_rounds` the others; every refund is in
    `refunds`, every withheld unit in `withheld`, and nothing is released or paid.

    A reader who took every RoundRefunded for a proven cheat would report three cheats for one:
    the figures keep the two apart."""
    bob = "0x" + "c" * 40
    events = [
        ev("LeaseCreated", D0, lease_id=1, order_id=1, tenant="0xt", provider=bob,
           price_per_gpu_hour=3600, gpus=1, budget=7200, start=D0),
        ev("LeaseClosed", D0 + 2500, lease_id=1, closed_by="0xt", provider_amount=0, fee=0,
           refund=4700),
        ev("RoundRefunded", D0 + 6000, "Settlement", lease_id=1, tenant="0xt", round_index=0,
           amount=1200, refund=1200, forfeited=True),
        ev("RoundRefunded", D0 + 6000, "Settlement", lease_id=1, tenant="0xt", round_index=1,
           amount=800, refund=800, forfeited=False),
        ev("PayReleased", D0 + 6000, "Settlement", lease_id=1, provider=bob, from_round=0,
           to_round=2, released_until=D0 + 2000, amount=0, withheld=2000, refund=2000),
        ev("RoundRefunded", D0 + 9000, "Settlement", lease_id=1, tenant="0xt", round_index=2,
           amount=500, refund=500, forfeited=True),
        ev("PayReleased", D0 + 9000, "Settlement", lease_id=1, provider=bob, from_round=2,
           to_round=2, released_until=D0 + 2500, amount=0, withheld=500, refund=500),
    ]
    figs = compute_figures(events, as_of=D0 + 9500)
    v = {k: f.value for k, f in figs.items()}
    assert v[("verified.total.proven_rounds", "all")] == 1
    assert v[("verified.total.forfeited_rounds", "all")] == 2
    assert figs[("verified.total.forfeited_rounds", "all")].txs == tuple(sorted(
        (events[2].tx_hash, events[5].tx_hash)))
    assert v[("verified.total.refunds", "all")] == 2500
    assert v[("verified.total.withheld", "all")] == 2500
    assert v[("verified.total.released", "all")] == 0
    assert not any(name.startswith("revenue.") and value for (name, _), value in v.items())
    assert figure_unit("verified.total.forfeited_rounds") == "count"
    assert figure_unit("verified.total.refunds") == "TUSD"
