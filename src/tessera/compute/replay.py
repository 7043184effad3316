"""Proof-of-learning groundwork for DiLoCo workers: commit to intermediate states, replay segments.

A worker's round is H inner AdamW steps from the published global parameters, with batches from
a generator seeded by ``derive_seed(job_seed, round, worker)`` (``compute/diloco.py``). Every
``k`` inner steps (after steps 0, k, 2k, ..., H; the last segment is shorter when k does not
divide H) the worker hashes its parameters and its AdamW state. Those checkpoint hashes are the
leaves of a Merkle tree (``protocol/merkle.py``) whose root is what gets posted for the round.
Segment ``s`` is the transition from checkpoint ``s`` to checkpoint ``s + 1``. A verifier that
draws segment ``s`` (``protocol/sampling.py``) gets the full start state of checkpoint ``s`` from
the worker, checks it against the committed leaf, re-runs the steps of that segment
(``replay_segment``) and compares the end with checkpoint ``s + 1``: bitwise on CPU with the same
thread count, within a tolerance elsewhere.

Hashes, exactly:

* ``tensor_hash(tensors)`` = sha256 over ``b"tessera/tensors/v1"``, u64 count, then for each
  name in sorted (Python str) order: u32 len + utf-8 name, u32 len + dtype name (``float32``),
  u32 ndim, u64 per dimension, u64 byte length, the raw little-endian bytes (row-major).
  Integers little-endian.
* the parameters are ``model.named_parameters()`` (tied weights once); the AdamW state is every
  per-parameter state tensor named ``"{param_name}/{key}"`` (``step``, ``exp_avg``,
  ``exp_avg_sq``). Optimizer hyperparameters are not hashed: the replayer takes them from the
  job, never from the worker.
* leaf = keccak256(``b"tessera/checkpoint/v1"`` || uint256_be(round) || uint256_be(worker) ||
  uint256_be(step) || params_hash || optimizer_hash), so a contract can recompute a leaf from
  its opened fields (the tensor hashes themselves are sha256, computed off chain).

Pure torch, no I/O. ``CommittingWorker.run_round_committed`` mirrors ``Worker.run_round``
line for line (tested bitwise against it) because diloco.py has no per-step hook yet.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import struct
import sys
import time
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from eth_utils import keccak

from tessera.compute.compress import deserialize, serialize
from tessera.compute.diloco import (
    DilocoConfig,
    PseudoGradient,
    State,
    Worker,
    derive_seed,
    load_parameters,
    parameter_state,
    shard_for,
)
from tessera.compute.model import ByteGPT
from tessera.compute.train import batch
from tessera.protocol import merkle

TENSOR_DOMAIN = b"tessera/tensors/v1"
CHECKPOINT_DOMAIN = b"tessera/checkpoint/v1"
STATE_KIND = "checkpoint_state"

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
    raise ImportError("tessera.compute.replay hashes raw tensor bytes and assumes a little-endian host")


# ---------------------------------------------------------------------------------------------
# canonical hashes


def tensor_hash(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """sha256 of a named set of tensors in canonical form (see the module docstring). The
    per-tensor headers are cached and the raw bytes hashed in place: a checkpoint hashes a few
    hundred small tensors, where Python per-tensor overhead, not sha256, is the cost."""
    h = hashlib.sha256(TENSOR_DOMAIN)
    h.update(struct.pack("<Q", len(tensors)))
    for name in sorted(tensors):
        t = tensors[name].detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        h.update(_tensor_header(name, t.dtype, tuple(t.shape), t.numel() * t.element_size()))
        h.update(_raw_bytes(t))
    return h.digest()


@functools.lru_cache(maxsize=4096)
def _tensor_header(name: str, dtype: torch.dtype, shape: tuple[int, ...], nbytes: int) -> bytes:
    name_b, dtype_b = name.encode(), str(dtype).removeprefix("torch.").encode()
    return (struct.pack("<I", len(name_b)) + name_b + struct.pack("<I", len(dtype_b)) + dtype_b
            + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
            + struct.pack("<Q", nbytes))


def _raw_bytes(t: torch.Tensor):
    """The row-major bytes of a contiguous CPU tensor, without a copy where numpy can view it."""
    try:
        return t.numpy()
    except TypeError:   # dtypes numpy lacks (bfloat16, ...): their bytes as uint8
        return t.reshape(-1).view(torch.uint8).numpy()


def optimizer_tensors(optimizer_state: Mapping, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """An AdamW `state_dict()`'s per-parameter state, named `"{param}/{key}"`."""
    out = {}
    for idx, st in optimizer_state["state"].items():
        for key, value in st.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            out[f"{names[int(idx)]}/{key}"] = t
    return out


