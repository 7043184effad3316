# pragma version ~=0.4.3
"""
@title Tessera lease stream
@license GNU Affero General Public License v3.0 or later
@notice The one rounding rule of a lease's pay, used by `Market` and `Settlement` (a
        stateless module: it inlines into each): pay (gross) for [start, t) is
        price * gpus * (t - start) // 3600, capped at the budget. Every amount of pay,
        streamed, released or claimed back, is a difference of it
        (tessera.protocol.lease.accrued_at is the same rule in Python).
"""

from .interfaces import IMarket

SECONDS_PER_HOUR: constant(uint256) = 3_600


@internal
@pure
def accrued_at(lease: IMarket.Lease, t: uint256) -> uint256:
    if t <= lease.start:
        return 0
    return min(
        lease.price_per_gpu_hour * convert(lease.gpus, uint256) * (t - lease.start) // SECONDS_PER_HOUR,
        lease.budget,
    )


@internal
@view
def end(lease: IMarket.Lease) -> uint256:
    # Pay streams until the close, or until now for an open lease.
    if lease.closed_at != 0:
        return lease.closed_at
    return block.timestamp
