"""TEST ONLY: the ways a DiLoCo worker can cheat on a verified round (docs/verification.md's
table of cheating strategies), as functions that play one committed round.

Calling convention (what the cheating worker process and bench/verification_adversary.py use):

    CHEATS[name](worker, start, round_index, k, ctx) -> RoundTrace

- `worker`: the `compute.replay.CommittingWorker` of the lease (its model, its AdamW state and
  int8 residual carried from round to round, its shard); a strategy leaves in it the AdamW
  state and residual its committed round ends with, so the next round's cheap links hold;
- `start`: the round's published parameters θ; `round_index`; `k`: checkpoint every k steps;
- `ctx`: a `CheatContext` (the training split, the job's thread count, a log, the siblings
  that copy-worker copies from).
The trace keeps every checkpoint's full state (a worker process serves them) and is sealed
with the worker's residual, like `run_round_committed`'s. The workload's determinism settings
(`train.configure_determinism`) are the caller's, as for an honest round.

What each saves and what catches it: the docstring of each function. Every strategy but
made-up-residual (only its first round's link fails) passes the cheap checks
(`replay.check_round_links`); what fails is the replay of some training segments and/or the
payload check (tests/compute/test_cheats.py measures the pattern per strategy).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from tessera.compute.checkpoints import (
    Checkpoint,
    RoundCommitment,
    clone_optimizer_state,
    segment_bounds,
)
from tessera.compute.diloco import (
    PseudoGradient,
    State,
    derive_seed,
    flatten,
    load_parameters,
    parameter_state,
    shard_for,
)
from tessera.compute.replay import CommittingWorker, RoundTrace, commitment_from_states
from tessera.compute.train import batch, inner_step
from tessera.testing.copying import copied_round, fetch_sibling_round

# Written into a lease's job folder by the cheating provider, read by the cheating worker.
TESTING_FILE = "testing.json"
# How long copy-worker waits for a sibling's answer (a first round includes the worker's start,
# slow on a loaded machine; the wait only has to stay inside the job's round_timeout)
COPY_WAIT_S = 120.0
UNTRAINED_LOSS = math.log(256)   # what a byte-level model reports before training: ln(vocab)
# The jump cheat's AdamW moments: any clipped gradient is absorbed in fp32 next to them (ulp(1e15)
# = 2^26, ulp(1e30) = 2^76), so AdamW's update no longer depends on the data (no passes needed).
JUMP_EXP_AVG, JUMP_EXP_AVG_SQ = 1e15, 1e30


def _ignore(event: dict) -> None:
    pass


@dataclass
class CheatContext:
    """What a strategy may need besides the worker: the training split (wrong-shard), the job's
    thread count (fewer-threads signs it), a progress log, and for copy-worker the sibling
    leases: {"lease_id", "endpoint" (its provider's public API), "folder" (TEST ONLY
    collusion: the sibling lease's job folder on this machine, `<state_dir>/leases/<id>`)}."""

    train_tokens: torch.Tensor
    threads: int = 1
    emit: Callable[[dict], None] = _ignore
    siblings: Sequence[dict] = ()
    copy_wait_s: float = COPY_WAIT_S


Strategy = Callable[[CommittingWorker, State, int, int, CheatContext], RoundTrace]
# A faked segment: (states so far, AdamW states so far, segment, its steps) -> its end state
Fake = Callable[[list[State], list[dict], int, int], tuple[State, dict]]
# One inner step as a cheater takes it: (worker, the round's data generator, the step's learning
# rate) -> loss or None
Step = Callable[[CommittingWorker, torch.Generator, float], torch.Tensor | None]


# ---------------------------------------------------------------------------------------------
# a round played segment by segment, some segments faked


def honest_step(worker: CommittingWorker, gen: torch.Generator, lr: float) -> torch.Tensor:
    """Exactly the inner step of `run_round_committed` (and of a verifier's replay)."""
    w = worker.config.workload
    x, y = batch(worker.shard, w, gen, worker.device)
    return inner_step(worker.model, worker.optimizer, x, y, w.max_grad_norm, lr)


def _skip_batches(worker: CommittingWorker, gen: torch.Generator, steps: int) -> None:
    """Advance the generator past `steps` batches (the same draws `train.batch` makes), so the
    segments after a faked one get their true batches."""
    w = worker.config.workload
    for _ in range(steps):
        torch.randint(len(worker.shard) - w.block_size - 1, (w.batch_size,), generator=gen)


def _load_optimizer(worker: CommittingWorker, state: Mapping) -> None:
    groups = worker.optimizer.state_dict()["param_groups"]
    worker.optimizer.load_state_dict({"state": clone_optimizer_state(state)["state"],
                                      "param_groups": groups})


def _pseudo_gradient(worker: CommittingWorker, round_index: int, start: State, end: State,
                     losses: list[torch.Tensor], started: float) -> PseudoGradient:
    """What the worker reports, claiming a full round (steps, tokens) whatever it did."""
    w, h = worker.config.workload, worker.config.inner_steps
    mean = torch.stack(losses).mean().item() if losses else UNTRAINED_LOSS
    last = losses[-1].item() if losses else UNTRAINED_LOSS
    return PseudoGradient(worker.worker, round_index,
                          {n: (start[n] - end[n]).to(torch.float32) for n in start}, mean, last,
                          h, h * w.batch_size * w.block_size, time.perf_counter() - started)


def played_round(worker: CommittingWorker, start: State, round_index: int, k: int, *,
                 fakes: Mapping[int, Fake] | None = None, step: Step = honest_step) -> RoundTrace:
    """A round played segment by segment: a segment in `fakes` is made up (its batches are
    skipped, its end state is what the fake returns, and the worker carries on from it, so the
    next segment replays from the committed state); every other segment takes its steps with
    `step`. With no fakes and `honest_step` this is `run_round_committed` (tested bitwise)."""
    fakes = fakes or {}
    started = time.perf_counter()
    w = worker.config.workload
    bounds = segment_bounds(worker.config.inner_steps, k)
    load_parameters(worker.model, start)
    gen = torch.Generator().manual_seed(derive_seed(w.seed, round_index, worker.worker))
    worker.model.train()
    params = [parameter_state(worker.model)]
    opts = [clone_optimizer_state(worker.optimizer.state_dict())]
    losses: list[torch.Tensor] = []
    for s in range(len(bounds) - 1):
        steps = bounds[s + 1] - bounds[s]
        if s in fakes:
            _skip_batches(worker, gen, steps)
            p, o = fakes[s](params, opts, s, steps)
            load_parameters(worker.model, p)
            _load_optimizer(worker, o)
        else:
            for i in range(bounds[s], bounds[s + 1]):
                first = round_index * worker.config.inner_steps
                loss = step(worker, gen, w.learning_rate_at(first + i))
                if loss is not None:
                    losses.append(loss)
        params.append(parameter_state(worker.model))
        opts.append(clone_optimizer_state(worker.optimizer.state_dict()))
    pg = _pseudo_gradient(worker, round_index, start, params[-1], losses, started)
    return commitment_from_states(worker, round_index, k, params, opts, pg)


def _step_of(opt: Mapping) -> float:
    """The AdamW step count of a state_dict (0 for an empty state)."""
    for st in opt["state"].values():
        return float(st["step"])
    return 0.0


def repeat_state(params: list[State], opts: list[dict], s: int, steps: int) -> tuple[State, dict]:
    """The segment's end is its start: nothing trained."""
    return params[s], opts[s]


def extrapolate_state(params: list[State], opts: list[dict], s: int,
                      steps: int) -> tuple[State, dict]:
    """The segment's end made up by repeating the previous segment's move (parameters and first
    moment linearly, second moment kept from going negative, step count advanced); the first
    segment of a round has no previous move and stands still."""
    if s == 0:
        return params[0], opts[0]
    p = {n: 2 * params[s][n] - params[s - 1][n] for n in params[s]}
    state = {}
    for idx, st in opts[s]["state"].items():
        before = opts[s - 1]["state"].get(idx, st)
        state[idx] = {"step": torch.tensor(float(st["step"]) + steps),
                      "exp_avg": 2 * st["exp_avg"] - before["exp_avg"],
                      "exp_avg_sq": (2 * st["exp_avg_sq"] - before["exp_avg_sq"]).clamp(min=0)}
    return p, {"state": state, "param_groups": []}


def jump_state(names: Sequence[str]) -> Fake:
    """A fake that jumps to a degenerate AdamW state: exp_avg = ±1e15 with the sign of the
    parameters (+ for 0), exp_avg_sq = 1e30, the step count as expected; parameters unmoved."""
    def fake(params, opts, s, steps):
        step = torch.tensor(_step_of(opts[s]) + steps)
        return params[s], {"state": {i: {
            "step": step.clone(),
            "exp_avg": torch.where(params[s][n] >= 0, JUMP_EXP_AVG, -JUMP_EXP_AVG),
            "exp_avg_sq": torch.full_like(params[s][n], JUMP_EXP_AVG_SQ)}
            for i, n in enumerate(names)}, "param_groups": []}
    return fake


def return_state(names: Sequence[str]) -> Fake:
    """A fake that returns to the round's starting AdamW moments (zeros when the round started
    without any), with the step count as expected; parameters unmoved."""
    def fake(params, opts, s, steps):
        first = opts[0]["state"]
        state = {}
        for i, n in enumerate(names):
            zeros = torch.zeros_like(params[s][n])
            state[i] = {"step": torch.tensor(_step_of(opts[s]) + steps),
                        "exp_avg": first[i]["exp_avg"].clone() if first else zeros,
                        "exp_avg_sq": first[i]["exp_avg_sq"].clone() if first else zeros.clone()}
        return params[s], {"state": state, "param_groups": []}
    return fake


def direct_step(worker: CommittingWorker, gen: torch.Generator, lr: float) -> None:
    """AdamW's update without a forward or backward pass (a zero gradient): bitwise the honest
    step while the moments are degenerate (JUMP_*), since the real gradient would be absorbed."""
    for group in worker.optimizer.param_groups:
        group["lr"] = lr
    for p in worker.model.parameters():
        p.grad = torch.zeros_like(p)
    worker.optimizer.step()
    worker.optimizer.zero_grad(set_to_none=True)


def _resealed(worker: CommittingWorker, round_index: int, k: int, trace: RoundTrace,
              residual: State, pg: PseudoGradient | None = None,
              threads: int | None = None) -> RoundTrace:
    """`trace`'s states sealed again from `residual` (the one the round started with), sending
    `pg` and signing `threads` when given."""
    if worker.feedback is not None:
        worker.feedback.residual = residual
    return worker.seal(round_index, k, trace.commitment.checkpoints, pg or trace.pseudo_gradient,
                       trace.params, trace.optimizer_states, trace.commit_s, threads=threads)


# ---------------------------------------------------------------------------------------------
# the strategies


def skip_steps_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                     ctx: CheatContext) -> RoundTrace:
    """"skip-steps": train half of every segment's steps and commit those states as if every
    step had been taken. Saves 50%. Every segment's replay misses its committed end. Needs an
    even k that divides H."""
    honest = worker.config
    h = honest.inner_steps
    if k % 2 or h % k:
        raise ValueError(f"the skip-steps cheat needs an even k dividing H (k={k}, H={h})")
    worker.config = honest.model_copy(update={"inner_steps": h // 2})
    try:
        trace = worker.run_round_committed(start, round_index, k // 2)
    finally:
        worker.config = honest
    claimed = [Checkpoint(step, c.params_hash, c.optimizer_hash) for step, c in
               zip(segment_bounds(h, k), trace.commitment.checkpoints, strict=True)]
    trace.commitment = RoundCommitment(round_index, worker.worker, h, k, claimed,
                                       trace.commitment.payload)
    return trace


def random_pseudo_gradient_round(worker: CommittingWorker, start: State, round_index: int,
                                 k: int, ctx: CheatContext, scale: float = 1e-3) -> RoundTrace:
    """"random-pseudo-gradient": train nothing; make up θ_H = θ − Δ (Δ random), send θ − θ_H
    and commit states interpolated from θ to θ_H, each with the AdamW state the round started
    with. Saves ~100% (one forward pass for a plausible loss). Every segment's replay fails;
    the payload derives from the committed last state, so only replay catches it."""
    started = time.perf_counter()
    w, h = worker.config.workload, worker.config.inner_steps
    gen = torch.Generator().manual_seed(derive_seed(w.seed, round_index, worker.worker, "cheat"))
    end = {n: t - scale * torch.randn(t.shape, generator=gen) for n, t in start.items()}
    states = [{n: start[n] + (end[n] - start[n]) * (step / h) for n in start}
              for step in segment_bounds(h, k)]
    states[0], states[-1] = start, end
    opts = [clone_optimizer_state(worker.optimizer.state_dict())] * len(states)
    load_parameters(worker.model, start)
    with torch.no_grad():  # one forward pass, so the reported loss looks like a real one
        _, loss = worker.model(*batch(worker.shard, w, gen, worker.device))
    pg = _pseudo_gradient(worker, round_index, start, end, [loss], started)
    return commitment_from_states(worker, round_index, k, states, opts, pg)


def wrong_shard_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                      ctx: CheatContext) -> RoundTrace:
    """"wrong-shard": train every step, but on the next worker's shard (saves nothing; a
    saboteur's or a sloppy worker's fault). Every segment's replay fails."""
    workers = worker.config.workers
    if workers < 2:
        raise ValueError("the wrong-shard cheat needs another worker's shard (workers >= 2)")
    own = worker.shard
    worker.shard = shard_for(ctx.train_tokens, (worker.worker + 1) % workers, workers)
    try:
        return worker.run_round_committed(start, round_index, k)
    finally:
        worker.shard = own


def wrong_round_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                      ctx: CheatContext) -> RoundTrace:
    """"wrong-round": train every step on its own shard with the next round's batches, commit
    the real trajectory as this round's (saves nothing: a replayed round's answer reused).
    Every segment's replay fails."""
    residual = worker.residual()
    trace = worker.run_round_committed(start, round_index + 1, k)
    pg = dataclasses.replace(trace.pseudo_gradient, round=round_index)
    return _resealed(worker, round_index, k, trace, residual, pg)


def poisoned_payload_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                           ctx: CheatContext, factor: float = -10.0) -> RoundTrace:
    """"poisoned-payload": train honestly (every segment replays), send `factor` (−10) × the
    pseudo-gradient, sealed honestly otherwise. Saves nothing; the gain is the damage. The
    payload check (every round) fails: the payload is not what the committed last state gives."""
    residual = worker.residual()
    trace = worker.run_round_committed(start, round_index, k)
    honest = trace.pseudo_gradient
    pg = dataclasses.replace(honest, tensors={n: factor * t for n, t in honest.tensors.items()})
    return _resealed(worker, round_index, k, trace, residual, pg)


def made_up_residual_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                           ctx: CheatContext, factor: float = -10.0) -> RoundTrace:
    """"made-up-residual" (review 23): train honestly; in the lease's first round start the
    error feedback from R = (`factor` − 1) × Δ (one flat vector, as the feedback keeps it), so
    the payload decodes to `factor` (−10) × Δ while every segment and the payload check pass.
    Saves nothing. Caught by the cheap link alone: a first round starts from no residual
    (`tenant.verify.FRESH`); later rounds are honest (their links bind them)."""
    residual = worker.residual()
    trace = worker.run_round_committed(start, round_index, k)
    if worker.feedback is None:
        raise ValueError("the made-up-residual cheat needs a compressed payload (int8 or int4)")
    if any(t.numel() for t in residual.values()):
        return trace          # not the lease's first round: the link would catch it
    made_up = {"flat": (factor - 1.0) * flatten(trace.pseudo_gradient.tensors)}
    return _resealed(worker, round_index, k, trace, made_up)


