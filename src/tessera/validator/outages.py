"""Reporting outages: after each epoch, find every staked provider with `jail_after` consecutive
FINAL epochs in which it was not up that nobody has reported yet, and send `Uptime.report_outage`.

Up (`Uptime.is_up`, docs/uptime.md) is a heartbeat bit (an on-chain heartbeat or a claimed
receipt) or a live bit (a validator's unrevoked liveness report); an epoch is final
`report_delay + 1 + answer_epochs` epochs after it ends (protocol/liveness.py), and only final
epochs can be reported. The rules are the contract's ("Jailing"); this module only finds a
stretch that passes them, so a report is refused only when someone else reported first (or the
chain moved between the read and the send). Heartbeats are read with `beat_word` (one call per
provider per 256 epochs); live bits with `live_word` (one call per epoch per 256 providers,
kept once final). A challenge resolved after the epoch became final can still clear a kept bit
(Uptime.resolve_challenge runs only then): the provider then stays up here, so an outage is
missed, never wrongly reported."""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from tessera.chain.client import Chain, tx_hash
from tessera.chain.registry import ProviderRegistry
from tessera.chain.uptime import Uptime
from tessera.errors import TxRefused
from tessera.logs import EventLog
from tessera.protocol import liveness


def beat_in(words: Mapping[int, int], epoch: int) -> bool:
    """Whether the bitmap words (index -> `beat_word`) hold a heartbeat in `epoch`."""
    return (words.get(epoch >> 8, 0) >> (epoch & 255)) & 1 == 1


def first_whole_epoch(registered_at: int, genesis: int, epoch_length: int) -> int:
    """The first epoch that starts at or after the registration (the contract refuses earlier)."""
    return max(-(-(registered_at - genesis) // epoch_length), 0)


def first_not_final(now: int, report_delay: int, answer_epochs: int) -> int:
    """The earliest epoch that is not final while `now` runs (every earlier one is)."""
    return max(now - (liveness.answer_end(0, report_delay, answer_epochs)), 0)


def reportable_from(final_end: int, jail_after: int, reported_until: int,
                    registered_epoch: int) -> int:
    """The earliest first epoch the contract accepts today (`final_end`: the first epoch not
    yet final): after any reported outage, after the registration, and not more than
    `jail_after` epochs older than a stretch that just became final."""
    return max(reported_until, registered_epoch, final_end - 2 * jail_after, 0)


def first_reportable(words: Mapping[int, int], lo: int, final_end: int, jail_after: int,
                     live: Container[int] = ()) -> int | None:
    """The earliest `first` >= lo such that epochs first .. first + jail_after - 1 are all final
    (before `final_end`) and none holds a heartbeat (`words`) or a live bit (`live`: the epochs
    a validator's report named the provider in); None if there is none.

    The earliest, so that a provider that stays down is reported again for the very next stretch."""
    run = 0
    for epoch in range(lo, final_end):
        run = 0 if beat_in(words, epoch) or epoch in live else run + 1
        if run == jail_after:
            return epoch - jail_after + 1
    return None


@dataclass(frozen=True)
class Outage:
    provider: str
    first_epoch: int
    last_epoch: int


class OutageReporter:
    """Checks every registered provider once per epoch and reports the outages it finds."""

    def __init__(self, chain: Chain, log: EventLog, metrics: CollectorRegistry):
        self.chain = chain
        self.uptime = Uptime(chain)
        self.registry = ProviderRegistry(chain)
        self.log = log
        self.genesis = self.epoch_length = self.jail_after = self.min_stake = 0
        self.report_delay = self.answer_epochs = 0
        self.checked_epoch: int | None = None
        self._live: dict[tuple[int, int], int] = {}   # (final epoch, word index) -> live word
        self._indices: dict[str, int] = {}
        self.m_reports = Counter("tessera_validator_outage_reports", "report_outage transactions",
                                 ["outcome"], registry=metrics)
        self.m_found = Counter("tessera_validator_outages_found", "unreported outages found",
                               registry=metrics)
        self.m_checked = Gauge("tessera_validator_outage_checked_epoch",
                               "last epoch whose ended epochs were checked for outages",
                               registry=metrics)

    def prepare(self) -> None:
        self.genesis = self.uptime.genesis()
        self.epoch_length = self.uptime.epoch_length()
        self.jail_after = self.uptime.jail_after()
        self.min_stake = self.registry.min_stake()
        self.report_delay, self.answer_epochs = self.uptime.liveness_rules()

    def poll_once(self) -> None:
        """Check once per new epoch (a failed check is retried on the next poll)."""
        now = self.uptime.current_epoch()
        if now == self.checked_epoch:
            return
        for outage in self.find_all(now):
            self.report(outage)
        oldest = first_not_final(now, self.report_delay, self.answer_epochs) - 2 * self.jail_after
        for key in [k for k in self._live if k[0] < oldest]:   # out of every reportable stretch
            del self._live[key]
        self.checked_epoch = now
        self.m_checked.set(now)

    def find_all(self, now: int) -> list[Outage]:
        found = []
        for provider in self.registry.provider_addresses():
            outage = self.find(provider, now)
            if outage is not None:
                found.append(outage)
        return found

    def find(self, provider: str, now: int) -> Outage | None:
        """The earliest unreported outage of a provider that can still be leased (now or after
        its jail): one below the minimum stake is skipped, reporting it would protect nobody."""
        record = self.registry.provider_record(provider)
        if record["registered_at"] == 0 or record["stake"] < self.min_stake:
            return None
        end = first_not_final(now, self.report_delay, self.answer_epochs)
        lo = reportable_from(end, self.jail_after, self.uptime.reported_until(provider),
                             first_whole_epoch(record["registered_at"], self.genesis, self.epoch_length))
        if end - lo < self.jail_after:
            return None
        words = {i: self.uptime.beat_word(provider, i)
                 for i in range(lo >> 8, ((end - 1) >> 8) + 1)}
        down = [e for e in range(lo, end) if not beat_in(words, e)]
        live = self._live_epochs(provider, down) if down else set()
        first = first_reportable(words, lo, end, self.jail_after, live)
        if first is None:
            return None
        self.m_found.inc()
        return Outage(provider, first, first + self.jail_after - 1)

    def _live_epochs(self, provider: str, epochs: list[int]) -> set[int]:
        """Which of these final epochs a validator's report named `provider` live in."""
        if provider not in self._indices:
            self._indices[provider] = self.registry.index_of(provider)
        index = self._indices[provider]
        live = set()
        for epoch in epochs:
            key = (epoch, index >> 8)
            if key not in self._live:
                self._live[key] = self.uptime.live_word(epoch, index >> 8)
            if self._live[key] >> (index & 255) & 1:
                live.add(epoch)
        return live

    def report(self, outage: Outage) -> dict | None:
        """Send the report; a refusal (say, another validator reported first) is logged and
        counted, never raised. Returns the receipt when the report went through."""
        try:
            receipt, event = self.uptime.report_outage(outage.provider, outage.first_epoch)
        except TxRefused as exc:
            self.m_reports.labels("refused").inc()
            self.log("outage-report-refused", "warning", provider=outage.provider,
                     first_epoch=outage.first_epoch, last_epoch=outage.last_epoch, error=str(exc))
            return None
        self.m_reports.labels("sent").inc()
        self.log("outage-reported", "warning", provider=outage.provider,
                 first_epoch=outage.first_epoch, last_epoch=outage.last_epoch,
                 jailed_until=event["jailed_until"], tx=tx_hash(receipt),
                 gas=receipt["gasUsed"])
        return receipt
