"""The training workload a tenant asks for: a small byte-level transformer language model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainingWorkload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["train-charlm"] = "train-charlm"
    n_layer: int = Field(2, ge=1, le=48)
    n_head: int = Field(4, ge=1, le=64)
    n_embd: int = Field(64, ge=8, le=4096)
    block_size: int = Field(64, ge=8, le=4096)
    batch_size: int = Field(16, ge=1, le=4096)
    steps: int = Field(300, ge=1, le=1_000_000)
    learning_rate: float = Field(3e-3, gt=0, le=1.0)
    weight_decay: float = Field(0.01, ge=0, le=1.0)
    max_grad_norm: float = Field(1.0, gt=0, le=1e6, description="every step clips the gradient's "
                                 "global L2 norm to this (it also bounds the AdamW moments a "
                                 "verifier accepts: compute.replay.state_bounds)")
    eval_every: int = Field(50, ge=1)
    eval_batches: int = Field(8, ge=1, le=1000)
    checkpoint_every: int = Field(50, ge=1)
    seed: int = Field(1234, ge=0, lt=2**63)
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads, fixed and recorded")
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant", description='"linear": warm up over `warmup_steps`, then decay linearly to '
        "`final_lr_ratio` x learning_rate at step `steps` (a DiLoCo job's `steps` is its "
        "rounds x inner_steps)")
    warmup_steps: int = Field(0, ge=0, le=1_000_000, description="linear warm-up from "
                              "learning_rate / warmup_steps (both schedules)")
    final_lr_ratio: float = Field(0.1, ge=0, le=1.0, description='"linear": the learning rate '
                                  "at the last step, as a fraction of learning_rate")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TrainingWorkload:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainingWorkload:
        if self.warmup_steps >= self.steps and self.lr_schedule == "linear":
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps "
                             f"({self.steps}) for the linear schedule to decay")
        return self

    def learning_rate_at(self, step: int) -> float:
        """The inner optimizer's learning rate for the step with 0-based index `step` (a DiLoCo
        worker's step h of round r is step r x H + h). Only +, -, *, / on floats, so every
        machine gets the same bits: a verifier's replay sets exactly the worker's rate."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.learning_rate
        left = max(self.steps - step, 0) / (self.steps - self.warmup_steps)
        return self.learning_rate * (self.final_lr_ratio + (1 - self.final_lr_ratio) * left)

    def min_dataset_bytes(self) -> int:
        """Both splits must hold at least one block plus its next-byte target."""
        return int((self.block_size + 2) / self.val_fraction) + 1

    def dataset_problem(self, size: int) -> str | None:
        """Why a dataset of `size` bytes cannot train this workload (None: it can). A provider
        refuses such a manifest before it starts anything: a job that fails on its tenant's
        own input would be closed by the provider and counted against it (review 27)."""
        if size < self.min_dataset_bytes():
            return f"dataset has {size} bytes; this workload needs at least {self.min_dataset_bytes()}"
        return None


class DilocoWorkerWorkload(BaseModel):
    """One worker's share of a DiLoCo job: inner AdamW steps on its own shard, round by round,
    from global parameters the coordinator sends; pseudo-gradients go back."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["diloco-worker"] = "diloco-worker"
    model: TrainingWorkload
    inner_steps: int = Field(50, ge=1, le=100_000)
    worker: int = Field(ge=0)
    workers: int = Field(ge=1, le=64)
    compression: Literal["none", "int8", "int4"] = "int8"
    checkpoint_every: int = Field(0, ge=0, le=100_000, description="commit to the worker's "
                                  "state every k inner steps (docs/verification.md); 0: never")

    @model_validator(mode="after")
    def _worker_in_range(self) -> DilocoWorkerWorkload:
        if self.worker >= self.workers:
            raise ValueError(f"worker index {self.worker} must be below workers ({self.workers})")
        return self

    def dataset_problem(self, size: int) -> str | None:
        """As `TrainingWorkload.dataset_problem`, and this worker's shard of the training split
        (`compute.diloco.shard_for`) must hold one block plus its next-byte target."""
        if problem := self.model.dataset_problem(size):
            return problem
        train, w, n = size - int(size * self.model.val_fraction), self.worker, self.workers
        shard = train * (w + 1) // n - train * w // n
        if shard < self.model.block_size + 2:
            return (f"dataset has {size} bytes; worker {w}'s shard of {n} holds {shard}, less "
                    f"than one block of {self.model.block_size} plus its target")
        return None
