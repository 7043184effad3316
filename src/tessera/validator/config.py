"""The validator's configuration file (validator.toml)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tessera.chain.accounts import default_state_dir
from tessera.errors import SpecError
from tessera.files import read_text
from tessera.protocol.bridge import DEFAULT_CONFIRMATIONS
from tessera.protocol.daemon_config import DaemonSection
from tessera.protocol.jobspec import LocalPath, parse_toml_model
from tessera.protocol.liveness import CONFIRMATIONS as LIVENESS_CONFIRMATIONS
from tessera.protocol.money import MAX_DURATION


class ProbeSection(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    per_epoch: int = Field(1, ge=1, le=16, description="probes per provider per epoch")
    timeout_s: float = Field(3.0, gt=0, le=60, description="answer within this, or it is missed")
    max_delay_s: float | None = Field(
        None, gt=0, le=MAX_DURATION,
        description="cap on the random wait before a probe (default: the epoch)")
    concurrency: int = Field(8, ge=1, le=256, description="probes in flight at once")


class OutageSection(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    report: bool = Field(True, description="send Uptime.report_outage for unreported outages "
                                           "(docs/uptime.md); costs gas, earns nothing")


class HardwareSection(BaseModel):
    """Timed matrix-product challenges of each provider's registered benchmark (docs/hardware.md)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(True, description="challenge every active provider's hardware claim")
    every_epochs: int = Field(1, ge=1, le=1_000_000,
                              description="challenge in epochs divisible by this")
    target_s: float = Field(0.5, gt=0, le=60, description="product time at the claimed benchmark")
    slack: float = Field(4.0, ge=1, le=100, description="deadline = slack * expected + allowance")
    allowance_s: float = Field(1.0, ge=0, le=60, description="network and set-up allowance")
    rows_checked: int = Field(16, ge=1, le=256, description="rows of the product recomputed")
    report: bool = Field(True, description="report failed challenges on chain "
                                           "(HardwareReports.report; a quorum slashes)")
    busy_retries: int = Field(4, ge=0, le=32, description="retries, after a random wait, of a "
                              "provider busy with another validator's challenge (HTTP 429)")


class ChallengeSection(BaseModel):
    """Deciding Verification challenges by replay (docs/verification.md)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    vote: bool = Field(False, description="replay challenged segments and vote, resolve, claim")
    open_grace_s: int = Field(600, ge=0, le=MAX_DURATION, description="chain seconds a "
                              "challenged provider has to serve its commitment before an "
                              "unopened one is voted guilty")
    datasets_dir: LocalPath | None = Field(None, description="datasets named by sha256, for "
                                           "jobs whose data is not the built-in corpus")
    max_params: int = Field(100_000_000, ge=1, le=10**12, description="the largest model (in "
                            "parameters) this machine replays; a case of a larger one is "
                            "abstained on (its state alone is 12 bytes a parameter: a tenant "
                            "could otherwise name a model that exhausts every validator's "
                            "memory, review 25)")


class BridgeSection(BaseModel):
    """Attesting bridge messages (docs/bridge.md); only where the network names a peer chain."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    attest: bool = Field(True, description="sign every confirmed bridge message and serve the "
                         "signatures at /bridge/attestations")
    confirmations: int | None = Field(None, ge=0, le=100_000, description="blocks a message "
                                      "must be buried under before it is signed: required off "
                                      "the devnet (the source chain's finality: a signed "
                                      "message that a reorg removes is a slashable forgery); "
                                      f"on the devnet's chains {DEFAULT_CONFIRMATIONS}")
    interval_s: float = Field(0.5, gt=0, le=60, description="seconds between reads of the chains")


class LivenessSection(BaseModel):
    """Receipting providers' off-chain beats and reporting them once per epoch (docs/uptime.md,
    validator/liveness.py)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(True, description="serve POST /liveness/beat, post one liveness "
                          "report per epoch, answer inclusion challenges")
    interval_s: float = Field(1.0, gt=0, le=60, description="seconds between reads of the "
                              "chain (epoch, seed, reports due)")
    open_epochs: bool = Field(True, description="open each epoch (Uptime.open_epoch: one "
                              "transaction for the whole network) unless someone did first")
    open_within_s: float = Field(2.0, ge=0, le=600, description="open at a random moment "
                                 "within this many seconds of seeing the epoch start")
    confirmations: int | None = Field(None, ge=0, le=100_000, description="blocks the block "
                                      "that set an epoch's seed must be buried under before "
                                      "beats over it are receipted (425 until then), and the "
                                      "blocks of InclusionsChallenged logs read again each scan "
                                      "(reorgs); default: 0 on the devnet, else "
                                      f"{LIVENESS_CONFIRMATIONS} (docs/uptime.md, \"Reorgs\")")

    watch: bool = Field(True, description="check other validators' liveness reports: ask the "
                        "reporting validators for the beats this one lacks and challenge "
                        "(bonded), in one challenge per report, every inclusion no one can "
                        "show a beat for; resolve them (validator/liveness_watch.py)")
    watch_timeout_s: float = Field(3.0, gt=0, le=60, description="wall-clock limit of one GET "
                                   "of a beat from a reporting validator")
    watch_max_bonds_lost_per_day: int = Field(8, ge=1, le=10_000, description="in units of "
                                              "Uptime.challenge_bond: what challenges of the "
                                              "last day's epochs lost (the answer fees of "
                                              "their answered beats, less slash shares) plus "
                                              "what those out may still lose (answer_fee per "
                                              "provider named); nothing is named past it, and "
                                              "a report's challenge names a random part of its "
                                              "unproven inclusions when the whole would go "
                                              "past it (validator/liveness_watch_bonds.py)")

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: object) -> object:
        if isinstance(data, dict) and "watch_max_challenges_per_epoch" in data:
            raise ValueError("watch_max_challenges_per_epoch was removed: one challenge now "
                             "names every unproven inclusion of a report, and the bonds are "
                             "bounded by watch_max_bonds_lost_per_day alone (docs/validators.md)")
        return data


class ValidatorSection(DaemonSection):
    """[validator]: the shared daemon section, with `state_dir` optional (default
    $TESSERA_HOME/validator-<port>, as a provider's)."""

    state_dir: LocalPath | None = Field(None, description="SQLite: every probe, report and case; "
                                        "default: $TESSERA_HOME/validator-<port>")

    @model_validator(mode="after")
    def _state_under_home(self) -> ValidatorSection:
        if self.state_dir is None:
            self.state_dir = default_state_dir("validator", self.port)
        return self


class ValidatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    validator: ValidatorSection
    probes: ProbeSection = ProbeSection()
    outages: OutageSection = OutageSection()
    challenges: ChallengeSection = ChallengeSection()
    hardware: HardwareSection = HardwareSection()
    bridge: BridgeSection = BridgeSection()
    liveness: LivenessSection = LivenessSection()


def load_validator_config(path: Path) -> ValidatorConfig:
    return parse_toml_model(ValidatorConfig, read_text(path, SpecError), path)
