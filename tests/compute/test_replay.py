"""Commitments to a DiLoCo worker's intermediate states, replay of segments, and four cheaters."""

import copy
import hashlib
import struct

import pytest
import torch
from tests.support.compute import TINY

from tessera.compute.checkpoints import RoundCommitment, optimizer_tensors, segment_bounds, tensor_hash
from tessera.compute.diloco import DilocoConfig, PseudoGradient, Worker, new_model, parameter_state
from tessera.compute.replay import (
    CommittingWorker,
    SegmentOpening,
    check_round_links,
    commitment_from_states,
    open_segment,
    parameter_names,
    pseudo_gradient_matches,
    pseudo_gradient_of,
    replay_segment,
    verify_segment,
)
from tessera.compute.train import configure_determinism, split
from tessera.protocol import merkle
from tessera.protocol.sampling import select_segments

H, K, WORKER = 8, 2, 1          # 4 segments of 2 inner steps, 5 checkpoints + the payload leaf
CFG = DilocoConfig(workload=TINY, workers=4, inner_steps=H, rounds=2)


TOKENS: dict = {}


@pytest.fixture(scope="module")
def setup(corpus):
    configure_determinism(TINY)
    train_tokens, _ = split(corpus, TINY)
    TOKENS["train"] = train_tokens
    global_state = parameter_state(new_model(TINY))
    worker = CommittingWorker(CFG, WORKER, train_tokens)
    traces = [worker.run_round_committed(global_state, r, K) for r in range(2)]
    return train_tokens, global_state, traces


def verify(opening: SegmentOpening, commitment: RoundCommitment, tokens, worker=WORKER, **kw):
    return verify_segment(CFG, worker, commitment.round, commitment.root, commitment.n_leaves, K,
                          opening, tokens, **kw)


def opening_from(params, opts, commitment: RoundCommitment, s: int) -> SegmentOpening:
    return SegmentOpening(s, params[s], opts[s], commitment.proof(s), commitment.checkpoints[s + 1],
                          commitment.proof(s + 1), params[s + 1])


def verdicts(params, opts, commitment, tokens):
    return [verify(opening_from(params, opts, commitment, s), commitment, tokens)
            for s in range(commitment.n_segments)]


# --- honest worker ----------------------------------------------------------------------------


def test_committing_worker_is_bitwise_worker_run_round(setup):
    tokens, global_state, traces = setup
    plain = Worker(CFG, WORKER, tokens)
    for r in range(2):
        pg = plain.run_round(global_state, r)
        committed = traces[r].pseudo_gradient
        assert all(torch.equal(pg.tensors[n], committed.tensors[n]) for n in pg.tensors)
        assert pg.mean_inner_loss == committed.mean_inner_loss
    # the AdamW state the plain worker carries is the one committed at the end of round 1
    names = parameter_names(CFG)
    end = traces[1].commitment.checkpoints[-1]
    assert tensor_hash(optimizer_tensors(plain.optimizer.state_dict(), names)) == end.optimizer_hash
    assert tensor_hash(parameter_state(plain.model)) == end.params_hash


def test_segment_bounds():
    assert segment_bounds(8, 2) == [0, 2, 4, 6, 8]
    assert segment_bounds(8, 3) == [0, 3, 6, 8]
    assert segment_bounds(8, 8) == [0, 8]
    assert segment_bounds(8, 20) == [0, 8]
    with pytest.raises(ValueError):
        segment_bounds(8, 0)


def test_honest_segments_replay_bitwise(setup):
    tokens, _, traces = setup
    for trace in traces:  # round 0 starts from an empty AdamW state, round 1 from a carried one
        c = trace.commitment
        assert c.n_segments == 4 and c.n_leaves == 6 and c.payload_segment == 4
        for s in range(c.n_segments):
            v = verify(open_segment(trace, s), c, tokens)
            assert v.ok and v.reason == "bitwise" and v.max_abs_diff == 0.0, (trace.commitment.round, s)


def test_replay_with_uneven_segments(setup):
    tokens, global_state, _ = setup
    trace = CommittingWorker(CFG, 2, tokens).run_round_committed(global_state, 0, 3)
    assert [cp.step for cp in trace.commitment.checkpoints] == [0, 3, 6, 8]
    for s in range(3):
        rep = replay_segment(CFG, 2, 0, trace.params[s], trace.optimizer_states[s], s, k=3,
                             train_tokens=tokens, claimed_end_state=trace.params[s + 1])
        assert rep.checkpoint == trace.commitment.checkpoints[s + 1] and rep.max_abs_diff == 0.0


