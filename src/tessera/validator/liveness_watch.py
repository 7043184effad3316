"""Watching other validators' liveness reports (docs/validators.md, "Watching other
validators' reports"; the rules: protocol/liveness.py, Uptime.vy).

A validator that names a provider in its report without holding the provider's beat (say, to
spare an offline provider's tenant its downtime refund) is only caught when someone calls
`Uptime.challenge_inclusions` with a bond. This duty does, for each epoch whose report window
has closed while its inclusions can still be challenged (`watched_epoch`: one at a time):

- it reads every `LivenessReported` of the epoch (a block cursor kept across restarts; the
  last `confirmations` blocks read again for reorgs) and takes the providers other
  validators named, by registry index (validator/registry_indices.py: the cache it shares
  with the duty): an index whose beat this validator holds itself is honest evidence,
  dropped before anyone is asked.
- ASK FIRST: for the others it asks the validators that named the provider for the beat
  (`GET {endpoint}/liveness/{epoch}/beats/{provider}`, validator/beat_fetch.py: checked URLs,
  one bounded batch a pass) and checks the signature locally. One valid beat from anyone
  settles the provider: a challenge naming it would be answered. A heartbeat or claimed
  receipt on chain settles it too.
- SILENCE: an endpoint that does not answer is asked again every RETRY_EVERY_S until the
  last call, which is decided each pass from the time left in the window against what a pass
  can take (`is_last_call`). A validator silent for everything asked of it is one unit: one
  request a pass, the last call's included; what it then leaves unanswered is taken at its
  silence. In the last call a provider left unasked (the per-pass bounds) counts as no beat
  too: nothing is left pending when the window closes.
- Once every provider of the epoch is decided, ONE challenge per report (and per 256
  registry words of it, so that each fits a block) names all of that report's unproven
  inclusions no challenge named yet and no one proved on chain
  (validator/liveness_watch_bonds.py: the bond, the daily loss budget, a random subset when
  the budget or the balance is short). Decoys (inclusions the liar answers on chain but
  refuses to serve) shield nothing: the challenge is settled as answered only if every named
  beat is shown, and each answered decoy costs the watcher only the fixed answer fee (the
  rest of the bond comes back). Sending them only then, not as each report is decided,
  keeps a liar from spending the budget first with a quick report of decoys.
- Every challenge of its own is read each pass (answered ones count at once) and resolved
  once its answer window is over (its bond less the fees comes back only then).

What it sent is kept in SQLite (validator/liveness_watch_store.py), but the chain is the
truth: a challenge is marked `sending` before it goes out, and a restart (or a refusal) looks
the report's `InclusionsChallenged` up before anything is sent again, so a crash between the
send and the save never costs a second bond."""

from __future__ import annotations

import random
import time
from collections import Counter as Tally
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from tessera.chain.client import Chain
from tessera.chain.devnet import DEVNET_CHAIN_ID, PEER_CHAIN_ID
from tessera.chain.registry import ProviderRegistry
from tessera.chain.uptime import Uptime
from tessera.chain.validators import Validators
from tessera.logs import EventLog
from tessera.protocol import liveness
from tessera.validator.beat_fetch import (
    ABSENT,
    OK,
    SILENT,
    UNASKED,
    beat_url,
    endpoint_problem,
    fetch_all,
    served_problem,
)
from tessera.validator.liveness_store import LivenessStore
from tessera.validator.liveness_watch_bonds import WatchBonds
from tessera.validator.liveness_watch_store import WatchStore
from tessera.validator.registry_indices import RegistryIndices

MAX_CHECKS_PER_EPOCH = 1_024   # providers asked about per epoch (in a random order; the
                               # rest are neither asked about nor named)
MAX_URLS_PER_PASS = 256        # GETs in one pass (the rest: the next pass, at once)
MAX_ASKS_PER_VALIDATOR = 64    # GETs to one validator in one pass
RETRY_EVERY_S = 5.0            # an endpoint that did not answer is asked again this often
MARGIN_S = 5.0                 # kept free at the end of the window (the last block, clocks)
_RANDOM = random.SystemRandom()   # os.urandom: an order no validator can predict


