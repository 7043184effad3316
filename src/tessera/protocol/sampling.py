"""Which committed segments to replay, and how likely that catches a worker that faked some.

Pure: no I/O, no torch. The segments to check are drawn from randomness the worker could not
know when it committed (a block hash from after the commitment was mined, mixed with the job,
round and worker so that every worker gets its own draw), with a rule a contract can mirror:

* ``challenge_seed(block_hash, job_id, round, worker) =
  keccak256(b"tessera/challenge/v1" || block_hash || job_id || uint256_be(round) ||
  uint256_be(worker))`` (block_hash and job_id 32 bytes each);
* draw ``c`` (c = 0, 1, 2, ...) is ``int_be(keccak256(seed || uint256_be(c)))``;
* a uniform integer below ``m`` rejects draws ``>= 2**256 - (2**256 % m)`` and takes the next
  draw, then reduces ``% m`` (no modulo bias);
* ``select_segments(seed, n, q)`` is the first ``q`` entries of a Fisher-Yates shuffle of
  ``0..n-1`` (for i in 0..q-1: j = i + uniform(n - i); swap(i, j)), so the q segments are
  distinct and every q-subset is equally likely. Returned sorted.

Detection: a worker that faked ``m`` of ``n`` segments escapes ``q`` checks drawn without
replacement with probability C(n-m, q) / C(n, q) (hypergeometric). The textbook
``1 - (1 - f)^q`` (independent checks, f = m/n) is the with-replacement figure and a lower
bound on the exact one; they agree when q << n.
"""

from __future__ import annotations

import math

from eth_utils import keccak

CHALLENGE_DOMAIN = b"tessera/challenge/v1"
_TWO_256 = 1 << 256


def _u256(x: int) -> bytes:
    if not 0 <= x < _TWO_256:
        raise ValueError(f"{x} does not fit in uint256")
    return x.to_bytes(32, "big")


def challenge_seed(block_hash: bytes, job_id: bytes, round: int, worker: int) -> bytes:
    """The randomness for one worker's round: a later block hash mixed with who/when."""
    if len(block_hash) != 32 or len(job_id) != 32:
        raise ValueError("block_hash and job_id must be 32 bytes each")
    return keccak(CHALLENGE_DOMAIN + bytes(block_hash) + bytes(job_id) + _u256(round) + _u256(worker))


class _Draws:
    def __init__(self, seed: bytes):
        self.seed, self.counter = bytes(seed), 0

    def next(self) -> int:
        value = int.from_bytes(keccak(self.seed + _u256(self.counter)), "big")
        self.counter += 1
        return value

    def below(self, m: int) -> int:
        limit = _TWO_256 - (_TWO_256 % m)
        while True:
            r = self.next()
            if r < limit:
                return r % m


def select_segments(seed_bytes: bytes, n_segments: int, q: int) -> list[int]:
    """`q` distinct segment indices in [0, n_segments), uniformly and deterministically from the
    seed (sorted)."""
    if n_segments < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    if not 0 <= q <= n_segments:
        raise ValueError(f"q must be in [0, {n_segments}], got {q}")
    draws, moved, out = _Draws(seed_bytes), {}, []
    for i in range(q):
        j = i + draws.below(n_segments - i)
        vi, vj = moved.get(i, i), moved.get(j, j)
        moved[i], moved[j] = vj, vi
        out.append(vj)
    return sorted(out)


def faked_count(f: float, n: int) -> int:
    """How many of `n` segments a worker that fakes a share `f` of them fakes (at least f*n)."""
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"f must be in [0, 1], got {f}")
    return min(n, math.ceil(f * n - 1e-9))


def detection_probability_count(m: int, q: int, n: int) -> float:
    """Exact chance that `q` checks drawn without replacement from `n` segments hit at least one
    of `m` faked ones: 1 - C(n-m, q) / C(n, q)."""
    if n < 1 or not 0 <= m <= n or q < 0:
        raise ValueError(f"need n >= 1, 0 <= m <= n, q >= 0; got m={m} q={q} n={n}")
    q = min(q, n)
    return 1.0 - math.comb(n - m, q) / math.comb(n, q)


def detection_probability(f: float, q: int, n: int | None = None) -> float:
    """Chance of catching a worker that fakes a share `f` of its segments with `q` checks.

    With `n` (segments committed): exact, without replacement, for ceil(f*n) faked segments.
    Without `n`: the independent-checks figure 1 - (1 - f)^q (a lower bound on the exact one)."""
    if q < 0:
        raise ValueError(f"q must be >= 0, got {q}")
    if n is None:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"f must be in [0, 1], got {f}")
        return 1.0 - (1.0 - f) ** q
    return detection_probability_count(faked_count(f, n), q, n)


def segments_needed(f: float, target: float, n: int | None = None) -> int:
    """The fewest checks that catch a worker faking a share `f` with probability >= `target`
    (exact without replacement when `n` is given, else the 1 - (1-f)^q figure).
    Raises ValueError when no number of checks reaches it."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    if n is None:
        if f >= 1.0:
            return 1
        if f <= 0.0 or target >= 1.0:
            raise ValueError(f"no finite number of independent checks reaches {target} at f={f}")
        q = math.ceil(math.log1p(-target) / math.log1p(-f))
        while q > 1 and detection_probability(f, q - 1) >= target:  # guard against float rounding
            q -= 1
        while detection_probability(f, q) < target:
            q += 1
        return q
    if detection_probability(f, n, n) < target:
        raise ValueError(f"even checking all {n} segments does not reach {target} at f={f}")
    lo, hi = 0, n  # detection is non-decreasing in q
    while lo < hi:
        mid = (lo + hi) // 2
        if detection_probability(f, mid, n) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def job_detection_probability(f: float, q_per_round: int, n_per_round: int, rounds: int) -> float:
    """Checks drawn per round (q of the round's n segments, independent draws per round) against
    a worker that fakes a share f of the segments of every round: 1 - (miss per round)^rounds.
    Spreading the fakes evenly over the rounds is the cheater's best split (log of the miss
    probability is concave in the number faked per round), so this is the figure to plan with."""
    miss = 1.0 - detection_probability(f, q_per_round, n_per_round)
    return 1.0 - miss ** rounds


def binomial_two_sided_pvalue(hits: int, trials: int, p: float) -> float:
    """min(1, 2 * min(P[X <= hits], P[X >= hits])) for X ~ Binomial(trials, p): how surprising
    a measured count is under the formula (used by the Monte Carlo tests and the benchmark)."""
    if not 0 <= hits <= trials:
        raise ValueError("need 0 <= hits <= trials")
    if p <= 0.0 or p >= 1.0:
        return 1.0 if hits == round(p * trials) else 0.0

    def logpmf(k: int) -> float:
        return (math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
                + k * math.log(p) + (trials - k) * math.log1p(-p))

    low = sum(math.exp(logpmf(k)) for k in range(0, hits + 1))
    high = sum(math.exp(logpmf(k)) for k in range(hits, trials + 1))
    return min(1.0, 2.0 * min(low, high))
