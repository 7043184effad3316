"""The validator's loop: each epoch, probe every active provider at random moments; once the
epoch is over and its probes are all in, post one report (root + per-provider tallies).

The watcher thread schedules and fires probes (a thread pool sends them) and posts reports; a
second thread reports outages (validator/outages.py); the HTTP API reads the same SQLite store.
Epochs are the chain's (Probes.current_epoch, latest block); probe deadlines are unix seconds on
the wall clock (docs/validators.md)."""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import Counter as Tally
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
from prometheus_client import CollectorRegistry, Counter, Gauge

from tessera.chain.accounts import resolve_account
from tessera.chain.client import Chain, retry, tx_hash
from tessera.chain.devnet import liveness_confirmations
from tessera.chain.network import load_network
from tessera.chain.probes import Probes
from tessera.chain.registry import ProviderRegistry
from tessera.errors import RpcUnavailable, TxRefused
from tessera.logs import EventLog
from tessera.validator.challenges import ChallengeVoter
from tessera.validator.config import ValidatorConfig
from tessera.validator.hardware import HardwareChallenger
from tessera.validator.liveness import LivenessDuty
from tessera.validator.liveness_watch import LivenessWatch
from tessera.validator.outages import OutageReporter
from tessera.validator.probe import new_request, probe
from tessera.validator.registry_indices import RegistryIndices
from tessera.validator.report import build_report, receipts_document
from tessera.validator.stake import ensure_validator
from tessera.validator.store import ValidatorStore

GUARD_S = 1.0  # keep probes this far (plus the timeout) from the epoch's end


@dataclass(order=True)
class Scheduled:
    at: float                      # time.monotonic() when the probe fires
    seq: int
    epoch: int = field(compare=False)
    provider: str = field(compare=False)
    endpoint: str = field(compare=False)


