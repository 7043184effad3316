"""Segment sampling: deterministic, uniform, and its catch rate matches the formula."""

import itertools
import math
import random

import pytest
from eth_utils import keccak

from tessera.protocol import sampling as smp

# A measured count is accepted when the exact two-sided binomial p-value under the formula is
# above ALPHA; with the fixed seeds below the tests are deterministic, and ALPHA bounds how
# often a correct formula would fail on fresh seeds.
ALPHA = 1e-4


def seeds(tag: bytes, count: int):
    return (keccak(tag + i.to_bytes(8, "big")) for i in range(count))


def test_select_segments_is_deterministic_distinct_and_in_range():
    s = keccak(b"block")
    a = smp.select_segments(s, 100, 10)
    assert a == smp.select_segments(s, 100, 10)
    assert a == sorted(set(a)) and len(a) == 10 and all(0 <= x < 100 for x in a)
    assert smp.select_segments(keccak(b"other"), 100, 10) != a
    assert smp.select_segments(s, 7, 0) == []
    assert smp.select_segments(s, 7, 7) == list(range(7))
    assert smp.select_segments(s, 1, 1) == [0]
    with pytest.raises(ValueError):
        smp.select_segments(s, 5, 6)
    with pytest.raises(ValueError):
        smp.select_segments(s, 0, 0)


def test_challenge_seed_differs_by_round_and_worker():
    bh, job = keccak(b"b"), keccak(b"job")
    got = {smp.challenge_seed(bh, job, r, w) for r in range(3) for w in range(3)}
    assert len(got) == 9
    with pytest.raises(ValueError):
        smp.challenge_seed(b"short", job, 0, 0)


def test_every_segment_equally_likely():
    n, q, trials = 20, 3, 2000
    counts = [0] * n
    for s in seeds(b"uniform", trials):
        for x in smp.select_segments(s, n, q):
            counts[x] += 1
    for c in counts:  # each index is picked with probability q/n per trial
        assert smp.binomial_two_sided_pvalue(c, trials, q / n) > ALPHA / n


def test_exact_formula_against_enumeration():
    n, q = 9, 3
    for m in range(n + 1):
        faked = set(range(m))
        caught = sum(1 for c in itertools.combinations(range(n), q) if faked & set(c))
        assert smp.detection_probability_count(m, q, n) == pytest.approx(caught / math.comb(n, q), abs=1e-12)


def test_formulas_agree_where_they_should():
    assert smp.detection_probability(0.1, 44) == pytest.approx(1 - 0.9 ** 44)
    for f, q, n in [(0.1, 10, 50), (0.1, 44, 1000), (0.05, 20, 2000), (0.3, 5, 10)]:
        exact, approx = smp.detection_probability(f, q, n), smp.detection_probability(f, q)
        assert exact >= approx - 1e-12  # sampling without replacement never does worse
    # q << n: the two agree
    assert smp.detection_probability(0.1, 20, 100_000) == pytest.approx(1 - 0.9 ** 20, abs=1e-3)
    assert smp.detection_probability(0.0, 10, 100) == 0.0
    assert smp.detection_probability(0.1, 91, 100) == 1.0  # 10 faked, 91 checked: pigeonhole


def test_segments_needed_is_minimal():
    assert smp.segments_needed(0.1, 0.99) == 44
    for f, target, n in [(0.1, 0.99, None), (0.1, 0.99, 1000), (0.1, 0.99, 100), (0.01, 0.9, 5000),
                         (0.5, 0.999, None), (0.25, 0.95, 40)]:
        q = smp.segments_needed(f, target, n)
        assert smp.detection_probability(f, q, n) >= target
        assert q == 0 or smp.detection_probability(f, q - 1, n) < target
    assert smp.segments_needed(0.1, 0.99, 1000) <= 44
    # with n given, f*n < 1 rounds up to one faked segment: 99 of 100 checks find it 99% of the time
    assert smp.segments_needed(0.001, 0.99, 100) == 99
    with pytest.raises(ValueError):
        smp.segments_needed(0.0, 0.5)
    with pytest.raises(ValueError):
        smp.segments_needed(0.0, 0.5, 100)


def monte_carlo(n: int, q: int, m: int, trials: int, tag: bytes, fixed_fakes: bool) -> int:
    rng = random.Random(tag)
    fakes = set(rng.sample(range(n), m))
    hits = 0
    for s in seeds(tag, trials):
        if not fixed_fakes:  # the worker picks its fakes before the randomness exists
            fakes = set(rng.sample(range(n), m))
        if fakes.intersection(smp.select_segments(s, n, q)):
            hits += 1
    return hits


@pytest.mark.parametrize("n,q,f,fixed", [(50, 10, 0.1, True), (50, 10, 0.1, False),
                                         (30, 3, 0.2, True), (200, 22, 0.1, False)])
def test_monte_carlo_catch_rate_matches_exact_formula(n, q, f, fixed):
    trials = 3000
    m = smp.faked_count(f, n)
    hits = monte_carlo(n, q, m, trials, f"mc/{n}/{q}/{f}/{fixed}".encode(), fixed)
    p = smp.detection_probability(f, q, n)
    assert smp.binomial_two_sided_pvalue(hits, trials, p) > ALPHA, (hits / trials, p)


def test_monte_carlo_matches_one_minus_one_minus_f_to_the_q_when_q_is_small():
    """DESIGN.md's figure 1 - (1 - f)^Q: with n >> Q the measured rate matches it too."""
    n, q, f, trials = 2000, 20, 0.05, 3000
    hits = monte_carlo(n, q, smp.faked_count(f, n), trials, b"mc/approx", True)
    assert smp.binomial_two_sided_pvalue(hits, trials, 1 - (1 - f) ** q) > ALPHA


def test_job_detection_even_spread_is_the_cheaters_best():
    n, q, rounds, total = 10, 2, 4, 8  # 8 faked segments over 4 rounds of 10
    best_miss = 0.0
    for split in itertools.product(range(n + 1), repeat=rounds):
        if sum(split) != total:
            continue
        miss = math.prod(1 - smp.detection_probability_count(m, q, n) for m in split)
        best_miss = max(best_miss, miss)
    assert 1 - best_miss == pytest.approx(smp.job_detection_probability(0.2, q, n, rounds))


def test_binomial_pvalue_sanity():
    assert smp.binomial_two_sided_pvalue(50, 100, 0.5) == pytest.approx(1.0)
    assert smp.binomial_two_sided_pvalue(90, 100, 0.5) < 1e-10
    with pytest.raises(ValueError):
        smp.binomial_two_sided_pvalue(5, 4, 0.5)