def jump_round(worker: CommittingWorker, start: State, round_index: int, k: int,
               ctx: CheatContext) -> RoundTrace:
    """"jump": fake segment 0 by jumping to a degenerate AdamW state (exp_avg = ±1e15 with the
    parameters' sign, exp_avg_sq = 1e30), then apply AdamW's update directly, without any
    forward or backward pass: next to such moments any clipped gradient is absorbed in fp32, so
    segments 1..n−1 replay bitwise (tests/compute/test_cheats.py). Saves ~100%. Caught: the
    replay of segment 0 (only when it is drawn); the state bounds (`replay.state_bounds`) on
    every later opened state, the round's last one included, so the payload check every
    round."""
    fakes = {0: jump_state(worker.parameter_names())}
    return played_round(worker, start, round_index, k, fakes=fakes, step=direct_step)


def jump_and_return_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                          ctx: CheatContext) -> RoundTrace:
    """"jump-and-return": as "jump", but the last segment returns to a bounded AdamW state (the
    moments the round started with, zeros in round 0), so the round's last state, which the
    payload check opens, passes the state bounds. Two faked segments per round (0 and n−1);
    saves ~100%. Caught: the replay of segment 0 or n−1; the state bounds on the start of
    segments 1..n−1 (degenerate), so any drawn segment once the bounds are checked. Needs n >= 2."""
    names = worker.parameter_names()
    n = len(segment_bounds(worker.config.inner_steps, k)) - 1
    if n < 2:
        raise ValueError("the jump-and-return cheat needs at least two segments per round")
    fakes = {0: jump_state(names), n - 1: return_state(names)}
    return played_round(worker, start, round_index, k, fakes=fakes, step=direct_step)


