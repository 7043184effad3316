"""A tree of aggregators whose partial sums are checked chunk by chunk
(compute/aggregation_tree.py): honest partials always pass, every way of lying about one is
caught when a chunk it touched is sampled, and a scale blown up anywhere is caught always."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.compute import aggregation_tree as tree
from tessera.compute.aggregate import MeanStream
from tessera.compute.compress import deserialize, serialize
from tessera.compute.corpus import build_stdlib_corpus
from tessera.compute.diloco import DilocoConfig, decode_tensors, encode_tensors
from tessera.compute.diloco_simulation import run_diloco
from tessera.errors import WireFormatError
from tessera.protocol.workload import TrainingWorkload

CHUNK = 7                      # odd: the last chunk is short
REFERENCE = {"a": torch.zeros(5, 4), "b": torch.zeros(3)}   # 23 values: 4 chunks, the last of 2
CHUNKS = 4


def payload(values: torch.Tensor, kind: str = "pseudo_gradient", **meta) -> bytes:
    state = {"a": values[:20].reshape(5, 4).clone(), "b": values[20:].clone()}
    return encode_tensors(state, "int8", CHUNK, {"kind": kind, **meta})


def group(seed: int, n: int, spread: float = 1.0) -> list[tree.Opened]:
    """n members whose magnitudes differ by up to 10^spread between members."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        scale = 10 ** (spread * (torch.rand(1, generator=g).item() - 0.5))
        out.append(tree.open_payload(payload(torch.randn(23, generator=g) * scale), REFERENCE, CHUNK))
    return out


def aggregate(members: list[tree.Opened]) -> tree.Opened:
    return tree.open_payload(tree.partial_sum(members, REFERENCE, CHUNK), REFERENCE, CHUNK,
                             sum(m.members for m in members))


def check(partial: tree.Opened, members: list[tree.Opened], sample=None, opened_from=None) -> list[str]:
    """The checker's view: the members' commitments, the sampled chunks opened from
    `opened_from` (what the aggregator shows; default: the real members)."""
    sample = list(range(partial.chunks)) if sample is None else sample
    shown = [tree.open_chunks(m, sample) for m in (opened_from or members)]
    openings = {j: [s[j] for s in shown] for j in sample}
    return tree.check_partial(partial, *shown_and_signed(members), counts(members), openings,
                              sample)


def counts(members: list[tree.Opened]) -> list[int]:
    """The checker's assignment: the workers under each member."""
    return [m.members for m in members]


def shown_and_signed(members: list[tree.Opened]) -> tuple[list[tree.Commitment], list[bytes]]:
    commitments = [tree.commit(m) for m in members]
    return commitments, [c.root() for c in commitments]


# --- honest aggregators are never faulted --------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 9), st.floats(0, 8), st.randoms(use_true_random=False))
def test_an_honest_partial_passes_every_chunk_in_any_member_order(seed, n, spread, rnd):
    members = group(seed, n, spread)
    partial = aggregate(members)
    shuffled = members[:]
    rnd.shuffle(shuffled)
    assert tree.partial_sum(shuffled, REFERENCE, CHUNK) == tree.partial_sum(members, REFERENCE, CHUNK)
    assert check(partial, members) == []
    assert partial.members == n


def test_a_partial_of_partials_passes_and_counts_every_worker():
    level1 = [aggregate(group(s, 3)) for s in range(3)]
    root_partial = aggregate(level1)
    assert root_partial.members == 9
    assert check(root_partial, level1) == []


