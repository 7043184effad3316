"""Aggregating pseudo-gradients from many workers: mean, coordinate-wise median, trimmed mean.

Every rule gives bitwise the same result whatever the order in which contributions arrived
(floating-point addition is not associative; a resumed or replayed round must get the same bits).
The mean sums exactly (`compute/exact_sum.py`), so it streams: `MeanStream` folds each
contribution in as it arrives and holds a fixed amount per parameter (16-24 bytes for
pseudo-gradients, at most 80), however many workers there are. The median and the trimmed mean
need every value of a coordinate at once (order statistics): they sort each coordinate's values
across workers, holding 4 bytes per parameter per worker, and do not stream.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from tessera.compute.exact_sum import ExactSum

Method = Literal["mean", "median", "trimmed_mean"]


def _sorted(values: list[torch.Tensor]) -> torch.Tensor:
    if not values:
        raise ValueError("nothing to aggregate")
    return torch.sort(torch.stack([v.to(torch.float32) for v in values]), dim=0).values


def mean(values: list[torch.Tensor]) -> torch.Tensor:
    if not values:
        raise ValueError("nothing to aggregate")
    total = ExactSum(values[0].shape)
    for v in values:
        total.add(v.to(torch.float32))
    return total.value(len(values))


def median(values: list[torch.Tensor]) -> torch.Tensor:
    """Coordinate-wise median; with an even count, the mean of the two middle values."""
    s = _sorted(values)
    n = s.shape[0]
    if n % 2:
        return s[n // 2].clone()
    return (s[n // 2 - 1] + s[n // 2]) / 2


def trimmed_mean(values: list[torch.Tensor], trim_fraction: float = 0.25) -> torch.Tensor:
    """Drop the floor(trim_fraction * n) largest and smallest values per coordinate, then average.

    Tolerates up to that many arbitrary (Byzantine) contributions per coordinate."""
    if not 0 <= trim_fraction < 0.5:
        raise ValueError("trim_fraction must be in [0, 0.5)")
    s = _sorted(values)
    n = s.shape[0]
    k = math.floor(trim_fraction * n)
    kept = s[k:n - k]
    return kept.sum(dim=0) / kept.shape[0]


def aggregate(contributions: list[dict[str, torch.Tensor]], method: Method = "mean",
              trim_fraction: float = 0.25) -> dict[str, torch.Tensor]:
    """Reduce a list of {name: tensor} dicts (same keys and shapes) name by name."""
    if not contributions:
        raise ValueError("nothing to aggregate")
    keys = list(contributions[0])
    for c in contributions[1:]:
        if set(c) != set(keys):
            raise ValueError("contributions have different keys")
    if method == "mean":
        stream = MeanStream(contributions[0])
        for c in contributions:
            stream.add(c)
        return stream.value()
    if method == "median":
        return {k: median([c[k] for c in contributions]) for k in keys}
    if method == "trimmed_mean":
        return {k: trimmed_mean([c[k] for c in contributions], trim_fraction) for k in keys}
    raise ValueError(f"unknown aggregation {method!r}")


class MeanStream:
    """The mean of {name: tensor} contributions folded in one at a time, in any order, in a
    fixed amount of memory; `subtract` takes one back out (a worker caught after it was added),
    `merge` adds another stream's contributions (a tree of aggregators)."""

    def __init__(self, reference: dict[str, torch.Tensor]):
        self.sums = {name: ExactSum(t.shape) for name, t in reference.items()}
        self.count = 0

    def _check(self, contribution: dict[str, torch.Tensor]) -> None:
        if set(contribution) != set(self.sums):
            raise ValueError("contribution has other tensor names than the stream")

    def add(self, contribution: dict[str, torch.Tensor], count: int = 1) -> None:
        """Fold in one contribution: one worker's answer, or the sum of `count` workers' answers
        (a partial from a tree of aggregators, `compute/aggregation_tree.py`)."""
        if count < 1:
            raise ValueError("a contribution stands for at least one worker")
        self._check(contribution)
        for name, total in self.sums.items():
            total.add(contribution[name])
        self.count += count

    def subtract(self, contribution: dict[str, torch.Tensor]) -> None:
        self._check(contribution)
        if self.count == 0:
            raise ValueError("nothing to subtract from")
        for name, total in self.sums.items():
            total.subtract(contribution[name])
        self.count -= 1

    def merge(self, other: MeanStream) -> None:
        if set(other.sums) != set(self.sums):
            raise ValueError("streams hold other tensor names")
        for name, total in self.sums.items():
            total.merge(other.sums[name])
        self.count += other.count

    def bytes(self) -> int:
        """Memory the stream holds for its sums."""
        return sum(total.bytes() for total in self.sums.values())

    def value(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            raise ValueError("nothing to aggregate")
        return {name: total.value(self.count) for name, total in self.sums.items()}
