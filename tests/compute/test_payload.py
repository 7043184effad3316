"""The payload segment: what a worker sends is bound to its last committed state.

A worker that trains honestly (so every training segment replays bitwise) and sends something
else must fail `verify_payload` on every round it does so, whatever it puts in the payload leaf;
an honest worker passes in every round, with its int8 residual carried across rounds."""

import hashlib

import pytest
import torch
from tests.support.compute import TINY, committed_rounds

from tessera.compute.checkpoints import PayloadLeaf, RoundCommitment, tensor_hash
from tessera.compute.diloco import DilocoConfig, Worker, encode_pseudo_gradient
from tessera.compute.replay import (
    CommittingWorker,
    PayloadOpening,
    check_round_links,
    open_payload,
    verify_payload,
)

H, K, WORKER = 8, 2, 1
CFG = DilocoConfig(workload=TINY, workers=4, inner_steps=H, rounds=3, compression="int8")


@pytest.fixture(scope="module")
def setup(corpus):
    return committed_rounds(corpus, CFG, WORKER, K, 3)


def check(trace, start, opening: PayloadOpening | None = None, commitment: RoundCommitment | None = None):
    c = commitment or trace.commitment
    return verify_payload(CFG, WORKER, c.round, c.root, c.n_leaves, K, c.payload.result_hash, start,
                          opening or open_payload(trace))


def test_honest_payload_derives_from_the_last_state_every_round(setup):
    tokens, start, traces = setup
    for trace in traces:
        v = check(trace, start)
        assert v.ok, (trace.commitment.round, v.reason)
    # the residual moves on: round 1 starts from a non-empty one, linked to round 0's
    assert traces[1].residual_in and tensor_hash(traces[1].residual_in) == \
        traces[0].commitment.payload.residual_out_hash
    assert check_round_links(traces[1].commitment, start, traces[0].commitment) == []


def test_committing_changes_nothing_a_plain_worker_sends(setup):
    """The payload of a committed round is bitwise what `Worker.encode` sends after a plain
    round: binding the payload costs the worker nothing but a hash."""
    tokens, start, traces = setup
    plain = Worker(CFG, WORKER, tokens)
    for trace in traces:
        pg = plain.run_round(start, trace.commitment.round)
        assert plain.encode(pg.tensors, trace.commitment.round) == trace.payload
    assert trace.commitment.payload.threads == torch.get_num_threads()


def seal_other(tokens, start, trace, tensors) -> tuple[RoundCommitment, PayloadOpening]:
    """A worker that trained exactly as `trace` (same states) but sends `tensors` encoded with
    its true residual, and commits to that payload in its payload leaf (else the answer's
    hash check refuses it before anything else)."""
    payload, residual_out = encode_pseudo_gradient(tensors, trace.residual_in, CFG,
                                                   trace.commitment.round, WORKER)
    honest = trace.commitment
    leaf = PayloadLeaf(hashlib.sha256(payload).digest(), honest.payload.residual_in_hash,
                       tensor_hash(residual_out), honest.payload.threads, honest.payload.profile)
    c = RoundCommitment(honest.round, WORKER, H, K, honest.checkpoints, leaf)
    opening = open_payload(trace)
    opening.payload, opening.start_proof = leaf, c.proof(0)
    opening.end_proof, opening.payload_proof = c.proof(c.payload_segment), c.proof(c.payload_segment + 1)
    return c, opening


@pytest.mark.parametrize("poison", ["negated", "scaled x10", "random", "one element"])
def test_a_poisoned_payload_fails_though_every_segment_replays(setup, poison):
    tokens, start, traces = setup
    trace = traces[1]
    honest = trace.pseudo_gradient.tensors
    g = torch.Generator().manual_seed(3)
    tensors = {"negated": lambda t: -t, "scaled x10": lambda t: 10 * t,
               "random": lambda t: 1e-3 * torch.randn(t.shape, generator=g),
               "one element": lambda t: t.clone()}[poison]
    sent = {n: tensors(t) for n, t in honest.items()}
    if poison == "one element":
        next(iter(sent.values())).view(-1)[0] += 0.05
    c, opening = seal_other(tokens, start, trace, sent)
    v = check(trace, start, opening, c)
    assert not v.ok and "payload sent is not" in v.reason