def test_zero_subnormal_and_huge_members_pass():
    g = torch.Generator().manual_seed(2)
    zero = tree.open_payload(payload(torch.zeros(23)), REFERENCE, CHUNK)
    tiny = tree.open_payload(payload(torch.full((23,), 1e-38)), REFERENCE, CHUNK)
    subnormal = tree.open_payload(payload(torch.randn(23, generator=g) * 1e-40), REFERENCE, CHUNK)
    assert (subnormal.scales < 1.2e-38).all() and (subnormal.scales > 0).all()
    members = [zero, tiny, subnormal, *group(1, 2, spread=30)]
    assert check(aggregate(members), members) == []
    # members at the largest scale allowed: their sum stays finite and passes
    top = tree.MAX_SCALE_PER_MEMBER * 127
    big = [tree.open_payload(payload(torch.full((23,), top * sign)), REFERENCE, CHUNK)
           for sign in (1.0, 1.0, -1.0, 1.0)]
    partial = aggregate(big)
    assert torch.isfinite(partial.scales).all()
    assert check(partial, big) == []


def test_a_scale_no_tree_can_sum_is_refused():
    too_big = payload(torch.full((23,), tree.MAX_SCALE_PER_MEMBER * 127 * 4))
    with pytest.raises(WireFormatError, match="2\\^100"):
        tree.open_payload(too_big, REFERENCE, CHUNK)


def test_commitments_not_the_signed_ones_are_refused_first():
    members = group(11, 3)
    partial = aggregate(members)
    shown, signed = shown_and_signed(members)
    forged = [shown[0], shown[1], tree.commit(group(12, 1)[0])]
    sample = [0]
    openings = {0: [tree.open_chunks(m, sample)[0] for m in members]}
    refused = ["the members' commitments shown are not the ones they signed"]
    three = [1, 1, 1]
    assert tree.check_partial(partial, forged, signed, three, openings, sample) == refused
    assert tree.check_partial(partial, shown, signed[:2] + [bytes(32)], three, openings,
                              sample) == refused
    assert tree.check_partial(partial, shown, signed, three, openings, sample) == []
    with pytest.raises(ValueError, match="every member"):
        tree.check_partial(partial, shown[:2], signed, three, openings, sample)
    with pytest.raises(ValueError, match="every member"):
        tree.check_partial(partial, [], [], [], openings, sample)


def test_the_tree_mean_is_the_flat_mean_to_within_one_rounding_per_level():
    payloads = [payload(torch.randn(23, generator=torch.Generator().manual_seed(i)))
                for i in range(12)]
    flat = MeanStream(REFERENCE)
    for p in payloads:
        flat.add(decode_tensors(p, REFERENCE, "int8", CHUNK, "pseudo_gradient"))
    root = MeanStream(REFERENCE)
    partials = tree.reduce(payloads, 4, REFERENCE, CHUNK)
    assert [p.members for p in partials] == [4, 4, 4]
    for p in partials:
        root.add(tree.partial_state(p, REFERENCE), p.members)
    assert root.count == 12
    bound = max(p.scales.max().item() for p in partials) / 2 * len(partials) / 12
    for name, value in root.value().items():
        assert (value - flat.value()[name]).abs().max().item() <= bound * 1.001


def test_a_simulated_job_through_a_tree_learns_like_the_flat_one():
    data = build_stdlib_corpus(1 << 18)
    config = DilocoConfig(workload=TrainingWorkload(threads=1, n_layer=1, n_embd=32, n_head=2,
                                                    block_size=32, batch_size=8),
                          workers=6, inner_steps=5, rounds=3, compression="int8")
    flat = run_diloco(config, data)
    via_tree = run_diloco(config, data, tree_fanout=2)
    assert [h["contributors"] for h in via_tree.history] == [6, 6, 6]
    assert via_tree.final_val_loss < flat.history[0]["mean_inner_loss"]
    assert abs(via_tree.final_val_loss - flat.final_val_loss) < 0.02 * flat.final_val_loss
    with pytest.raises(ValueError, match="int8 payloads and the mean"):
        run_diloco(config.model_copy(update={"aggregation": "median"}), data, tree_fanout=2)


# --- every lie is caught where it is sampled ------------------------------------------------------

