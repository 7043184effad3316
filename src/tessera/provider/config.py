"""The provider's configuration file (provider.toml)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tessera.chain.accounts import default_state_dir
from tessera.errors import SpecError
from tessera.files import read_text
from tessera.protocol.daemon_config import DaemonSection
from tessera.protocol.jobspec import LocalPath, Price, Seconds, parse_toml_model
from tessera.protocol.liveness import CONFIRMATIONS as LIVENESS_CONFIRMATIONS


class ProviderSection(DaemonSection):
    """[provider]: the shared daemon section, with `state_dir` optional: left out, the node
    keeps its state under TESSERA_HOME (`provider-<port>`), so running a provider from a
    source checkout leaves nothing in the work tree."""

    state_dir: LocalPath | None = Field(None, description="SQLite state, inputs, job outputs; "
                                        "default: $TESSERA_HOME/provider-<port>")

    @model_validator(mode="after")
    def _state_under_home(self) -> ProviderSection:
        if self.state_dir is None:
            self.state_dir = default_state_dir("provider", self.port)
        return self


class PricingSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price_per_gpu_hour: Price = Field(description="floor, TUSD per device-hour, at most "
                                      "MAX_PRICE_PER_GPU_HOUR (protocol/money.py)")
    bid_validity: Seconds = 600
    max_concurrent_leases: int = Field(1, ge=1, le=64)


class LimitsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threads: int = Field(1, ge=1, le=256, description="CPU threads given to each job")
    # at most 16 TiB: the limit becomes a byte count for setrlimit, which takes 64 bits
    memory_limit_mb: int = Field(8192, ge=256, le=1 << 24)
    max_job_seconds: Seconds = 3600


class HardwareSection(BaseModel):
    """Optional overrides of detected hardware (e.g. to advertise fewer devices than present)."""

    model_config = ConfigDict(extra="forbid")

    gpu_count: int | None = Field(None, ge=1, le=1024, description="at most an order's "
                                  "min_gpus limit")


class PayoutsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sweep_every: Seconds = Field(60, description="how often held pay of verified leases is "
                                 "released (as their rounds become final) and withdrawn")


class LivenessSection(BaseModel):
    """How the node proves it is up each epoch (docs/uptime.md, provider/heartbeats.py)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    offchain: bool = Field(True, description="sign a beat and send it to the validators, with "
                           "an on-chain heartbeat only when none receipts it; false: an "
                           "on-chain heartbeat every epoch")
    deadline_s: float | None = Field(None, gt=0, le=3600, description="fall back to the "
                                     "on-chain heartbeat when no validator receipted the beat "
                                     "this long after it was first sent (default: 10 s or a "
                                     "quarter of the epoch, whichever is shorter)")
    timeout_s: float = Field(3.0, gt=0, le=60, description="wall-clock deadline of each POST "
                             "to a validator, all of it: connect, headers and body (a round "
                             "of POSTs also ends at the fallback deadline)")
    confirmations: int | None = Field(None, ge=0, le=100_000, description="blocks the block "
                                      "that set an epoch's seed must be buried under before the "
                                      "node signs a beat over it (a reorg can change an unburied "
                                      "seed); default: 0 on the devnet, else "
                                      f"{LIVENESS_CONFIRMATIONS} (docs/uptime.md, \"Reorgs\")")


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: ProviderSection
    pricing: PricingSection
    limits: LimitsSection = LimitsSection()
    hardware: HardwareSection = HardwareSection()
    payouts: PayoutsSection = PayoutsSection()
    liveness: LivenessSection = LivenessSection()


def load_provider_config(path: Path) -> ProviderConfig:
    return parse_toml_model(ProviderConfig, read_text(path, SpecError), path)