class ValidatorNode:
    def __init__(self, config: ValidatorConfig, log: EventLog | None = None):
        self.config = config
        self.log = log or EventLog("validator")
        self.account = resolve_account(config.validator.account)
        self.chain = Chain(load_network(config.validator.network), self.account)
        self.probes = Probes(self.chain)
        self.registry = ProviderRegistry(self.chain)
        self.store = ValidatorStore(Path(config.validator.state_dir) / "validator.db")
        self.stop_event = threading.Event()
        self.executor = ThreadPoolExecutor(max_workers=config.probes.concurrency,
                                           thread_name_prefix="probe")
        self._rng = random.SystemRandom()
        self._seq = itertools.count()
        self._queue: list[Scheduled] = []
        self._pending: Tally[int] = Tally()  # epoch -> probes scheduled or in flight
        self._lock = threading.Lock()
        self._sessions = threading.local()
        self.epoch: int | None = None        # the chain's current epoch, as last seen
        self.scheduled_epoch: int | None = None
        self.genesis = self.epoch_length = self.max_providers = 0
        self.metrics = CollectorRegistry()
        self.m_probes = Counter("tessera_validator_probes", "probes sent", ["outcome"],
                                registry=self.metrics)
        self.m_reports = Counter("tessera_validator_reports", "epoch reports", ["outcome"],
                                 registry=self.metrics)
        self.m_epoch = Gauge("tessera_validator_epoch", "current epoch", registry=self.metrics)
        self.m_posted = Gauge("tessera_validator_last_posted_epoch", "last epoch reported",
                              registry=self.metrics)
        self.outages = OutageReporter(self.chain, self.log, self.metrics)
        c = config.challenges
        self.challenges = ChallengeVoter(
            self.chain, self.log, self.metrics, Path(config.validator.state_dir),
            datasets_dir=c.datasets_dir, open_grace_s=c.open_grace_s,
            max_params=c.max_params) if c.vote else None
        self.hardware = HardwareChallenger(self.chain, config.hardware,
                                           Path(config.validator.state_dir) / "validator.db",
                                           self.log, self.metrics)
        lv = config.liveness
        confirmations = liveness_confirmations(self.chain.network, lv.confirmations)
        # one cache for the duty and the watch, read as deep as they trust the chain
        indices = RegistryIndices(self.registry, confirmations, self.chain.block_number)
        self.liveness = LivenessDuty(
            self.chain, self.account, Path(config.validator.state_dir), self.log, self.metrics,
            open_epochs=lv.open_epochs, open_within_s=lv.open_within_s,
            confirmations=confirmations, indices=indices) if lv.enabled else None
        self.liveness_watch = LivenessWatch(
            self.chain, self.liveness.store, Path(config.validator.state_dir), self.log,
            self.metrics, timeout_s=lv.watch_timeout_s,
            max_bonds_lost_per_day=lv.watch_max_bonds_lost_per_day,
            confirmations=self.liveness.confirmations,
            indices=indices) if lv.enabled and lv.watch else None

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def probes_address(self) -> str:
        return self.probes.address

    # -- start-up ------------------------------------------------------------------------
    def prepare(self) -> None:
        """Connect (retrying), stake if needed, publish the receipts endpoint, read the clock."""
        retry(self.chain.check_connected, attempts=20,
              on_retry=lambda exc, delay: self.log("rpc-retry", "warning", error=str(exc), delay=delay))
        cfg = self.config.validator
        for what, tx in ensure_validator(self.chain, cfg.stake_base_units, cfg.endpoint):
            self.log(what, tx=tx)
        self.genesis = self.probes.genesis()
        self.epoch_length = self.probes.epoch_length()
        self.max_providers = self.probes.max_providers()
        self.outages.prepare()
        if self.liveness is not None:
            self.liveness.prepare()
        if self.liveness_watch is not None:
            self.liveness_watch.prepare()
        self.log("ready", validator=self.address, genesis=self.genesis,
                 epoch_length=self.epoch_length, endpoint=cfg.endpoint,
                 report_outages=self.config.outages.report, jail_after=self.outages.jail_after,
                 liveness=self.liveness is not None)

    # -- the loop --------------------------------------------------------------------------
    def watch(self, interval: float = 0.2) -> None:
        """The probe loop: schedule, fire, post reports."""
        self._loop(self.poll_once, interval, "watch-error")

    def watch_outages(self, interval: float = 0.5) -> None:
        """The outage loop, in its own thread so that checking many providers never delays a
        probe past its epoch (sends share the account's nonce lock in `Chain`)."""
        self._loop(self.outages.poll_once, interval, "outage-check-error")

    def watch_hardware(self, interval: float = 0.5) -> None:
        """The hardware-challenge loop (docs/hardware.md), in its own thread: a challenge takes
        up to its deadline and must not hold up probes or reports."""
        self._loop(self.hardware.poll_once, interval, "hardware-check-error")

    def watch_challenges(self, interval: float = 0.5) -> None:
        """The challenge loop (validator/challenges.py), in its own thread: a replay takes as
        long as the challenged segment's k steps and must not hold up probes."""
        self._loop(self.challenges.poll_once, interval, "challenge-error")

    def watch_liveness(self) -> None:
        """The liveness loop (validator/liveness.py), in its own thread: its reports and
        answers are transactions that must not wait for probes, nor probes for them."""
        self._loop(self.liveness.poll_once, self.config.liveness.interval_s, "liveness-error")

    def watch_liveness_reports(self) -> None:
        """Other validators' liveness reports checked and challenged
        (validator/liveness_watch.py), in its own thread: asking endpoints for beats takes
        seconds that must not delay this validator's own reports and answers."""
        self._loop(self.liveness_watch.poll_once, self.config.liveness.interval_s,
                   "liveness-watch-error")

    def _loop(self, step, interval: float, error_event: str) -> None:
        delay = interval
        while not self.stop_event.is_set():
            try:
                step()
                delay = interval
            except RpcUnavailable as exc:
                delay = min(delay * 2, 10.0)
                self.log("rpc-unavailable", "warning", error=str(exc), retry_in=delay)
            except Exception as exc:  # keep the daemon alive; the error is logged
                delay = min(delay * 2, 10.0)
                self.log(error_event, "error", error=f"{type(exc).__name__}: {exc}")
            self.stop_event.wait(delay)

    def poll_once(self) -> None:
        epoch = self.probes.current_epoch()
        self.epoch = epoch
        self.m_epoch.set(epoch)
        if epoch != self.scheduled_epoch:
            self._schedule(epoch)
        self._fire_due(epoch)
        for finished in self.store.unreported_epochs(before=epoch):
            with self._lock:
                busy = self._pending[finished] > 0
            if not busy:
                self.post_report(finished)

    def _active_providers(self) -> list[tuple[str, str]]:
        offers = (self.registry.provider_offer(a) for a in self.registry.provider_addresses())
        return [(o.address, o.endpoint) for o in offers if o is not None and o.active]

    def _schedule(self, epoch: int) -> None:
        self.scheduled_epoch = epoch
        if self.store.has_probes(epoch):  # restarted within an epoch it had already probed
            self.log("epoch-already-probed", epoch=epoch)
            return
        remaining = self.genesis + (epoch + 1) * self.epoch_length - self.chain.block_timestamp()
        window = remaining - self.config.probes.timeout_s - GUARD_S
        if self.config.probes.max_delay_s is not None:
            window = min(window, self.config.probes.max_delay_s)
        if window < 0:
            self.log("epoch-skipped", epoch=epoch, reason=f"only {remaining} s of it left")
            return
        providers = self._active_providers()
        if len(providers) > self.max_providers:  # one report covers at most this many
            self.log("providers-sampled", epoch=epoch, active=len(providers),
                     probed=self.max_providers)
            providers = self._rng.sample(providers, self.max_providers)
        now = time.monotonic()
        with self._lock:
            for provider, endpoint in providers:
                for _ in range(self.config.probes.per_epoch):
                    heapq.heappush(self._queue, Scheduled(now + self._rng.uniform(0, window),
                                                          next(self._seq), epoch, provider, endpoint))
                    self._pending[epoch] += 1
        self.log("epoch-scheduled", epoch=epoch, providers=len(providers),
                 probes=len(providers) * self.config.probes.per_epoch, window_s=round(window, 2))

    def _fire_due(self, epoch: int) -> None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._queue or self._queue[0].at > now:
                    return
                item = heapq.heappop(self._queue)
                if item.epoch != epoch:  # the epoch ended before its moment came: no probe
                    self._pending[item.epoch] -= 1
                    self.log("probe-skipped", "warning", epoch=item.epoch, provider=item.provider,
                             reason=f"epoch {epoch} has begun")
                    continue
            self.executor.submit(self._probe_one, item)

    def _session(self) -> requests.Session:
        if not hasattr(self._sessions, "session"):
            self._sessions.session = requests.Session()
        return self._sessions.session

    def _probe_one(self, item: Scheduled) -> None:
        try:
            request = new_request(self.account, item.provider, item.epoch,
                                  self.config.probes.timeout_s, self.chain.network.chain_id,
                                  self.probes_address)
            outcome = probe(self._session(), item.endpoint, item.provider, request,
                            self.config.probes.timeout_s, self.chain.network.chain_id,
                            self.probes_address)
            self.store.add_probe(item.epoch, item.provider, item.endpoint, outcome.challenge,
                                 outcome.deadline, outcome.answered, outcome.signature,
                                 outcome.reason, outcome.latency_ms, time.time())
            self.m_probes.labels("answered" if outcome.answered else "missed").inc()
            self.log("probe", "info" if outcome.answered else "warning", epoch=item.epoch,
                     provider=item.provider, answered=outcome.answered, reason=outcome.reason,
                     latency_ms=outcome.latency_ms)
        except Exception as exc:  # a bug here must not leave the epoch pending forever
            self.log("probe-error", "error", epoch=item.epoch, provider=item.provider,
                     error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._pending[item.epoch] -= 1

    # -- reports ---------------------------------------------------------------------------
    def post_report(self, epoch: int) -> None:
        """Post the epoch's root and tallies in one transaction (once; a refusal is final)."""
        records = self.store.probes(epoch)
        report = build_report(records, self.chain.network.chain_id, self.probes_address,
                              self.address)
        root = "0x" + report.root.hex()
        if self.probes.reported(self.address, epoch):
            self.store.save_report(epoch, "posted", root, report.receipt_count,
                                   detail="found on chain (sent before a restart)")
            return
        try:
            receipt = self.probes.report(epoch, report.root, report.receipt_count, report.tallies)
        except TxRefused as exc:
            self.store.save_report(epoch, "refused", root, report.receipt_count, detail=str(exc))
            self.m_reports.labels("refused").inc()
            self.log("report-refused", "error", epoch=epoch, error=str(exc))
            return
        self.store.save_report(epoch, "posted", root, report.receipt_count, tx_hash(receipt),
                               receipt["gasUsed"])
        self.m_reports.labels("posted").inc()
        self.m_posted.set(epoch)
        self.log("report-posted", epoch=epoch, root=root, providers=len(report.tallies),
                 receipts=report.receipt_count, answered=sum(t[1] for t in report.tallies),
                 missed=sum(t[2] for t in report.tallies), tx=tx_hash(receipt),
                 gas=receipt["gasUsed"])

    # -- reads for the HTTP API --------------------------------------------------------------
    def receipts(self, epoch: int) -> dict | None:
        records = self.store.probes(epoch)
        if not records:
            return None
        report = build_report(records, self.chain.network.chain_id, self.probes_address,
                              self.address)
        posted = self.store.report(epoch)
        return receipts_document(records, report, self.chain.network.chain_id,
                                 self.probes_address, self.address,
                                 asdict(posted) if posted else None)

    def health(self) -> dict:
        with self._lock:
            pending = sum(self._pending.values())
        return {"status": "ok", "validator": self.address,
                "chain_id": self.chain.network.chain_id, "epoch": self.epoch,
                "scheduled_epoch": self.scheduled_epoch, "pending_probes": pending,
                "last_probed_epoch": self.store.last_probed_epoch(),
                "last_posted_epoch": self.store.last_posted_epoch(),
                "outages_checked_epoch": self.outages.checked_epoch,
                "hardware_checked_epoch": self.hardware.checked_epoch,
                "liveness": self.liveness.health() if self.liveness is not None else None,
                "liveness_watch": (self.liveness_watch.health()
                                   if self.liveness_watch is not None else None)}

    def shutdown(self) -> None:
        self.stop_event.set()
        self.executor.shutdown(wait=True, cancel_futures=True)