def test_round_links_and_pseudo_gradient_binding(setup):
    _, global_state, traces = setup
    c0, c1 = traces[0].commitment, traces[1].commitment
    assert check_round_links(c0, global_state) == []
    assert check_round_links(c1, global_state, c0) == []
    assert pseudo_gradient_matches(global_state, traces[1].params[-1], traces[1].pseudo_gradient.tensors)
    # a worker that resets its AdamW state between rounds, or starts elsewhere, is seen without replay
    reset = commit_as([global_state, *traces[1].params[1:]],
                      [{"state": {}}, *traces[1].optimizer_states[1:]], round=1)
    assert any("AdamW" in p for p in check_round_links(reset, global_state, c0))
    moved = {n: t + 1e-3 for n, t in global_state.items()}
    assert check_round_links(c0, moved)
    bad_pg = {n: t.clone() for n, t in traces[1].pseudo_gradient.tensors.items()}
    next(iter(bad_pg.values())).view(-1)[0] += 1e-6
    assert not pseudo_gradient_matches(global_state, traces[1].params[-1], bad_pg)


def test_tensor_hash_is_canonical():
    a = {"x": torch.arange(6, dtype=torch.float32).view(2, 3), "y": torch.ones(2)}
    assert tensor_hash(a) == tensor_hash({"y": torch.ones(2), "x": a["x"].clone()})
    assert tensor_hash(a) == tensor_hash({"x": a["x"].t().contiguous().t(), "y": a["y"]})  # layout-free
    variants = [
        {"x": a["x"].reshape(3, 2), "y": a["y"]},                       # same bytes, other shape
        {"x": a["x"].double(), "y": a["y"]},                            # other dtype
        {"z": a["x"], "y": a["y"]},                                     # other name
        {"x": torch.nextafter(a["x"], torch.tensor(10.0)), "y": a["y"]},  # one ulp
        {"x": a["x"]},                                                  # a tensor fewer
    ]
    assert len({tensor_hash(v) for v in variants} | {tensor_hash(a)}) == len(variants) + 1


def _tensor_hash_as_specified(tensors) -> bytes:
    """The canonical form of the module docstring, written plainly (one copy per tensor)."""
    h = hashlib.sha256(b"tessera/tensors/v1")
    h.update(struct.pack("<Q", len(tensors)))
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        name_b, dtype_b = name.encode(), str(t.dtype).removeprefix("torch.").encode()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        h.update(struct.pack("<I", len(name_b)) + name_b + struct.pack("<I", len(dtype_b)) + dtype_b
                 + struct.pack("<I", t.dim()) + b"".join(struct.pack("<Q", d) for d in t.shape)
                 + struct.pack("<Q", len(raw)) + raw)
    return h.digest()


def test_tensor_hash_matches_its_specification():
    """The fast path (cached headers, bytes hashed in place) hashes exactly the specified bytes,
    for every kind of tensor a state holds or a worker could send."""
    cases = {"weights": torch.randn(3, 4), "scalar_step": torch.tensor(5.0),
             "ints": torch.arange(10), "transposed": torch.randn(4, 3).t(),
             "empty": torch.zeros(0, 3), "bf16": torch.ones(2, dtype=torch.bfloat16),
             "bools": torch.tensor([True, False]), "f64": torch.randn(2, 2, dtype=torch.float64),
             "with_grad": torch.randn(5, requires_grad=True)}
    for name, t in cases.items():
        assert tensor_hash({name: t}) == _tensor_hash_as_specified({name: t}), name
    assert tensor_hash(cases) == _tensor_hash_as_specified(cases)


def test_worker_that_cannot_open_its_commitment_fails(setup):
    tokens, _, traces = setup
    trace = traces[1]
    op = open_segment(trace, 1)
    other = copy.deepcopy(op)
    other.start_params = trace.params[0]
    assert verify(other, trace.commitment, tokens).reason.startswith("opened start state")
    other = copy.deepcopy(op)
    other.end_checkpoint = trace.commitment.checkpoints[3]
    assert not verify(other, trace.commitment, tokens).ok


def test_supplied_optimizer_hyperparameters_are_ignored(setup):
    tokens, _, traces = setup
    trace = traces[1]
    op = open_segment(trace, 2)
    op.start_optimizer_state = copy.deepcopy(op.start_optimizer_state)
    op.start_optimizer_state["param_groups"][0]["lr"] = 0.0  # a cheater's "no-op" optimizer
    assert verify(op, trace.commitment, tokens).reason == "bitwise"


def test_tolerance_path(setup):
    """Another GPU model's honest end state differs in the last bits: accepted within the
    tolerance when the opened end parameters match the committed hash, refused beyond it."""
    tokens, _, traces = setup
    trace = traces[0]
    params = [dict(p) for p in trace.params]
    params[2] = {n: t + 1e-7 * torch.sign(t) for n, t in params[2].items()}
    c = commit_as(params, trace.optimizer_states)
    op = opening_from(params, trace.optimizer_states, c, 1)
    assert not verify(op, c, tokens).ok
    v = verify(op, c, tokens, tolerance=1e-5)
    assert v.ok and v.reason == "within tolerance" and 0 < v.max_abs_diff < 1e-5
    assert not verify(op, c, tokens, tolerance=1e-9).ok
    op.end_params = trace.params[2]  # not the committed end parameters
    assert not verify(op, c, tokens, tolerance=1e-5).ok


