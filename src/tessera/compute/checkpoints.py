"""Canonical hashes of a DiLoCo worker's training state, and the round commitment built from them.

Every ``k`` inner steps (after steps 0, k, 2k, ..., H; the last segment is shorter when k does
not divide H) a worker hashes its parameters and its AdamW state (``compute/replay.py``'s
``CommittingWorker``). Those checkpoint hashes are the leaves of a Merkle tree
(``protocol/merkle.py``) whose root is what gets posted for the round. Segment ``s`` is the
transition from checkpoint ``s`` to checkpoint ``s + 1``.

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
* the round's LAST leaf is the payload leaf (``PayloadLeaf``): keccak256(``b"tessera/payload/v1"``
  || uint256_be(round) || uint256_be(worker) || result_hash (sha256 of the payload bytes sent)
  || residual_in_hash || residual_out_hash (tensor_hash of the int8 error-feedback residual
  before and after this round; of ``{}`` for fp32) || uint256_be(threads) ||
  keccak256(numerics profile, utf-8)). It binds what the worker sends to its last committed
  state: the payload is ``diloco.encode_pseudo_gradient(θ − θ_H, residual_in)``, which anyone
  holding θ_H and the residual recomputes bitwise (the "payload segment", from the last state
  leaf to the payload leaf). It also signs the thread count and numerics profile the worker
  trained with, which a bitwise replay needs.

A checkpoint's full state travels in the tensor wire format of ``compute/compress.py``
(``encode_state`` / ``decode_state``). Pure torch, no I/O.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from eth_utils import keccak

from tessera.compute.compress import deserialize, serialize, serialized_parts
from tessera.compute.diloco import State
from tessera.protocol import merkle
from tessera.protocol.wire import RoundResult

TENSOR_DOMAIN = b"tessera/tensors/v1"
CHECKPOINT_DOMAIN = b"tessera/checkpoint/v1"
PAYLOAD_DOMAIN = b"tessera/payload/v1"
STATE_KIND = "checkpoint_state"
RESIDUAL_KIND = "residual_state"

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
    raise ImportError("tessera.compute.checkpoints hashes raw tensor bytes and assumes a little-endian host")


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
    return b"".join(state_parts(params, optimizer_state, names))


def state_parts(params: Mapping[str, torch.Tensor], optimizer_state: Mapping,
                names: Sequence[str]) -> list:
    """`encode_state`'s bytes in parts (views of the tensors), to write to a file."""
    tensors = {f"param/{name}": t for name, t in params.items()}
    tensors.update({f"adamw/{name}": t for name, t in
                    optimizer_tensors(optimizer_state, names).items()})
    return serialized_parts(tensors, {"kind": STATE_KIND})


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


def encode_residual(residual: Mapping[str, torch.Tensor]) -> bytes:
    """The int8 error-feedback residual a round started with (the payload segment's opening)."""
    return serialize(dict(residual), {"kind": RESIDUAL_KIND})


def decode_residual(data: bytes) -> dict[str, torch.Tensor]:
    tensors, meta = deserialize(data)
    if meta.get("kind") != RESIDUAL_KIND:
        raise ValueError(f"expected a {RESIDUAL_KIND!r} payload, got {meta.get('kind')!r}")
    return tensors


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


@dataclass(frozen=True)
class PayloadLeaf:
    """The last leaf of a round: what the worker sent, bound to its last state (module doc)."""

    result_hash: bytes        # sha256 of the payload bytes
    residual_in_hash: bytes   # tensor_hash of the error-feedback residual the round started with
    residual_out_hash: bytes  # ... and of the one it carries into the next round
    threads: int              # torch intra-op threads it trained with
    profile: str              # numerics profile it trained under (compute.numerics)

    def leaf(self, round: int, worker: int) -> bytes:
        return keccak(PAYLOAD_DOMAIN + _u256(round) + _u256(worker) + self.result_hash
                      + self.residual_in_hash + self.residual_out_hash + _u256(self.threads)
                      + keccak(self.profile.encode()))


def checkpoint_of(step: int, params: State, optimizer_state: Mapping, names: Sequence[str]) -> Checkpoint:
    return Checkpoint(step, tensor_hash(params), tensor_hash(optimizer_tensors(optimizer_state, names)))


def segment_bounds(inner_steps: int, k: int) -> list[int]:
    """Checkpoint steps of a round: 0, k, 2k, ..., H (H always included)."""
    if k < 1 or inner_steps < 1:
        raise ValueError(f"need k >= 1 and inner_steps >= 1, got k={k}, inner_steps={inner_steps}")
    return [*range(0, inner_steps, k), inner_steps]


def n_leaves_for(inner_steps: int, k: int) -> int:
    """Leaves of a round's tree: one per checkpoint, then the payload leaf."""
    return len(segment_bounds(inner_steps, k)) + 1


@dataclass
class RoundCommitment:
    """What a worker publishes for one round: every checkpoint's hashes, the payload leaf, and
    their Merkle root (the root goes on chain; `n_leaves` is the tree's leaf count).

    Segments 0 .. n_segments-1 are training segments (checkpoint s to s+1, replayed);
    `payload_segment` (= n_segments) goes from the last checkpoint to the payload leaf."""

    round: int
    worker: int
    inner_steps: int
    k: int
    checkpoints: list[Checkpoint]
    payload: PayloadLeaf
    leaves: list[bytes] = field(init=False)
    root: bytes = field(init=False)
    _proofs: list[list[bytes]] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        steps = [c.step for c in self.checkpoints]
        if steps != segment_bounds(self.inner_steps, self.k):
            raise ValueError(f"checkpoint steps {steps} are not those of H={self.inner_steps}, k={self.k}")
        self.leaves = [c.leaf(self.round, self.worker) for c in self.checkpoints]
        self.leaves.append(self.payload.leaf(self.round, self.worker))
        self.root = merkle.root(self.leaves)

    @property
    def n_segments(self) -> int:
        """Training segments (what a spot check draws from)."""
        return len(self.checkpoints) - 1

    @property
    def payload_segment(self) -> int:
        return len(self.checkpoints) - 1

    @property
    def n_leaves(self) -> int:
        return len(self.checkpoints) + 1

    def proof(self, index: int) -> list[bytes]:
        if self._proofs is None:
            self._proofs = merkle.proofs(self.leaves)
        return list(self._proofs[index])


def commitment_from_answer(result: RoundResult, round: int, worker: int, inner_steps: int,
                           k: int) -> RoundCommitment:
    """The round commitment a worker's answer lists (its checkpoint hashes and payload leaf);
    ValueError naming what is missing or does not fit H and k. Whether it is the signed one is
    for the caller to check (its root against the commitment's `checkpointRoot`)."""
    if result.checkpoints is None or result.payload is None:
        raise ValueError("the answer lists no checkpoints or no payload leaf")
    leaf = PayloadLeaf(bytes.fromhex(result.sha256), bytes.fromhex(result.payload.residual_in_hash),
                       bytes.fromhex(result.payload.residual_out_hash), result.payload.threads,
                       result.payload.profile)
    return RoundCommitment(round, worker, inner_steps, k, [
        Checkpoint(h.step, bytes.fromhex(h.params_hash), bytes.fromhex(h.optimizer_hash))
        for h in result.checkpoints], leaf)
