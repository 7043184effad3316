"""DiLoCo: one model trained across many loosely connected workers (Douillard et al. 2023).

Each round, every worker starts from the global parameters, takes H inner AdamW steps on its own
data shard (keeping its AdamW state from round to round), and sends its pseudo-gradient
`global_at_round_start - worker_params_at_round_end`. The coordinator aggregates the
pseudo-gradients (mean, or a robust rule) and takes one outer step with SGD + Nesterov momentum
(lr 0.8, momentum 0.3 by default: the paper's 0.7 / 0.9 did worse here, see `DilocoConfig`).

Downlink: the coordinator keeps the outer optimizer's exact parameters (`shadow`) and the
parameters every worker holds (`published`). After the outer step it broadcasts
`delta = shadow - published` (quantized when `compression` is "int8" or "int4") and sets
`published += dequantize(delta)`; workers apply the same broadcast with `apply_broadcast`, so
every node holds bitwise the same `published` parameters and needs no outer-optimizer state.
Whatever quantization lost stays in `shadow - published` and is sent next round (error feedback).

Replayable: batches of worker w in round r come from a generator seeded by
`derive_seed(job_seed, r, w)`; deterministic algorithms and a fixed thread count are set by
`configure_determinism`; aggregation is independent of arrival order. Pure torch: no I/O.
A whole job simulated in one process (and its synchronous baseline): `compute/diloco_simulation.py`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tessera.compute.aggregate import MeanStream, aggregate
from tessera.compute.compress import (
    DEFAULT_CHUNK,
    LEVELS,
    ErrorFeedback,
    deserialize,
    pack_int4,
    pack_int8,
    serialize,
    unpack_int4,
    unpack_int8,
)
from tessera.compute.model import ByteGPT
from tessera.compute.train import batch, inner_step
from tessera.errors import WireFormatError
from tessera.protocol.workload import TrainingWorkload

State = dict[str, torch.Tensor]


OVERLAP_OUTER_LR, OVERLAP_OUTER_MOMENTUM = 0.7, 0.0
MAX_WORKERS = 4096


class DilocoConfig(BaseModel):
    """A DiLoCo job. Model and inner-optimizer hyperparameters come from `workload`
    (its `eval_every` and `checkpoint_every` are not used; a DiLoCo job runs
    `rounds * inner_steps` inner steps per worker, and `steps` is only the linear learning-rate
    schedule's horizon, which a job spec sets to that product)."""

    model_config = ConfigDict(extra="forbid")

    workload: TrainingWorkload
    workers: int = Field(4, ge=1, le=MAX_WORKERS)
    inner_steps: int = Field(50, ge=1, le=1_000_000, description="H: inner AdamW steps per round")
    rounds: int = Field(10, ge=1, le=1_000_000)
    # Not the DiLoCo paper's 0.7 / Nesterov 0.9: swept on the example's own job (default model,
    # 3 workers, H = 50, 10 rounds), 0.8 / 0.3 gave a 6.2 % lower held-out loss on fresh seeds
    # and a quarter of the spread (bench/diloco_example.py); on the small model's 2,400-step
    # runs 0.8 / 0.3 or 1.0 / 0.5 won at every H and the paper's was last (bench/diloco.py).
    outer_lr: float = Field(0.8, gt=0, le=10.0)
    outer_momentum: float = Field(0.3, ge=0, lt=1.0)
    nesterov: bool = True
    compression: Literal["none", "int8", "int4"] = "none"
    chunk: int = Field(DEFAULT_CHUNK, ge=1, le=1 << 24, description="int8/int4: elements per scale")
    aggregation: Literal["mean", "median", "trimmed_mean"] = "mean"
    trim_fraction: float = Field(0.25, ge=0, lt=0.5)
    overlap: bool = Field(False, description="one-round-delayed outer update: round r + 1 "
                          "starts from the parameters before round r's outer step, so workers "
                          "go on computing while round r's answers are exchanged and checked")

    @model_validator(mode="before")
    @classmethod
    def _overlap_outer_defaults(cls, data: object) -> object:
        """A delayed outer update diverges with the paper's lr 0.7 and momentum 0.9 (held-out
        loss 42-50 against 1.89, bench/results/diloco.json "overlap"): with overlap, the outer
        optimizer's defaults are the best of a sweep (lr 0.7 without momentum: momentum hurts a
        delayed update; bench/diloco.py --overlap), unless given."""
        if isinstance(data, dict) and data.get("overlap"):
            return {"outer_lr": OVERLAP_OUTER_LR, "outer_momentum": OVERLAP_OUTER_MOMENTUM,
                    **data}
        return data


# ---------------------------------------------------------------------------------------------
# helpers


def derive_seed(job_seed: int, round: int, worker: int, purpose: str = "inner") -> int:
    """A 63-bit seed from (job seed, round, worker): anyone can replay one worker's round."""
    digest = hashlib.sha256(f"tessera-diloco/{purpose}/{job_seed}/{round}/{worker}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def shard_for(tokens: torch.Tensor, worker: int, workers: int) -> torch.Tensor:
    """The contiguous, disjoint slice of the training split that `worker` trains on."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is not in [0, {workers})")
    n = len(tokens)
    return tokens[n * worker // workers: n * (worker + 1) // workers]


def parameter_state(model: torch.nn.Module) -> State:
    """Detached copies of the model's parameters by name (tied weights appear once)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def load_parameters(model: torch.nn.Module, state: State) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(state[name])


def zero_pseudo_gradient(reference: State) -> State:
    """What a worker that joined mid-round contributes: no change."""
    return {k: torch.zeros_like(v, dtype=torch.float32) for k, v in reference.items()}


def validate_pseudo_gradient(pg: object, reference: State) -> str | None:
    """Why `pg` cannot be aggregated against `reference` (None when it can)."""
    if not isinstance(pg, dict):
        return f"expected a dict of tensors, got {type(pg).__name__}"
    missing, extra = sorted(set(reference) - set(pg)), sorted(set(pg) - set(reference))
    if missing:
        return f"missing tensors: {missing}"
    if extra:
        return f"unexpected tensors: {extra}"
    for name, ref in reference.items():
        t = pg[name]
        if not isinstance(t, torch.Tensor):
            return f"{name}: expected a tensor, got {type(t).__name__}"
        if t.dtype != torch.float32:
            return f"{name}: expected dtype float32, got {t.dtype}"
        if t.shape != ref.shape:
            return f"{name}: expected shape {tuple(ref.shape)}, got {tuple(t.shape)}"
        if not torch.isfinite(t).all():
            return f"{name}: contains NaN or inf"
    return None


def layout_id(reference: State) -> str:
    """Names, shapes and order of a tensor dict, hashed: both ends must agree on it."""
    spec = [[name, list(t.shape)] for name, t in reference.items()]
    return hashlib.sha256(json.dumps(spec, separators=(",", ":")).encode()).hexdigest()[:16]


def flatten(tensors: State) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors.values()])


