"""Hardware challenges: test each active provider's registered benchmark with a timed matrix
product (protocol/hardware_challenge.py; rules and numbers in docs/hardware.md).

Once per challenge epoch (`[hardware] every_epochs`), in its own thread, for every active provider:
pick n from its registered MFLOP/s, POST a fresh seed to its /hardware-challenge, time the answer
with this process's clock, check the signature and `rows_checked` random rows of the product,
and record the outcome (SQLite table `hardware_challenges` beside the probes, and /metrics).
Outcomes: passed; late (after the deadline, or the provider gave up); wrong (a fingerprint,
field or signature does not hold); no-answer (unreachable, HTTP error, not JSON, a reply broken
after the connection was made). A provider busy with another validator's challenge (HTTP 429)
is retried `busy_retries` times after a random wait before it counts as no-answer. A failure
(but not a provider that could not be reached: `reportable`) is reported on chain
(HardwareReports.report, once per provider per epoch, `[hardware] report`); a stake-weighted
quorum of reports opens a dispute period. What follows (jury duty when a reported provider
disputes, executing decided rounds, claiming rewards) is validator/hardware_rounds.py."""

from __future__ import annotations

import dataclasses
import random
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from eth_account.signers.local import LocalAccount
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from tessera.chain.client import Chain, tx_hash
from tessera.chain.hardware import HardwareReports, evidence_digest
from tessera.chain.market import Market
from tessera.chain.probes import Probes
from tessera.chain.registry import ProviderRegistry
from tessera.errors import ChainError, TxRefused
from tessera.http_deadline import (
    DeadlineClient,
    connecting_to,
    json_of,
    look_up,
    text_of,
    within,
)
from tessera.logs import EventLog
from tessera.protocol import hardware_challenge as hc
from tessera.protocol import messages
from tessera.validator.config import HardwareSection
from tessera.validator.hardware_rounds import HardwareRounds

OUTCOMES = ("passed", "late", "wrong", "no-answer", "leased")
# sent: accepted; quorum: this report completed the quorum (a dispute period opens); refused:
# the contract said no (already reported, disputed, epoch too old, ...); error: no chain.
REPORT_RESULTS = ("sent", "quorum", "refused", "error")

SCHEMA = """
CREATE TABLE IF NOT EXISTS hardware_challenges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch INTEGER NOT NULL,
    provider TEXT NOT NULL,
    benchmark_mflops INTEGER NOT NULL,
    seed TEXT NOT NULL,
    size INTEGER NOT NULL,
    expected_s REAL NOT NULL,
    deadline_s REAL NOT NULL,
    elapsed_s REAL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    signature TEXT NOT NULL,
    challenged_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS hardware_epoch ON hardware_challenges (epoch, id);
"""


@dataclass(frozen=True)
class HardwareOutcome:
    provider: str
    benchmark_mflops: int
    seed: str
    plan: hc.ChallengePlan
    elapsed_s: float | None
    outcome: str        # one of OUTCOMES
    reason: str
    signature: str      # the provider's, when it answered with a valid signature
    request_signature: str = ""  # this validator's signature of the request
    deadline_ms: int = 0


@dataclass(frozen=True)
class HardwareRecord:
    id: int
    epoch: int
    provider: str
    benchmark_mflops: int
    seed: str
    size: int
    expected_s: float
    deadline_s: float
    elapsed_s: float | None
    outcome: str
    reason: str
    signature: str
    challenged_at: float


def judge_answer(request: hc.HardwareChallengeRequest, plan: hc.ChallengePlan, provider: str,
                 body: object, elapsed_s: float, chain_id: int, probes: str,
                 rows: list[int]) -> tuple[str, str, str]:
    """(outcome, reason, signature) for a provider's reply, timed by the validator."""
    try:
        answer = hc.HardwareChallengeAnswer.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        return "wrong", f"malformed answer: {first['loc']} {first['msg']}", ""
    asked = (provider.lower(), request.validator.lower(), request.seed, request.size,
             request.deadline_ms)
    got = (answer.provider.lower(), answer.validator.lower(), answer.seed, answer.size,
           answer.deadline_ms)
    if got != asked:
        return "wrong", "answer names other fields than the challenge", ""
    signer = hc.answer_signer(answer, chain_id, probes)
    if signer is None or signer.lower() != provider.lower():
        return "wrong", f"answer signed by {signer}, not by the provider", ""
    from tessera.compute.hardware_challenge import wrong_rows  # torch, only when judging

    bad = wrong_rows(request.seed, request.size, answer.fingerprint_values(), rows)
    if bad:
        return "wrong", f"rows {bad} of the product are wrong", answer.signature
    if not hc.in_time(elapsed_s, plan):
        return ("late", f"answered in {elapsed_s:.3f} s; deadline {plan.deadline_s:.3f} s "
                        f"(expected {plan.expected_s:.3f} s at the claimed benchmark)",
                answer.signature)
    return "passed", f"{elapsed_s:.3f} s of {plan.deadline_s:.3f} s", answer.signature


