"""The training loop that runs inside a lease: replayable, checkpointed, resumable.

Replayable: parameters are initialised from `seed`, batches come from a generator seeded from
`seed` whose state is checkpointed, deterministic algorithms are on and the thread count is
fixed, so the same workload on the same data gives bitwise-identical weights on CPU.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tessera.compute.corpus import sha256_hex
from tessera.compute.model import ByteGPT
from tessera.files import write_atomic
from tessera.protocol.workload import TrainingWorkload

CHECKPOINT = "checkpoint.pt"
ARTIFACT_NAMES = ("model.pt", "loss_history.json", "metrics.json", CHECKPOINT)
MANIFEST = "artifacts.json"
TIMING = "timing.json"  # wall time and throughput of the last run: a report, not an artifact
EVAL_SEED_OFFSET = 1_000_003
CUBLAS_WORKSPACE = ":4096:8"


@dataclass
class TrainResult:
    result_hash: str
    metrics: dict   # deterministic: part of the committed result
    artifacts: dict
    timing: dict    # wall time and throughput of this run: reported, never hashed


def configure_determinism(workload: TrainingWorkload) -> torch.device:
    """Pick the device and make every kernel deterministic; call before any CUDA work.

    `CUBLAS_WORKSPACE_CONFIG` is set before the first `torch.cuda` call (cuBLAS reads it when
    its handle is created); `job.py` also sets it before importing torch at all."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    if workload.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("workload.device is 'cuda' but no CUDA device is available")
    use_cuda = workload.device == "cuda" or (workload.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(workload.threads)
    return torch.device("cuda" if use_cuda else "cpu")


def split(data: bytes, workload: TrainingWorkload) -> tuple[torch.Tensor, torch.Tensor]:
    if len(data) < workload.min_dataset_bytes():
        raise ValueError(f"dataset has {len(data)} bytes; this workload needs at least "
                         f"{workload.min_dataset_bytes()}")
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    n_val = int(len(tokens) * workload.val_fraction)
    return tokens[:-n_val], tokens[-n_val:]


def batch(tokens: torch.Tensor, workload: TrainingWorkload, gen: torch.Generator,
          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(len(tokens) - workload.block_size - 1, (workload.batch_size,),
                           generator=gen)
    offsets = torch.arange(workload.block_size)
    x = tokens[starts[:, None] + offsets]
    y = tokens[starts[:, None] + offsets + 1]
    return x.to(device), y.to(device)


def inner_step(model: ByteGPT, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               max_grad_norm: float, lr: float) -> torch.Tensor:
    """One training step, the same in every loop (single-node training, DiLoCo workers, the
    synchronous baseline, a verifier's replay): forward, backward, the gradient's global L2 norm
    clipped to `max_grad_norm`, AdamW at learning rate `lr` (the workload's
    `learning_rate_at(step)`). Returns the loss (detached)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    _, loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def held_out_loss(model: ByteGPT, val: torch.Tensor, workload: TrainingWorkload,
                  device: torch.device) -> float:
    """Mean loss over a fixed set of held-out batches (the same ones on every call)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(workload.seed + EVAL_SEED_OFFSET)
    losses = [model(*batch(val, workload, gen, device))[1].item()
              for _ in range(workload.eval_batches)]
    model.train(was_training)
    return sum(losses) / len(losses)


@torch.no_grad()
def whole_split_loss(model: ByteGPT, val: torch.Tensor, workload: TrainingWorkload,
                     device: torch.device, rows: int = 512) -> float:
    """Mean next-byte loss over the whole held-out split, cut into consecutive blocks of
    `block_size` (every byte predicted once; a tail shorter than a block is left out). No
    sampling, so no evaluation noise: what comparisons of training methods use
    (bench/diloco.py), where `held_out_loss`'s few random batches would be too noisy."""
    was_training = model.training
    model.eval()
    n = (len(val) - 1) // workload.block_size
    x = val[: n * workload.block_size].view(n, workload.block_size)
    y = val[1: n * workload.block_size + 1].view(n, workload.block_size)
    total = 0.0
    for i in range(0, n, rows):
        _, loss = model(x[i:i + rows].to(device), y[i:i + rows].to(device))
        total += loss.item() * len(x[i:i + rows])
    model.train(was_training)
    return total / n


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def result_hash_of(artifacts: dict) -> str:
    """sha256 of the canonical JSON of an artifacts manifest: what a provider commits on chain."""
    canonical = json.dumps(artifacts, sort_keys=True, separators=(",", ":")).encode()
    return sha256_hex(canonical)


def train(workload: TrainingWorkload, data: bytes, out_dir: Path,
          on_progress: Callable[[dict], None] | None = None, resume: bool = True) -> TrainResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = configure_determinism(workload)
    train_tokens, val_tokens = split(data, workload)
    torch.manual_seed(workload.seed)
    model = ByteGPT(workload).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=workload.learning_rate,
                                  weight_decay=workload.weight_decay)
    gen = torch.Generator().manual_seed(workload.seed)
    history: list[dict] = []
    step = 0
    checkpoint_path = out_dir / CHECKPOINT
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        history, step = json.loads(state["history"]), state["completed_steps"]
    tokens_per_step = workload.batch_size * workload.block_size
    started, steps_this_run = time.perf_counter(), 0
    model.train()
    while step < workload.steps:
        x, y = batch(train_tokens, workload, gen, device)
        loss = inner_step(model, optimizer, x, y, workload.max_grad_norm,
                          workload.learning_rate_at(step))
        step += 1
        steps_this_run += 1
        record = {"step": step, "train_loss": loss.item()}
        if step % workload.eval_every == 0 or step == workload.steps:
            record["val_loss"] = held_out_loss(model, val_tokens, workload, device)
        history.append(record)
        if step % workload.checkpoint_every == 0 or step == workload.steps:
            # Same bytes after a resume as in an uninterrupted run: pickle's memo follows object
            # identity, so the history goes in as JSON text and no top-level key repeats a key
            # of the optimizer's state (its "step" strings come from the unpickler on resume).
            _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "generator": gen.get_state(), "history": json.dumps(history),
                          "completed_steps": step}, checkpoint_path)
        if on_progress:
            elapsed = time.perf_counter() - started
            on_progress({**record, "steps": workload.steps,
                         "tokens_per_s": steps_this_run * tokens_per_step / max(elapsed, 1e-9)})
    wall = time.perf_counter() - started
    final_val = next(h["val_loss"] for h in reversed(history) if "val_loss" in h)
    _atomic_save({"model": model.state_dict(), "workload": workload.model_dump()},
                 out_dir / "model.pt")
    metrics = {
        "steps": workload.steps, "final_train_loss": history[-1]["train_loss"],
        "final_val_loss": final_val, "device": str(device), "threads": workload.threads,
        "seed": workload.seed, "torch": torch.__version__, "dataset_sha256": sha256_hex(data),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    timing = {"wall_s": wall, "steps_this_run": steps_this_run,
              "tokens_per_s": steps_this_run * tokens_per_step / max(wall, 1e-9),
              "device": str(device), "threads": workload.threads}
    write_atomic(out_dir / "loss_history.json", json.dumps(history))
    write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    write_atomic(out_dir / TIMING, json.dumps(timing, indent=2))
    artifacts = manifest_of(out_dir)
    write_atomic(out_dir / MANIFEST, json.dumps(artifacts, sort_keys=True, indent=2))
    return TrainResult(result_hash_of(artifacts), metrics, artifacts, timing)


def manifest_of(out_dir: Path, names: tuple[str, ...] = ARTIFACT_NAMES) -> dict:
    """`{name: {sha256, size}}` for the artifacts in `out_dir`, read from the files themselves."""
    return {name: {"sha256": sha256_hex((Path(out_dir) / name).read_bytes()),
                   "size": (Path(out_dir) / name).stat().st_size} for name in names}


def verify_artifacts(out_dir: Path) -> str:
    """Check every file listed in `out_dir/artifacts.json` against its sha256 and size; returns
    the result hash. Raises ValueError naming the first artifact that does not match."""
    listing = json.loads((Path(out_dir) / MANIFEST).read_text())
    for name, meta in listing.items():
        path = Path(out_dir) / name
        if not path.exists():
            raise ValueError(f"artifact {name} is listed but missing")
        if sha256_hex(path.read_bytes()) != meta["sha256"] or path.stat().st_size != meta["size"]:
            raise ValueError(f"artifact {name} does not match its sha256")
    return result_hash_of(listing)
