"""The config section every long-running node shares (provider and validator): who it is, which
chain, where it listens, where it keeps state, and what it stakes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tessera.protocol.jobspec import LocalPath
from tessera.protocol.matching import endpoint_problem
from tessera.protocol.money import STAKE_DECIMALS, STAKE_SYMBOL, parse_amount

# ProviderRegistry and Validators keep the endpoint as String[256]: bytes, not characters.
MAX_ENDPOINT_BYTES = 256


def _plain_text(value: str, what: str) -> str:
    if not value or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be non-empty printable text without spaces")
    return value


class DaemonSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = Field(min_length=1, max_length=256,
                         description="devnet:N, keystore:NAME or a 0x private key")
    network: LocalPath | None = Field(None, description="network file; default: the running "
                                      "devnet's")
    host: str = Field("127.0.0.1", max_length=253)
    port: int = Field(ge=1, le=65535)
    public_url: str | None = Field(None, description="endpoint published on chain")
    state_dir: LocalPath
    stake: str = Field("100", description="TSTK staked at registration: a string like '100', "
                       "above zero, at most uint256 base units, at most 18 decimals")

    @field_validator("stake", mode="before")
    @classmethod
    def _stake_is_an_amount(cls, value: object) -> str:
        """Checked here, not at registration: '-5', 'lots', '1e999999' or 19 decimals fail at
        parse time naming the field. An integer is refused (is 100 tokens or base units?)."""
        if not isinstance(value, str):
            raise ValueError(f"write the stake as a string of {STAKE_SYMBOL}, like \"100\"")
        if parse_amount(value, STAKE_DECIMALS, symbol=STAKE_SYMBOL) == 0:
            raise ValueError("stake must be above zero")
        return value

    @field_validator("host")
    @classmethod
    def _host_is_plain(cls, value: str) -> str:
        return _plain_text(value, "host")

    @field_validator("public_url")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        if value is not None:
            _plain_text(value, "public_url")
            if not value.startswith(("http://", "https://")):
                raise ValueError("public_url must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _endpoint_fits_on_chain(self) -> DaemonSection:
        if len(self.endpoint.encode()) > MAX_ENDPOINT_BYTES:
            raise ValueError(f"endpoint (public_url, or http://host:port) is longer than "
                             f"{MAX_ENDPOINT_BYTES} bytes, the on-chain limit (String[256])")
        problem = endpoint_problem(self.endpoint)   # what every client will ask of it
        if problem:
            raise ValueError(f"endpoint {self.endpoint!r} (public_url, or http://host:port): "
                             f"{problem}; tenants and validators would never call it")
        return self

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host   # an IPv6 literal
        return self.public_url or f"http://{host}:{self.port}"

    @property
    def stake_base_units(self) -> int:
        return parse_amount(self.stake, STAKE_DECIMALS)

