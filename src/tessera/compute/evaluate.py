"""Recompute a trained model's held-out loss: how a tenant checks a provider's reported figure."""

from __future__ import annotations

from pathlib import Path

import torch

from tessera.compute.model import ByteGPT
from tessera.compute.train import configure_determinism, held_out_loss, split
from tessera.protocol.workload import TrainingWorkload


def evaluate_model(model_path: Path, data: bytes, device: str = "cpu") -> float:
    saved = torch.load(model_path, map_location="cpu", weights_only=True)
    workload = TrainingWorkload.model_validate({**saved["workload"], "device": device})
    torch_device = configure_determinism(workload)
    model = ByteGPT(workload).to(torch_device)
    model.load_state_dict(saved["model"])
    _, val = split(data, workload)
    return held_out_loss(model, val, workload, torch_device)
