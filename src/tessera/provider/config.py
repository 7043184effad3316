"""The provider's configuration file (provider.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tessera.daemon_config import DaemonSection
from tessera.protocol.jobspec import PaymentAmount, Seconds, parse_toml_model


class PricingSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price_per_gpu_hour: PaymentAmount = Field(description="floor, TUSD per device-hour")
    bid_validity: Seconds = 600
    max_concurrent_leases: int = Field(1, ge=1, le=64)


class LimitsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threads: int = Field(1, ge=1, le=256, description="CPU threads given to each job")
    memory_limit_mb: int = Field(8192, ge=256)
    max_job_seconds: Seconds = 3600


class HardwareSection(BaseModel):
    """Optional overrides of detected hardware (e.g. to advertise fewer devices than present)."""

    model_config = ConfigDict(extra="forbid")

    gpu_count: int | None = Field(None, ge=1)


class PayoutsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sweep_every: Seconds = Field(60, description="how often held pay of verified leases is "
                                 "released (as their rounds become final) and withdrawn")


class TestingSection(BaseModel):
    """TEST ONLY: fault injection for end-to-end tests of verification. A real provider cannot
    be made to cheat, so a test sets `cheat` and this node's DiLoCo workers cheat in the named
    way (compute/diloco_worker.py): "skip-steps" trains half the inner steps of every committed
    segment; "random-pseudo-gradient" trains nothing and commits states made up towards a
    random pseudo-gradient; "wrong-shard" trains on the next worker's shard; "wrong-round"
    uses the next round's batches; "copy-worker" submits a sibling lease's round (fetched from
    its provider) as its own, or trains honestly and logs it when none answers in time. Never
    set it on a node that earns money: a spot check or a validator catches it and its stake is
    slashed."""

    model_config = ConfigDict(extra="forbid")

    cheat: Literal["skip-steps", "random-pseudo-gradient", "wrong-shard", "wrong-round",
                   "copy-worker"] | None = None


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: DaemonSection
    pricing: PricingSection
    limits: LimitsSection = LimitsSection()
    hardware: HardwareSection = HardwareSection()
    payouts: PayoutsSection = PayoutsSection()
    testing: TestingSection = TestingSection()


def load_provider_config(path: Path) -> ProviderConfig:
    return parse_toml_model(ProviderConfig, path)
