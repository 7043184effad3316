"""DiLoCo simulated in one process: every worker in turn, then the coordinator (`compute/diloco.py`).

`run_diloco` runs the real `Worker` and `Coordinator` and counts what would cross the network
(serialized and analytic bytes, joins, refusals); `run_sync_baseline` is the synchronous
data-parallel job with the same training tokens it is compared against (docs/diloco.md,
bench/diloco.py). Pure torch: no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from tessera.compute import aggregation_tree
from tessera.compute.compress import analytic_bytes
from tessera.compute.diloco import (
    Coordinator,
    DilocoConfig,
    State,
    Worker,
    apply_broadcast,
    derive_seed,
    encode_tensors,
    new_model,
    parameter_state,
    shard_for,
    zero_pseudo_gradient,
)
from tessera.compute.train import batch, configure_determinism, held_out_loss, inner_step, split

SYNC_PURPOSE = "sync"


@dataclass
class DilocoResult:
    final_val_loss: float
    global_state: State
    history: list[dict]
    parameters: int
    rounds: int
    tokens: int                       # training tokens seen, all workers together
    bytes_up: int                     # serialized, workers -> coordinator
    bytes_down: int                   # serialized, coordinator -> workers (one copy per receiver)
    bytes_up_analytic: int
    bytes_down_analytic: int
    bytes_join: int = 0               # full-state downloads by joining workers (serialized)
    compute_s: float = 0.0            # sum over rounds of the slowest worker's compute
    worker_compute_s: float = 0.0     # sum over all workers' compute
    inner_step_s: float = 0.0         # mean seconds per inner step, one worker
    round_bytes_per_worker: list[int] = field(default_factory=list)  # max(up + down) per round


Membership = Callable[[int], Sequence[int]]
Tamper = Callable[[int, int, State], State]


def run_diloco(config: DilocoConfig, data: bytes, *, membership: Membership | None = None,
               join_policy: Literal["zero", "skip"] = "zero", tamper: Tamper | None = None,
               eval_every_rounds: int = 0, tree_fanout: int = 0,
               on_round: Callable[[dict], None] | None = None) -> DilocoResult:
    """Simulate a DiLoCo job. `membership(round)` lists the workers taking part in a round
    (default: all). A worker taking part for the first time after round 0 is a joiner: it
    downloads the global state and, with join_policy="zero", contributes a zero pseudo-gradient
    that round (the others do not wait for it); with "skip" it is left out of that round's
    aggregate. `tamper(worker, round, pg)` replaces what a worker sends (a lying worker).
    Payloads the coordinator refuses (wrong layout, NaN/inf, ...) are left out and recorded in
    the round's history entry under "refused". `tree_fanout`: the accepted payloads reach the
    coordinator through honest aggregators of that fan-in (`compute/aggregation_tree.py`):
    the mean of int8 payloads only, each level re-quantizing its partial sums."""
    if tree_fanout and (config.compression != aggregation_tree.COMPRESSION
                        or config.aggregation != "mean"):
        raise ValueError("a tree of aggregators takes int8 payloads and the mean")
    w = config.workload
    device = configure_determinism(w)
    train_tokens, val_tokens = split(data, w)
    coordinator = Coordinator(config, device)
    view = coordinator.global_state()  # what workers hold, rebuilt from the broadcasts
    workers = {i: Worker(config, i, train_tokens, device) for i in range(config.workers)}
    n_params = sum(v.numel() for v in view.values())
    full_state_bytes = len(encode_tensors(view, "none", config.chunk, {"kind": "state"}))
    seen: set[int] = set()
    history: list[dict] = []
    delayed: bytes | None = None   # overlap: the broadcast workers apply one round late
    res = DilocoResult(0.0, {}, history, n_params, config.rounds, 0, 0, 0, 0, 0)
    steps_total = 0
    for r in range(config.rounds):
        members = sorted(membership(r)) if membership else list(range(config.workers))
        losses, round_compute, up_max = [], 0.0, 0
        stream = coordinator.stream()   # the mean folds each answer in as it comes
        accepted, refused, to_tree = [], [], []
        for i in members:
            joiner = r > 0 and i not in seen
            seen.add(i)
            if joiner:
                res.bytes_join += full_state_bytes
                if join_policy == "skip":
                    continue
                tensors = zero_pseudo_gradient(view)
            else:
                pg = workers[i].run_round(view, r)
                round_compute = max(round_compute, pg.compute_s)
                res.worker_compute_s += pg.compute_s
                res.tokens += pg.tokens
                steps_total += pg.steps
                losses.append(pg.mean_inner_loss)
                tensors = pg.tensors
            if tamper is not None:
                tensors = tamper(i, r, tensors)
            payload = workers[i].encode(tensors, r)
            res.bytes_up += len(payload)
            res.bytes_up_analytic += analytic_bytes(n_params, config.compression)
            up_max = max(up_max, len(payload))
            try:
                decoded = coordinator.decode(payload)
            except ValueError as e:  # refused contributions are left out of the aggregate
                refused.append({"worker": i, "reason": str(e)})
                continue
            if tree_fanout:
                to_tree.append(payload)
            elif stream is None:
                accepted.append(decoded)
            else:
                stream.add(decoded)
        if tree_fanout:
            reference = coordinator.published
            for partial in aggregation_tree.reduce(to_tree, tree_fanout, reference, config.chunk):
                stream.add(aggregation_tree.partial_state(partial, reference), partial.members)
        contributors = stream.count if stream is not None else len(accepted)
        record = {"round": r, "workers": len(members), "contributors": contributors,
                  "refused": refused,
                  "mean_inner_loss": sum(losses) / len(losses) if losses else None}
        res.compute_s += round_compute
        if contributors:
            update = (coordinator.apply(accepted) if stream is None
                      else coordinator.apply_stream(stream))
            receivers = len(members)
            res.bytes_down += receivers * len(update.broadcast)
            res.bytes_down_analytic += receivers * analytic_bytes(n_params, config.compression)
            res.round_bytes_per_worker.append(up_max + len(update.broadcast))
            if config.overlap:   # round r + 1 starts from the state before this outer step
                if delayed is not None:
                    view = apply_broadcast(view, delayed, config)
                delayed = update.broadcast
            else:
                view = apply_broadcast(view, update.broadcast, config)
            record["update_norm"] = update.update_norm
        else:  # nothing usable this round: the global model stays as it is
            res.round_bytes_per_worker.append(up_max)
        if eval_every_rounds and ((r + 1) % eval_every_rounds == 0 or r == config.rounds - 1):
            record["val_loss"] = held_out_loss(coordinator.eval_model(), val_tokens, w, device)
        history.append(record)
        if on_round:
            on_round(record)
    if delayed is not None:
        view = apply_broadcast(view, delayed, config)
    assert all(torch.equal(view[k], coordinator.published[k]) for k in view)
    res.global_state = coordinator.global_state()
    res.final_val_loss = (history[-1]["val_loss"] if "val_loss" in history[-1]
                          else held_out_loss(coordinator.eval_model(), val_tokens, w, device))
    res.inner_step_s = res.worker_compute_s / max(steps_total, 1)
    return res


@dataclass
class SyncResult:
    final_val_loss: float
    global_state: State
    history: list[dict]
    parameters: int
    steps: int
    tokens: int
    bytes_analytic: int               # steps x workers x (up + down) x parameters x 4
    bytes_serialized: int             # the same with each fp32 gradient serialized
    wall_s: float


def run_sync_baseline(config: DilocoConfig, data: bytes, steps: int | None = None,
                      eval_every: int = 0,
                      on_step: Callable[[dict], None] | None = None) -> SyncResult:
    """Synchronous data parallelism: every step each worker computes the gradient of its own
    batch (from its own shard) and the gradients are averaged, then ONE AdamW steps. The
    worker batches have equal size, so the gradient of the mean loss over their concatenation
    is exactly their average gradient; that is how it is computed here (one forward pass).
    Default `steps` = rounds * inner_steps: the same training tokens as the DiLoCo job."""
    w = config.workload
    device = configure_determinism(w)
    train_tokens, val_tokens = split(data, w)
    steps = steps if steps is not None else config.rounds * config.inner_steps
    model = new_model(w, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=w.learning_rate, weight_decay=w.weight_decay)
    shards = [shard_for(train_tokens, i, config.workers) for i in range(config.workers)]
    gens = [torch.Generator().manual_seed(derive_seed(w.seed, 0, i, SYNC_PURPOSE))
            for i in range(config.workers)]
    history: list[dict] = []
    started = time.perf_counter()
    model.train()
    for s in range(steps):
        xs, ys = zip(*(batch(shards[i], w, gens[i], device) for i in range(config.workers)), strict=True)
        loss = inner_step(model, optimizer, torch.cat(xs), torch.cat(ys), w.max_grad_norm,
                          w.learning_rate_at(s))
        record = {"step": s, "train_loss": loss.item()}
        if eval_every and ((s + 1) % eval_every == 0 or s == steps - 1):
            record["val_loss"] = held_out_loss(model, val_tokens, w, device)
        history.append(record)
        if on_step:
            on_step(record)
    wall = time.perf_counter() - started
    state = parameter_state(model)
    n_params = sum(v.numel() for v in state.values())
    per_grad = len(encode_tensors(state, "none", config.chunk, {"kind": "gradient", "step": 0}))
    final = (history[-1]["val_loss"] if "val_loss" in history[-1]
             else held_out_loss(model, val_tokens, w, device))
    return SyncResult(final, state, history, n_params, steps,
                      steps * config.workers * w.batch_size * w.block_size,
                      steps * config.workers * 2 * n_params * 4,
                      steps * config.workers * 2 * per_grad, wall)