def fewer_threads_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                        ctx: CheatContext) -> RoundTrace:
    """"fewer-threads": train with 1 thread where the job asks for `ctx.threads` > 1 and sign
    the job's count (a node selling cores it does not give). Saves cores, not steps. Every
    segment's bitwise replay with the signed thread count fails (reduction order differs)."""
    if ctx.threads < 2:
        raise ValueError(f"the fewer-threads cheat needs a job with threads >= 2 "
                         f"(it has {ctx.threads})")
    residual, before = worker.residual(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trace = worker.run_round_committed(start, round_index, k)
    finally:
        torch.set_num_threads(before)
    return _resealed(worker, round_index, k, trace, residual, threads=ctx.threads)


def stop_half_way_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                        ctx: CheatContext) -> RoundTrace:
    """"stop-half-way": the first ⌊n/2⌋ segments honest, then the same state repeated. Saves
    ~50%. Caught: the replay of a segment in the second half (drawn with probability ~1/2)."""
    n = len(segment_bounds(worker.config.inner_steps, k)) - 1
    fakes = {s: repeat_state for s in range(n // 2, n)}
    return played_round(worker, start, round_index, k, fakes=fakes)


def fake_last_segment_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                            ctx: CheatContext) -> RoundTrace:
    """"fake-last-segment": honest except the last state, made up by repeating the previous
    segment's move. Saves 1/n. Caught: only the replay of the last training segment."""
    n = len(segment_bounds(worker.config.inner_steps, k)) - 1
    return played_round(worker, start, round_index, k, fakes={n - 1: extrapolate_state})


def fake_fraction_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                        ctx: CheatContext, fraction: float = 0.1) -> RoundTrace:
    """"fake-10-percent": fake m = ⌈0.1·n⌉ segments per round, evenly spread (segment
    ⌊(i + ½)·n/m⌋), each by repeating the previous segment's move; the worker carries on from
    the faked state, so the segment after it replays. Saves ~10%. Caught: the replay of a faked
    segment only (a sampled check draws one with probability m/n)."""
    n = len(segment_bounds(worker.config.inner_steps, k)) - 1
    m = math.ceil(fraction * n)
    fakes = {int((i + 0.5) * n / m): extrapolate_state for i in range(m)}
    return played_round(worker, start, round_index, k, fakes=fakes)