# --- cheaters ---------------------------------------------------------------------------------


def commit_as(states, opts, round=0, worker=WORKER) -> RoundCommitment:
    """What a worker that did not train commits to: these states, and the payload its last state
    gives (so only a replay can tell)."""
    w = CommittingWorker(CFG, worker, TOKENS["train"])
    pg = PseudoGradient(worker, round, pseudo_gradient_of(states[0], states[-1]), 0.0, 0.0, H, 0, 0.0)
    return commitment_from_states(w, round, K, states, opts, pg).commitment


def test_cheater_a_random_pseudo_gradient(setup):
    """Sends a random pseudo-gradient and commits to states interpolated towards it."""
    tokens, global_state, traces = setup
    g = torch.Generator().manual_seed(7)
    fake_pg = {n: 1e-3 * torch.randn(t.shape, generator=g) for n, t in global_state.items()}
    end = {n: global_state[n] - fake_pg[n] for n in global_state}
    states = [{n: global_state[n] + (end[n] - global_state[n]) * (s / 4) for n in global_state}
              for s in range(5)]
    states[0] = global_state
    opts = traces[0].optimizer_states  # even with honest-looking AdamW states
    c = commit_as(states, opts)
    assert check_round_links(c, global_state) == []  # starts where it should
    vs = verdicts(states, opts, c, tokens)
    assert not any(v.ok for v in vs)
    assert all(v.max_abs_diff > 0 for v in vs)


def test_cheater_a_honest_except_the_last_state(setup):
    """Trains honestly but swaps in a made-up final state: only the last segment fails, so
    sampling must be able to draw it."""
    tokens, global_state, traces = setup
    params = [dict(p) for p in traces[0].params]
    params[-1] = {n: t + 0.01 for n, t in params[-1].items()}
    c = commit_as(params, traces[0].optimizer_states)
    vs = verdicts(params, traces[0].optimizer_states, c, tokens)
    assert [v.ok for v in vs] == [True, True, True, False]


def test_cheater_b_fewer_inner_steps(setup):
    """Claims H steps but takes half as many (k/2 per committed segment)."""
    tokens, global_state, _ = setup
    lazy_cfg = CFG.model_copy(update={"inner_steps": H // 2})
    lazy = CommittingWorker(lazy_cfg, WORKER, tokens).run_round_committed(global_state, 0, K // 2)
    c = commit_as(lazy.params, lazy.optimizer_states)
    assert not any(v.ok for v in verdicts(lazy.params, lazy.optimizer_states, c, tokens))


def test_cheater_b_stops_half_way(setup):
    """Trains the first half, then claims no further progress: the faked half fails, and a
    sampled check catches exactly when it draws a faked segment."""
    tokens, global_state, traces = setup
    params = [dict(p) for p in traces[0].params]
    opts = list(traces[0].optimizer_states)
    params[3:], opts[3:] = [params[2]] * 2, [opts[2]] * 2
    c = commit_as(params, opts)
    vs = verdicts(params, opts, c, tokens)
    assert [v.ok for v in vs] == [True, True, False, False]
    for i in range(8):  # sampling one segment per round from randomness after the commitment
        (s,) = select_segments(merkle.hash_leaf(c.root[:31] + bytes([i])), c.n_segments, 1)
        assert vs[s].ok == (s < 2)


@pytest.mark.parametrize("how", ["other shard", "other seed"])
def test_cheater_c_wrong_data(setup, how):
    tokens, global_state, _ = setup
    if how == "other shard":  # trains on worker 2's shard, claims to be worker 1
        trace = CommittingWorker(CFG, 2, tokens).run_round_committed(global_state, 0, K)
    else:  # its own shard, but batches from another round's generator
        trace = CommittingWorker(CFG, WORKER, tokens).run_round_committed(global_state, 5, K)
    c = commit_as(trace.params, trace.optimizer_states)
    assert check_round_links(c, global_state) == []
    assert not any(v.ok for v in verdicts(trace.params, trace.optimizer_states, c, tokens))


def test_cheater_d_copies_another_worker(setup):
    """Worker 1 re-sends worker 0's work (pseudo-gradient and states) under its own name."""
    tokens, global_state, _ = setup
    honest0 = CommittingWorker(CFG, 0, tokens).run_round_committed(global_state, 0, K)
    c = commit_as(honest0.params, honest0.optimizer_states)
    assert check_round_links(c, global_state) == []
    assert pseudo_gradient_matches(global_state, honest0.params[-1], honest0.pseudo_gradient.tensors)
    assert not any(v.ok for v in verdicts(honest0.params, honest0.optimizer_states, c, tokens))
    # and the copied commitment is worker 0's only: its leaves do not open under worker 1's root
    assert c.root != honest0.commitment.root
