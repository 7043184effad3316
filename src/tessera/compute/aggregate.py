"""Aggregating pseudo-gradients from many workers: mean, coordinate-wise median, trimmed mean.

Every rule sorts each coordinate's values across workers before reducing them, so the result is
bitwise independent of the order in which contributions arrived (floating-point addition is not
associative; a verifier replaying the outer step must get the same bits whatever the order).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Method = Literal["mean", "median", "trimmed_mean"]


def _sorted(values: list[torch.Tensor]) -> torch.Tensor:
    if not values:
        raise ValueError("nothing to aggregate")
    return torch.sort(torch.stack([v.to(torch.float32) for v in values]), dim=0).values


def mean(values: list[torch.Tensor]) -> torch.Tensor:
    s = _sorted(values)
    return s.sum(dim=0) / s.shape[0]


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
        return {k: mean([c[k] for c in contributions]) for k in keys}
    if method == "median":
        return {k: median([c[k] for c in contributions]) for k in keys}
    if method == "trimmed_mean":
        return {k: trimmed_mean([c[k] for c in contributions], trim_fraction) for k in keys}
    raise ValueError(f"unknown aggregation {method!r}")