def clone_optimizer_state(state: Mapping) -> dict:
    """A copy of an optimizer `state_dict()` whose tensors share nothing with the original
    (`load_state_dict` keeps same-dtype tensors by reference and `step()` updates them in place)."""
    return {"state": {idx: {key: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                            for key, v in st.items()} for idx, st in state["state"].items()},
            "param_groups": copy.deepcopy(state.get("param_groups", []))}


def encode_state(params: Mapping[str, torch.Tensor], optimizer_state: Mapping,
                 names: Sequence[str]) -> bytes:
    """A checkpoint's full state (parameters + AdamW per-parameter state) in the tensor wire
    format of `compute.compress` (no pickle: what a verifier downloads from a provider)."""
    tensors = {f"param/{name}": t for name, t in params.items()}
    tensors.update({f"adamw/{name}": t for name, t in
                    optimizer_tensors(optimizer_state, names).items()})
    return serialize(tensors, {"kind": STATE_KIND})


def decode_state(data: bytes, names: Sequence[str]) -> tuple[State, dict]:
    """(parameters, AdamW `state_dict`) from `encode_state`'s bytes; ValueError if malformed
    (whether they are the committed state is for `checkpoint_of` to say)."""
    tensors, meta = deserialize(data)
    if meta.get("kind") != STATE_KIND:
        raise ValueError(f"expected a {STATE_KIND!r} payload, got {meta.get('kind')!r}")
    index = {name: i for i, name in enumerate(names)}
    params: State = {}
    state: dict[int, dict] = {}
    for key, t in tensors.items():
        if key.startswith("param/"):
            params[key.removeprefix("param/")] = t
            continue
        name, _, slot = key.removeprefix("adamw/").rpartition("/")
        if not key.startswith("adamw/") or name not in index or not slot:
            raise ValueError(f"unexpected tensor {key!r} in a checkpoint state")
        state.setdefault(index[name], {})[slot] = t
    return params, {"state": state, "param_groups": []}


def _u256(x: int) -> bytes:
    return int(x).to_bytes(32, "big")


@dataclass(frozen=True)
class Checkpoint:
    step: int                 # inner steps done in this round when the state was hashed
    params_hash: bytes
    optimizer_hash: bytes

    def leaf(self, round: int, worker: int) -> bytes:
        return keccak(CHECKPOINT_DOMAIN + _u256(round) + _u256(worker) + _u256(self.step)
                      + self.params_hash + self.optimizer_hash)


def checkpoint_of(step: int, params: State, optimizer_state: Mapping, names: Sequence[str]) -> Checkpoint:
    return Checkpoint(step, tensor_hash(params), tensor_hash(optimizer_tensors(optimizer_state, names)))


def segment_bounds(inner_steps: int, k: int) -> list[int]:
    """Checkpoint steps of a round: 0, k, 2k, ..., H (H always included)."""
    if k < 1 or inner_steps < 1:
        raise ValueError(f"need k >= 1 and inner_steps >= 1, got k={k}, inner_steps={inner_steps}")
    return [*range(0, inner_steps, k), inner_steps]


