"""Proof-of-learning for DiLoCo workers: commit to intermediate states, replay segments.

A worker's round is H inner AdamW steps from the published global parameters, with batches from
a generator seeded by ``derive_seed(job_seed, round, worker)`` (``compute/diloco.py``). Every
``k`` inner steps the worker hashes its parameters and its AdamW state into a checkpoint, and
the round's checkpoints into a Merkle root (hashes, leaves and ``RoundCommitment``:
``compute/checkpoints.py``). A verifier that draws segment ``s`` (``protocol/sampling.py``) gets
the full start state of checkpoint ``s`` from the worker, checks it against the committed leaf,
re-runs the steps of that segment (``replay_segment``) and compares the end with checkpoint
``s + 1``: bitwise on CPU with the same thread count, within a tolerance elsewhere.

Pure torch, no I/O. ``CommittingWorker.run_round_committed`` mirrors ``Worker.run_round``
line for line (tested bitwise against it) because diloco.py has no per-step hook yet.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

import torch

from tessera.compute import numerics
from tessera.compute.checkpoints import (
    Checkpoint,
    PayloadLeaf,
    RoundCommitment,
    checkpoint_of,
    clone_optimizer_state,
    segment_bounds,
    tensor_hash,
)
from tessera.compute.diloco import (
    DilocoConfig,
    PseudoGradient,
    State,
    Worker,
    derive_seed,
    encode_pseudo_gradient,
    load_parameters,
    parameter_state,
    shard_for,
)
from tessera.compute.model import ByteGPT
from tessera.compute.train import batch, inner_step
from tessera.protocol import merkle


@dataclass
class RoundTrace:
    """A committing worker's round: what it sends, what it commits to, and (when kept) the full
    states behind every checkpoint, which it must hand over when a segment is challenged."""

    pseudo_gradient: PseudoGradient
    commitment: RoundCommitment
    params: list[State | None] | None            # parameters at each checkpoint (None: not kept)
    optimizer_states: list[dict | None] | None   # AdamW state_dict at each checkpoint
    commit_s: float                       # time spent copying and hashing states
    payload: bytes                        # what the worker sends (the payload leaf's result)
    residual_in: State                    # the error-feedback residual the round started with


# ---------------------------------------------------------------------------------------------
# the committing worker


class CommittingWorker(Worker):
    """A DiLoCo `Worker` that also commits to its state every `k` inner steps.

    `run_round_committed` is `Worker.run_round` with checkpoints added between steps and nothing
    else changed: same model, optimizer, generator and order of operations, so the
    pseudo-gradient and the AdamW state are bitwise those of `Worker.run_round` (tested)."""

    def parameter_names(self) -> list[str]:
        return [name for name, _ in self.model.named_parameters()]

    def _checkpoint(self, step: int, names: list[str], keep: bool,
                    params: list, opts: list) -> Checkpoint:
        with torch.no_grad():  # hash in place; copy only what is kept
            live = {name: p.detach() for name, p in self.model.named_parameters()}
            sd = self.optimizer.state_dict()
            cp = checkpoint_of(step, live, sd, names)
            params.append({name: t.clone() for name, t in live.items()} if keep else None)
            opts.append(clone_optimizer_state(sd) if keep else None)
        return cp

    def run_round_committed(self, global_state: State, round: int, k: int,
                            keep_states: bool | Container[int] = True) -> RoundTrace:
        """One round, committing every `k` inner steps. `keep_states`: keep the full states of
        every checkpoint (True), of none (False), or of the listed checkpoint indices only
        (entries for the others are None)."""
        def keep(index: int) -> bool:
            return keep_states if isinstance(keep_states, bool) else index in keep_states

        w = self.config.workload
        bounds = segment_bounds(self.config.inner_steps, k)
        names = self.parameter_names()
        started = time.perf_counter()
        commit_s = 0.0
        params: list[State] = []
        opts: list[dict] = []
        checkpoints: list[Checkpoint] = []
        load_parameters(self.model, global_state)
        gen = torch.Generator().manual_seed(derive_seed(w.seed, round, self.worker))
        self.model.train()
        losses = []
        t0 = time.perf_counter()
        checkpoints.append(self._checkpoint(0, names, keep(0), params, opts))
        commit_s += time.perf_counter() - t0
        next_cp = 1
        first = round * self.config.inner_steps
        for step in range(self.config.inner_steps):
            x, y = batch(self.shard, w, gen, self.device)
            losses.append(inner_step(self.model, self.optimizer, x, y, w.max_grad_norm,
                                     w.learning_rate_at(first + step)))
            if step + 1 == bounds[next_cp]:
                t0 = time.perf_counter()
                checkpoints.append(self._checkpoint(step + 1, names, keep(next_cp), params, opts))
                commit_s += time.perf_counter() - t0
                next_cp += 1
        with torch.no_grad():
            pg = {name: (global_state[name].to(self.device) - p).to(torch.float32).cpu()
                  for name, p in self.model.named_parameters()}
        losses_t = torch.stack(losses).cpu()
        result = PseudoGradient(self.worker, round, pg, losses_t.mean().item(), losses_t[-1].item(),
                                self.config.inner_steps,
                                self.config.inner_steps * w.batch_size * w.block_size,
                                time.perf_counter() - started)
        kept_any = keep_states is not False
        return self.seal(round, k, checkpoints, result, params if kept_any else None,
                         opts if kept_any else None, commit_s)

    def seal(self, round: int, k: int, checkpoints: list[Checkpoint], pg: PseudoGradient,
             params: list | None, opts: list | None, commit_s: float = 0.0,
             threads: int | None = None) -> RoundTrace:
        """Encode the round's payload with this worker's residual (which moves on), and commit
        to the checkpoints plus the payload leaf that binds the payload to the last of them
        (`threads`: what it signs it trained with; the live thread count unless told)."""
        residual_in = self.residual()
        payload = self.encode(pg.tensors, round)
        leaf = PayloadLeaf(hashlib.sha256(payload).digest(), tensor_hash(residual_in),
                           tensor_hash(self.residual()), threads or torch.get_num_threads(),
                           numerics.active_profile(self.device.type))
        commitment = RoundCommitment(round, self.worker, self.config.inner_steps, k, checkpoints,
                                     leaf)
        return RoundTrace(pg, commitment, params, opts, commit_s, payload, residual_in)


def commitment_from_states(worker: CommittingWorker, round: int, k: int,
                           params: Sequence[State], optimizer_states: Sequence[Mapping],
                           pg: PseudoGradient) -> RoundTrace:
    """Commit to a list of states and send `pg` (what a cheater that did not train does)."""
    steps = segment_bounds(worker.config.inner_steps, k)
    if len(params) != len(steps) or len(optimizer_states) != len(steps):
        raise ValueError(f"need {len(steps)} states, got {len(params)} and {len(optimizer_states)}")
    names = worker.parameter_names()
    checkpoints = [checkpoint_of(s, p, o, names)
                   for s, p, o in zip(steps, params, optimizer_states, strict=True)]
    return worker.seal(round, k, checkpoints, pg, list(params), list(optimizer_states))


# ---------------------------------------------------------------------------------------------
# bounds every honest state obeys

BOUND_SLACK = 1e-3   # relative: float32 rounding of the moments' updates stays far below this


def state_bounds(optimizer_state: Mapping, max_grad_norm: float) -> str | None:
    """Why this AdamW state cannot come from training whose every gradient was clipped to
    global L2 norm c = `max_grad_norm` (`train.inner_step`), or None when it can.

    AdamW's moments are exponential averages from zero: m_t = β1·m + (1−β1)·g_t and
    v_t = β2·v + (1−β2)·g_t², weights summing to less than 1. With ‖g_t‖₂ ≤ c at every step,
    ‖m_t‖₂ ≤ c and Σᵢ v_t,i ≤ c² (triangle inequality; induction). Why it matters: a worker
    that jumps to huge moments (|m| ~ 1e15, v ~ 1e30) makes every later gradient vanish in
    float32, so it can "train" the rest of its round, bitwise replayable, without computing a
    single gradient. Such a state fails here wherever it is opened (a spot-checked segment's
    start, and the round's last state, which the payload check opens every round)."""
    c = float(max_grad_norm)
    v_sum, m_sq, steps = 0.0, 0.0, set()
    for slots in optimizer_state.get("state", {}).values():
        m, v, step = slots.get("exp_avg"), slots.get("exp_avg_sq"), slots.get("step")
        if m is None or v is None:
            return "AdamW state lacks exp_avg or exp_avg_sq"
        if not (torch.isfinite(m).all() and torch.isfinite(v).all()):
            return "AdamW state holds a NaN or an infinity"
        if (v < 0).any():
            return "AdamW second moment is negative"
        v_sum += v.double().sum().item()
        m_sq += m.double().pow(2).sum().item()
        steps.add(float(step) if step is not None else None)
    if len(steps) > 1:
        return f"AdamW step counts differ between parameters: {sorted(map(str, steps))}"
    if v_sum > c * c * (1 + BOUND_SLACK):
        return (f"AdamW second moments sum to {v_sum:.4g}, above the {c * c:.4g} that gradients "
                f"clipped to norm {c:g} allow")
    if m_sq ** 0.5 > c * (1 + BOUND_SLACK):
        return (f"AdamW first moment has norm {m_sq ** 0.5:.4g}, above the {c:g} that gradients "
                f"clipped to norm {c:g} allow")
    return None


# ---------------------------------------------------------------------------------------------
# replay


@dataclass
class SegmentReplay:
    segment: int
    start_step: int
    end_step: int
    checkpoint: Checkpoint        # the replayed end state's hashes
    leaf: bytes                   # its Merkle leaf
    end_params: State
    end_optimizer_state: dict
    max_abs_diff: float | None    # vs the claimed end parameters, when given (inf: wrong layout)
    seconds: float                # wall time of the replay (model build, data skip, steps, hash)


def max_abs_difference(a: State, b: Mapping[str, torch.Tensor]) -> float:
    """Largest |a - b| over all parameters (inf when names or shapes differ)."""
    if set(a) != set(b):
        return float("inf")
    worst = 0.0
    for name, t in a.items():
        other = b[name]
        if not isinstance(other, torch.Tensor) or other.shape != t.shape:
            return float("inf")
        d = (t.detach().cpu().double() - other.detach().cpu().double()).abs()
        if d.numel():
            m = d.max().item()
            if m != m:  # NaN
                return float("inf")
            worst = max(worst, m)
    return worst


def replay_segment(config: DilocoConfig, worker: int, round: int, start_state: State,
                   start_optimizer_state: Mapping, segment: int, *, k: int,
                   train_tokens: torch.Tensor, claimed_end_state: State | None = None,
                   device: torch.device | str = "cpu") -> SegmentReplay:
    """Re-run inner steps [bounds[segment], bounds[segment+1]) of `worker`'s round `round` from
    the given start parameters and AdamW state, exactly as `Worker.run_round` takes them.

    The data generator is re-derived from (job seed, round, worker) and advanced past the
    earlier steps' batches. AdamW hyperparameters come from `config`, never from the supplied
    state (only its per-parameter tensors are used). Determinism settings (threads,
    deterministic algorithms) are the caller's: `configure_determinism(config.workload)`."""
    started = time.perf_counter()
    w = config.workload
    bounds = segment_bounds(config.inner_steps, k)
    if not 0 <= segment < len(bounds) - 1:
        raise ValueError(f"segment {segment} is not in [0, {len(bounds) - 1})")
    start, end = bounds[segment], bounds[segment + 1]
    device = torch.device(device)
    shard = shard_for(train_tokens, worker, config.workers)
    model = _replay_model(config, device)
    load_parameters(model, start_state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=w.learning_rate, weight_decay=w.weight_decay)
    fresh_groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": clone_optimizer_state(start_optimizer_state)["state"],
                               "param_groups": fresh_groups})
    gen = torch.Generator().manual_seed(derive_seed(w.seed, round, worker))
    high = len(shard) - w.block_size - 1
    for _ in range(start):  # skip the earlier steps' batches: the same draws as train.batch makes
        torch.randint(high, (w.batch_size,), generator=gen)
    model.train()
    first = round * config.inner_steps
    for step in range(start, end):
        x, y = batch(shard, w, gen, device)
        inner_step(model, optimizer, x, y, w.max_grad_norm, w.learning_rate_at(first + step))
    with torch.no_grad():
        end_params = parameter_state(model)
    end_opt = clone_optimizer_state(optimizer.state_dict())
    names = [name for name, _ in model.named_parameters()]
    cp = checkpoint_of(end, end_params, end_opt, names)
    diff = max_abs_difference(end_params, claimed_end_state) if claimed_end_state is not None else None
    return SegmentReplay(segment, start, end, cp, cp.leaf(round, worker), end_params, end_opt, diff,
                         time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# the verifier's side of one challenged segment


@dataclass
class SegmentOpening:
    """What a challenged worker hands over for segment s: the full start state (checkpoint s),
    the end checkpoint's hashes, both Merkle proofs, and (for tolerance checks) the end
    parameters."""

    segment: int
    start_params: State
    start_optimizer_state: dict
    start_proof: list[bytes]
    end_checkpoint: Checkpoint
    end_proof: list[bytes]
    end_params: State | None = None


def open_segment(trace: RoundTrace, segment: int) -> SegmentOpening:
    """The honest answer to a challenge on `segment` (needs a trace with kept states)."""
    if (trace.params is None or trace.optimizer_states is None or trace.params[segment] is None
            or trace.optimizer_states[segment] is None):
        raise ValueError(f"this trace did not keep the states of checkpoint {segment}; "
                         "it cannot answer a challenge on that segment")
    c = trace.commitment
    return SegmentOpening(segment, trace.params[segment], trace.optimizer_states[segment],
                          c.proof(segment), c.checkpoints[segment + 1], c.proof(segment + 1),
                          trace.params[segment + 1])


@dataclass
class Verdict:
    ok: bool
    reason: str                      # "bitwise", "within tolerance", or why it failed
    max_abs_diff: float | None = None
    replay: SegmentReplay | None = None


def verify_segment(config: DilocoConfig, worker: int, round: int, root: bytes, n_leaves: int,
                   k: int, opening: SegmentOpening, train_tokens: torch.Tensor,
                   tolerance: float = 0.0, device: torch.device | str = "cpu") -> Verdict:
    """Check one challenged segment against a committed round root.

    1. the opened start state hashes to leaf `segment` and the end checkpoint is leaf
       `segment + 1` under `root` (a worker that cannot open its own commitment fails);
    2. replay the segment; it passes when the replay's parameter and AdamW hashes equal the
       committed end checkpoint (bitwise), or, with `tolerance > 0`, when the opened end
       parameters match the committed hash and lie within `tolerance` (max abs) of the replay."""
    s = opening.segment
    bounds = segment_bounds(config.inner_steps, k)
    out_of_bounds = state_bounds(opening.start_optimizer_state, config.workload.max_grad_norm)
    if n_leaves != len(bounds) + 1 or not 0 <= s < len(bounds) - 1:
        return Verdict(False, f"segment {s} / {n_leaves} leaves do not fit H={config.inner_steps}, "
                              f"k={k} (training segments are 0 .. {len(bounds) - 2})")
    names = parameter_names(config)
    start_cp = checkpoint_of(bounds[s], opening.start_params, opening.start_optimizer_state, names)
    if not merkle.verify(root, start_cp.leaf(round, worker), s, opening.start_proof, n_leaves):
        return Verdict(False, "opened start state does not match the committed checkpoint")
    end_cp = opening.end_checkpoint
    if end_cp.step != bounds[s + 1] or not merkle.verify(root, end_cp.leaf(round, worker), s + 1,
                                                         opening.end_proof, n_leaves):
        return Verdict(False, "end checkpoint is not the committed one")
    if out_of_bounds:
        return Verdict(False, f"start state out of bounds: {out_of_bounds}")
    rep = replay_segment(config, worker, round, opening.start_params, opening.start_optimizer_state,
                         s, k=k, train_tokens=train_tokens, claimed_end_state=opening.end_params,
                         device=device)
    if rep.checkpoint == end_cp:
        return Verdict(True, "bitwise", rep.max_abs_diff, rep)
    if tolerance > 0 and opening.end_params is not None:
        if tensor_hash(opening.end_params) != end_cp.params_hash:
            return Verdict(False, "opened end parameters do not match the committed hash",
                           rep.max_abs_diff, rep)
        if rep.max_abs_diff is not None and rep.max_abs_diff <= tolerance:
            return Verdict(True, "within tolerance", rep.max_abs_diff, rep)
    return Verdict(False, "replay does not reach the committed end state", rep.max_abs_diff, rep)


# ---------------------------------------------------------------------------------------------
# the payload segment: what the worker sent, recomputed from its last committed state


@dataclass
class PayloadOpening:
    """What a worker hands over for its payload segment: the last checkpoint's full state, the
    residual its round started with, the payload leaf, and the proofs. The round's start
    parameters are the verifier's (the published θ, or checkpoint 0 as served), checked
    against `start_checkpoint`."""

    start_checkpoint: Checkpoint
    start_proof: list[bytes]
    end_params: State
    end_optimizer_state: dict
    end_proof: list[bytes]
    payload: PayloadLeaf
    payload_proof: list[bytes]
    residual_in: State


def open_payload(trace: RoundTrace) -> PayloadOpening:
    """The honest answer to a check of the payload segment (needs the last state kept)."""
    c, last = trace.commitment, trace.commitment.payload_segment
    if trace.params is None or trace.params[last] is None or trace.optimizer_states[last] is None:
        raise ValueError("this trace did not keep its last state; it cannot open its payload")
    return PayloadOpening(c.checkpoints[0], c.proof(0), trace.params[last],
                          trace.optimizer_states[last], c.proof(last), c.payload,
                          c.proof(last + 1), trace.residual_in)


def verify_payload(config: DilocoConfig, worker: int, round: int, root: bytes, n_leaves: int,
                   k: int, result_hash: bytes, start_params: State,
                   opening: PayloadOpening) -> Verdict:
    """Check the payload segment against a committed round root: the opened last state and the
    payload leaf are under `root`, the payload leaf names `result_hash` (the signed commitment's),
    and `diloco.encode_pseudo_gradient(θ − θ_H, residual_in)` gives exactly that payload and the
    committed outgoing residual. A worker that trained honestly and sent something else (a
    poisoned update, another worker's result) fails here on every round it does so."""
    bounds = segment_bounds(config.inner_steps, k)
    last = len(bounds) - 1
    if n_leaves != len(bounds) + 1:
        return Verdict(False, f"{n_leaves} leaves do not fit H={config.inner_steps}, k={k}")
    leaf = opening.payload
    if leaf.result_hash != result_hash:
        return Verdict(False, "the payload leaf names another result than the signed commitment")
    start = opening.start_checkpoint
    if start.step != 0 or tensor_hash(start_params) != start.params_hash or not merkle.verify(
            root, start.leaf(round, worker), 0, opening.start_proof, n_leaves):
        return Verdict(False, "round start parameters are not the committed checkpoint 0")
    names = parameter_names(config)
    end = checkpoint_of(bounds[-1], opening.end_params, opening.end_optimizer_state, names)
    if not merkle.verify(root, end.leaf(round, worker), last, opening.end_proof, n_leaves):
        return Verdict(False, "opened last state does not match the committed checkpoint")
    if not merkle.verify(root, leaf.leaf(round, worker), last + 1, opening.payload_proof,
                         n_leaves):
        return Verdict(False, "payload leaf is not the committed one")
    if tensor_hash(opening.residual_in) != leaf.residual_in_hash:
        return Verdict(False, "opened residual is not the committed one")
    out_of_bounds = state_bounds(opening.end_optimizer_state, config.workload.max_grad_norm)
    if out_of_bounds:
        return Verdict(False, f"last state out of bounds: {out_of_bounds}")
    if set(opening.end_params) != set(start_params) or any(
            opening.end_params[n].shape != start_params[n].shape for n in start_params):
        return Verdict(False, "last state's parameters do not have the model's layout")
    payload, residual_out = encode_pseudo_gradient(
        pseudo_gradient_of(start_params, opening.end_params), opening.residual_in, config,
        round, worker)
    if hashlib.sha256(payload).digest() != result_hash:
        return Verdict(False, "the payload sent is not the one its committed last state gives")
    if tensor_hash(residual_out) != leaf.residual_out_hash:
        return Verdict(False, "the residual carried on is not the one this payload leaves")
    return Verdict(True, "payload derives from the committed last state")


_NAMES_CACHE: dict[str, list[str]] = {}
_MODEL_CACHE: dict[tuple[str, str], ByteGPT] = {}


def _replay_model(config: DilocoConfig, device: torch.device) -> ByteGPT:
    """One model object per (architecture, device), reused across replays: every parameter is
    overwritten by `load_parameters` and the model has no buffers, so only the build is saved."""
    key = (config.workload.model_dump_json(), str(device))
    if key not in _MODEL_CACHE:
        with torch.random.fork_rng(devices=[]):  # ByteGPT's init draws from the global RNG
            _MODEL_CACHE[key] = ByteGPT(config.workload).to(device)
    return _MODEL_CACHE[key]


def parameter_names(config: DilocoConfig) -> list[str]:
    """Parameter names of the job's model, in `named_parameters()` (and AdamW) order."""
    key = config.workload.model_dump_json()
    if key not in _NAMES_CACHE:
        with torch.random.fork_rng(devices=[]):
            model = ByteGPT(config.workload)
        _NAMES_CACHE[key] = [n for n, _ in model.named_parameters()]
    return list(_NAMES_CACHE[key])


def check_round_links(commitment: RoundCommitment, global_state: State,
                      previous: RoundCommitment | None = None) -> list[str]:
    """Cheap checks that need no replay: the round starts from the published parameters, and the
    AdamW state it starts from is the one the previous round ended with (empty in round 0)."""
    problems = []
    first = commitment.checkpoints[0]
    if first.params_hash != tensor_hash(global_state):
        problems.append("round does not start from the published global parameters")
    if previous is not None:
        if previous.worker != commitment.worker or previous.round + 1 != commitment.round:
            problems.append("previous commitment is not this worker's previous round")
        else:
            if first.optimizer_hash != previous.checkpoints[-1].optimizer_hash:
                problems.append("AdamW state at round start is not the one the previous round "
                                "ended with")
            if commitment.payload.residual_in_hash != previous.payload.residual_out_hash:
                problems.append("residual at round start is not the one the previous round "
                                "carried on")
    return problems


def pseudo_gradient_of(global_state: State, end_params: State) -> State:
    """What `Worker.run_round` sends for these end parameters (fp32, bitwise)."""
    return {name: (global_state[name] - p).to(torch.float32).cpu() for name, p in end_params.items()}


def pseudo_gradient_matches(global_state: State, end_params: State, pg: Mapping[str, torch.Tensor]) -> bool:
    """Whether an uncompressed pseudo-gradient is exactly the one the committed end state gives."""
    expected = pseudo_gradient_of(global_state, end_params)
    return set(expected) == set(pg) and all(torch.equal(expected[n], pg[n]) for n in expected)
