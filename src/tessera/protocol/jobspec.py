"""A tenant's job: what hardware it needs, what it pays, what data and workload it runs."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tessera.errors import SpecError
from tessera.protocol.commitment import MAX_VERIFIED_ROUND_TIMEOUT_S
from tessera.protocol.lease import order_deposit
from tessera.protocol.money import (
    MAX_PRICE_PER_GPU_HOUR,
    MAX_UINT256,
    PAYMENT_DECIMALS,
    PAYMENT_SYMBOL,
    format_amount,
    parse_amount,
    parse_duration,
    shown,
)
from tessera.protocol.workload import TrainingWorkload

BUILTIN_CORPUS = "builtin:stdlib"
# A spec or config is a short hand-written file: longer text, or tables and arrays nested deeper
# than this, is refused before (or right after) TOML parsing, so no input can exhaust the
# parser's recursion (tomllib recurses per level) or make an error message of megabytes.
MAX_SPEC_CHARS = 1 << 20
MAX_NESTING = 16
# Linux's PATH_MAX: a longer path cannot be opened.
MAX_PATH_BYTES = 4096
MAX_UINT32 = 2**32 - 1


def _amount_in(maximum: int):
    """A payment-token amount: a string counts TUSD ('3.00'); an integer counts base units
    (what model_dump writes, so a saved spec reads back unchanged). A float is refused: it is
    not exact. Either way the result is an int in 0..`maximum` base units."""
    def check(value: object) -> int:
        if isinstance(value, str):
            return parse_amount(value, PAYMENT_DECIMALS, maximum, PAYMENT_SYMBOL)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("write an amount as a string like '3.00' (TUSD); an integer counts "
                             f"base units (10^-{PAYMENT_DECIMALS} TUSD); got {type(value).__name__}")
        if value > maximum:
            raise ValueError(f"amount {shown(value)} base units is above the limit of "
                             f"{format_amount(maximum, PAYMENT_DECIMALS, PAYMENT_SYMBOL)}")
        return parse_amount(value, 0, maximum)    # refuses negatives
    return check


def _to_seconds(value: object) -> int:
    """'90s', '15m', '2h', '1d' or an integer of seconds, at most MAX_DURATION (money.py)."""
    return parse_duration(value)    # refuses floats, bools and anything else by name


def check_path_text(value: object) -> object:
    """A local path given as text: not empty, no NUL byte (the OS cannot take one: it would fail
    at first use, far from the config), at most MAX_PATH_BYTES."""
    if isinstance(value, str | Path):
        text = str(value)
        if not text.strip():
            raise ValueError("a path must not be empty")
        if "\x00" in text:
            raise ValueError("a path must not contain a NUL byte")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
            raise ValueError(f"a path must be at most {MAX_PATH_BYTES} bytes (PATH_MAX)")
    return value


# An amount of TUSD up to uint256 (escrow, deposits); a price per GPU-hour up to
# MAX_PRICE_PER_GPU_HOUR; a duration in seconds up to MAX_DURATION; a local path.
PaymentAmount = Annotated[int, BeforeValidator(_amount_in(MAX_UINT256))]
Price = Annotated[int, BeforeValidator(_amount_in(MAX_PRICE_PER_GPU_HOUR))]
Seconds = Annotated[int, BeforeValidator(_to_seconds)]
LocalPath = Annotated[Path, BeforeValidator(check_path_text)]


class OrderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpu_model: str = Field("", max_length=64, description='required device model, "" for any')
    min_gpus: int = Field(1, ge=1, le=1024)
    min_gpu_memory_mb: int = Field(0, ge=0, le=MAX_UINT32, description="uint32 on chain")
    max_price_per_gpu_hour: Price = Field(description="TUSD per GPU-hour, e.g. '3.00'")
    duration: Seconds = Field(description="longest the lease may run, e.g. '15m'")
    nodes: int = Field(1, ge=1, le=64)
    bid_window: Seconds = 5
    deposit: PaymentAmount | None = None

    @field_validator("gpu_model")
    @classmethod
    def _model_fits_on_chain(cls, value: str) -> str:
        if len(value.encode()) > 64:    # Market.vy: String[64] counts bytes, not characters
            raise ValueError("must be at most 64 bytes in UTF-8 (String[64] on chain)")
        return value

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

    source: Annotated[str, BeforeValidator(check_path_text)] = Field(
        BUILTIN_CORPUS, description=f'"{BUILTIN_CORPUS}" or a path to a file')
    max_bytes: int = Field(1 << 20, ge=4096, le=1 << 30)


class DilocoSpec(BaseModel):
    """How a multi-node job trains: DiLoCo rounds of `inner_steps` local steps per worker."""

    model_config = ConfigDict(extra="forbid")

    inner_steps: int = Field(50, ge=1, le=100_000)
    rounds: int = Field(10, ge=1, le=100_000)
    compression: Literal["none", "int8", "int4"] = "int8"
    aggregation: Literal["mean", "median", "trimmed_mean"] = "mean"
    outer_lr: float | None = Field(None, gt=0, le=10.0, description="the coordinator's outer "
                                   "SGD learning rate; default 0.8 (bench/diloco_example.py; the "
                                   "paper's 0.7 with momentum 0.9 did worse), 0.7 with overlap")
    outer_momentum: float | None = Field(None, ge=0, lt=1.0, description="its Nesterov momentum "
                                         "(0: plain SGD); default 0.3, 0 with overlap")
    round_timeout: Seconds = 600
    overlap: bool = Field(False, description="one-round-delayed outer update: workers start "
                          "round r + 1 before round r's exchange and checks end (docs/diloco.md)")
    replace_dropped: bool = Field(True, description="lease a replacement for a dropped worker")
    max_replacements: int | None = Field(None, ge=0, le=1024,
                                         description="replacements per job; default order.nodes")


class VerificationSpec(BaseModel):
    """Verifiable DiLoCo rounds (docs/verification.md): every worker commits to its state every
    `checkpoint_every` inner steps and to the payload it sends, and signs the commitment; the
    tenant posts one root per round on chain, checks every worker's payload against its last
    committed state every round, and replays one committed segment of a worker's round with
    probability `spot_check_probability`, challenging on chain what does not match.

    Defaults (k = 5, p = 0.4): a worker whose every segment is wrong is caught with probability
    1 − 0.6^R over R rounds (0.994 for the 10 rounds of examples/diloco.toml), at a replay
    cost of p·k/H of its compute (4 % at H = 50); docs/verification.md gives the odds for
    partial fakes and why they do not pay.

    A replay is compared bitwise, so a verified DiLoCo job trains on the CPU, under the numerics
    profile that validators replay with (compute/numerics.py): its `workload.device` "auto"
    becomes "cpu", and "cuda" is refused (`JobSpec._verified_jobs_train_on_cpu`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    checkpoint_every: int = Field(5, ge=1, le=100_000, description="k: inner steps per "
                                  "committed segment")
    spot_check_probability: float = Field(0.4, ge=0.0, le=1.0, description="p: chance that "
                                          "the tenant replays one segment of a worker's round")
    replay_tolerance: float = Field(0.0, ge=0.0, le=1.0, description="max |parameter "
                                    "difference| accepted in a replay; 0: bitwise (CPU), the "
                                    "only value offered")
    challenge: bool = Field(True, description="open an on-chain challenge (with a bond) "
                            "against a commitment that fails a spot check")

    @field_validator("replay_tolerance")
    @classmethod
    def _bitwise_only(cls, value: float) -> float:
        # review 30: with a tolerance a replay compares only the parameters, never the AdamW
        # state, so a worker could set its moments at each segment's end (within the state
        # bounds) and steer the model while every segment passed; kept in the format for a
        # cross-device profile that also bounds the optimizer state
        if value != 0:
            raise ValueError("only 0 (a bitwise replay) is offered: a tolerance would not check "
                             "the AdamW state a worker commits to (docs/verification.md)")
        return value


# How soon before a lease's escrow runs out the tenant is warned (job spec [escrow] warn_within,
# `tessera job status` / `job list --warn-within`): long enough to top up by hand, short enough
# that a 15-minute devnet lease is not flagged from its first second.
DEFAULT_WARN_WITHIN = 300


class EscrowSpec(BaseModel):
    """The tenant's watch over its leases' escrow while it follows the job (tenant/escrow.py):
    a warning when a lease will run out within `warn_within`, and, if `top_up` is set, an
    automatic top-up of that amount whenever a lease has less than `top_up_when_left` left,
    never taking the job's top-ups (every top-up of its leases, by hand too, as the chain's
    `LeaseToppedUp` events say) past `top_up_ceiling`. Not part of the order: `spec_hash`
    leaves it out (it is the tenant's own policy, not the job)."""

    model_config = ConfigDict(extra="forbid")

    warn_within: Seconds = Field(DEFAULT_WARN_WITHIN, description="warn when a lease's escrow "
                                 "will run out within this, e.g. '5m'")
    top_up: PaymentAmount | None = Field(None, description="TUSD added per automatic top-up, "
                                         "e.g. '0.50'; unset: no automatic top-up")
    top_up_when_left: Seconds | None = Field(None, description="top up when less than this is "
                                             "left (default: warn_within)")
    top_up_ceiling: PaymentAmount | None = Field(None, description="the most all top-ups of "
                                                 "the job's leases may add, e.g. '5.00'")

    @model_validator(mode="after")
    def _top_up_has_a_ceiling(self) -> EscrowSpec:
        if self.top_up is None:
            stray = [name for name in ("top_up_ceiling", "top_up_when_left")
                     if getattr(self, name) is not None]   # (a saved spec writes None back)
            if stray:
                raise ValueError(f"{' and '.join(stray)} without top_up does nothing: set "
                                 "top_up (the amount of each automatic top-up) or remove it")
            return self
        if self.top_up == 0:
            raise ValueError("top_up must be above zero (leave it out for no automatic top-up)")
        if self.top_up_ceiling is None:
            raise ValueError("top_up needs top_up_ceiling: an automatic top-up without a "
                             "ceiling could spend your whole balance")
        if self.top_up_ceiling < self.top_up:
            raise ValueError(f"top_up_ceiling {_tusd(self.top_up_ceiling)} is below top_up "
                             f"{_tusd(self.top_up)}: no top-up would fit under it")
        return self

    @property
    def top_up_below(self) -> int:
        """Seconds left under which a lease is topped up."""
        return self.top_up_when_left if self.top_up_when_left is not None else self.warn_within


def _tusd(amount: int) -> str:
    return format_amount(amount, PAYMENT_DECIMALS, PAYMENT_SYMBOL)


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("job", min_length=1, max_length=64)
    mode: Literal["single", "diloco"] = "single"
    order: OrderSpec
    dataset: DatasetSpec = DatasetSpec()
    workload: TrainingWorkload
    diloco: DilocoSpec = DilocoSpec()
    verification: VerificationSpec = VerificationSpec()
    escrow: EscrowSpec = EscrowSpec()

    @model_validator(mode="before")
    @classmethod
    def _diloco_schedule_horizon(cls, data: object) -> object:
        """A DiLoCo job's learning-rate schedule runs over each worker's inner steps, so with
        the linear schedule `workload.steps` is rounds x inner_steps (filled in here; another
        value is refused, not silently replaced)."""
        if not (isinstance(data, dict) and data.get("mode") == "diloco"):
            return data
        workload, diloco = data.get("workload"), data.get("diloco", {})
        if not (isinstance(workload, dict) and workload.get("lr_schedule") == "linear"
                and isinstance(diloco, dict)):
            return data
        rounds = diloco.get("rounds", DilocoSpec.model_fields["rounds"].default)
        inner = diloco.get("inner_steps", DilocoSpec.model_fields["inner_steps"].default)
        if not (type(rounds) is int and type(inner) is int):
            return data   # the field validators name the problem
        horizon = rounds * inner
        if workload.get("steps", horizon) != horizon:
            raise ValueError(f"workload.steps ({workload['steps']}) must be diloco.rounds x "
                             f"diloco.inner_steps ({horizon}) in a DiLoCo job: the linear "
                             "learning-rate schedule decays over each worker's inner steps "
                             "(leave steps out and it is filled in)")
        return {**data, "workload": {**workload, "steps": horizon}}

    @model_validator(mode="after")
    def _mode_fits_nodes(self) -> JobSpec:
        if self.mode == "single" and self.order.nodes != 1:
            raise ValueError('order.nodes > 1 needs mode = "diloco"')
        return self

    @model_validator(mode="after")
    def _verified_jobs_train_on_cpu(self) -> JobSpec:
        """A DiLoCo job with verification on trains on the CPU: its segments are replayed
        bitwise by tenants and validators on CPUs under one numerics profile, and no CUDA
        profile exists yet (a CPU replay of CUDA training does not reproduce its bits, nor does
        one GPU model replay another's). So `workload.device = "auto"` becomes "cpu" here
        (before `spec_hash`: the order commits to "cpu") and "cuda" is refused."""
        if self.mode != "diloco" or not self.verification.enabled:
            return self
        if self.workload.device == "cuda":
            raise ValueError(
                'workload.device = "cuda" cannot be verified: a verified DiLoCo job trains on '
                "the CPU, because its segments are replayed bitwise on CPUs and no CUDA replay "
                "profile exists yet (a CPU replay of CUDA training gives other bits, so honest "
                'workers would fail their checks); use device = "cpu" or "auto", or turn '
                "verification off ([verification] enabled = false)")
        if self.workload.device == "auto":
            self.workload = self.workload.model_copy(update={"device": "cpu"})
        return self

    @model_validator(mode="after")
    def _verified_rounds_fit_a_commitment(self) -> JobSpec:
        """A verified round's commitments must outlive its timeout, or a worker answering late
        could make its root postable only after its commitment expired, when no challenge can
        be opened against it (review 23)."""
        if self.mode == "diloco" and self.verification.enabled and \
                self.diloco.round_timeout > MAX_VERIFIED_ROUND_TIMEOUT_S:
            raise ValueError(
                f"diloco.round_timeout {self.diloco.round_timeout} s is over "
                f"{MAX_VERIFIED_ROUND_TIMEOUT_S} s, the longest a verified round may wait: a "
                "worker's signed commitment lives 2 hours from when it gets the round, and must "
                "outlive the round's timeout to be challengeable")
        return self

    def spec_hash(self) -> bytes:
        """sha256 of the canonical JSON of the spec: what the order commits to on chain. The
        [escrow] section is left out: it is the tenant's policy, not the job, and a spec
        without it hashes as it did before the section existed. Likewise a field added later
        (`ADDED_LATER`) is left out while it holds its default, so a spec that does not use it
        hashes as before and parties on the earlier version still agree on the order."""
        doc = self.model_dump(mode="json", exclude={"escrow"})
        for section, names in ADDED_LATER.items():
            model = getattr(self, section)
            for name in names:
                if getattr(model, name) == type(model).model_fields[name].default:
                    del doc[section][name]
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()


# Fields added to a job spec's sections after orders were first committed to by hash
# (`JobSpec.spec_hash`): the learning-rate schedule and the outer optimizer (issue 16).
ADDED_LATER = {"workload": ("lr_schedule", "warmup_steps", "final_lr_ratio"),
               "diloco": ("outer_lr", "outer_momentum")}


def _loc_part(part: object) -> str:
    """One step of an error's location; a key from the file is shown escaped and cut short when
    it is not plain printable text (no terminal control sequences from a hostile file)."""
    text = str(part)
    if text.isprintable() and 0 < len(text) <= 64:
        return text
    return shown(text)


MAX_ERRORS_SHOWN = 10


def describe_errors(exc: ValidationError) -> str:
    errors = exc.errors()
    lines = []
    for err in errors[:MAX_ERRORS_SHOWN]:
        where = ".".join(_loc_part(part) for part in err["loc"]) or "(top level)"
        lines.append(f"{where}: {err['msg']}")
    if len(errors) > MAX_ERRORS_SHOWN:
        lines.append(f"and {len(errors) - MAX_ERRORS_SHOWN} more errors")
    return "; ".join(lines)


def _too_deep(raw: object) -> list[str] | None:
    """The key path to the first table or array nested more than MAX_NESTING levels below the
    top of the document (the top is level 0), found without recursion; None when none is."""
    stack: list[tuple[object, int, list[str]]] = [(raw, 0, [])]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_NESTING:
            return path
        items = value.items() if isinstance(value, dict) else enumerate(value)
        stack.extend((child, depth + 1, [*path, str(key)]) for key, child in items
                     if isinstance(child, dict | list))
    return None


def _code(text: str):
    """(index, bracket depth, line, table, key) for each character of TOML `text` outside strings
    and comments: a scan that finds the place of an error tomllib reports without one."""
    depth, line, start, key, table, i, n = 0, 1, 0, "", "", 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            i = text.find("\n", i) % (n + 1)       # to the newline, or the end
            continue
        if c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                line += text[i] == "\n"
                i += 2 if c == '"' and text[i] == "\\" else 1
            i += len(quote)
            continue
        if c == "[" and depth == 0 and not text[start:i].strip():      # a [table] header
            close = text.find("]", i) % (n + 1)
            table, key, i = text[i:close].strip("[] "), "", close + 1
            continue
        if c == "=" and depth == 0:
            key = text[start:i].strip()
        depth += c in "[{"
        yield i, depth, line, table, key
        depth = max(0, depth - (c in "]}"))
        if c == "\n":
            line += 1
            start = i + 1 if depth == 0 else start
        i += 1


_LONG_TOKEN = re.compile(r"[0-9A-Za-z_+-]{4300,}")


def _place(text: str, found) -> str:
    """'line N (table.key)' of the first character of `text` where `found(index, depth)`."""
    for index, depth, line, table, key in _code(text):
        if found(index, depth):
            where = ".".join(_loc_part(part) for part in (table, key) if part)
            return f"line {line}" + (f" ({where})" if where else "")
    return "somewhere"


def _long_token_at(text: str, index: int) -> bool:
    return (index == 0 or not text[index - 1].isalnum()) and bool(_LONG_TOKEN.match(text, index))


def parse_toml_model(model: type[BaseModel], text: str, source: str | Path):
    """TOML text into a pydantic model, raising SpecError that names `source` (the file it was
    read from) and the field. Pure: the caller reads the file (`tessera.files.read_text`).

    Whatever the text, the result is the model or a SpecError, never another exception: text
    over MAX_SPEC_CHARS, nesting past MAX_NESTING (tomllib recurses once per level, so a deep
    enough file would raise RecursionError) and integers over Python's 4300-digit conversion
    limit (tomllib raises a plain ValueError) are refused with the file named."""
    source = Path(source)
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(f"{source}: longer than {MAX_SPEC_CHARS} characters; a spec or config "
                        "is a short file")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        where = _place(text, lambda _, depth: depth > MAX_NESTING)
        raise SpecError(f"{source}: {where}: tables or arrays nested too deeply (the limit is "
                        f"{MAX_NESTING} levels)") from None
    except ValueError:      # an integer longer than int() takes (4300 digits)
        where = _place(text, lambda index, _: _long_token_at(text, index))
        raise SpecError(f"{source}: {where}: a number of more than 4300 digits") from None
    deep = _too_deep(raw)
    if deep is not None:
        raise SpecError(f"{source}: {'.'.join(_loc_part(part) for part in deep)}: tables or "
                        f"arrays nested too deeply (the limit is {MAX_NESTING} levels)")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{source}: {describe_errors(exc)}") from None


def parse_job_spec(text: str, source: str | Path) -> JobSpec:
    """A job spec from the text of its TOML file (`source`: that file, named in errors)."""
    return parse_toml_model(JobSpec, text, source)
