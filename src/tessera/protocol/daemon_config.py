"""The config section every long-running node shares (provider and validator): who it is, which
chain, where it listens, where it keeps state, and what it stakes."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tessera.protocol.money import STAKE_DECIMALS, parse_amount


class DaemonSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = Field(description="devnet:N, keystore:NAME or a 0x private key")
    network: Path | None = Field(None, description="network file; default: the running devnet's")
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    public_url: str | None = Field(None, description="endpoint published on chain")
    state_dir: Path
    stake: str = Field("100", description="TSTK staked at registration")

    @property
    def endpoint(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def stake_base_units(self) -> int:
        return parse_amount(self.stake, STAKE_DECIMALS)
