"""Recompute a trained model's held-out loss: how a tenant checks a provider's reported figure."""

from __future__ import annotations

from pathlib import Path

import torch

from tessera.compute.model import ByteGPT
from tessera.compute.train import configure_determinism, held_out_loss, split
from tessera.protocol.workload import TrainingWorkload

ARCHITECTURE = ("n_layer", "n_head", "n_embd", "block_size")


def evaluate_model(model_path: Path, data: bytes, workload: TrainingWorkload | None = None,
                   device: str = "cpu") -> float:
    """Mean loss of `model.pt` over the held-out tail of `data`, on the same fixed evaluation
    batches the training run used (same split, same eval seed), so it reproduces the reported
    `final_val_loss` (bitwise on the same device and thread count; closely elsewhere).

    `workload` is the one the tenant asked for; when given it must describe the same
    architecture as the saved model (a provider that trained something else is caught here).
    Without it, the workload saved in `model.pt` is used.
    """
    saved = torch.load(model_path, map_location="cpu", weights_only=True)
    stored = TrainingWorkload.model_validate(saved["workload"])
    if workload is not None:
        wrong = [f for f in ARCHITECTURE if getattr(workload, f) != getattr(stored, f)]
        if wrong:
            raise ValueError(f"{model_path} was trained with a different architecture: "
                             + ", ".join(f"{f}={getattr(stored, f)} (expected "
                                         f"{getattr(workload, f)})" for f in wrong))
    else:
        workload = stored
    workload = workload.model_copy(update={"device": device})
    torch_device = configure_determinism(workload)
    model = ByteGPT(workload).to(torch_device)
    model.load_state_dict(saved["model"])
    _, val = split(data, workload)
    return held_out_loss(model, val, workload, torch_device)
