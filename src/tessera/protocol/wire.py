"""Messages that cross HTTP between tenant and provider, validated on arrival."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tessera.protocol.commitment import SignedCommitment
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.workload import DilocoWorkerWorkload, TrainingWorkload

Workload = Annotated[TrainingWorkload | DilocoWorkerWorkload, Field(discriminator="kind")]

HEX64 = r"^[0-9a-f]{64}$"
ADDRESS = r"^0x[0-9a-fA-F]{40}$"
SIGNATURE = r"^0x[0-9a-fA-F]{130}$"


class BidMessage(BaseModel):
    """A provider's signed offer for one order (EIP-712 `Bid`)."""

    model_config = ConfigDict(extra="forbid")

    order_id: int = Field(ge=1)
    provider: str = Field(pattern=ADDRESS)
    price_per_gpu_hour: int = Field(gt=0)
    nonce: int = Field(ge=0)
    expiry: int = Field(gt=0)
    signature: str = Field(pattern=SIGNATURE)


class Manifest(BaseModel):
    """What the tenant asks the provider to run in one lease."""

    model_config = ConfigDict(extra="forbid")

    lease_id: int = Field(ge=1)
    workload: Workload
    dataset_sha256: str = Field(pattern=HEX64)
    dataset_size: int = Field(gt=0, le=1 << 30)

    def digest(self) -> bytes:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()


class SignedManifest(BaseModel):
    """A manifest with the lease tenant's EIP-712 signature over (lease, digest, nonce, expiry)."""

    model_config = ConfigDict(extra="forbid")

    manifest: Manifest
    nonce: int = Field(ge=0)
    expiry: int = Field(gt=0)
    signature: str = Field(pattern=SIGNATURE)


class ChallengeCase(BaseModel):
    """What a validator needs, beyond the chain, to replay a challenged segment: the job spec
    (it must hash to the order's `spec_hash`) and the challenged lease's tenant-signed manifest.
    Anyone may push it; nothing in it is trusted (validator.challenges.check_case)."""

    model_config = ConfigDict(extra="forbid")

    spec: JobSpec
    manifest: SignedManifest


class LeaseStatus(BaseModel):
    lease_id: int
    status: str
    detail: str = ""
    step: int = 0
    steps: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    tokens_per_s: float | None = None
    result_hash: str | None = None


class CheckpointHashes(BaseModel):
    """One committed checkpoint of a worker's round (`compute.checkpoints.Checkpoint`): the sha256
    of its parameters and of its AdamW state after `step` inner steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: int = Field(ge=0)
    params_hash: str = Field(pattern=HEX64)
    optimizer_hash: str = Field(pattern=HEX64)


class PayloadHashes(BaseModel):
    """The payload leaf of a worker's round (`compute.checkpoints.PayloadLeaf`) less the result
    hash, which is the answer's `sha256`: the error-feedback residual before and after the round,
    and the thread count and numerics profile the worker trained with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    residual_in_hash: str = Field(pattern=HEX64)
    residual_out_hash: str = Field(pattern=HEX64)
    threads: int = Field(ge=1, le=256)
    profile: str = Field(min_length=1, max_length=120)


MAX_CHECKPOINTS = 100_001  # H <= 100,000 inner steps, k >= 1
# the most bytes a RoundResult's JSON takes (MAX_CHECKPOINTS entries of ~170 bytes, and room)
MAX_ROUND_RESULT_BYTES = 32 << 20


class RoundResult(BaseModel):
    """A DiLoCo worker's answer for one round, signed by the provider (EIP-712 `RoundResult`).

    With verification on, it also carries the provider's signed EIP-712 `Commitment` (whose
    `checkpointRoot` is the Merkle root over `checkpoints` and the payload leaf,
    docs/verification.md) and the payload leaf's fields (`payload`: residual hashes, and the
    thread count and numerics profile the worker trained with, which a bitwise replay needs)."""

    model_config = ConfigDict(extra="forbid")

    lease_id: int
    round: int
    params_sha256: str = Field(pattern=HEX64)
    sha256: str = Field(pattern=HEX64)
    size: int
    inner_loss: float
    compute_s: float
    signature: str = Field(pattern=SIGNATURE)
    commitment: SignedCommitment | None = None
    checkpoints: list[CheckpointHashes] | None = Field(None, max_length=MAX_CHECKPOINTS)
    payload: PayloadHashes | None = None