def unflatten(flat: torch.Tensor, reference: State) -> State:
    out, pos = {}, 0
    for name, ref in reference.items():
        out[name] = flat[pos:pos + ref.numel()].view(ref.shape).clone()
        pos += ref.numel()
    return out


def encode_tensors(tensors: State, compression: str, chunk: int, meta: dict,
                   feedback: ErrorFeedback | None = None) -> bytes:
    """Serialize a tensor dict as ONE flat vector (int8- or int4-quantized with `feedback`'s
    residual if asked); names and shapes are not sent, only `layout_id`, which the receiver
    checks."""
    flat = {"flat": flatten(tensors)}
    if compression in LEVELS:
        fb = feedback if feedback is not None else ErrorFeedback.for_compression(compression, chunk)
        flat = (pack_int8 if compression == "int8" else pack_int4)(fb.compress(flat))
    return serialize(flat, {**meta, "compression": compression, "chunk": chunk,
                            "layout": layout_id(tensors)})


def check_meta(meta: dict, reference: State, compression: str, chunk: int,
               kinds: tuple[str, ...]) -> None:
    """Refuse (WireFormatError) a payload header not made for this job's tensors and format."""
    if meta.get("kind") not in kinds:
        raise WireFormatError(f"expected a {' or '.join(map(repr, kinds))} payload, "
                              f"got {meta.get('kind')!r}")
    if meta.get("compression") != compression or meta.get("chunk") != chunk:
        raise WireFormatError(f"payload uses compression={meta.get('compression')!r} "
                              f"chunk={meta.get('chunk')!r}; the job uses {compression!r} {chunk}")
    if meta.get("layout") != layout_id(reference):
        raise WireFormatError("payload was made for a different set of tensor names/shapes")


