"""Typed access to HardwareReports.vy: a validator reports a failed hardware challenge; a
stake-weighted quorum of reports opens a dispute period; the provider may dispute, and the
validators who did not report then vote on a fresh timed challenge; anyone executes the outcome
(slash and jail, or nothing); reporters claim their reward (docs/hardware.md)."""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass
from enum import IntEnum

from eth_utils import keccak
from web3 import Web3
from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper
from tessera.errors import ChainError

TSTK = 10**18
HOUR = 3_600
DAY = 86_400


@dataclass(frozen=True)
class HardwareReportsParams:
    """Constructor arguments after (uptime, validators), in order; immutable once deployed.
    Why these values: docs/hardware.md, "On chain: HardwareReports.vy"."""

    hardware_slash: int = 50 * TSTK    # taken from a provider a quorum found failing
    reporter_reward: int = 15 * TSTK   # shared by the slash's reporters, by stake
    quorum_bps: int = 3_334            # reported share of the validator stake that opens a dispute
    jail_period: int = DAY
    dispute_period: int = HOUR         # seconds the reported provider has to dispute
    dispute_vote_period: int = HOUR    # seconds the jury (non-reporters) has to vote
    jury_quorum_bps: int = 5_000       # share of the jury's stake whose pass votes clear it

    def constructor_args(self) -> tuple:
        return astuple(self)


class RoundStatus(IntEnum):
    """HardwareReports.Round.status."""

    NONE = 0
    OPEN = 1        # reports below the quorum
    PENDING = 2     # quorum reached: the provider may dispute until dispute_deadline
    DISPUTED = 3    # the jury votes until vote_deadline
    SLASHED = 4
    CLEARED = 5


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
    """The HardwareSlashed event of an executed round."""

    provider: str
    epoch: int
    slashed: int
    reward_pool: int
    reporters: int
    burned: int
    jailed_until: int


@dataclass(frozen=True)
class ReportResult:
    receipt: TxReceipt
    weight: int                 # this report's stake weight
    reported: int               # the round's reported weight after it
    quorum: int                 # the round's quorum (stake)
    dispute_deadline: int | None  # set when this report reached the quorum


@dataclass(frozen=True)
class RoundRecord:
    """One (provider, epoch) round of HardwareReports (the `rounds` getter)."""

    snapshot: int
    quorum: int
    reported: int
    reporters_stake: int
    reporters: int
    status: RoundStatus
    dispute_deadline: int
    vote_deadline: int
    jury_quorum: int
    pass_stake: int
    fail_stake: int
    reward_pool: int


class HardwareReports(ContractWrapper):
    """What validators and providers do on HardwareReports.vy."""

    NAME = "HardwareReports"

    def report(self, provider: str, epoch: int, outcome: str, evidence: bytes) -> ReportResult:
        """Report `provider`'s failed challenge in `epoch`. A refusal (already reported, round
        disputed, epoch too old, not a validator, ...) raises TxRefused naming the reason."""
        code = Failure.of(outcome)
        if len(evidence) != 32:
            raise ValueError(f"evidence must be a 32-byte hash, got {len(evidence)} bytes")
        receipt = self.chain.send(self.contract.functions.report(provider, epoch, int(code),
                                                                 evidence))
        args = self._event(receipt, "HardwareReported")
        reached = self._events(receipt, "HardwareQuorumReached")
        return ReportResult(receipt, args["weight"], args["reported"], args["quorum"],
                            reached[0]["dispute_deadline"] if reached else None)

    def dispute(self, epoch: int) -> tuple[TxReceipt, int]:
        """The calling provider disputes the quorum reported against it for `epoch`; returns
        the receipt and the chain time the jury's vote ends."""
        receipt = self.chain.send(self.contract.functions.dispute(epoch))
        return receipt, self._event(receipt, "HardwareDisputed")["vote_deadline"]

    def vote_dispute(self, provider: str, epoch: int, passed: bool) -> TxReceipt:
        """A juror (a validator that did not report) says whether `provider` passed its fresh
        timed challenge."""
        return self.chain.send(self.contract.functions.vote_dispute(provider, epoch, passed))

    def execute(self, provider: str, epoch: int) -> Slashing | None:
        """Carry out a decided round: the Slashing, or None when the jury cleared the provider."""
        receipt = self.chain.send(self.contract.functions.execute(provider, epoch))
        slashed = self._events(receipt, "HardwareSlashed")
        if slashed:
            return Slashing(**slashed[0])
        if not self._events(receipt, "HardwareCleared"):
            raise ChainError(f"execute on {provider} emitted neither HardwareSlashed nor "
                             "HardwareCleared")
        return None

    def claim(self, provider: str, epoch: int) -> TxReceipt:
        return self.chain.send(self.contract.functions.claim(provider, epoch))

    def round(self, provider: str, epoch: int) -> RoundRecord:
        record = self._struct("rounds", Web3.to_checksum_address(provider), epoch)
        record["status"] = RoundStatus(record["status"])
        return RoundRecord(**record)

    def decision(self, provider: str, epoch: int) -> RoundStatus:
        """What `execute` would do now (SLASHED / CLEARED), or the round's undecided status."""
        return RoundStatus(self._call("decision", Web3.to_checksum_address(provider), epoch))

    def quorum(self) -> int:
        return self.chain.call(self.contract.functions.quorum())

    def report_count(self, provider: str, epoch: int) -> int:
        return self.chain.call(self.contract.functions.report_count(provider, epoch))

    def slashed_in(self, provider: str, epoch: int) -> bool:
        return self.chain.call(self.contract.functions.slashed_in(provider, epoch))

    def has_reported(self, validator: str, provider: str, epoch: int) -> bool:
        return self.chain.call(self.contract.functions.reported(validator, provider, epoch)) != 0

    def has_voted(self, validator: str, provider: str, epoch: int) -> bool:
        return self._call("jury_votes", Web3.to_checksum_address(validator),
                          Web3.to_checksum_address(provider), epoch) != 0

    def reward_of(self, validator: str, provider: str, epoch: int) -> int:
        return self._call("reward_of", Web3.to_checksum_address(validator),
                          Web3.to_checksum_address(provider), epoch)

    def params(self) -> HardwareReportsParams:
        fns = self.contract.functions
        return HardwareReportsParams(**{name: self.chain.call(getattr(fns, name)())
                                        for name in HardwareReportsParams.__dataclass_fields__})
