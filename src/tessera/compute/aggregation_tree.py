"""A tree of aggregators whose results are checked: a round's mean summed and carried by many
nodes, each partial result verifiable one chunk at a time.

Why: with one coordinator, its link carries every worker's payload each round (n x ~1 byte per
parameter with int8) and it decodes them all. In a tree, an aggregator takes its group's
payloads and forwards ONE payload of the same format and size, a partial sum, so no link
carries more than its fan-in's payloads. An aggregator is a leased node like any other, so its
work must be checkable without redoing it.

The partial: an int8 payload (`encode_tensors`' wire format, kind "partial_sum", meta
"members": how many workers' answers it sums). Its values are the exact sum of its members'
dequantized values (`ExactSum`), rounded once to float32 and quantized again per chunk with a
fresh quantization (no residual: any node computes the same bits from the same members). A
worker's payload counts as a partial of one member; partials of partials make deeper trees. The
root's mean is the exact sum of the dequantized partials over the total count. Re-quantizing
adds one rounding per level (at most half a scale per element), so the mean is not the flat
coordinator's bits; its effect on the held-out loss is measured (bench/diloco_scale.py, "tree").
Only the mean composes this way: the median and the trimmed mean of partials are not those of
the workers, so a tree takes int8 payloads and the mean, nothing else.

The commitment (`commit`): sha256(TAG || members || sha256(scales) || value root), the value root
a Merkle root with one leaf per chunk of values. One chunk is shown to belong to a payload by a
path of log2(chunks) hashes; the scales (4 bytes per chunk: a thousandth of an int8 payload at
the default chunk) are shown in full. Their bytes: `aggregation_tree_wire.py`.

The check (`check_partial`), by whoever receives a partial and knows the roots its members
signed (each commitment shown must hash to its member's root):
  1. bound, on every chunk: a partial's scale is at most the sum of its members' scales (|sum| <=
     sum of |member values| <= 127 x sum of scales), so an aggregator cannot inflate a chunk
     beyond what its members sent, however rarely that chunk is sampled;
  2. sample: for chunks drawn after the partial is committed (`sample_chunks`), the aggregator
     opens every member's chunk (values + path); the checker recomputes that chunk of the
     partial, integer-exact, so with the same bits on every machine, and compares bitwise.
     A partial wrong in m of C chunks escapes s samples with probability
     C(C - m, s) / C(C, s) (`escape_probability`); a dropped, added or substituted member
     changes every chunk where it is not below the partial's rounding, and is caught by any
     sample there (one below the rounding everywhere changes nothing: the same bits).
How many workers a payload stands for is the checker's own assignment, never the payload's
claim. The root binds neither job nor round: the message a member signs must.
Pure torch and hashlib: no I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from tessera.compute.compress import LEVELS, SCALE_SUFFIX, deserialize, quantize
from tessera.compute.diloco import MAX_WORKERS, State, check_meta, encode_tensors, unflatten
from tessera.compute.exact_sum import ExactSum
from tessera.errors import WireFormatError

TAG = b"tessera/aggregation-tree/v1"
PARTIAL_KIND = "partial_sum"
KINDS = ("pseudo_gradient", PARTIAL_KIND)
COMPRESSION = "int8"
LEVEL = LEVELS[COMPRESSION]
DEFAULT_SAMPLES = 8            # chunks opened per partial and round
# |fl(q * s)| <= 127 s (1 + 2^-24), the float32 sum rounds once, the scale divides once: an honest
# partial's scale exceeds its members' total by less than 2^-22 of it; the bound allows 2^-20
BOUND_SLACK = 2.0 ** -20
EMPTY = bytes(32)              # padding below a Merkle tree's power-of-two width
# The largest scale per member a payload may have: a sum of MAX_WORKERS (2^12) answers at most
# 127 x 2^100 each stays below 2^119, far inside float32 (2^128), so no member can make an
# honest aggregator's partial overflow. (A pseudo-gradient element near 2^107 is no training.)
MAX_SCALE_PER_MEMBER = 2.0 ** 100
SMALLEST_NORMAL = 2.0 ** -126


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def leaf_hash(values: bytes) -> bytes:
    return _h(b"\x00", values)


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every level of the Merkle tree over `leaves` (leaf hashes), padded to a power of two."""
    width = 1 << max(0, math.ceil(math.log2(max(1, len(leaves)))))
    level = leaves + [EMPTY] * (width - len(leaves))
    levels = [level]
    while len(level) > 1:
        level = [_h(b"\x01", level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def verify_path(root: bytes, index: int, leaves: int, leaf: bytes, path: Sequence[bytes]) -> bool:
    """Whether `leaf` is leaf `index` of the `leaves`-leaf tree whose root is `root`."""
    if not 0 <= index < leaves or len(path) != math.ceil(math.log2(max(1, leaves))):
        return False
    node = leaf
    for sibling in path:
        node = _h(b"\x01", node, sibling) if index % 2 == 0 else _h(b"\x01", sibling, node)
        index //= 2
    return node == root


@dataclass(frozen=True)
class Opened:
    """A payload's int8 values and scales as sent, and how many workers' answers it sums."""

    q: torch.Tensor          # int8, (numel,)
    scales: torch.Tensor     # float32, (chunks,)
    chunk: int
    members: int

    @property
    def chunks(self) -> int:
        return self.scales.numel()

    def values(self, j: int) -> torch.Tensor:
        return self.q[j * self.chunk:(j + 1) * self.chunk]

    def dequantized(self) -> torch.Tensor:
        index = torch.arange(self.q.numel()) // self.chunk
        return self.q.to(torch.float32) * self.scales[index]

    def leaves(self) -> list[bytes]:
        return [leaf_hash(self.values(j).numpy().tobytes()) for j in range(self.chunks)]

    @cached_property
    def merkle_levels(self) -> list[list[bytes]]:
        """The Merkle tree over the value chunks, built once: the commitment takes its root,
        a sample's openings its paths (an opened payload is not changed after it is read)."""
        return _levels(self.leaves())


def open_payload(payload: bytes, reference: State, chunk: int, members: int = 1) -> Opened:
    """A worker's pseudo-gradient (`members` 1) or a partial of `members` workers, the count
    the CALLER assigned (a payload's own claim is never trusted: one worker claiming to be
    4,000 would shrink the mean 400-fold), refused (WireFormatError) unless it is a tightly
    quantized int8 payload of the job's chunk for `reference`'s tensors."""
    if not 1 <= members <= MAX_WORKERS:
        raise ValueError(f"a payload stands for 1 to {MAX_WORKERS} workers, not {members}")
    tensors, meta = deserialize(payload)
    check_meta(meta, reference, COMPRESSION, chunk, (PARTIAL_KIND,) if members > 1 else KINDS)
    claimed = meta.get("members", 1) if meta["kind"] == PARTIAL_KIND else 1
    if claimed != members or isinstance(claimed, bool):
        raise WireFormatError(f"the payload sums {claimed!r} workers' answers, {members} were "
                              "assigned to it")
    numel = sum(t.numel() for t in reference.values())
    chunks = max(1, math.ceil(numel / chunk))
    q, scales = tensors.get("flat"), tensors.get("flat" + SCALE_SUFFIX)
    if set(tensors) != {"flat", "flat" + SCALE_SUFFIX} or q is None or scales is None:
        raise WireFormatError(f"expected tensors 'flat' and 'flat{SCALE_SUFFIX}', "
                              f"got {sorted(tensors)}")
    if q.dtype != torch.int8 or tuple(q.shape) != (numel,):
        raise WireFormatError(f"'flat': expected int8 of shape ({numel},), got {q.dtype} "
                              f"{tuple(q.shape)}")
    if scales.dtype != torch.float32 or tuple(scales.shape) != (chunks,):
        raise WireFormatError(f"'flat{SCALE_SUFFIX}': expected float32 of shape ({chunks},), "
                              f"got {scales.dtype} {tuple(scales.shape)}")
    if not torch.isfinite(scales).all() or (scales < 0).any():
        raise WireFormatError(f"'flat{SCALE_SUFFIX}': scales must be finite and >= 0")
    if (scales.to(torch.float64) > members * MAX_SCALE_PER_MEMBER).any():
        raise WireFormatError(f"'flat{SCALE_SUFFIX}': a scale above {members} x 2^100 "
                              "(a tree's sums of such values could overflow)")
    if (q == -128).any():
        raise WireFormatError(f"'flat': int8 values must be in [-{LEVEL}, {LEVEL}]")
    loose = _loose_chunks(q, scales, chunk)
    if loose:
        raise WireFormatError(f"chunk {loose[0]} is not tightly quantized (its largest |value| "
                              f"must be {LEVEL} under a normal scale, 0 under a zero scale)")
    return Opened(q, scales, chunk, members)


def _loose_chunks(q: torch.Tensor, scales: torch.Tensor, chunk: int) -> list[int]:
    """Chunks whose scale is larger than their values need: what honest quantization gives
    (absmax / 127, so the largest |q| is 127; 0 when all is 0) is required, or a zero chunk
    could carry a huge scale that lets its aggregator inflate a chunk past the scale bound.
    Subnormal scales round too coarsely to pin the largest |q|: any is allowed."""
    chunks = scales.numel()
    padded = torch.zeros(chunks * chunk, dtype=torch.int16)
    padded[:q.numel()] = q.to(torch.int16)
    top = padded.view(chunks, chunk).abs().amax(dim=1)
    normal = scales >= SMALLEST_NORMAL
    bad = (normal & (top != LEVEL)) | ((scales == 0) & (top != 0))
    return bad.nonzero().flatten().tolist()


@dataclass(frozen=True)
class Commitment:
    """What a payload's sender signs, in parts: `root()` is the 32 bytes signed; the scales and
    the value root are sent with it so that a checker can use them."""

    members: int
    scales: torch.Tensor
    value_root: bytes

    def root(self) -> bytes:
        return _h(TAG, self.members.to_bytes(4, "big"), _h(self.scales.numpy().tobytes()),
                  self.value_root)


def commit(opened: Opened) -> Commitment:
    return Commitment(opened.members, opened.scales, opened.merkle_levels[-1][0])


@dataclass(frozen=True)
class ChunkOpening:
    """One member's values of one chunk and their Merkle path to its value root."""

    values: bytes
    path: tuple[bytes, ...]


def open_chunks(opened: Opened, indexes: Sequence[int]) -> dict[int, ChunkOpening]:
    """The aggregator's answer to a sample, for one member."""
    if any(not 0 <= j < opened.chunks for j in indexes):
        raise ValueError(f"chunk indexes run from 0 to {opened.chunks - 1}")
    levels = opened.merkle_levels
    out = {}
    for j in indexes:
        path, i = [], j
        for level in levels[:-1]:
            path.append(level[i ^ 1])
            i //= 2
        out[j] = ChunkOpening(opened.values(j).numpy().tobytes(), tuple(path))
    return out


def _require_subnormals() -> None:
    """Refuse to compute while denormals are flushed to zero (a library may set FTZ/DAZ): a
    sum that cancels into the subnormal range would round otherwise than on a checker that
    keeps them, and an honest aggregator would fail its check."""
    if (torch.tensor([SMALLEST_NORMAL], dtype=torch.float32) / 4).item() == 0.0:
        raise RuntimeError("denormals are flushed to zero in this process "
                           "(torch.set_flush_denormal(False) restores them)")


def partial_sum(members: Sequence[Opened], reference: State, chunk: int) -> bytes:
    """An aggregator's result: its members' exact sum, rounded once, quantized afresh."""
    if not members:
        raise ValueError("a partial sum needs at least one member")
    if sum(m.members for m in members) > MAX_WORKERS:
        raise ValueError(f"a partial sums at most {MAX_WORKERS} workers' answers")
    _require_subnormals()
    total = ExactSum((members[0].q.numel(),))
    for m in members:
        total.add(m.dequantized())
    meta = {"kind": PARTIAL_KIND, "members": sum(m.members for m in members)}
    return encode_tensors(unflatten(total.value(), reference), COMPRESSION, chunk, meta)


def expected_chunk(values: Sequence[torch.Tensor], scales: Sequence[torch.Tensor],
                   chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scale) of one chunk of the partial of members whose int8 values of
    that chunk and scales are given: the same bits `partial_sum` computes for it (every step is
    elementwise, the exact sum included, and a chunk is quantized on its own)."""
    _require_subnormals()
    total = ExactSum((values[0].numel(),))
    for v, s in zip(values, scales, strict=True):
        total.add(v.to(torch.float32) * s)
    qt = quantize(total.value(), chunk, LEVEL)
    return qt.q, qt.scales[0]


def sample_chunks(seed: bytes, chunks: int, count: int = DEFAULT_SAMPLES) -> list[int]:
    """`count` distinct chunk indexes drawn from `seed` (all of them if fewer): a pure function,
    so that anyone can re-derive what was asked. The seed must be unknown to the aggregator
    until its partial is committed (the checker's own randomness, or a later block's hash).
    A partial Fisher-Yates shuffle driven by sha256(seed, step, try) with rejection sampling:
    defined here, not by a Python version's `random`."""
    count = min(count, chunks)
    swapped: dict[int, int] = {}
    for i in range(count):
        j = i + _uniform(seed, i, chunks - i)
        swapped[i], swapped[j] = swapped.get(j, j), swapped.get(i, i)
    return sorted(swapped[i] for i in range(count))


def _uniform(seed: bytes, step: int, n: int) -> int:
    """An integer in [0, n) from sha256(tag, seed, step, try), unbiased (rejection)."""
    limit = (1 << 64) - (1 << 64) % n
    for attempt in range(1 << 20):
        value = int.from_bytes(_h(b"sample", seed, step.to_bytes(8, "big"),
                                  attempt.to_bytes(4, "big"))[:8], "big")
        if value < limit:
            return value % n
    raise RuntimeError("unreachable: 2^20 rejections")   # pragma: no cover


def escape_probability(chunks: int, wrong: int, samples: int = DEFAULT_SAMPLES) -> float:
    """Chance that `samples` distinct chunks drawn out of `chunks` miss all `wrong` ones."""
    samples = min(samples, chunks)
    return math.comb(chunks - wrong, samples) / math.comb(chunks, samples)


def check_partial(partial: Opened, members: Sequence[Commitment], signed: Sequence[bytes],
                  counts: Sequence[int], openings: Mapping[int, Sequence[ChunkOpening]],
                  sample: Sequence[int]) -> list[str]:
    """Why `partial` is not the partial sum of its members (empty: it passed). `members`: the
    commitments the aggregator shows, which must hash to `signed`, the roots the members
    signed, in the same order; `counts`: how many workers' answers the checker assigned to
    each member (1 for a worker); `openings[j]`: every member's opening of sampled chunk j."""
    if not members or len(counts) != len(members) or len(signed) != len(members):
        raise ValueError("a check needs every member's signed root and assigned count")
    for k, (m, count) in enumerate(zip(members, counts, strict=True)):
        if m.members != count:
            return [f"member {k}'s commitment says {m.members} workers, {count} assigned"]
        if m.scales.dtype != torch.float32 or m.scales.dim() != 1 \
                or m.scales.numel() != partial.chunks or not torch.isfinite(m.scales).all() \
                or (m.scales < 0).any() \
                or (m.scales.to(torch.float64) > count * MAX_SCALE_PER_MEMBER).any():
            return [f"member {k}'s commitment holds scales no payload of the job can have"]
    if [m.root() for m in members] != list(signed):
        return ["the members' commitments shown are not the ones they signed"]
    faults = []
    if partial.members != sum(counts):
        faults.append(f"the partial claims {partial.members} members, its group has {sum(counts)}")
    bound = torch.stack([m.scales.to(torch.float64) for m in members]).sum(0) * (1 + BOUND_SLACK)
    over = (partial.scales.to(torch.float64) > bound).nonzero().flatten().tolist()
    if over:
        j = over[0]
        faults.append(f"chunk {j}: scale {partial.scales[j].item():.6g} exceeds its members' "
                      f"total {bound[j].item():.6g} ({len(over)} chunk(s) over)")
    for j in sample:
        opened = openings.get(j)
        if opened is None or len(opened) != len(members):
            faults.append(f"chunk {j}: not opened for every member")
            continue
        want = partial.values(j).numel()
        values = []
        for k, (member, o) in enumerate(zip(members, opened, strict=True)):
            if len(o.values) != want or not verify_path(member.value_root, j, partial.chunks,
                                                        leaf_hash(o.values), o.path):
                faults.append(f"chunk {j}: member {k}'s opening does not match its commitment")
                break
            v = torch.frombuffer(bytearray(o.values), dtype=torch.int8)
            if (v == -128).any() or _loose_chunks(v, member.scales[j:j + 1], want):
                faults.append(f"chunk {j}: member {k}'s values are not a tight quantization "
                              "under its scale")
                break
            values.append(v)
        else:
            q, scale = expected_chunk(values, [m.scales[j] for m in members], partial.chunk)
            if not (torch.equal(q, partial.values(j))
                    and scale.view(torch.int32) == partial.scales[j].view(torch.int32)):
                faults.append(f"chunk {j}: the partial is not its members' sum")
    return faults


def partial_state(partial: Opened, reference: State) -> State:
    """A partial's dequantized values as the job's tensors, for the root's exact sum."""
    return unflatten(partial.dequantized(), reference)


def reduce(payloads: Sequence[bytes], fanout: int, reference: State, chunk: int) -> list[Opened]:
    """Honest aggregators, level by level, until at most `fanout` partials remain: what the
    root receives (a simulation's and a bench's tree; members grouped in order)."""
    if fanout < 2:
        raise ValueError("a tree needs a fan-out of at least 2")
    nodes = [open_payload(p, reference, chunk) for p in payloads]
    while len(nodes) > fanout:
        groups = [nodes[i:i + fanout] for i in range(0, len(nodes), fanout)]
        nodes = [open_payload(partial_sum(g, reference, chunk), reference, chunk,
                              sum(m.members for m in g)) for g in groups]
    return nodes