def decode_tensors(payload: bytes, reference: State, compression: str, chunk: int,
                   kind: str) -> State:
    """Inverse of `encode_tensors`, validated against `reference`; raises ValueError."""
    tensors, meta = deserialize(payload)
    check_meta(meta, reference, compression, chunk, (kind,))
    numel = sum(t.numel() for t in reference.values())
    if compression == "int8":
        tensors = unpack_int8(tensors, chunk)
    elif compression == "int4":
        tensors = unpack_int4(tensors, chunk, numel)
    flat = tensors.get("flat")
    if set(tensors) != {"flat"} or flat is None:
        raise WireFormatError(f"expected one tensor 'flat', got {sorted(tensors)}")
    if flat.dtype != torch.float32 or flat.shape != (numel,):
        raise WireFormatError(f"'flat': expected float32 of shape ({numel},), got {flat.dtype} "
                              f"of shape {tuple(flat.shape)}")
    out = unflatten(flat, reference)
    reason = validate_pseudo_gradient(out, reference)
    if reason:
        raise WireFormatError(reason)
    return out


def encode_pseudo_gradient(tensors: State, residual: State, config: DilocoConfig, round: int,
                           worker: int) -> tuple[bytes, State]:
    """(the bytes a worker sends for a round's pseudo-gradient, the residual it carries into
    the next round). A pure function of its arguments: whoever holds a worker's committed end
    parameters and incoming residual recomputes its payload bitwise, which is how a payload is
    bound to the work (docs/verification.md, "the payload segment")."""
    feedback = ErrorFeedback.for_compression(config.compression, config.chunk)
    if feedback is not None:
        feedback.residual = {k: v.clone() for k, v in residual.items()}
    payload = encode_tensors(tensors, config.compression, config.chunk,
                             {"kind": "pseudo_gradient", "round": round, "worker": worker}, feedback)
    return payload, (feedback.residual if feedback is not None else {})


def apply_broadcast(state: State, payload: bytes, config: DilocoConfig) -> State:
    """What a worker does with the coordinator's broadcast: published += delta."""
    delta = decode_tensors(payload, state, config.compression, config.chunk, "outer_update")
    return {k: v + delta[k] for k, v in state.items()}


def new_model(workload: TrainingWorkload, device: torch.device | str = "cpu") -> ByteGPT:
    torch.manual_seed(workload.seed)
    return ByteGPT(workload).to(device)


# ---------------------------------------------------------------------------------------------
# worker


@dataclass
class PseudoGradient:
    worker: int
    round: int
    tensors: State            # float32: global at round start - worker params at round end
    mean_inner_loss: float
    last_inner_loss: float
    steps: int
    tokens: int
    compute_s: float