def altered(partial: tree.Opened, chunk: int) -> tree.Opened:
    q = partial.q.clone()
    q[chunk * CHUNK] = 127 if q[chunk * CHUNK] != 127 else 126
    return tree.Opened(q, partial.scales, CHUNK, partial.members)


def test_one_altered_chunk_is_caught_when_sampled_and_only_then():
    members = group(3, 4)
    wrong = altered(aggregate(members), 2)
    assert check(wrong, members, sample=[2]) == ["chunk 2: the partial is not its members' sum"]
    assert check(wrong, members, sample=[0, 1, 3]) == []   # the escape the sampling leaves


def test_a_dropped_member_is_caught_at_any_chunk():
    members = group(4, 5)
    short = aggregate(members[:4])
    for j in range(CHUNKS):
        faults = check(tree.Opened(short.q, short.scales, CHUNK, 5), members, sample=[j])
        assert faults == [f"chunk {j}: the partial is not its members' sum"]


def test_a_substituted_member_is_caught_whatever_it_opens():
    members = group(5, 3)
    other = group(99, 1)[0]
    swapped = aggregate([members[0], members[1], other])
    # opening the payload it really summed: the paths do not lead to the member's root
    faults = check(swapped, members, sample=[1], opened_from=[members[0], members[1], other])
    assert faults == ["chunk 1: member 2's opening does not match its commitment"]
    # opening the member's real values: they do not sum to the partial
    assert check(swapped, members, sample=[1]) == ["chunk 1: the partial is not its members' sum"]


def test_a_blown_up_scale_is_caught_on_every_chunk_without_sampling():
    members = group(6, 3)
    partial = aggregate(members)
    scales = partial.scales.clone()
    scales[3] *= 1000
    faults = check(tree.Opened(partial.q, scales, CHUNK, 3), members, sample=[])
    assert len(faults) == 1 and faults[0].startswith("chunk 3: scale")


def test_a_member_count_lie_and_a_missing_opening_are_faults():
    members = group(7, 3)
    partial = aggregate(members)
    inflated = tree.Opened(partial.q, partial.scales, CHUNK, 4)
    assert check(inflated, members, sample=[]) == ["the partial claims 4 members, its group has 3"]
    shown, signed = shown_and_signed(members)
    assert tree.check_partial(partial, shown, signed, [1, 1, 2], {}, []) == [
        "member 2's commitment says 1 workers, 2 assigned"]
    shown = [tree.open_chunks(m, [0]) for m in members]
    faults = tree.check_partial(partial, *shown_and_signed(members), counts(members),
                                {0: [s[0] for s in shown[:2]]}, [0, 1])
    assert faults == ["chunk 0: not opened for every member", "chunk 1: not opened for every member"]


def test_a_forged_path_or_truncated_values_are_refused():
    members = group(8, 2)
    partial = aggregate(members)
    good = tree.open_chunks(members[0], [1])[1]
    commitment = tree.commit(members[0])
    leaf = tree.leaf_hash(good.values)
    assert tree.verify_path(commitment.value_root, 1, CHUNKS, leaf, good.path)
    assert not tree.verify_path(commitment.value_root, 0, CHUNKS, leaf, good.path)
    assert not tree.verify_path(commitment.value_root, 1, CHUNKS, leaf, good.path[:-1])
    forged = tree.ChunkOpening(good.values, (bytes(32),) + good.path[1:])
    short = tree.ChunkOpening(good.values[:-1], good.path)
    other = tree.open_chunks(members[1], [1])[1]
    for bad in (forged, short):
        faults = tree.check_partial(partial, *shown_and_signed(members), counts(members),
                                    {1: [bad, other]}, [1])
        assert faults == ["chunk 1: member 0's opening does not match its commitment"]


def test_the_commitment_binds_scales_and_member_count():
    member = group(9, 1)[0]
    c = tree.commit(member)
    assert tree.Commitment(2, c.scales, c.value_root).root() != c.root()
    assert tree.Commitment(1, c.scales * 2, c.value_root).root() != c.root()


