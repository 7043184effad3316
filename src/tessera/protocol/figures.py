"""Figures anyone can recompute from chain logs: pure functions of a list of event records.

The indexer's database and `tessera audit` both call `compute_figures`, so one definition serves
both. Every figure is an integer (money in base units, time in seconds) together with the sorted
tx hashes that make it up. Definitions in words: docs/explorer.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from tessera.protocol.agent_payments import AGENT_TUSD_PARTS
from tessera.protocol.events import EventRecord
from tessera.protocol.figure_book import FigureBook
from tessera.protocol.figure_parts import (  # noqa: F401  (re-exported: the figures' one import)
    ALL,
    DAY,
    PERCENTILES,
    Figure,
    Figures,
    day_of,
    epoch_at,
    nearest_rank,
    split_by_day,
)
from tessera.protocol.money import PAYMENT_SYMBOL, STAKE_SYMBOL


def format_time(timestamp: int) -> str:
    """A block time for a person to read: '2026-12-05 09:12:00 UTC'. A time no calendar date
    can hold (a lease priced at 1 base unit an hour runs out after the year 9999) reads as
    'after 9999-12-31 (second N)', never an exception."""
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        if timestamp < 0:
            return f"before 1970-01-01 (second {timestamp})"
        return f"after 9999-12-31 (second {timestamp})"


# The unit of each figure, by name (the one home: explorer pages, API and `stats --json`).
_TUSD_FIGURES = ("revenue.", "price.by_model.min", "price.by_model.p25", "price.by_model.median",
                 "price.by_model.p75", "price.by_model.max", "orders.total.deposits",
                 "orders.cancelled.refunds",
                 "leases.closed.refunds", "leases.total.top_ups", "downtime.by_provider.forfeited",
                 "downtime.total.forfeited", "downtime.total.refunds", "verified.total.released",
                 "verified.total.withheld", "verified.total.refunds")
_TSTK_FIGURES = ("stake.", "slashes.total.amount")


def figure_unit(name: str) -> str:
    """'TUSD', 'TSTK', 'GPU-seconds', 'seconds', 'bps' or 'count' for a figure name."""
    if name.startswith(_TUSD_FIGURES):
        return PAYMENT_SYMBOL
    if name.startswith(("agent_payments.", "agent_budget.")):
        return PAYMENT_SYMBOL if name.rpartition(".")[2] in AGENT_TUSD_PARTS else "count"
    if name.startswith(_TSTK_FIGURES):
        return STAKE_SYMBOL
    if name.endswith("gpu_seconds"):
        return "GPU-seconds"
    if name.endswith("_seconds"):
        return "seconds"
    if name.endswith("bps"):
        return "bps"
    return "count"


def compute_figures(records: Iterable[EventRecord], as_of: int) -> Figures:
    """Every figure, from the events up to and including the block whose timestamp is `as_of`:
    the resumable fold of protocol/figure_book.py applied once (its one definition)."""
    return FigureBook().apply(records).figures(as_of)


def compare(expected: Figures, actual: Figures, check_txs: bool = True) -> list[str]:
    """Every difference between two figure sets, in words; empty when they agree exactly."""
    problems = []
    for key in sorted(set(expected) | set(actual)):
        left, right = expected.get(key), actual.get(key)
        label = f"{key[0]}[{key[1]}]"
        if left is None:
            problems.append(f"{label}: only in the second set (value {right.value})")
        elif right is None:
            problems.append(f"{label}: only in the first set (value {left.value})")
        elif left.value != right.value:
            problems.append(f"{label}: {left.value} != {right.value} (diff {right.value - left.value})")
        elif check_txs and left.txs != right.txs:
            extra = set(right.txs) - set(left.txs)
            missing = set(left.txs) - set(right.txs)
            problems.append(f"{label}: same value but tx lists differ "
                            f"(missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]})")
    return problems


def ratio(figures: Figures, name: str, key: str) -> float | None:
    """leased / registered GPU-seconds for a utilization key (display only; the parts are exact)."""
    leased = figures.get((f"utilization.{name}.leased_gpu_seconds", key))
    registered = figures.get((f"utilization.{name}.registered_gpu_seconds", key))
    if not registered or registered.value == 0:
        return None
    return (leased.value if leased else 0) / registered.value
