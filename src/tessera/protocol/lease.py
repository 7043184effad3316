"""A lease's money rules, exactly as Market.vy applies them: one definition for every reader.

The contract is the authority; these pure functions give the same integers for the same inputs
(property-tested against Market.vy in tests/contracts/test_lease_rules.py), so the tenant, the
provider, the explorer's figures and the simulators never write a rounding rule of their own.

- The stream: a lease earns price·gpus per hour, by the second, rounded down, capped at its
  budget (`accrued_at`). Every amount of pay, streamed or claimed back, is a difference of it.
- The escrow: a lease's budget is price·gpus·duration / 3600 rounded down (`lease_budget`); an
  order escrows at least the worst case of all its nodes at the max price (`order_deposit`).
- Pay for live time is the stream less claimed downtime and the pay of proven rounds (`earned`).
- The protocol fee is taken from each payout, rounded down (`protocol_fee`).
- Downtime is claimable per Uptime epoch wholly inside the lease and begun before the budget
  ran out (`claimable_epochs`).
"""

from __future__ import annotations

SECONDS_PER_HOUR = 3_600
BPS_DENOMINATOR = 10_000


def lease_budget(price_per_gpu_hour: int, gpus: int, duration_s: int) -> int:
    """Escrow a lease gets from its order at `accept_bid`: enough to run `duration_s` seconds."""
    return price_per_gpu_hour * gpus * duration_s // SECONDS_PER_HOUR


def order_deposit(max_price_per_gpu_hour: int, min_gpus: int, nodes: int, duration_s: int) -> int:
    """The least deposit `create_order` accepts: every node at the max price for the duration."""
    return max_price_per_gpu_hour * min_gpus * nodes * duration_s // SECONDS_PER_HOUR


def accrued_at(price_per_gpu_hour: int, gpus: int, budget: int, start: int, t: int) -> int:
    """The stream: gross pay for [start, t), capped at the budget (Market._accrued_at)."""
    if t <= start:
        return 0
    return min(price_per_gpu_hour * gpus * (t - start) // SECONDS_PER_HOUR, budget)


def exhausted_at(start: int, budget: int, price_per_gpu_hour: int, gpus: int) -> int:
    """The first second at which the stream reaches the budget: start + ceil(budget·3600 / rate)
    (`start` itself for a lease that streams nothing)."""
    rate = price_per_gpu_hour * gpus
    if rate <= 0:
        return start
    return start + -(-budget * SECONDS_PER_HOUR // rate)


def earned(accrued: int, downtime: int, proven: int = 0) -> int:
    """Pay for live time: the stream less claimed downtime and proven rounds, never below zero
    (Market._earned)."""
    return max(accrued - downtime - proven, 0)


def protocol_fee(amount: int, fee_bps: int) -> int:
    """The treasury's part of a payout of `amount` (gross), rounded down."""
    return amount * fee_bps // BPS_DENOMINATOR


def claimable_epochs(start: int, end: int, price_per_gpu_hour: int, gpus: int, budget: int,
                     genesis: int, epoch_length: int) -> range:
    """Uptime epochs of a lease that `claim_downtime` may take (before heartbeats are checked):
    wholly inside [start, end), where `end` is the close or now, and beginning before the
    stream reached the budget."""
    first = -(-(start - genesis) // epoch_length)
    ended = (end - genesis) // epoch_length
    if price_per_gpu_hour * gpus > 0:
        exhausted = exhausted_at(start, budget, price_per_gpu_hour, gpus)
        ended = min(ended, max(-(-(exhausted - genesis) // epoch_length), first))
    return range(first, max(ended, first))
