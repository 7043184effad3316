"""The exact, order-independent sum behind the streaming mean (compute/exact_sum.py)."""

import math
import random
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.compute.aggregate import MeanStream, aggregate
from tessera.compute.exact_sum import ExactSum

F32_MAX = 3.4028234663852886e38
# every float32, subnormals and the extremes included (no NaN or inf: those are refused)
floats32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
WIDTH = 6
columns = st.lists(st.lists(floats32, min_size=WIDTH, max_size=WIDTH), min_size=1, max_size=12)


def tensors(rows):
    return [torch.tensor(r, dtype=torch.float32) for r in rows]


def summed(values, order=None):
    total = ExactSum(values[0].shape)
    for i in order if order is not None else range(len(values)):
        total.add(values[i])
    return total


def ulp32(x: float) -> float:
    """The spacing of float32 values at |x| (its subnormal spacing near zero)."""
    return 2.0 ** max(math.frexp(x)[1] - 24, -149)


@settings(max_examples=200, deadline=None)
@given(columns, st.randoms(use_true_random=False))
def test_the_sum_is_exact_then_rounded_once_and_independent_of_order(rows, rnd):
    values = tensors(rows)
    order = list(range(len(values)))
    rnd.shuffle(order)
    first, shuffled = summed(values).value(), summed(values, order).value()
    assert torch.equal(first, shuffled)
    for j in range(WIDTH):
        exact = sum(Fraction(float(v[j])) for v in values)
        if abs(exact) >= F32_MAX + 2.0 ** 103:  # past float32's last rounding step: +-inf
            assert torch.isinf(first[j]) and (first[j] > 0) == (exact > 0)
            continue
        assert abs(Fraction(float(first[j])) - exact) <= Fraction(ulp32(float(exact)))


@settings(max_examples=100, deadline=None)
@given(columns, st.data())
def test_subtracting_and_merging_give_the_bits_of_the_plain_sum(rows, data):
    values = tensors(rows)
    reference = summed(values).value()
    # add one extra, then take it out again: as if it was never added
    extra = torch.tensor(data.draw(st.lists(floats32, min_size=WIDTH, max_size=WIDTH)))
    total = summed(values)
    total.add(extra)
    total.subtract(extra)
    assert torch.equal(total.value(), reference)
    # any split into groups, summed apart and merged (a tree of aggregators)
    cut = data.draw(st.integers(0, len(values)))
    left, right = ExactSum((WIDTH,)), ExactSum((WIDTH,))
    for v in values[:cut]:
        left.add(v)
    for v in values[cut:]:
        right.add(v)
    right.merge(left)
    assert torch.equal(right.value(), reference)


def test_cancellation_is_exact_where_float32_sums_lose_everything():
    big, small = torch.tensor([1e30, -1e-30]), torch.tensor([3.0, 2e-45])
    values = [big, small, -big]
    assert torch.equal(summed(values).value(), small)
    assert (big + small - big)[0] == 0.0   # what float32 addition in arrival order gives


def test_refuses_what_it_cannot_sum_and_changes_nothing():
    total = ExactSum((2,))
    total.add(torch.tensor([1.5, -2.0]))
    before = total.value()
    for bad, match in [(torch.tensor([1.0, float("nan")]), "NaN or inf"),
                       (torch.tensor([float("inf"), 0.0]), "NaN or inf"),
                       (torch.tensor([1.0, 2.0], dtype=torch.float64), "float32"),
                       (torch.tensor([1.0, 2.0, 3.0]), "shape")]:
        with pytest.raises(ValueError, match=match):
            total.add(bad)
    assert torch.equal(total.value(), before)
    with pytest.raises(ValueError, match="positive count"):
        total.value(0)
    assert torch.equal(ExactSum((3,)).value(), torch.zeros(3))


def test_memory_does_not_grow_with_the_number_of_contributions():
    """Memory follows the range of magnitudes, not the count: pseudo-gradient-like values (a
    few orders of magnitude, exact zeros) fill at most 3 limbs (24 bytes per parameter), at 100
    contributions as at 1,000; the whole float32 range fills at most 10 (80 bytes)."""
    torch.manual_seed(0)
    random.seed(0)
    reference = {"w": torch.zeros(4096), "b": torch.zeros(64)}

    def contribution():
        pg = {k: torch.randn(v.shape) * 10 ** random.uniform(-5, -2) for k, v in reference.items()}
        pg["w"][:512] = 0.0            # rows no batch touched
        return pg

    stream, sizes = MeanStream(reference), []
    for i in range(1000):
        stream.add(contribution())
        if i in (99, 999):
            sizes.append(stream.bytes() / 4160)
    # a limb is added only when a sum first needs it, so a few may come after the 100th
    # contribution; the bound is the magnitudes', whatever the count
    assert sizes[0] <= sizes[1] <= 24
    extremes = ExactSum((4,))
    for v in ([2.0 ** -149, -F32_MAX, 1.0, 0.0], [F32_MAX, F32_MAX, -(2.0 ** -149), 1e-20]):
        extremes.add(torch.tensor(v))
    assert extremes.bytes() / 4 <= 80


def test_mean_stream_agrees_with_aggregate_and_refuses_other_names():
    torch.manual_seed(1)
    pgs = [{"a": torch.randn(5), "b": torch.randn(2, 2)} for _ in range(7)]
    stream = MeanStream(pgs[0])
    for pg in reversed(pgs):
        stream.add(pg)
    out, ref = stream.value(), aggregate(pgs, "mean")
    assert all(torch.equal(out[k], ref[k]) for k in ref)
    with pytest.raises(ValueError, match="other tensor names"):
        stream.add({"a": torch.randn(5)})
    with pytest.raises(ValueError, match="nothing to aggregate"):
        MeanStream(pgs[0]).value()
    with pytest.raises(ValueError, match="nothing to subtract"):
        MeanStream(pgs[0]).subtract(pgs[0])