# No connection was made: an outage (Uptime's and the probes' business), not a failed challenge.
# Anything that breaks after the connection (a reset, a bad status line or body, a close before
# the answer) is the provider's answer to a challenge it had, and is reported like a wrong one:
# otherwise a provider too slow for its claim would break every answer and never be reported.
# An honest node that crashed mid-answer disputes, and the jury's fresh challenges clear it.
NOT_CONNECTED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                 httpx.UnsupportedProtocol, httpx.ProxyError, httpx.InvalidURL)

RESOLVE_S = 5.0   # the most a provider's name may take to resolve (not timed against it)

# The largest answer a provider may send: MAX_SIZE fingerprints of 16 hex digits, and the rest
ANSWER_BYTES = 1 << 20


def challenge_provider(http: httpx.Client, endpoint: str, provider: str,
                       validator: LocalAccount, benchmark_mflops: int, cfg: HardwareSection,
                       chain_id: int, probes: str, rng: random.Random) -> HardwareOutcome:
    """Send one challenge sized for `benchmark_mflops` and judge it. Never raises for the
    provider's faults. `http`: a tessera.http_deadline.DeadlineClient, so that the whole
    exchange ends at the challenge's deadline however slowly the provider sends (review 15)."""
    plan = hc.plan_challenge(benchmark_mflops, cfg.target_s, cfg.slack, cfg.allowance_s)
    seed = "0x" + secrets.token_hex(32)
    # the name first, outside the timed exchange and before the signed deadline is set
    try:
        addresses = look_up(endpoint, RESOLVE_S)
    except (OSError, ValueError, httpx.InvalidURL) as exc:   # (UnicodeError is a ValueError)
        return HardwareOutcome(provider, benchmark_mflops, seed, plan, None, "no-answer",
                               f"unreachable: name not resolved: {str(exc)[:160]}", "", "", 0)
    with connecting_to(addresses):
        return _timed_challenge(http, endpoint, provider, validator, benchmark_mflops, cfg,
                                chain_id, probes, rng, plan, seed)


def _timed_challenge(http: httpx.Client, endpoint: str, provider: str,
                     validator: LocalAccount, benchmark_mflops: int, cfg: HardwareSection,
                     chain_id: int, probes: str, rng: random.Random, plan: hc.ChallengePlan,
                     seed: str) -> HardwareOutcome:
    deadline_ms = int(time.time() * 1000 + plan.deadline_s * 1000) + 1
    typed = hc.request_typed_data(chain_id, probes, provider, validator.address, seed, plan.size,
                                  deadline_ms)
    request = hc.HardwareChallengeRequest(
        provider=provider, validator=validator.address, seed=seed, size=plan.size,
        deadline_ms=deadline_ms, signature=messages.sign(validator, typed))

    def result(outcome: str, reason: str, elapsed: float | None = None,
               signature: str = "") -> HardwareOutcome:
        return HardwareOutcome(provider, benchmark_mflops, seed, plan, elapsed, outcome, reason,
                               signature, request.signature, deadline_ms)

    start = time.monotonic()
    try:
        with within(start + plan.deadline_s + 1.0):
            reply = http.post(endpoint.rstrip("/") + "/hardware-challenge",
                              json=request.model_dump(), timeout=plan.deadline_s + 1.0)
    except NOT_CONNECTED as exc:   # (InvalidURL: its endpoint is no URL)
        return result("no-answer", f"unreachable: {type(exc).__name__}")
    except httpx.TimeoutException:
        return result("late", f"no answer within {plan.deadline_s + 1.0:.3f} s")
    except httpx.DecodingError as exc:
        return result("no-answer", f"answer refused: {str(exc)[:200]}", time.monotonic() - start)
    except Exception as exc:   # (anything else raised while its answer is read, review 20)
        # connected, then the exchange broke: the provider had the challenge (review 16, F4)
        return result("no-answer", f"broken answer: {type(exc).__name__}",
                      time.monotonic() - start)
    elapsed = time.monotonic() - start
    if reply.status_code == 408:  # the provider saw its deadline pass and gave up, unsigned
        return result("late", f"provider gave up: {text_of(reply)}", elapsed)
    if reply.status_code != 200:
        return result("no-answer", f"HTTP {reply.status_code}: {text_of(reply)}", elapsed)
    try:
        body = json_of(reply.content)
    except ValueError:
        return result("no-answer", "answer is not JSON", elapsed)
    rows = rng.sample(range(plan.size), min(cfg.rows_checked, plan.size))
    outcome, reason, signature = judge_answer(request, plan, provider, body, elapsed, chain_id,
                                              probes, rows)
    return result(outcome, reason, elapsed, signature)


