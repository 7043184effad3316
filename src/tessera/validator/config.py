"""The validator's configuration file (validator.toml)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tessera.protocol.jobspec import parse_toml_model
from tessera.protocol.money import parse_amount

STAKE_DECIMALS = 18


class ValidatorSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = Field(description="devnet:N, keystore:NAME or a 0x private key")
    network: Path | None = Field(None, description="network file; default: the running devnet's")
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    public_url: str | None = Field(None, description="where receipts are served; set on chain")
    state_dir: Path
    stake: str = Field("100", description="TSTK staked at registration")

    @property
    def endpoint(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def stake_base_units(self) -> int:
        return parse_amount(self.stake, STAKE_DECIMALS)


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

    validator: ValidatorSection
    probes: ProbeSection = ProbeSection()
    outages: OutageSection = OutageSection()


def load_validator_config(path: Path) -> ValidatorConfig:
    return parse_toml_model(ValidatorConfig, path)
