"""Typed access to HardwareReports.vy: a validator reports a failed hardware challenge, a quorum
of reports slashes and jails the provider, reporters claim their reward (docs/hardware.md)."""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass
from enum import IntEnum

from eth_utils import keccak
from web3.logs import DISCARD
from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper
from tessera.errors import ChainError

TSTK = 10**18
DAY = 86_400


@dataclass(frozen=True)
class HardwareReportsParams:
    """Constructor arguments after (uptime, validators), in order; immutable once deployed.
    Why these values: docs/hardware.md, "On chain: HardwareReports.vy"."""

    hardware_slash: int = 50 * TSTK    # taken from a provider a quorum found failing
    reporter_reward: int = 5 * TSTK    # claimable by each reporter of the slashing quorum
    min_reports: int = 3               # distinct validators, at least
    quorum_bps: int = 3_334            # ... and at least this share of the listed validators
    jail_period: int = DAY

    def constructor_args(self) -> tuple:
        return astuple(self)


class Failure(IntEnum):
    """The contract's outcome codes for a failed challenge (validator/hardware.py's names)."""

    LATE = 1
    WRONG = 2
    NO_ANSWER = 3

    @classmethod
    def of(cls, outcome: str) -> Failure:
        try:
            return cls[outcome.upper().replace("-", "_")]
        except KeyError:
            raise ValueError(f"outcome {outcome!r} is not a reportable failure; "
                             "expected late, wrong or no-answer") from None


def evidence_digest(record: dict) -> bytes:
    """keccak256 of the canonical JSON of a challenge record (the signed request and the
    validator's timing): what `report` commits to, so the record can be shown later."""
    return keccak(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())


@dataclass(frozen=True)
class Slashing:
    """The HardwareSlashed event of the report that completed a quorum."""

    provider: str
    epoch: int
    slashed: int
    reward_per_reporter: int
    reporters: int
    burned: int
    jailed_until: int


@dataclass(frozen=True)
class ReportResult:
    receipt: TxReceipt
    reports: int            # distinct reports for (provider, epoch) after this one
    quorum: int
    slashing: Slashing | None


class HardwareReports(ContractWrapper):
    """What validators do on HardwareReports.vy."""

    NAME = "HardwareReports"

    def report(self, provider: str, epoch: int, outcome: str, evidence: bytes) -> ReportResult:
        """Report `provider`'s failed challenge in `epoch`. A refusal (already reported, already
        slashed, epoch too old, not a validator, ...) raises TxRefused naming the reason."""
        code = Failure.of(outcome)
        if len(evidence) != 32:
            raise ValueError(f"evidence must be a 32-byte hash, got {len(evidence)} bytes")
        receipt = self.chain.send(self.contract.functions.report(provider, epoch, int(code),
                                                                 evidence))
        reported = self.contract.events.HardwareReported().process_receipt(receipt,
                                                                           errors=DISCARD)
        if not reported:
            raise ChainError(f"report on {provider} emitted no HardwareReported")
        slashed = self.contract.events.HardwareSlashed().process_receipt(receipt, errors=DISCARD)
        slashing = Slashing(**dict(slashed[0]["args"])) if slashed else None
        args = reported[0]["args"]
        return ReportResult(receipt, args["reports"], args["quorum"], slashing)

    def claim(self, provider: str, epoch: int) -> TxReceipt:
        return self.chain.send(self.contract.functions.claim(provider, epoch))

    def quorum(self) -> int:
        return self.chain.call(self.contract.functions.quorum())

    def report_count(self, provider: str, epoch: int) -> int:
        return self.chain.call(self.contract.functions.report_count(provider, epoch))

    def slashed_in(self, provider: str, epoch: int) -> bool:
        return self.chain.call(self.contract.functions.slashed_in(provider, epoch))

    def has_reported(self, validator: str, provider: str, epoch: int) -> bool:
        return self.chain.call(self.contract.functions.reported(validator, provider, epoch)) != 0

    def params(self) -> HardwareReportsParams:
        fns = self.contract.functions
        return HardwareReportsParams(**{name: self.chain.call(getattr(fns, name)())
                                        for name in HardwareReportsParams.__dataclass_fields__})