def is_last_call(remaining_s: float, timeout_s: float, sends: int, send_s: float) -> bool:
    """Whether a pass starting `remaining_s` before the challenge window closes must take
    silent endpoints at their silence: it is, unless after this pass (its batch of GETs takes
    at most 2 x `timeout_s`, then `sends` challenges of `send_s` each), a wait of RETRY_EVERY_S
    and one more pass like it, MARGIN_S would still be left."""
    one_pass = 2 * timeout_s + sends * send_s
    return remaining_s <= 2 * one_pass + RETRY_EVERY_S + MARGIN_S


class LivenessWatch:
    """Challenges inclusions no one can show a beat for, and resolves them (module docstring)."""

    def __init__(self, chain: Chain, beats: LivenessStore, state_dir: Path, log: EventLog,
                 metrics: CollectorRegistry, timeout_s: float = 3.0,
                 max_bonds_lost_per_day: int = 8, confirmations: int = 0,
                 indices: RegistryIndices | None = None):
        self.chain, self.beats, self.log = chain, beats, log
        self.uptime = Uptime(chain)
        # registry indices, shared with the duty (the node passes one: registry_indices.py)
        self.indices = indices or RegistryIndices(ProviderRegistry(chain), confirmations,
                                                  chain.block_number)
        self.validators = Validators(chain)
        self.store = WatchStore(Path(state_dir) / "liveness_watch.db")
        self.bonds = WatchBonds(chain, self.store, log, metrics, max_bonds_lost_per_day)
        self.timeout_s, self.confirmations = timeout_s, confirmations
        # Off the devnet's own chains, endpoints on this machine's networks are not asked.
        self.public_only = chain.network.chain_id not in (DEVNET_CHAIN_ID, PEER_CHAIN_ID)
        self.report_delay = self.genesis = self.epoch_length = 0
        self.examined_epoch: int | None = None   # the last epoch whose checks are all done
        self._retry_at: dict[int, float] = {}     # epoch -> monotonic time to ask again
        self._silent: dict[int, set[str]] = {}    # epoch -> validators silent to every GET
        self._pruned: int | None = None
        self._current = 0                         # the epoch of the last pass
        self.m_checks = Counter("tessera_validator_liveness_watch_checks",
                                "other validators' inclusions checked", ["outcome"],
                                registry=metrics)

    @property
    def address(self) -> str:
        return self.chain.address

    @property
    def bond(self) -> int:
        return self.bonds.bond

    @property
    def slash(self) -> int:
        return self.bonds.slash

    def prepare(self) -> None:
        self.bonds.prepare()
        self.report_delay = self.bonds.report_delay
        self.genesis, self.epoch_length = self.uptime.genesis(), self.uptime.epoch_length()

    def poll_once(self) -> None:
        """Scan, settle our challenges, examine the watched epoch: each step on its own, so
        that nothing one validator's report or endpoint does can stop the others (the first
        error is raised again at the end, for the loop's log and back-off)."""
        current = self._current = self.uptime.current_epoch()
        failed: Exception | None = None
        for stage, step in (("scan", self.scan), ("settle", self.bonds.settle),
                            ("examine", self._examine_due)):
            try:
                step(current)
            except Exception as exc:   # logged; the next step still runs
                failed = failed or exc
                self.log("liveness-watch-step-failed", "error", step=stage,
                         error=f"{type(exc).__name__}: {exc}"[:500])
        if failed is not None:
            raise failed

    def _examine_due(self, current: int) -> None:
        watched = liveness.watched_epoch(current, self.report_delay)
        if watched >= 0 and (self.examined_epoch != watched or self.store.unsent(watched)) \
                and time.monotonic() >= self._retry_at.get(watched, 0.0):
            self.examine(watched, current)

    # -- reading the chain ---------------------------------------------------------------
    def scan(self, current: int | None = None) -> None:
        """Take in new LivenessReported logs (epochs still open to challenge) and this
        validator's own InclusionsChallenged (found again after a lost database). The last
        `confirmations` blocks already read are read again (a reorg may have changed them)."""
        current = self.uptime.current_epoch() if current is None else current
        head = self.chain.block_number()
        cursor = self.store.next_block()
        if cursor is None:
            start = self._first_block(current)
        else:
            start = max(cursor - self.confirmations, self.chain.network.deploy_block)
        if head >= start:
            for log in self.chain.events("Uptime", "LivenessReported", start, head):
                a = log["args"]
                if current <= liveness.last_challenge_epoch(a["epoch"], self.report_delay):
                    self.store.add_report(a["epoch"], a["validator"], list(a["words"]))
            for log in self.chain.events("Uptime", "InclusionsChallenged", start, head):
                self.bonds.adopt(dict(log["args"]))
        self.store.set_next_block(max(head + 1, start))
        self._prune(current)

    def _first_block(self, current: int) -> int:
        """Where a fresh database starts reading: the block that opened the oldest epoch whose
        inclusions can still be challenged or whose challenges still be answered (reports
        need an opened epoch, so nothing of interest comes earlier)."""
        oldest = max(0, liveness.watched_epoch(current, self.report_delay)
                     - self.bonds.answer_epochs - 1)
        for epoch in range(oldest, current + 1):
            if block := self.uptime.opened_block(epoch):
                return block
        return self.chain.block_number() + 1

    def _prune(self, current: int) -> None:
        """Once an epoch: forget what no challenge can use any more."""
        if self._pruned == current:
            return
        self._pruned = current
        watched = liveness.watched_epoch(current, self.report_delay)
        self.store.prune(checks_before=watched,
                         challenges_before=watched - self.bonds.epochs_per_day - 1)
        for table in (self._retry_at, self._silent):
            for old in [e for e in table if e < watched]:
                del table[old]

    # -- checking an epoch ---------------------------------------------------------------
    def examine(self, epoch: int, current: int) -> None:
        """One pass over `epoch`'s providers not yet settled, then, once all are, one
        challenge per report naming its unproven inclusions (the module docstring)."""
        reports = {v: w for v, w in self.store.reports(epoch).items()
                   if v.lower() != self.address.lower()}
        held = {self.indices.index_of(p) for p in self.beats.providers(epoch)}
        named: dict[str, list[str]] = {}     # provider -> validators that named it
        for validator, words in reports.items():
            for index in liveness.indices_of(words):
                # filtered by index: a held one is honest evidence, never asked about (None:
                # past the registry, which Uptime refuses in a report)
                if index not in held and (provider := self.indices.provider_at(index)):
                    named.setdefault(provider, []).append(validator)
        checks = self.store.checks(epoch)
        todo = [p for p in named if checks.get(p, ("", 0))[0] in ("", "pending")]
        _RANDOM.shuffle(todo)   # unpredictable: which ones a flood leaves unasked
        todo = todo[:max(0, MAX_CHECKS_PER_EPOCH - self.store.settled(epoch))]
        if todo and self.bonds.budget_spent(epoch):   # nothing can be named: ask again later
            self._retry_at[epoch] = time.monotonic() + RETRY_EVERY_S
            return
        if todo:
            sends = len({v for p in todo for v in named[p]})
            last_call = self._last_call(epoch, sends)
            said = self._ask(epoch, todo, named)
            seed = self.uptime.seed(epoch)
            retry = {self._decide(epoch, provider,
                                  {v: said[(v, provider)] for v in named[provider]},
                                  seed, last_call, checks) for provider in todo}
            if UNASKED in retry:
                self._retry_at[epoch] = 0.0                          # the next pass, at once
                return
            if SILENT in retry:
                self._retry_at[epoch] = time.monotonic() + RETRY_EVERY_S
                return
        checks = self.store.checks(epoch)
        due = {}
        for validator, words in reports.items():
            unproven = [i for i in liveness.indices_of(words) if i not in held
                        and checks.get(self.indices.provider_at(i), ("", 0))[0] == "unproven"]
            if unproven:
                due[validator] = (words, unproven)
        if due:
            self.bonds.challenge_all(epoch, due, "no beat served by any reporter, no "
                                                 "heartbeat on chain")
        if self.store.unsent(epoch) or self.store.tally(epoch).get("capped"):
            self._retry_at[epoch] = time.monotonic() + RETRY_EVERY_S
        else:
            self.examined_epoch = epoch

    def _ask(self, epoch: int, todo: list[str], named: dict) -> dict:
        """(validator, provider) -> (kind, body or why) for every reporter of `todo`: one
        batch of GETs, bounded per validator and per pass; a validator silent to everything
        last pass gets one GET (in the last call too: its silence then stands for all)."""
        silent_before = self._silent.get(epoch, set())
        endpoints: dict[str, tuple[str, str | None]] = {}
        for validator in {v for p in todo for v in named[p]}:
            endpoint = str(self.validators.record(validator)["endpoint"])
            endpoints[validator] = (endpoint, endpoint_problem(endpoint, self.public_only))
        asks: Tally = Tally()
        urls = {}
        for provider in todo:
            for validator in named[provider]:
                endpoint, problem = endpoints[validator]
                limit = 1 if validator in silent_before else MAX_ASKS_PER_VALIDATOR
                if problem or asks[validator] >= limit or len(urls) >= MAX_URLS_PER_PASS:
                    continue
                asks[validator] += 1
                urls[(validator, provider)] = beat_url(endpoint, epoch, provider)
        answers = fetch_all(urls, self.timeout_s, self.public_only)
        silent = set(silent_before)
        for validator in asks:
            kinds = {kind for (v, _), (kind, _) in answers.items() if v == validator}
            if kinds & {OK, ABSENT}:
                silent.discard(validator)
            elif SILENT in kinds:
                silent.add(validator)
        self._silent[epoch] = silent
        said = {}
        for provider in todo:
            for validator in named[provider]:
                key, problem = (validator, provider), endpoints[validator][1]
                answer = answers.get(key, (UNASKED, "not asked yet (per-pass bound)"))
                if problem:
                    answer = (ABSENT, problem)
                elif answer[0] == UNASKED and validator in silent:
                    answer = (SILENT, "silent to every request this epoch")
                said[key] = answer
        return said

    def _decide(self, epoch: int, provider: str, said: dict, seed: bytes, last_call: bool,
                checks: dict) -> str:
        """Settle one provider from what its reporters served: '' when settled, SILENT to ask
        again later, UNASKED to ask again at once."""
        problems = []
        for validator, (kind, body) in said.items():
            if kind == OK:
                problem = served_problem(body, self.chain.network.chain_id, self.uptime.address,
                                         provider, epoch, seed)
                if problem is None:
                    self.store.save_check(epoch, provider, "beat", f"served by {validator}")
                    self.m_checks.labels("beat").inc()
                    return ""
                kind, body = ABSENT, problem
            problems.append((validator, kind, body))
        attempts = checks.get(provider, ("", 0))[1] + 1
        detail = "; ".join(f"{v}: {why}" for v, _, why in problems)
        kinds = {kind for _, kind, _ in problems}
        if (UNASKED in kinds or SILENT in kinds) and not last_call:   # the last call: no beat
            self.store.save_check(epoch, provider, "pending", detail, attempts)
            return UNASKED if UNASKED in kinds else SILENT
        if self.uptime.beats(provider, epoch):   # up by its own heartbeat: no refund at stake
            self.store.save_check(epoch, provider, "onchain", detail, attempts)
            self.m_checks.labels("onchain").inc()
            return ""
        self.log("liveness-inclusion-unproven", "warning", epoch=epoch, provider=provider,
                 validators=[v for v, _, _ in problems], detail=detail[:1000])
        self.store.save_check(epoch, provider, "unproven", detail, attempts)
        self.m_checks.labels("unproven").inc()
        return ""

    def _last_call(self, epoch: int, sends: int) -> bool:
        end = self.genesis + (liveness.last_challenge_epoch(epoch, self.report_delay) + 1) \
            * self.epoch_length
        remaining = end - self.chain.block_timestamp()
        return is_last_call(remaining, self.timeout_s, sends, self.bonds.send_s)

    # -- status --------------------------------------------------------------------------
    def health(self) -> dict:
        """For /healthz: no chain call (the epoch of the last pass)."""
        watched = liveness.watched_epoch(self._current, self.report_delay)
        lost = self.bonds.lost_today(watched)
        return {"examined_epoch": self.examined_epoch, "challenges": self.store.tally(),
                "bonds_lost_day": round(lost / self.bond, 6) if self.bond else 0,
                "max_bonds_lost_per_day": self.bonds.max_lost_per_day}

    def close(self) -> None:
        self.store.close()
