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
