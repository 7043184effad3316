"""An agent's TOML file (`tessera agent run AGENT.toml`, examples/agent.toml): who it is, the
grant it pays from, its goal, where it buys inference, and the training job it rents.

Every mistake is a SpecError naming the file and the field ("agent.toml: goal.completions:
Input should be greater than or equal to 1"), raised before anything is sent or signed."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tessera.chain.accounts import tessera_home
from tessera.errors import SpecError
from tessera.files import read_text
from tessera.protocol.jobspec import JobSpec, LocalPath, PaymentAmount, Seconds, parse_toml_model

# devnet:N, keystore:NAME or a raw 0x private key (chain/accounts.py): checked for shape here so
# that a typo names its field; a keystore's password is asked for only when it is used.
_ACCOUNT = re.compile(r"(devnet:[0-9]{1,3}|keystore:[A-Za-z0-9_.-]{1,64}|0x[0-9a-fA-F]{64})")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_COMPLETIONS = 1000
MAX_TRAININGS = 8


def _account(value: str) -> str:
    if not _ACCOUNT.fullmatch(value):
        raise ValueError("must be devnet:N, keystore:NAME or a 0x private key (64 hex digits)")
    return value


class AgentSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="names the log file; letters, digits, '_', '.', '-'")
    session_key: str = Field(description="the grant's session key: signs payments from the "
                             "owner's AgentBudget deposit and holds nothing")
    grant: int = Field(ge=1, lt=2**256, description="the owner's grant id (`tessera agent grant`)")
    wallet: str | None = Field(None, description="the agent's own account: receives the training "
                               "escrow from the grant, posts the order, pays its gas; needed "
                               "with [job]")
    network: LocalPath | None = Field(None, description="network file; default: the devnet's")
    log: LocalPath | None = Field(None, description="JSON lines log; default "
                                  "$TESSERA_HOME/agents/<name>.jsonl")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("must be 1 to 64 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("session_key", "wallet")
    @classmethod
    def _accounts(cls, value: str | None) -> str | None:
        return value if value is None else _account(value)


class GoalSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    completions: int = Field(ge=1, le=MAX_COMPLETIONS, description="completions to buy")
    max_val_loss: float | None = Field(None, gt=0, le=100, allow_inf_nan=False,
                                       description="the trained model's held-out loss (recomputed "
                                       "by the agent) must be below this; needs [job]")
    max_trainings: int = Field(1, ge=1, le=MAX_TRAININGS, description="train at most this many "
                               "times; each retry doubles the steps")


class InferenceSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=256, description="the provider's model server, as `tessera "
                     "provider serve-model` prints it (without /v1/generate)")
    prompts: list[str] = Field(default=["def "], min_length=1, max_length=64)
    max_tokens: int = Field(32, ge=1, le=1024)
    temperature: float = Field(0.0, ge=0, le=2, allow_inf_nan=False, description="0: greedy; "
                               "above: sampled, seeded by the completion's number")
    max_price: PaymentAmount | None = Field(None, description="refuse, before signing, any "
                                            "request priced above this ('0.01' TUSD)")
    wait: Seconds = Field(600, description="how long to wait for the server to serve the model")
    model_sha256: str | None = Field(None, description="the model the server must serve; "
                                     "with [job] it is the trained model's")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:8402")
        return value.rstrip("/")

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value: list[str]) -> list[str]:
        for i, prompt in enumerate(value):
            if not prompt or len(prompt.encode("utf-8", "surrogatepass")) > 4096:
                raise ValueError(f"prompt {i} must be 1 to 4096 bytes")
        return value

    @field_validator("model_sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.fullmatch(value.lower().removeprefix("0x")):
            raise ValueError("must be 64 hex digits")
        return value if value is None else value.lower().removeprefix("0x")


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: AgentSection
    goal: GoalSection
    inference: InferenceSection
    job: JobSpec | None = Field(None, description="the training job to rent (a job spec, as "
                                "examples/job.toml); left out, the agent only buys inference")

    @model_validator(mode="after")
    def _consistent(self) -> AgentConfig:
        if self.job is not None:
            if self.agent.wallet is None:
                raise ValueError("agent.wallet is required with [job]: the order is posted "
                                 "and its gas paid from it")
            if self.job.mode != "single":
                raise ValueError('job.mode: the agent rents single-node jobs ("single")')
            if self.inference.model_sha256 is not None:
                raise ValueError("inference.model_sha256: with [job] the model is the one "
                                 "the agent trains; leave it out")
        elif self.goal.max_val_loss is not None:
            raise ValueError("goal.max_val_loss needs a [job] to train")
        elif self.goal.max_trainings != 1:
            raise ValueError("goal.max_trainings needs a [job] to train")
        return self

    def log_path(self) -> Path:
        return Path(self.agent.log) if self.agent.log else \
            tessera_home() / "agents" / f"{self.agent.name}.jsonl"


def parse_agent_config(text: str, source: str | Path) -> AgentConfig:
    return parse_toml_model(AgentConfig, text, source)


def load_agent_config(path: Path) -> AgentConfig:
    """The agent file at `path`; SpecError naming the file and the field."""
    return parse_agent_config(read_text(path, SpecError), path)
