"""The tenant folds each answer into the round's aggregate as it arrives (tenant/round_intake.py)
and takes a caught worker's answer back out: the outer step has the bits of `Coordinator.apply`
on exactly the answers kept, whatever the arrival order."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from tests.support.compute import TINY

from tessera.compute.diloco import Coordinator, DilocoConfig, encode_tensors, parameter_state
from tessera.tenant.round_intake import RoundIntake


def coordinator(**kw) -> Coordinator:
    return Coordinator(DilocoConfig(workload=TINY, workers=6, compression="int8", **kw))


def answers(reference, n=6):
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        pg = {k: torch.randn(v.shape, generator=g) * 1e-3 for k, v in reference.items()}
        out.append(encode_tensors(pg, "int8", DilocoConfig.model_fields["chunk"].default,
                                  {"kind": "pseudo_gradient", "round": 0, "worker": i}))
    return out


@pytest.mark.parametrize("aggregation", ["mean", "median"])
def test_streamed_round_equals_apply_on_the_answers_kept(tmp_path, aggregation):
    streamed, plain = coordinator(aggregation=aggregation), coordinator(aggregation=aggregation)
    payloads = answers(streamed.published)
    intake = RoundIntake(streamed, tmp_path / "intake")
    with ThreadPoolExecutor(max_workers=6) as pool:   # arrival order is the threads' business
        kept = list(pool.map(intake.take, reversed(payloads)))
    kept.pop(2)                                       # the 4th answer, caught after it was added
    update = intake.apply(kept)
    reference = plain.apply([plain.decode(p) for i, p in enumerate(payloads) if i != 3])
    assert update.contributors == reference.contributors == 5
    assert update.broadcast == reference.broadcast
    assert all(torch.equal(streamed.published[k], plain.published[k]) for k in plain.published)
    assert all(torch.equal(a, b) for a, b in zip(parameter_state(streamed.model).values(),
                                                 parameter_state(plain.model).values(), strict=True))
    assert not (tmp_path / "intake").exists()         # the spooled payloads are gone


def test_a_refused_payload_is_neither_folded_in_nor_kept(tmp_path):
    streamed = coordinator()
    payloads = answers(streamed.published, 2)
    intake = RoundIntake(streamed, tmp_path / "intake")
    first = intake.take(payloads[0])
    with pytest.raises(ValueError):
        intake.take(payloads[1][:-7])                  # truncated on the way
    assert intake.stream.count == 1 and intake.taken == [first]
    assert sorted(p.name for p in (tmp_path / "intake").iterdir()) == ["answer-0.bin"]


def test_memory_held_per_parameter_does_not_grow_with_answers(tmp_path):
    streamed = coordinator()
    n_params = sum(t.numel() for t in streamed.published.values())
    intake = RoundIntake(streamed, tmp_path / "intake")
    sizes = []
    for payload in answers(streamed.published, 12):
        intake.take(payload)
        sizes.append(intake.stream.bytes() / n_params)
    assert sizes[3] == sizes[-1] <= 40


@pytest.mark.parametrize("aggregation", ["mean", "median"])
def test_a_step_taken_again_without_a_caught_answer_has_the_bits_of_one_without_it(
        tmp_path, aggregation):
    """The coordinator takes the outer step while the round's replays run (issue 16) and, when
    a replay then catches a worker, puts its state back and steps again without that answer
    (tenant/coordinator.py `_step_again`): the result must be bitwise the step that never saw
    it, published parameters, outer optimizer and broadcast alike (else the workers, who apply
    the broadcast themselves, would drift from the coordinator)."""
    speculative, plain = coordinator(aggregation=aggregation), coordinator(aggregation=aggregation)
    payloads = answers(speculative.published, 4)
    intake = RoundIntake(speculative, tmp_path / "intake")
    kept = [intake.take(p) for p in payloads]
    before = speculative.state_dict()
    first = intake.apply(kept, keep=True)                 # every answer: the step taken at once
    assert (tmp_path / "intake").exists() or aggregation == "median"
    speculative.load_state_dict(before)                   # answer 1 caught by its replay
    again = intake.apply([k for i, k in enumerate(kept) if i != 1], keep=True)
    intake.close()
    reference = plain.apply([plain.decode(p) for i, p in enumerate(payloads) if i != 1])
    assert first.broadcast != reference.broadcast         # the caught answer did count at first
    assert again.contributors == reference.contributors == 3
    assert again.broadcast == reference.broadcast
    assert all(torch.equal(speculative.published[k], plain.published[k]) for k in plain.published)
    assert all(torch.equal(a, b) for a, b in zip(parameter_state(speculative.model).values(),
                                                 parameter_state(plain.model).values(), strict=True))
    assert speculative.state_dict()["optimizer"]["state"].keys() == \
        plain.state_dict()["optimizer"]["state"].keys()
    for key, state in plain.state_dict()["optimizer"]["state"].items():
        assert torch.equal(speculative.state_dict()["optimizer"]["state"][key]["momentum_buffer"],
                           state["momentum_buffer"])
    assert speculative.round == plain.round == 1
    assert not (tmp_path / "intake").exists()
