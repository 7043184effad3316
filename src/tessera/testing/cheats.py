"""TEST ONLY: the ways a DiLoCo worker can cheat on a verified round (docs/verification.md's
table of cheating strategies), each committing states whose cheap checks pass and whose every
segment fails the replay:

- "skip-steps" trains half the inner steps of every committed segment;
- "random-pseudo-gradient" trains nothing and commits states made up towards a random
  pseudo-gradient;
- "wrong-shard" trains on the next worker's shard;
- "wrong-round" uses the next round's batches;
- "copy-worker" submits a sibling lease's round (fetched from its provider's public endpoints)
  as its own, or trains honestly and logs it when none answers in time.

`Cheat` plays one of them as a worker process's round (compute.diloco_worker's `PlayRound`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from tessera.compute.checkpoints import (
    Checkpoint,
    RoundCommitment,
    clone_optimizer_state,
    decode_state,
    segment_bounds,
    tensor_hash,
)
from tessera.compute.diloco import (
    PseudoGradient,
    State,
    derive_seed,
    load_parameters,
    shard_for,
)
from tessera.compute.diloco_worker import Emit, WorkerProcess
from tessera.compute.replay import CommittingWorker, RoundTrace, commitment_from_states
from tessera.compute.train import batch

CHEATS = ("skip-steps", "random-pseudo-gradient", "wrong-shard", "wrong-round", "copy-worker")
# Written into a lease's job folder by the cheating provider, read by the cheating worker.
TESTING_FILE = "testing.json"
# How long the copy-worker cheat waits for a sibling's answer (a sibling's first round
# includes its worker's start; inside a job's usual round_timeout)
COPY_WAIT_S = 30.0


def skip_steps_round(worker: CommittingWorker, start: State, round_index: int,
                     k: int) -> RoundTrace:
    """The "skip-steps" cheat: train half of every segment's steps and commit those states as
    if every step had been taken, so that a replay of any segment misses its committed end.
    Needs an even k that divides H."""
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
    trace.commitment = RoundCommitment(round_index, worker.worker, h, k, claimed)
    return trace


def random_pseudo_gradient_round(worker: CommittingWorker, start: State, round_index: int,
                                 k: int, scale: float = 1e-3) -> RoundTrace:
    """The "random-pseudo-gradient" cheat: train nothing; make up an end state
    θ_H = θ − Δ (Δ random), send θ − θ_H and commit states interpolated from θ to θ_H, each with
    the AdamW state the round started with. The hashes are real hashes of the made-up states,
    so every check without a replay passes (leaf 0 is θ and the previous round's AdamW state);
    the replay of any segment misses its committed end."""
    started = time.perf_counter()
    w, h = worker.config.workload, worker.config.inner_steps
    gen = torch.Generator().manual_seed(derive_seed(w.seed, round_index, worker.worker, "cheat"))
    end = {n: t - scale * torch.randn(t.shape, generator=gen) for n, t in start.items()}
    states = [{n: start[n] + (end[n] - start[n]) * (step / h) for n in start}
              for step in segment_bounds(h, k)]
    states[0], states[-1] = start, end
    opts = [clone_optimizer_state(worker.optimizer.state_dict())] * len(states)
    commitment = commitment_from_states(round_index, worker.worker, h, k, states, opts,
                                        worker.parameter_names())
    load_parameters(worker.model, start)
    with torch.no_grad():  # one forward pass, so the reported loss looks like a real one
        _, loss = worker.model(*batch(worker.shard, w, gen, worker.device))
    pg = PseudoGradient(worker.worker, round_index, {n: start[n] - end[n] for n in start},
                        loss.item(), loss.item(), h, h * w.batch_size * w.block_size,
                        time.perf_counter() - started)
    return RoundTrace(pg, commitment, states, opts, 0.0)


def wrong_shard_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                      train_tokens: torch.Tensor) -> RoundTrace:
    """The "wrong-shard" cheat: train every step, but on the next worker's shard,
    and commit the real trajectory under this worker's index."""
    workers = worker.config.workers
    if workers < 2:
        raise ValueError("the wrong-shard cheat needs another worker's shard (workers >= 2)")
    own = worker.shard
    worker.shard = shard_for(train_tokens, (worker.worker + 1) % workers, workers)
    try:
        return worker.run_round_committed(start, round_index, k)
    finally:
        worker.shard = own


def wrong_round_round(worker: CommittingWorker, start: State, round_index: int,
                      k: int) -> RoundTrace:
    """The "wrong-round" cheat: train every step on its own shard, but with the
    batches of the next round's generator, and commit the real trajectory as this round's."""
    trace = worker.run_round_committed(start, round_index + 1, k)
    trace.commitment = RoundCommitment(round_index, worker.worker, worker.config.inner_steps, k,
                                       trace.commitment.checkpoints)
    trace.pseudo_gradient.round = round_index
    return trace


def fetch_sibling_round(siblings: list[dict], round_index: int, n_checkpoints: int,
                        wait_s: float) -> tuple[dict, list[bytes]] | None:
    """For "copy-worker": the first sibling worker's signed round answer and every
    checkpoint state behind it, from its provider's public endpoints; None if no sibling has
    a complete answer within `wait_s`."""
    deadline = time.monotonic() + wait_s
    with httpx.Client(timeout=5) as http:
        while True:
            for sibling in siblings:
                base = f"{sibling['endpoint']}/leases/{sibling['lease_id']}/rounds/{round_index}"
                try:
                    answer = http.get(base)
                    if answer.status_code != 200 or \
                            len(answer.json().get("checkpoints") or []) != n_checkpoints:
                        continue
                    states = [http.get(f"{base}/checkpoints/{i}") for i in range(n_checkpoints)]
                except httpx.HTTPError:
                    continue
                if all(r.status_code == 200 for r in states):
                    return answer.json(), [r.content for r in states]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


def copied_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                 answer: dict, states: list[bytes]) -> RoundTrace | None:
    """The "copy-worker" cheat: a sibling's round presented as this worker's: its
    checkpoint states committed under this worker's index and its pseudo-gradient θ − θ_H
    (with fp32 compression bitwise the sibling's payload; int8 uses this worker's residual).
    The AdamW state carried into the next round is the copied end state, so the next round's
    links hold too. None if the sibling's round does not start from `start`."""
    names = worker.parameter_names()
    decoded = [decode_state(data, names) for data in states]
    params, opts = [p for p, _ in decoded], [o for _, o in decoded]
    if tensor_hash(params[0]) != tensor_hash(start):
        return None
    h, w = worker.config.inner_steps, worker.config.workload
    commitment = commitment_from_states(round_index, worker.worker, h, k, params, opts, names)
    optimizer = worker.optimizer.state_dict()
    worker.optimizer.load_state_dict({**optimizer, "state": opts[-1]["state"]})
    pg = PseudoGradient(worker.worker, round_index,
                        {n: start[n] - params[-1][n] for n in start}, answer["inner_loss"],
                        answer["inner_loss"], h, h * w.batch_size * w.block_size,
                        answer["compute_s"])
    return RoundTrace(pg, commitment, params, opts, 0.0)