@dataclass
class RoundCommitment:
    """What a worker publishes for one round: every checkpoint's hashes and their Merkle root
    (the root goes on chain; `len(checkpoints)` is the tree's leaf count)."""

    round: int
    worker: int
    inner_steps: int
    k: int
    checkpoints: list[Checkpoint]
    leaves: list[bytes] = field(init=False)
    root: bytes = field(init=False)
    _proofs: list[list[bytes]] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        steps = [c.step for c in self.checkpoints]
        if steps != segment_bounds(self.inner_steps, self.k):
            raise ValueError(f"checkpoint steps {steps} are not those of H={self.inner_steps}, k={self.k}")
        self.leaves = [c.leaf(self.round, self.worker) for c in self.checkpoints]
        self.root = merkle.root(self.leaves)

    @property
    def n_segments(self) -> int:
        return len(self.checkpoints) - 1

    @property
    def n_leaves(self) -> int:
        return len(self.checkpoints)

    def proof(self, index: int) -> list[bytes]:
        if self._proofs is None:
            self._proofs = merkle.proofs(self.leaves)
        return list(self._proofs[index])


@dataclass
class RoundTrace:
    """A committing worker's round: what it sends, what it commits to, and (when kept) the full
    states behind every checkpoint, which it must hand over when a segment is challenged."""

    pseudo_gradient: PseudoGradient
    commitment: RoundCommitment
    params: list[State | None] | None            # parameters at each checkpoint (None: not kept)
    optimizer_states: list[dict | None] | None   # AdamW state_dict at each checkpoint
    commit_s: float                       # time spent copying and hashing states


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
        for step in range(self.config.inner_steps):
            x, y = batch(self.shard, w, gen, self.device)
            _, loss = self.model(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.detach())
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
        commitment = RoundCommitment(round, self.worker, self.config.inner_steps, k, checkpoints)
        kept_any = keep_states is not False
        return RoundTrace(result, commitment, params if kept_any else None,
                          opts if kept_any else None, commit_s)


def commitment_from_states(round: int, worker: int, inner_steps: int, k: int,
                           params: Sequence[State], optimizer_states: Sequence[Mapping],
                           names: Sequence[str]) -> RoundCommitment:
    """Commit to a list of states (what a cheater that did not train would have to do)."""
    steps = segment_bounds(inner_steps, k)
    if len(params) != len(steps) or len(optimizer_states) != len(steps):
        raise ValueError(f"need {len(steps)} states, got {len(params)} and {len(optimizer_states)}")
    return RoundCommitment(round, worker, inner_steps, k,
                           [checkpoint_of(s, p, o, names) for s, p, o in
                            zip(steps, params, optimizer_states, strict=True)])


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
    for _ in range(start, end):
        x, y = batch(shard, w, gen, device)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
    if n_leaves != len(bounds) or not 0 <= s < n_leaves - 1:
        return Verdict(False, f"segment {s} / {n_leaves} leaves do not fit H={config.inner_steps}, k={k}")
    names = parameter_names(config)
    start_cp = checkpoint_of(bounds[s], opening.start_params, opening.start_optimizer_state, names)
    if not merkle.verify(root, start_cp.leaf(round, worker), s, opening.start_proof, n_leaves):
        return Verdict(False, "opened start state does not match the committed checkpoint")
    end_cp = opening.end_checkpoint
    if end_cp.step != bounds[s + 1] or not merkle.verify(root, end_cp.leaf(round, worker), s + 1,
                                                         opening.end_proof, n_leaves):
        return Verdict(False, "end checkpoint is not the committed one")
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
        elif first.optimizer_hash != previous.checkpoints[-1].optimizer_hash:
            problems.append("AdamW state at round start is not the one the previous round ended with")
    return problems


def pseudo_gradient_of(global_state: State, end_params: State) -> State:
    """What `Worker.run_round` sends for these end parameters (fp32, bitwise)."""
    return {name: (global_state[name] - p).to(torch.float32).cpu() for name, p in end_params.items()}


def pseudo_gradient_matches(global_state: State, end_params: State, pg: Mapping[str, torch.Tensor]) -> bool:
    """Whether an uncompressed pseudo-gradient is exactly the one the committed end state gives."""
    expected = pseudo_gradient_of(global_state, end_params)
    return set(expected) == set(pg) and all(torch.equal(expected[n], pg[n]) for n in expected)