def test_a_made_up_residual_fails(setup):
    """The residual is the other free input of the payload: a worker may not pick it."""
    tokens, start, traces = setup
    trace = traces[1]
    opening = open_payload(trace)
    opening.residual_in = {n: t + 1e-3 for n, t in trace.residual_in.items()}
    v = check(trace, start, opening)
    assert not v.ok and "residual is not the committed" in v.reason
    # and committing to a made-up one breaks the link to the previous round's
    fake = {n: t + 1e-3 for n, t in trace.residual_in.items()}
    payload, out = encode_pseudo_gradient(trace.pseudo_gradient.tensors, fake, CFG, 1, WORKER)
    leaf = PayloadLeaf(hashlib.sha256(payload).digest(), tensor_hash(fake), tensor_hash(out),
                       trace.commitment.payload.threads, trace.commitment.payload.profile)
    c = RoundCommitment(1, WORKER, H, K, trace.commitment.checkpoints, leaf)
    problems = check_round_links(c, start, traces[0].commitment)
    assert any("residual" in p for p in problems)


def test_a_payload_leaf_naming_another_result_or_state_fails(setup):
    tokens, start, traces = setup
    trace = traces[0]
    c = trace.commitment
    v = verify_payload(CFG, WORKER, 0, c.root, c.n_leaves, K, b"\x01" * 32, start, open_payload(trace))
    assert not v.ok and "another result" in v.reason
    opening = open_payload(trace)
    opening.end_params = trace.params[-2]   # not the last committed state
    assert not check(trace, start, opening).ok
    moved = {n: t + 1e-3 for n, t in start.items()}   # not the round's start
    assert not check(trace, moved).ok
    assert not verify_payload(CFG, WORKER, 0, c.root, c.n_leaves + 1, K, c.payload.result_hash,
                              start, open_payload(trace)).ok


def test_the_payload_leaf_signs_threads_and_profile(setup):
    _, _, traces = setup
    leaf = traces[0].commitment.payload
    other = PayloadLeaf(leaf.result_hash, leaf.residual_in_hash, leaf.residual_out_hash,
                        leaf.threads + 1, leaf.profile)
    assert other.leaf(0, WORKER) != leaf.leaf(0, WORKER)
    renamed = PayloadLeaf(leaf.result_hash, leaf.residual_in_hash, leaf.residual_out_hash,
                          leaf.threads, leaf.profile + "x")
    assert renamed.leaf(0, WORKER) != leaf.leaf(0, WORKER)


# --- the AdamW bounds clipping implies --------------------------------------------------------


def test_every_honest_state_is_within_the_bounds(setup):
    from tessera.compute.replay import state_bounds
    _, _, traces = setup
    for trace in traces:
        for opt in trace.optimizer_states:
            assert state_bounds(opt, TINY.max_grad_norm) is None


def test_a_degenerate_adamw_state_is_out_of_bounds_wherever_it_is_opened(setup):
    """The "jump": moments so large that gradients vanish in float32. Refused by the payload
    check (the round's last state) and by a replay of any segment that starts there."""
    import copy

    from tessera.compute.replay import (
        SegmentOpening,
        commitment_from_states,
        state_bounds,
        verify_segment,
    )
    tokens, start, traces = setup
    trace = traces[1]
    jumped = copy.deepcopy(trace.optimizer_states[-1])
    for slots in jumped["state"].values():
        slots["exp_avg"] = torch.full_like(slots["exp_avg"], 1e15)
        slots["exp_avg_sq"] = torch.full_like(slots["exp_avg_sq"], 1e30)
    assert "second moments" in state_bounds(jumped, TINY.max_grad_norm)
    for reason, edit in [("NaN", lambda s: s["exp_avg"].view(-1).__setitem__(0, float("nan"))),
                         ("negative", lambda s: s["exp_avg_sq"].view(-1).__setitem__(0, -1.0)),
                         ("first moment", lambda s: s["exp_avg"].mul_(1e4))]:
        bad = copy.deepcopy(trace.optimizer_states[-1])
        edit(next(iter(bad["state"].values())))
        assert reason in state_bounds(bad, TINY.max_grad_norm)
    states = list(trace.params)
    # jumped at segment 1's end (checkpoint 2) and never came back: the payload check sees it
    opts = [*trace.optimizer_states[:2], *[jumped] * (len(states) - 2)]
    w = CommittingWorker(CFG, WORKER, tokens)
    w.feedback.residual = {k: v.clone() for k, v in trace.residual_in.items()}
    made_up = commitment_from_states(w, 1, K, states, opts, trace.pseudo_gradient)
    v = check(made_up, start)
    assert not v.ok and "last state out of bounds" in v.reason
    # and a replay of a segment that starts from the jumped state refuses it before replaying
    c = made_up.commitment
    opening = SegmentOpening(2, states[2], jumped, c.proof(2), c.checkpoints[3], c.proof(3))
    v = verify_segment(CFG, WORKER, 1, c.root, c.n_leaves, K, opening, tokens)
    assert not v.ok and "start state out of bounds" in v.reason