class Worker:
    """One provider node's share of a DiLoCo job: its model copy, its AdamW state, its shard."""

    def __init__(self, config: DilocoConfig, worker: int, train_tokens: torch.Tensor,
                 device: torch.device | str = "cpu"):
        self.config, self.worker, self.device = config, worker, torch.device(device)
        w = config.workload
        self.shard = shard_for(train_tokens, worker, config.workers)
        if len(self.shard) < w.block_size + 2:
            raise ValueError(f"worker {worker}'s shard has {len(self.shard)} tokens; "
                             f"need at least {w.block_size + 2}")
        self.model = ByteGPT(w).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=w.learning_rate,
                                           weight_decay=w.weight_decay)
        self.feedback = ErrorFeedback.for_compression(config.compression, config.chunk)

    def run_round(self, global_state: State, round: int) -> PseudoGradient:
        w = self.config.workload
        started = time.perf_counter()
        load_parameters(self.model, global_state)
        gen = torch.Generator().manual_seed(derive_seed(w.seed, round, self.worker))
        self.model.train()
        losses = []
        first = round * self.config.inner_steps
        for step in range(first, first + self.config.inner_steps):
            x, y = batch(self.shard, w, gen, self.device)
            losses.append(inner_step(self.model, self.optimizer, x, y, w.max_grad_norm,
                                     w.learning_rate_at(step)))
        with torch.no_grad():
            pg = {name: (global_state[name].to(self.device) - p).to(torch.float32).cpu()
                  for name, p in self.model.named_parameters()}
        losses_t = torch.stack(losses).cpu()
        return PseudoGradient(self.worker, round, pg, losses_t.mean().item(), losses_t[-1].item(),
                              self.config.inner_steps,
                              self.config.inner_steps * w.batch_size * w.block_size,
                              time.perf_counter() - started)

    def residual(self) -> State:
        """A copy of the error-feedback residual this worker carries (empty for fp32)."""
        return {k: v.clone() for k, v in self.feedback.residual.items()} if self.feedback else {}

    def encode(self, tensors: State, round: int) -> bytes:
        """The bytes this worker sends: int8 or int4 with this worker's error feedback, or fp32; the
        residual moves on to what `encode_pseudo_gradient` says."""
        payload, residual = encode_pseudo_gradient(tensors, self.residual(), self.config, round,
                                                   self.worker)
        if self.feedback is not None:
            self.feedback.residual = residual
        return payload

    def state_dict(self) -> dict:
        return {"optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "feedback": self.feedback.state_dict() if self.feedback else None}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.feedback is not None and state["feedback"] is not None:
            self.feedback.load_state_dict(state["feedback"])


# ---------------------------------------------------------------------------------------------
# coordinator


@dataclass
class OuterUpdate:
    round: int
    broadcast: bytes          # what every worker receives: serialized (int8 or fp32) delta
    contributors: int
    update_norm: float


class Coordinator:
    """The global model and the outer optimizer (SGD, Nesterov momentum)."""

    def __init__(self, config: DilocoConfig, device: torch.device | str = "cpu"):
        self.config, self.device = config, torch.device(device)
        self.model = new_model(config.workload, self.device)   # `shadow`: the outer optimizer's
        self.published = parameter_state(self.model)           # what every worker holds
        nesterov = config.nesterov and config.outer_momentum > 0
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.outer_lr,
                                         momentum=config.outer_momentum, nesterov=nesterov)
        self.round = 0

    def global_state(self) -> State:
        """The parameters workers start the next round from (copies)."""
        return {k: v.clone() for k, v in self.published.items()}

    def eval_model(self) -> ByteGPT:
        model = ByteGPT(self.config.workload).to(self.device)
        load_parameters(model, self.published)
        return model

    def decode(self, payload: bytes) -> State:
        """A worker's bytes -> validated float32 pseudo-gradient; raises ValueError if refused."""
        return decode_tensors(payload, self.published, self.config.compression, self.config.chunk,
                              "pseudo_gradient")

    def stream(self) -> MeanStream | None:
        """A round's running aggregate, to fold decoded pseudo-gradients into as they arrive,
        when the job's rule streams (the mean); None for the median and the trimmed mean."""
        return MeanStream(self.published) if self.config.aggregation == "mean" else None

    def apply(self, pseudo_grads: Sequence[State]) -> OuterUpdate:
        """Aggregate the round's pseudo-gradients, take the outer step, build the broadcast."""
        if not pseudo_grads:
            raise ValueError("no pseudo-gradients to apply")
        for i, pg in enumerate(pseudo_grads):
            reason = validate_pseudo_gradient(pg, self.published)
            if reason:
                raise ValueError(f"pseudo-gradient {i}: {reason}")
        stream = self.stream()
        if stream is None:
            agg = aggregate(list(pseudo_grads), self.config.aggregation, self.config.trim_fraction)
            return self._step(agg, len(pseudo_grads))
        for pg in pseudo_grads:
            stream.add(pg)
        return self.apply_stream(stream)

    def apply_stream(self, stream: MeanStream) -> OuterUpdate:
        """The outer step from a round's stream (of pseudo-gradients `decode` accepted): the
        same bits as `apply` on the same contributions, in any order."""
        if stream.count == 0:
            raise ValueError("no pseudo-gradients to apply")
        return self._step(stream.value(), stream.count)

    def _step(self, agg: State, contributors: int) -> OuterUpdate:
        for name, p in self.model.named_parameters():
            p.grad = agg[name].to(p.device)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            delta = {name: p.detach() - self.published[name]
                     for name, p in self.model.named_parameters()}
        meta = {"kind": "outer_update", "round": self.round}
        # quantized with a fresh ErrorFeedback: the residual lives on as shadow - published
        broadcast = encode_tensors(delta, self.config.compression, self.config.chunk, meta)
        self.published = apply_broadcast(self.published, broadcast, self.config)
        norm = torch.sqrt(sum((a ** 2).sum() for a in agg.values())).item()
        self.round += 1
        return OuterUpdate(self.round - 1, broadcast, contributors, norm)

    def state_dict(self) -> dict:
        return {"config": self.config.model_dump(), "round": self.round,
                "shadow": parameter_state(self.model),
                "published": self.global_state(),
                "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        if DilocoConfig.model_validate(state["config"]) != self.config:
            raise ValueError("checkpoint was made for a different DilocoConfig")
        load_parameters(self.model, state["shadow"])
        self.published = {k: v.clone() for k, v in state["published"].items()}
        self.optimizer.load_state_dict(state["optimizer"])
        self.round = state["round"]
