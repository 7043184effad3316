"""The figures' shared parts: the Figure record, its keys and the day and percentile helpers
(protocol/figures.py re-exports them; protocol/figure_book.py folds with them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

DAY = 86_400
ALL = "all"
PERCENTILES = {"min": 0, "p25": 25, "median": 50, "p75": 75, "max": 100}


@dataclass(frozen=True)
class Figure:
    name: str      # e.g. "revenue.by_day.provider_income"
    key: str       # e.g. "2026-01-02", a provider address, a GPU model, "2026-01-02/H100", "all"
    value: int
    txs: tuple[str, ...] = ()


Figures = dict[tuple[str, str], Figure]


def day_of(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def nearest_rank(sorted_values: list[int], percentile: int) -> int:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below it."""
    if percentile <= 0:
        return sorted_values[0]
    rank = -(-percentile * len(sorted_values) // 100)  # ceil(p/100 * n)
    return sorted_values[max(rank, 1) - 1]


def split_by_day(start: int, end: int) -> Iterable[tuple[str, int]]:
    """(UTC day, seconds) pieces of the half-open interval [start, end)."""
    t = start
    while t < end:
        boundary = (t // DAY + 1) * DAY
        piece_end = min(boundary, end)
        yield day_of(t), piece_end - t
        t = piece_end


def epoch_at(timestamp: int, genesis: int, epoch_length: int) -> int:
    """The Uptime contract's epoch at a timestamp (epoch 0 before genesis)."""
    return max(timestamp - genesis, 0) // epoch_length


def uptime_bps(up: int, owed: int) -> int | None:
    """Measured uptime in basis points (no smoothing): up epochs per epoch owed; None while
    nothing is owed (protocol/uptime_book.py)."""
    return up * 10_000 // owed if owed else None


def in_chain_order(records: Iterable, last: tuple[int, int] | None, what: str) -> list:
    """`records` sorted by (block, log index), all after `last`; a ValueError naming the record if
    one is at or before `last` or two share a place (a fold only moves forward)."""
    events = sorted(records, key=lambda r: r.order)
    if events and last is not None and events[0].order <= last:
        raise ValueError(f"event at block {events[0].block_number} log {events[0].log_index} is "
                         f"not after the last applied (block {last[0]} log {last[1]}): "
                         f"a {what} only moves forward; rebuild it from the start instead")
    for i in range(1, len(events)):
        if events[i].order == events[i - 1].order:
            raise ValueError(f"two events at block {events[i].block_number} log "
                             f"{events[i].log_index}")
    return events
