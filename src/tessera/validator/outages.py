"""Reporting outages: after each epoch, find every staked provider with `jail_after` consecutive
ended epochs without a heartbeat that nobody has reported yet, and send `Uptime.report_outage`.

The rules are the contract's (docs/uptime.md, "Jailing"); this module only finds a stretch that
passes them, so a report is refused only when someone else reported first (or the chain moved
between the read and the send). Heartbeats are read with `beat_word`: one call per 256 epochs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from tessera.chain.client import Chain, tx_hash
from tessera.chain.registry import ProviderRegistry
from tessera.chain.uptime import Uptime
from tessera.errors import TxRefused
from tessera.logs import EventLog


def beat_in(words: Mapping[int, int], epoch: int) -> bool:
    """Whether the bitmap words (index -> `beat_word`) hold a heartbeat in `epoch`."""
    return (words.get(epoch >> 8, 0) >> (epoch & 255)) & 1 == 1


def first_whole_epoch(registered_at: int, genesis: int, epoch_length: int) -> int:
    """The first epoch that starts at or after the registration (the contract refuses earlier)."""
    return max(-(-(registered_at - genesis) // epoch_length), 0)


def reportable_from(now: int, jail_after: int, reported_until: int, registered_epoch: int) -> int:
    """The earliest first epoch the contract accepts today: after any reported outage, after the
    registration, and not more than `jail_after` epochs older than a stretch that just ended."""
    return max(reported_until, registered_epoch, now - 2 * jail_after, 0)


def first_reportable(words: Mapping[int, int], lo: int, now: int, jail_after: int) -> int | None:
    """The earliest `first` >= lo such that epochs first .. first + jail_after - 1 have all ended
    (are before `now`, the running epoch) and none holds a heartbeat; None if there is none.

    The earliest, so that a provider that stays down is reported again for the very next stretch."""
    run = 0
    for epoch in range(lo, now):
        run = 0 if beat_in(words, epoch) else run + 1
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
        self.checked_epoch: int | None = None
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

    def poll_once(self) -> None:
        """Check once per new epoch (a failed check is retried on the next poll)."""
        now = self.uptime.current_epoch()
        if now == self.checked_epoch:
            return
        for outage in self.find_all(now):
            self.report(outage)
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
        lo = reportable_from(now, self.jail_after, self.uptime.reported_until(provider),
                             first_whole_epoch(record["registered_at"], self.genesis, self.epoch_length))
        if now - lo < self.jail_after:
            return None
        words = {i: self.uptime.beat_word(provider, i)
                 for i in range(lo >> 8, ((now - 1) >> 8) + 1)}
        first = first_reportable(words, lo, now, self.jail_after)
        if first is None:
            return None
        self.m_found.inc()
        return Outage(provider, first, first + self.jail_after - 1)

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
