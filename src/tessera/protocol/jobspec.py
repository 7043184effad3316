"""A tenant's job: what hardware it needs, what it pays, what data and workload it runs."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from tessera.errors import SpecError
from tessera.protocol.lease import order_deposit
from tessera.protocol.money import PAYMENT_DECIMALS, parse_amount, parse_duration
from tessera.protocol.workload import TrainingWorkload

BUILTIN_CORPUS = "builtin:stdlib"


def _to_base_units(value: object) -> object:
    return parse_amount(value, PAYMENT_DECIMALS) if isinstance(value, str) else value


def _to_seconds(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


PaymentAmount = Annotated[int, BeforeValidator(_to_base_units), Field(ge=0)]
Seconds = Annotated[int, BeforeValidator(_to_seconds), Field(gt=0)]


class OrderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpu_model: str = Field("", max_length=64, description='required device model, "" for any')
    min_gpus: int = Field(1, ge=1, le=1024)
    min_gpu_memory_mb: int = Field(0, ge=0)
    max_price_per_gpu_hour: PaymentAmount = Field(description="TUSD per GPU-hour, e.g. '3.00'")
    duration: Seconds = Field(description="longest the lease may run, e.g. '15m'")
    nodes: int = Field(1, ge=1, le=64)
    bid_window: Seconds = 5
    deposit: PaymentAmount | None = None

    @model_validator(mode="after")
    def _deposit_covers_worst_case(self) -> OrderSpec:
        if self.max_price_per_gpu_hour == 0:
            raise ValueError("max_price_per_gpu_hour must be above zero")
        if self.deposit is not None and self.deposit < self.worst_case_cost:
            raise ValueError(
                f"deposit {self.deposit} is below the worst-case cost {self.worst_case_cost} "
                "(max price x gpus x nodes x duration)"
            )
        return self

    @property
    def worst_case_cost(self) -> int:
        return order_deposit(self.max_price_per_gpu_hour, self.min_gpus, self.nodes, self.duration)

    @property
    def escrow(self) -> int:
        return self.deposit if self.deposit is not None else self.worst_case_cost


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(BUILTIN_CORPUS, description=f'"{BUILTIN_CORPUS}" or a path to a file')
    max_bytes: int = Field(1 << 20, ge=4096, le=1 << 30)


class DilocoSpec(BaseModel):
    """How a multi-node job trains: DiLoCo rounds of `inner_steps` local steps per worker."""

    model_config = ConfigDict(extra="forbid")

    inner_steps: int = Field(50, ge=1, le=100_000)
    rounds: int = Field(10, ge=1, le=100_000)
    compression: Literal["none", "int8"] = "int8"
    aggregation: Literal["mean", "median", "trimmed_mean"] = "mean"
    round_timeout: Seconds = 600
    replace_dropped: bool = Field(True, description="lease a replacement for a dropped worker")
    max_replacements: int | None = Field(None, ge=0, le=1024,
                                         description="replacements per job; default order.nodes")


class VerificationSpec(BaseModel):
    """Verifiable DiLoCo rounds (docs/verification.md): every worker commits to its state every
    `checkpoint_every` inner steps and signs the commitment; the tenant posts one root per
    round on chain and replays one committed segment of a worker's round with probability
    `spot_check_probability`, challenging on chain when it does not match."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    checkpoint_every: int = Field(10, ge=1, le=100_000, description="k: inner steps per "
                                  "committed segment")
    spot_check_probability: float = Field(0.25, ge=0.0, le=1.0, description="p: chance that "
                                          "the tenant replays one segment of a worker's round")
    replay_tolerance: float = Field(0.0, ge=0.0, le=1.0, description="max |parameter "
                                    "difference| accepted in a replay; 0: bitwise (CPU)")
    challenge: bool = Field(True, description="open an on-chain challenge (with a bond) "
                            "against a commitment that fails a spot check")


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("job", min_length=1, max_length=64)
    mode: Literal["single", "diloco"] = "single"
    order: OrderSpec
    dataset: DatasetSpec = DatasetSpec()
    workload: TrainingWorkload
    diloco: DilocoSpec = DilocoSpec()
    verification: VerificationSpec = VerificationSpec()

    @model_validator(mode="after")
    def _mode_fits_nodes(self) -> JobSpec:
        if self.mode == "single" and self.order.nodes != 1:
            raise ValueError('order.nodes > 1 needs mode = "diloco"')
        return self

    def spec_hash(self) -> bytes:
        """sha256 of the canonical JSON of the spec: what the order commits to on chain."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()


def describe_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)


def parse_toml_model(model: type[BaseModel], text: str, source: str | Path):
    """TOML text into a pydantic model, raising SpecError that names `source` (the file it was
    read from) and the field. Pure: the caller reads the file (`tessera.files.read_text`)."""
    source = Path(source)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: not valid TOML: {exc}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{source}: {describe_errors(exc)}") from None


def parse_job_spec(text: str, source: str | Path) -> JobSpec:
    """A job spec from the text of its TOML file (`source`: that file, named in errors)."""
    return parse_toml_model(JobSpec, text, source)