def is_busy(o: HardwareOutcome) -> bool:
    """The provider refused because another challenge runs (another validator's): a collision,
    not a failure, unless it lasts through every retry."""
    return o.outcome == "no-answer" and o.reason.startswith("HTTP 429")


def reportable(o: HardwareOutcome) -> bool:
    """A failure that goes on chain. Not a provider that could not be reached at all: that is an
    outage, which Uptime and the probes already judge (and jail); slashing it here too would take
    50 TSTK per epoch of downtime. Not a provider serving an open lease (`leased`, checked on
    chain): its device is busy with the tenant's job. A provider that answers anything else but
    a good, timely product is reported."""
    return o.outcome not in ("passed", "leased") and not o.reason.startswith("unreachable")


def challenge_client() -> DeadlineClient:
    """The client challenges go out by: no proxy from the environment (HTTP_PROXY and the
    like), which would turn a provider's outage into an HTTP error or a broken answer, both
    reported (review 17, L1)."""
    return DeadlineClient(max_body=ANSWER_BYTES, trust_env=False)


def busy_then(retry: HardwareOutcome) -> HardwareOutcome:
    """A retry's outcome after the provider answered "busy" (429) to the same validator: it was
    reachable then, and had the signed challenge, so an unreachable retry is no outage but a
    dodge (review 17, H1: answer 429, then refuse the retry's connection); reported as such."""
    if retry.outcome == "no-answer" and retry.reason.startswith("unreachable"):
        return dataclasses.replace(retry, reason="busy, then " + retry.reason)
    return retry


LEASED = re.compile(r"serving lease (\d+)")


def serving_lease(o: HardwareOutcome, market: Market) -> HardwareOutcome:
    """A 423 "serving lease N" refusal becomes `leased` when lease N is open on chain with this
    provider; otherwise it stays `no-answer` (a provider cannot dodge with a made-up lease)."""
    match = LEASED.search(o.reason) if o.reason.startswith("HTTP 423") else None
    if match is None:
        return o
    try:
        lease = market.lease(int(match.group(1)))
    except ChainError:
        return o
    if lease.is_open and lease.provider.lower() == o.provider.lower():
        return dataclasses.replace(o, outcome="leased",
                                   reason=f"serving open lease {lease.lease_id}")
    return dataclasses.replace(o, reason=o.reason + " (no such open lease of this provider)")


def evidence_record(o: HardwareOutcome, epoch: int, validator: str, chain_id: int,
                    probes: str) -> dict:
    """What a report's evidence hash commits to: the signed request and this validator's timing."""
    return {"chain_id": chain_id, "contract": probes, "epoch": epoch, "provider": o.provider,
            "validator": validator, "seed": o.seed, "size": o.plan.size,
            "deadline_ms": o.deadline_ms, "request_signature": o.request_signature,
            "benchmark_mflops": o.benchmark_mflops, "deadline_s": o.plan.deadline_s,
            "elapsed_s": o.elapsed_s, "outcome": o.outcome, "reason": o.reason,
            "answer_signature": o.signature}


