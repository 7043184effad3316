"""What a validator does on HardwareReports after reporting (docs/hardware.md, "Disputes").

A stake-weighted quorum of reports opens a dispute period; the reported provider may dispute.
- Jury duty: on every HardwareDisputed event this validator did not report (and is not the
  provider of), it runs its usual timed challenge against the provider, afresh, and votes
  pass (the challenge passed) or fail (anything else: late, wrong, no answer, refused), weighted
  by its stake at the round's snapshot. A provider that does not answer is voted down: if it
  fails or nobody answers, the slash goes ahead.
- Execution: a round it reported or judged is executed once decided (the dispute period over
  without a dispute, or the jury's vote over); anyone may, the first to try does.
- Claims: a reporter of a slashed round claims its share of the reward.
The rounds followed live in memory: after a restart, disputes are found again from the chain's
events (from the deployment block), but a reporter's own rounds are not, so another party (or a
juror) executes them and the restarted reporter does not claim its share."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from tessera.chain.client import Chain, tx_hash
from tessera.chain.hardware import HardwareReports, RoundStatus
from tessera.chain.probes import Probes
from tessera.chain.registry import ProviderRegistry
from tessera.errors import ChainError, TxRefused
from tessera.logs import EventLog

UNDECIDED = (RoundStatus.PENDING, RoundStatus.DISPUTED)


class HardwareRounds:
    """Jury votes, executions and claims for the rounds this validator takes part in."""

    def __init__(self, chain: Chain, challenge: Callable, log: EventLog,
                 metrics: CollectorRegistry):
        self.chain, self.log = chain, log
        self.reports = HardwareReports(chain)
        self.probes = Probes(chain)
        self._challenge = challenge          # offer -> HardwareOutcome (validator/hardware.py)
        self.next_block = chain.network.deploy_block
        self.tracked: dict[tuple[str, int], bool] = {}   # (provider, epoch) -> reported it
        self.m_jury = Counter("tessera_validator_hardware_jury_votes",
                              "votes on disputed hardware reports", ["vote"], registry=metrics)
        self.m_executed = Counter("tessera_validator_hardware_executions",
                                  "decided hardware rounds executed", ["outcome"],
                                  registry=metrics)
        for label in ("pass", "fail"):
            self.m_jury.labels(label)
        for label in ("slashed", "cleared"):
            self.m_executed.labels(label)

    def track(self, provider: str, epoch: int, reporter: bool) -> None:
        self.tracked[(provider, epoch)] = reporter or self.tracked.get((provider, epoch), False)

    def poll_once(self) -> None:
        head = self.chain.block_number()
        if head >= self.next_block:
            for log in self.chain.events("HardwareReports", "HardwareDisputed",
                                         self.next_block, head):
                self.on_dispute(log["args"])
            self.next_block = head + 1
        for key in list(self.tracked):
            self._advance(*key)

    # -- jury ------------------------------------------------------------------------------
    def on_dispute(self, args: dict) -> None:
        provider, epoch = args["provider"], args["epoch"]
        me = self.chain.address
        if provider.lower() == me.lower():
            return
        if self.reports.has_reported(me, provider, epoch):
            self.track(provider, epoch, reporter=True)   # a reporter does not judge
            return
        if self.reports.has_voted(me, provider, epoch) or \
                self.chain.block_timestamp() >= args["vote_deadline"]:
            return
        offer = ProviderRegistry(self.chain).provider_offer(provider)
        if offer is None or offer.benchmark_score <= 0:
            return
        try:
            outcome = self._challenge(offer)
        except Exception as exc:   # whatever it is, the round goes on (review 20): no pass
            self.log("hardware-jury-error", "error", provider=provider, epoch=epoch,
                     error=f"{type(exc).__name__}: {exc}"[:300])
            return
        passed = outcome.outcome == "passed"
        try:
            receipt = self.reports.vote_dispute(provider, epoch, passed)
        except TxRefused as exc:   # weightless here (joined later), voting closed, ...
            self.log("hardware-jury-refused", "warning", provider=provider, epoch=epoch,
                     error=str(exc))
            return
        self.m_jury.labels("pass" if passed else "fail").inc()
        self.track(provider, epoch, reporter=False)
        self.log("hardware-jury-vote", "info" if passed else "warning", provider=provider,
                 epoch=epoch, passed=passed, outcome=outcome.outcome, reason=outcome.reason,
                 tx=tx_hash(receipt))

    # -- execution and claims ----------------------------------------------------------------
    def _advance(self, provider: str, epoch: int) -> None:
        record = self.reports.round(provider, epoch)
        if record.status in UNDECIDED:
            if self.reports.decision(provider, epoch) not in (RoundStatus.SLASHED,
                                                              RoundStatus.CLEARED):
                return
            self._execute(provider, epoch)
            record = self.reports.round(provider, epoch)
        if record.status == RoundStatus.SLASHED and self.tracked[(provider, epoch)]:
            self._claim(provider, epoch)
        # done: decided, or never at the quorum and past the epochs that take reports
        if record.status in (RoundStatus.SLASHED, RoundStatus.CLEARED) or (
                record.status == RoundStatus.OPEN and epoch + 1 < self.probes.current_epoch()):
            del self.tracked[(provider, epoch)]

    def _execute(self, provider: str, epoch: int) -> None:
        try:
            slashing = self.reports.execute(provider, epoch)
        except TxRefused as exc:   # someone else executed it first
            self.log("hardware-execute-refused", provider=provider, epoch=epoch, reason=str(exc))
            return
        outcome = "cleared" if slashing is None else "slashed"
        self.m_executed.labels(outcome).inc()
        fields = {} if slashing is None else {"slashed": slashing.slashed,
                                              "burned": slashing.burned,
                                              "jailed_until": slashing.jailed_until}
        self.log("hardware-executed", provider=provider, epoch=epoch, outcome=outcome, **fields)

    def _claim(self, provider: str, epoch: int) -> None:
        try:
            receipt = self.reports.claim(provider, epoch)
        except ChainError as exc:   # refused (already claimed before a restart), or no chain
            self.log("hardware-claim-refused", provider=provider, epoch=epoch, reason=str(exc))
            return
        self.log("hardware-reward-claimed", provider=provider, epoch=epoch, tx=tx_hash(receipt))
