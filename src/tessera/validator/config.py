"""The validator's configuration file (validator.toml)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tessera.daemon_config import DaemonSection
from tessera.protocol.jobspec import parse_toml_model


class ProbeSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_epoch: int = Field(1, ge=1, le=16, description="probes per provider per epoch")
    timeout_s: float = Field(3.0, gt=0, le=60, description="answer within this, or it is missed")
    max_delay_s: float | None = Field(
        None, gt=0, description="cap on the random wait before a probe (default: the epoch)")
    concurrency: int = Field(8, ge=1, le=256, description="probes in flight at once")


class OutageSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report: bool = Field(True, description="send Uptime.report_outage for unreported outages "
                                           "(docs/uptime.md); costs gas, earns nothing")


class ValidatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    validator: DaemonSection
    probes: ProbeSection = ProbeSection()
    outages: OutageSection = OutageSection()


def load_validator_config(path: Path) -> ValidatorConfig:
    return parse_toml_model(ValidatorConfig, path)