def test_sampling_is_reproducible_and_escape_odds_match_draws():
    assert tree.sample_chunks(b"x", 30) == tree.sample_chunks(b"x", 30)
    assert len(set(tree.sample_chunks(b"y", 30))) == tree.DEFAULT_SAMPLES
    assert tree.sample_chunks(b"z", 3) == [0, 1, 2]
    wrong = {4, 17}
    draws = 4000
    escaped = sum(not wrong & set(tree.sample_chunks(i.to_bytes(4, "big"), 30)) for i in range(draws))
    predicted = tree.escape_probability(30, 2)
    assert predicted == pytest.approx((22 * 21) / (30 * 29))
    assert abs(escaped / draws - predicted) < 0.03


# --- junk is refused with the reason -------------------------------------------------------------

@pytest.mark.parametrize(("make", "reason"), [
    (lambda: encode_tensors({"a": torch.zeros(5, 4), "b": torch.zeros(3)}, "none", CHUNK,
                            {"kind": "pseudo_gradient"}), "compression"),
    (lambda: encode_tensors({"a": torch.zeros(5, 4), "b": torch.zeros(3)}, "int8", 8,
                            {"kind": "pseudo_gradient"}), "chunk"),
    (lambda: payload(torch.zeros(23), kind="outer_update"), "payload"),
    (lambda: payload(torch.zeros(23), kind="partial_sum", members=0), "1 were assigned"),
    (lambda: payload(torch.zeros(23), kind="partial_sum", members=True), "1 were assigned"),
    (lambda: payload(torch.zeros(23), kind="partial_sum", members="3"), "1 were assigned"),
    # review 10 finding 1: a worker claiming to be 4,000 workers (it would shrink the mean)
    (lambda: payload(torch.zeros(23), kind="partial_sum", members=4000), "1 were assigned"),
    (lambda: encode_tensors({"a": torch.zeros(23)}, "int8", CHUNK, {"kind": "pseudo_gradient"}),
     "tensor names"),
])
def test_open_payload_refuses_junk(make, reason):
    with pytest.raises(WireFormatError, match=reason):
        tree.open_payload(make(), REFERENCE, CHUNK)


def test_open_payload_refuses_minus_128():
    raw = bytearray(payload(torch.ones(23)))
    start = raw.index(bytes([127]) * 7)          # the first chunk's values: all at the top level
    raw[start] = 0x80                            # -128: outside [-127, 127]
    with pytest.raises(WireFormatError, match=r"\[-127, 127\]"):
        tree.open_payload(bytes(raw), REFERENCE, CHUNK)


def test_reduce_needs_a_fan_out_of_two():
    with pytest.raises(ValueError, match="fan-out"):
        tree.reduce([], 1, REFERENCE, CHUNK)


def test_sampling_leaves_the_global_random_state_alone():
    before = random.getstate()
    tree.sample_chunks(b"seed", 100)
    assert random.getstate() == before


def test_a_partial_is_opened_only_with_the_count_its_opener_assigned():
    members = group(13, 3)
    data = tree.partial_sum(members, REFERENCE, CHUNK)
    assert tree.open_payload(data, REFERENCE, CHUNK, 3).members == 3
    for wrong in (1, 2, 4):
        with pytest.raises(WireFormatError, match="3 workers' answers, .* were assigned"):
            tree.open_payload(data, REFERENCE, CHUNK, wrong)
    with pytest.raises(ValueError, match="1 to 4096"):
        tree.open_payload(data, REFERENCE, CHUNK, 4097)
    big = [tree.Opened(m.q, m.scales, CHUNK, 2000) for m in members]
    with pytest.raises(ValueError, match="at most 4096"):
        tree.partial_sum(big, REFERENCE, CHUNK)