@dataclass
class Cheat:
    """One cheat, played as a worker process's committed rounds. `siblings` (copy-worker): the
    other leases of the same order and their providers' endpoints, as the cheating provider
    found them on chain."""

    name: str
    siblings: list[dict] = field(default_factory=list)
    copy_wait_s: float = COPY_WAIT_S

    def __post_init__(self):
        if self.name not in CHEATS:
            raise ValueError(f"unknown test-only cheat {self.name!r}; known: {CHEATS}")

    @classmethod
    def from_folder(cls, out: Path) -> Cheat | None:
        """The cheat the cheating provider wrote into a lease's job folder (None: honest)."""
        try:
            testing = json.loads((out / TESTING_FILE).read_text())
        except FileNotFoundError:
            return None
        return cls(testing["cheat"], testing.get("siblings", []),
                   testing.get("copy_wait_s", COPY_WAIT_S))

    def __call__(self, process: WorkerProcess, worker: CommittingWorker, start: State,
                 round_index: int, emit: Emit) -> RoundTrace:
        k = process.k
        if self.name == "skip-steps":
            return skip_steps_round(worker, start, round_index, k)
        if self.name == "random-pseudo-gradient":
            return random_pseudo_gradient_round(worker, start, round_index, k)
        if self.name == "wrong-shard":
            return wrong_shard_round(worker, start, round_index, k, process.train_tokens)
        if self.name == "wrong-round":
            return wrong_round_round(worker, start, round_index, k)
        n = len(segment_bounds(process.config.inner_steps, k))
        fetched = fetch_sibling_round(self.siblings, round_index, n, self.copy_wait_s)
        trace = copied_round(worker, start, round_index, k, *fetched) if fetched else None
        if trace is None:
            emit({"event": "cheat-copy-fallback", "round": round_index,
                  "reason": "no sibling answer from these parameters in time: trains honestly"})
            return worker.run_round_committed(start, round_index, k)
        emit({"event": "cheat-copied", "round": round_index,
              "from_lease": fetched[0]["lease_id"]})
        return trace