def lower_precision_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                          ctx: CheatContext) -> RoundTrace:
    """"lower-precision": every forward pass under bf16 autocast (CPU). Saves what bf16 kernels
    save on the hardware (on a GPU, roughly half). Every segment's fp32 replay fails."""
    def step(worker: CommittingWorker, gen: torch.Generator, lr: float) -> torch.Tensor:
        w = worker.config.workload
        x, y = batch(worker.shard, w, gen, worker.device)
        for group in worker.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(worker.device.type, dtype=torch.bfloat16):
            _, loss = worker.model(x, y)
        worker.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(worker.model.parameters(), w.max_grad_norm)
        worker.optimizer.step()
        return loss.detach().float()
    return played_round(worker, start, round_index, k, step=step)


def half_batch_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                     ctx: CheatContext) -> RoundTrace:
    """"half-batch": every step on half the batch size (the first draws of a half-size
    generator call, so the batches differ too). Saves ~50%. Every segment's replay fails."""
    half = worker.config.workload.model_copy(
        update={"batch_size": max(1, worker.config.workload.batch_size // 2)})

    def step(worker: CommittingWorker, gen: torch.Generator, lr: float) -> torch.Tensor:
        x, y = batch(worker.shard, half, gen, worker.device)
        return inner_step(worker.model, worker.optimizer, x, y, half.max_grad_norm, lr)
    return played_round(worker, start, round_index, k, step=step)


def free_ride_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                    ctx: CheatContext) -> RoundTrace:
    """"free-ride": no training at all: every state is θ with the AdamW state the round started
    with, the update is zero. Saves 100%. Every segment's replay fails (AdamW always moves)."""
    n = len(segment_bounds(worker.config.inner_steps, k)) - 1
    return played_round(worker, start, round_index, k,
                        fakes={s: repeat_state for s in range(n)})


# ---------------------------------------------------------------------------------------------
# copy-worker


def copy_worker_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                      ctx: CheatContext) -> RoundTrace:
    """"copy-worker": a sibling lease's round submitted as this worker's, got by collusion
    (TEST ONLY: the sibling's job folder on this machine; over HTTP its states are refused
    without a read grant, which is logged). Saves ~100%. Every segment's replay fails (its
    seed and shard differ); the cheap links and the payload check pass. Without a sibling's
    answer in time it trains honestly and logs the fallback."""
    n = len(segment_bounds(worker.config.inner_steps, k))
    copied, refused = fetch_sibling_round(ctx.siblings, round_index, n, ctx.copy_wait_s)
    if refused:
        ctx.emit({"event": "cheat-copy-http-refused", "round": round_index, "reasons": refused})
    trace = copied_round(worker, start, round_index, k, copied.answer, copied.states) \
        if copied else None
    if trace is None:
        ctx.emit({"event": "cheat-copy-fallback", "round": round_index,
                  "reason": "no sibling answer from these parameters in time: trains honestly"})
        return worker.run_round_committed(start, round_index, k)
    ctx.emit({"event": "cheat-copied", "round": round_index, "from_lease": copied.lease_id,
              "source": copied.source})
    return trace


CHEATS: dict[str, Strategy] = {
    "skip-steps": skip_steps_round,
    "random-pseudo-gradient": random_pseudo_gradient_round,
    "wrong-shard": wrong_shard_round,
    "wrong-round": wrong_round_round,
    "copy-worker": copy_worker_round,
    "poisoned-payload": poisoned_payload_round,
    "made-up-residual": made_up_residual_round,
    "jump": jump_round,
    "jump-and-return": jump_and_return_round,
    "fewer-threads": fewer_threads_round,
    "stop-half-way": stop_half_way_round,
    "fake-last-segment": fake_last_segment_round,
    "lower-precision": lower_precision_round,
    "half-batch": half_batch_round,
    "free-ride": free_ride_round,
    "fake-10-percent": fake_fraction_round,
}