def loose(values: torch.Tensor, chunk_index: int) -> bytes:
    """A payload whose chunk's values are halved under the same scale: a scale twice what
    they need (what honest quantization never sends)."""
    tensors, meta = deserialize(payload(values))
    q = tensors["flat"]
    q[chunk_index * CHUNK:(chunk_index + 1) * CHUNK] //= 2
    return serialize(tensors, meta)


def test_loosely_quantized_payloads_are_refused():
    """Review 10 finding 2: a zero payload with huge scales decodes to zeros yet let its
    aggregator inflate any chunk under the scale bound."""
    zero_with_scale = payload(torch.zeros(23))
    tensors, meta = deserialize(zero_with_scale)
    tensors["flat::scale"][:] = 2.0 ** 90
    with pytest.raises(WireFormatError, match="chunk 0 is not tightly quantized"):
        tree.open_payload(serialize(tensors, meta), REFERENCE, CHUNK)
    with pytest.raises(WireFormatError, match="chunk 2 is not tightly quantized"):
        tree.open_payload(loose(torch.randn(23), 2), REFERENCE, CHUNK)


def test_a_loose_member_chunk_shown_in_a_check_is_a_fault():
    """A member colluding with its aggregator signs a loose payload: where sampled, the
    opening shows it."""
    honest = group(14, 2)
    scales = torch.zeros(CHUNKS)
    scales[1] = 2.0 ** 50                                # zeros, chunk 1 under a huge scale
    colluder = tree.Opened(torch.zeros(23, dtype=torch.int8), scales, CHUNK, 1)  # never opened
    members = [*honest, colluder]
    partial = aggregate(honest)
    q, scales = partial.q.clone(), partial.scales.clone()
    q[CHUNK:2 * CHUNK] = 127
    scales[1] = 2.0 ** 50                                # within the bound, thanks to the colluder
    forged = tree.Opened(q, scales, CHUNK, 3)
    assert check(forged, members, sample=[0]) == []     # unsampled: it passes the bound
    faults = check(forged, members, sample=[1])
    assert faults == ["chunk 1: member 2's values are not a tight quantization under its scale"]


def test_flushed_denormals_are_refused_not_computed_differently():
    members = group(15, 2)
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        with pytest.raises(RuntimeError, match="flushed to zero"):
            tree.partial_sum(members, REFERENCE, CHUNK)
    finally:
        torch.set_flush_denormal(False)
    assert check(aggregate(members), members) == []


def test_opening_a_chunk_out_of_range_is_refused():
    member = group(16, 1)[0]
    for bad in (-1, CHUNKS):
        with pytest.raises(ValueError, match="from 0 to 3"):
            tree.open_chunks(member, [bad])


def test_a_commitment_out_of_range_is_a_fault_not_a_crash():
    members = group(17, 2)
    partial = aggregate(members)
    shown, signed = shown_and_signed(members)
    huge = tree.Commitment(1, torch.full_like(shown[0].scales, 2.0 ** 101), shown[0].value_root)
    assert tree.check_partial(partial, [huge, shown[1]], signed, [1, 1], {}, []) == [
        "member 0's commitment holds scales no payload of the job can have"]
    overflow = tree.Commitment(1 << 33, shown[0].scales, shown[0].value_root)
    assert tree.check_partial(partial, [overflow, shown[1]], signed, [1, 1], {}, []) == [
        f"member 0's commitment says {1 << 33} workers, 1 assigned"]


def test_the_sample_is_defined_here_not_by_pythons_random():
    """Fixed values: a checker and the checked on other Python versions draw the same chunks."""
    assert tree.sample_chunks(b"fixed", 233) == tree.sample_chunks(b"fixed", 233)
    drawn = tree.sample_chunks(b"fixed", 233)
    assert len(set(drawn)) == 8 and all(0 <= j < 233 for j in drawn)
    assert tree.sample_chunks(b"fixed", 10**9, 3) != tree.sample_chunks(b"other", 10**9, 3)