class HardwareStore:
    """The `hardware_challenges` table, in the validator's SQLite file beside the probes."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(SCHEMA)

    def add(self, epoch: int, o: HardwareOutcome, at: float) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO hardware_challenges (epoch, provider, benchmark_mflops, seed, size, "
                "expected_s, deadline_s, elapsed_s, outcome, reason, signature, challenged_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (epoch, o.provider, o.benchmark_mflops, o.seed, o.plan.size, o.plan.expected_s,
                 o.plan.deadline_s, o.elapsed_s, o.outcome, o.reason, o.signature, at))
            return int(cur.lastrowid)

    def records(self, epoch: int | None = None) -> list[HardwareRecord]:
        query, args = "SELECT * FROM hardware_challenges", ()
        if epoch is not None:
            query, args = query + " WHERE epoch=?", (epoch,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [HardwareRecord(*row) for row in rows]

    def has_epoch(self, epoch: int) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM hardware_challenges WHERE epoch=? LIMIT 1",
                                    (epoch,)).fetchone() is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()


class HardwareChallenger:
    """The validator's hardware duty: one round of challenges per challenge epoch."""

    def __init__(self, chain: Chain, cfg: HardwareSection, store_path: Path, log: EventLog,
                 metrics: CollectorRegistry):
        self.chain, self.cfg, self.log = chain, cfg, log
        self.store = HardwareStore(store_path)
        self.checked_epoch: int | None = None
        self._rng = random.SystemRandom()
        self._http = challenge_client()
        self.m_challenges = Counter("tessera_validator_hardware_challenges",
                                    "hardware challenges sent", ["outcome"], registry=metrics)
        for outcome in OUTCOMES:
            self.m_challenges.labels(outcome)
        self.m_epoch = Gauge("tessera_validator_hardware_checked_epoch",
                             "last epoch whose hardware challenges are done", registry=metrics)
        self.m_reports = Counter("tessera_validator_hardware_reports",
                                 "failed challenges reported on chain", ["result"],
                                 registry=metrics)
        for result in REPORT_RESULTS:
            self.m_reports.labels(result)
        self._reports = HardwareReports(chain) if cfg.report else None
        self.probes = Probes(chain)
        self.rounds = HardwareRounds(chain, self._challenge, log, metrics) if cfg.report else None

    def poll_once(self) -> None:
        if self.rounds is not None:
            self.rounds.poll_once()   # disputes to judge, decided rounds to execute and claim
        epoch = self.probes.current_epoch()
        if epoch == self.checked_epoch:
            return
        if epoch % self.cfg.every_epochs == 0 and not self.store.has_epoch(epoch):
            self.challenge_all(epoch)
        self.checked_epoch = epoch
        self.m_epoch.set(epoch)

    def challenge_all(self, epoch: int) -> list[HardwareOutcome]:
        """Challenge every active provider in turn (one at a time, so that the validator's own
        checks never slow a provider it is timing)."""
        registry = ProviderRegistry(self.chain)
        offers = [registry.provider_offer(a) for a in registry.provider_addresses()]
        outcomes = []
        for offer in offers:
            if offer is None or not offer.active or offer.benchmark_score <= 0:
                continue
            try:
                outcome = self._challenge(offer)
            except Exception as exc:   # one provider's endpoint must not stop the round (review 19)
                self.log("hardware-challenge-error", "error", epoch=epoch, provider=offer.address,
                         error=f"{type(exc).__name__}: {exc}"[:300])
                continue
            self.store.add(epoch, outcome, time.time())
            self.m_challenges.labels(outcome.outcome).inc()
            self.log("hardware-challenge", "info" if outcome.outcome == "passed" else "warning",
                     epoch=epoch, provider=offer.address, benchmark_mflops=offer.benchmark_score,
                     size=outcome.plan.size, expected_s=round(outcome.plan.expected_s, 3),
                     deadline_s=round(outcome.plan.deadline_s, 3),
                     elapsed_s=None if outcome.elapsed_s is None else round(outcome.elapsed_s, 3),
                     outcome=outcome.outcome, reason=outcome.reason)
            outcomes.append(outcome)
            if reportable(outcome) and self._reports is not None:
                self.report(epoch, outcome)
        return outcomes

    def _challenge(self, offer) -> HardwareOutcome:
        """One challenge; a provider busy with another validator's is retried after a random
        wait of up to one of its deadlines (the other challenge is over by then)."""
        def once() -> HardwareOutcome:
            return challenge_provider(
                self._http, offer.endpoint, offer.address, self.chain.account,
                offer.benchmark_score, self.cfg, self.chain.network.chain_id,
                self.probes.address, self._rng)

        outcome = once()
        for _ in range(self.cfg.busy_retries):
            if not is_busy(outcome):
                break
            time.sleep(self._rng.uniform(0.25, 1.0) * (outcome.plan.deadline_s + 1.0))
            outcome = busy_then(once())
        return serving_lease(outcome, Market(self.chain))

    def report(self, epoch: int, o: HardwareOutcome) -> str:
        """Send HardwareReports.report for a failed challenge; returns one of REPORT_RESULTS.
        A refusal (already reported or slashed: another validator's report completed the
        quorum first) is logged and counted, not raised: the loop must go on."""
        evidence = evidence_digest(evidence_record(o, epoch, self.chain.address,
                                                   self.chain.network.chain_id,
                                                   self.probes.address))
        try:
            done = self._reports.report(o.provider, epoch, o.outcome, evidence)
        except TxRefused as exc:
            result, fields = "refused", {"reason": str(exc)}
        except ChainError as exc:
            result, fields = "error", {"reason": str(exc)}
        else:
            result = "sent" if done.dispute_deadline is None else "quorum"
            fields = {"tx": tx_hash(done.receipt), "weight": done.weight,
                      "reported": done.reported, "quorum": done.quorum,
                      "gas": done.receipt["gasUsed"]}
            if done.dispute_deadline is not None:
                fields["dispute_deadline"] = done.dispute_deadline
            self.rounds.track(o.provider, epoch, reporter=True)
        self.m_reports.labels(result).inc()
        self.log("hardware-report", "warning" if result == "error" else "info", epoch=epoch,
                 provider=o.provider, outcome=o.outcome, evidence="0x" + evidence.hex(),
                 result=result, **fields)
        return result
