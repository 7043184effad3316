"""The validator's liveness duty (issue 15; docs/uptime.md; the rules: protocol/liveness.py).

Providers no longer send a heartbeat transaction each epoch: each signs an off-chain
`Beat(provider, epoch, seed)` and POSTs it to the validators' `/liveness/beat`. This duty

- checks a beat (the current epoch only, its seed set on chain in a block at least
  `confirmations` deep, signed by a registered provider in the form Uptime's
  `signature.recover` accepts), keeps it in SQLite (`liveness.db` in the state folder:
  liveness_store.py, pruned once per epoch) before it answers, and answers with its signed
  `BeatReceipt`, with which a provider a report left out claims its epoch on chain;
- opens each epoch (`Uptime.open_epoch`, one transaction for the whole network) a moment
  after it starts, unless someone did (`[liveness] open_epochs`). The epoch is the head's, or
  the wall clock's when that is ahead: a chain that mines only when there are transactions
  (anvil's automine, a quiet L3) stays at its last block, so its head never shows the new
  epoch; the open's own block does (once per wall-clock epoch: a wall clock ahead of the
  chain's costs one wasted transaction an epoch at most);
- once an epoch is over and its report window open, posts ONE `report_liveness` naming the
  registry index of every provider whose beat it holds (nothing when it holds none; never
  twice, a restart included: the chain's `report_hash` is asked first);
- answers every `InclusionsChallenged` of its own reports (one challenge names any set of a
  report's inclusions) with the beats it holds, MAX_ANSWERS a transaction, skipping those
  already shown (a provider may answer its own inclusion first), then colleagues' challenges
  naming providers it reported (an unproven disputed inclusion revokes the provider's epoch
  whatever other reports say); it resolves none (each beat shown pays it the fixed answer
  fee, and the rest of a bond always goes back to the challenger: liveness_answers.py); each
  scan reads the last `confirmations` blocks again, since a reorg can put a challenge in a
  block the scan has passed.

Reorgs (docs/uptime.md, "Reorgs"): the seed is the hash of the block before `open_epoch`'s; a
reorg that mines that transaction in another block changes it, and a beat signed over the old
one can neither answer a challenge nor be claimed. So a seed counts as set only once it can be
read at `head - confirmations`; until then beats are refused with 425 (providers wait the same).

Beats are accepted and reports built under one lock, so that a beat receipted for an epoch is
always in that epoch's report (a beat that arrives once the duty has seen the next epoch is
refused as late)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from eth_account.signers.local import LocalAccount
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError
from web3 import Web3

from tessera.chain.client import Chain, tx_hash
from tessera.chain.registry import ProviderRegistry
from tessera.chain.uptime import Uptime
from tessera.errors import ChainError, Refused, TxRefused
from tessera.http_limits import PathInt, read_body
from tessera.logs import EventLog
from tessera.protocol import liveness, messages
from tessera.protocol.figure_parts import epoch_at
from tessera.validator.liveness_answers import ChallengeAnswers
from tessera.validator.liveness_store import LivenessStore, prune_before
from tessera.validator.registry_indices import RegistryIndices

BEAT_BODY_BYTES = 4 << 10          # a SignedBeat is about 250 bytes of JSON
REFRESH_EVERY_S = 0.25             # on-demand reads of the epoch or seed, at most this often
CHALLENGE_SCAN_S = 5.0             # InclusionsChallenged logs are read this often
WALL_MARGIN_S = 2.0                # the wall clock this far into an epoch the head has not
                                   # reached (a quarter of the epoch at most) before opening it
PAGE, MAX_PAGE = 100, 1000         # GET /liveness/{epoch}: providers per page, default and most


class LivenessDuty:
    """Receipts beats, opens epochs, reports once per epoch, answers challenges."""

    def __init__(self, chain: Chain, account: LocalAccount, state_dir: Path, log: EventLog,
                 metrics: CollectorRegistry, open_epochs: bool = True, open_within_s: float = 2.0,
                 confirmations: int = 0, indices: RegistryIndices | None = None):
        self.chain, self.account, self.log = chain, account, log
        self.uptime = Uptime(chain)
        self.registry = ProviderRegistry(chain)
        # registry indices, shared with the watch (the node passes one: registry_indices.py)
        self.indices = indices or RegistryIndices(self.registry, confirmations,
                                                  chain.block_number)
        self.store = LivenessStore(Path(state_dir) / "liveness.db")
        self.confirmations = confirmations
        self.chain_id = chain.network.chain_id
        self.report_delay = self.answer_epochs = 0
        self.epoch: int | None = None        # the chain's current epoch, as last read
        self._seeds: dict[int, bytes] = {}   # epochs whose seed is set, `confirmations` deep
        self._pruned: int | None = None      # the epoch in which liveness.db was last pruned
        self._lock = threading.Lock()        # accepting a beat vs closing its epoch
        self._read_at: dict[str, float] = {}  # what -> monotonic time of the last on-demand read
        self._scan_at = 0.0
        self.m_beats = Counter("tessera_validator_liveness_beats", "beats received",
                               ["outcome"], registry=metrics)
        self.m_reports = Counter("tessera_validator_liveness_reports", "liveness reports",
                                 ["outcome"], registry=metrics)
        self.m_answers = Counter("tessera_validator_liveness_answers",
                                 "challenges of this validator's reports, by outcome",
                                 ["outcome"], registry=metrics)
        self.answers = ChallengeAnswers(self, metrics)
        self.opener = EpochOpener(self, open_epochs, open_within_s, metrics)
        self.m_reported = Gauge("tessera_validator_liveness_reported_epoch",
                                "last epoch whose liveness report this validator posted",
                                registry=metrics)

    @property
    def address(self) -> str:
        return self.account.address

    def prepare(self) -> None:
        self.report_delay, self.answer_epochs = self.uptime.liveness_rules()
        self.epoch = self.uptime.current_epoch()

    # -- the loop ----------------------------------------------------------------------------
    def poll_once(self) -> None:
        epoch = self._set_epoch(self.uptime.current_epoch())
        self.opener.maybe_open(epoch)
        epoch = self.epoch   # moved on if an open for the wall clock's epoch mined a block
        # Answers first: an answer's window is what protects this validator's stake, and a
        # report that cannot be built (below) must never keep it from answering.
        if time.monotonic() >= self._scan_at:
            self.answer_challenges(epoch)
            self._scan_at = time.monotonic() + CHALLENGE_SCAN_S
        for finished in self.store.unreported(before=epoch):
            try:
                self.report(finished, epoch)
            except ValueError as exc:   # words_of: an index no report can carry
                self.store.save_report(finished, "refused", [], detail=str(exc))
                self.m_reports.labels("refused").inc()
                self.log("liveness-report-refused", "error", epoch=finished, error=str(exc))
        if self._pruned != epoch:   # once per epoch
            self._pruned = epoch
            before = prune_before(epoch, self.report_delay, self.answer_epochs)
            if (deleted := self.store.prune(before)):
                self.log("liveness-pruned", epoch=epoch, before=before, beats=deleted)

    def _set_epoch(self, epoch: int) -> int:
        with self._lock:   # never backwards: a late read must not reopen a closed epoch
            self.epoch = epoch if self.epoch is None else max(self.epoch, epoch)
            return self.epoch

    def _seed(self, epoch: int, fresh: bool = False) -> bytes | None:
        """The epoch's seed as of `confirmations` blocks below the head, or None while it is
        zero there (read again at most every REFRESH_EVERY_S when `fresh`, so that junk
        requests cannot flood the RPC)."""
        if epoch in self._seeds:
            return self._seeds[epoch]
        if fresh and not self._due("seed"):
            return None
        if self.confirmations:
            depth = max(self.chain.block_number() - self.confirmations, 0)
            seed = self.uptime.seed(epoch, depth)
        else:
            seed = self.uptime.seed(epoch)
        if seed == bytes(32):
            return None
        self._seeds[epoch] = seed
        for old in [e for e in self._seeds if e < epoch - self.report_delay - 2]:
            del self._seeds[old]
        return seed

    def _due(self, what: str) -> bool:
        now = time.monotonic()
        if now - self._read_at.get(what, -1e9) < REFRESH_EVERY_S:
            return False
        self._read_at[what] = now
        return True

    # -- beats (the HTTP route) -------------------------------------------------------------
    def accept(self, beat: liveness.SignedBeat) -> liveness.BeatReceipt:
        """Check and keep a provider's beat; its receipt. Refused (4xx) with the reason."""
        try:
            return self._accept(beat)
        except Refused as exc:
            self.m_beats.labels(_REASON.get(exc.status, "refused")).inc()
            raise

    def _accept(self, beat: liveness.SignedBeat) -> liveness.BeatReceipt:
        provider = Web3.to_checksum_address(beat.provider)
        if beat.epoch != self.epoch and self._due("epoch"):
            self._set_epoch(self.uptime.current_epoch())
        if beat.epoch != self.epoch:
            raise Refused(409, f"beat is for epoch {beat.epoch}, but the current epoch is "
                               f"{self.epoch}: only the current epoch's beats are receipted")
        seed = self._seed(beat.epoch, fresh=True)
        if seed is None:
            deep = f", or not yet {self.confirmations} blocks deep" if self.confirmations else ""
            raise Refused(425, f"epoch {beat.epoch}'s seed is not set yet{deep}: call "
                               "Uptime.open_epoch, or wait for someone to (and for the blocks), "
                               "then sign the beat")
        signature = bytes.fromhex(beat.signature[2:])
        problem = messages.signature_refusal(signature)
        typed = liveness.beat_typed_data(self.chain_id, self.uptime.address, provider,
                                         beat.epoch, seed)
        signer = messages.signer_or_none(typed, beat.signature) if problem is None else None
        if signer is None or signer != provider:
            raise Refused(403, "bad signature: " + (problem or f"the beat is signed by {signer}, "
                                                   f"not by {provider} (over this epoch's seed)"))
        index = self.indices.index_of(provider)
        if index is None:
            deep = f" {self.confirmations} blocks deep" if self.confirmations else ""
            raise Refused(403, f"provider {provider} is not registered{deep}")
        if index >= liveness.MAX_LIVENESS_WORDS * liveness.WORD_BITS:
            # One report covers indices below this (Uptime.MAX_LIVENESS_WORDS): a receipt here
            # could never be reported, so the provider is told to use its on-chain heartbeat.
            raise Refused(409, f"registry index {index} is past what one "
                               "liveness report covers: send an on-chain heartbeat")
        with self._lock:
            if beat.epoch != self.epoch:   # the epoch ended while this beat was checked
                raise Refused(409, f"epoch {beat.epoch} is over: beats are receipted during "
                                   "their epoch only")
            self.store.add_beat(beat.epoch, provider, beat.signature)
        self.m_beats.labels("receipted").inc()
        return liveness.BeatReceipt(
            provider=provider, validator=self.address, epoch=beat.epoch,
            signature=liveness.sign_receipt(self.account, self.chain_id, self.uptime.address,
                                            provider, beat.epoch))

    # -- reports ---------------------------------------------------------------------------
    def report(self, epoch: int, current: int) -> None:
        """Post `epoch`'s report if its window is open (once; a refusal is final)."""
        if current > epoch + self.report_delay:
            self.store.save_report(epoch, "missed", [], detail=f"window closed (now {current})")
            self.m_reports.labels("missed").inc()
            self.log("liveness-report-missed", "error", epoch=epoch, current=current)
            return
        if not liveness.reports_accepted(epoch, current, self.report_delay):
            return
        with self._lock:   # no beat of `epoch` is accepted any more (self.epoch > epoch)
            providers = self.store.providers(epoch)
        cap = liveness.MAX_LIVENESS_WORDS * liveness.WORD_BITS   # beats past it are refused
        # None: not registered any more at the head (only a reorg can do that): never
        # reported as the index 0 the contract says for it
        indices = [i for i in map(self.indices.index_of, providers) if i is not None and i < cap]
        words = liveness.words_of(indices, self.registry.provider_count())
        if not words:
            self.store.save_report(epoch, "skipped", [], detail="no beats")
            return
        if self.uptime.report_hash(self.address, epoch) != bytes(32):
            self.store.save_report(epoch, "posted", words,
                                   detail="found on chain (sent before a restart)")
            return
        try:
            receipt = self.uptime.report_liveness(epoch, words)
        except TxRefused as exc:
            if self.uptime.report_hash(self.address, epoch) != bytes(32):   # an earlier send
                self.store.save_report(epoch, "posted", words, detail="mined after a retry")
                return
            self.store.save_report(epoch, "refused", words, detail=str(exc))
            self.m_reports.labels("refused").inc()
            self.log("liveness-report-refused", "error", epoch=epoch, error=str(exc))
            return
        self.store.save_report(epoch, "posted", words, tx_hash(receipt), receipt["gasUsed"])
        self.m_reports.labels("posted").inc()
        self.m_reported.set(epoch)
        self.log("liveness-reported", epoch=epoch, providers=len(indices), words=len(words),
                 tx=tx_hash(receipt), gas=receipt["gasUsed"])

    # -- inclusion challenges ----------------------------------------------------------------
    def answer_challenges(self, current: int) -> None:
        """Answer the challenges of this validator's reports (and colleagues' naming providers
        it reported): liveness_answers.py."""
        self.answers.scan(current)

    # -- reads for the HTTP API ------------------------------------------------------------
    def status(self, epoch: int, after: str | None = None, limit: int = PAGE) -> dict:
        """How many beats of `epoch` it holds, a page of their providers (in address order,
        after `after`; `next`: the `after` of the next page, None on the last) and its report."""
        page = self.store.providers(epoch, after or "", limit + 1)
        more = len(page) > limit
        return {"epoch": epoch, "validator": self.address, "beats": self.store.beat_count(epoch),
                "providers": page[:limit], "next": page[limit - 1] if more else None,
                "report": self.store.report(epoch)}

    def beat(self, epoch: int, provider: str) -> dict:
        """The beat of `provider` it holds for `epoch` (what answers a challenge of its
        inclusion); Refused(404) when it holds none."""
        signature = self.store.beat(epoch, provider)
        if signature is None:
            kept = prune_before(self.epoch or 0, self.report_delay, self.answer_epochs)
            why = f" (epochs before {kept} are pruned)" if epoch < kept else ""
            raise Refused(404, f"this validator holds no beat of {provider} in epoch {epoch}"
                               + why)
        return {"provider": provider, "epoch": epoch, "signature": signature}

    def health(self) -> dict:
        return {"epoch": self.epoch, "reported_epoch": self.store.last_reported()}

    def close(self) -> None:
        self.store.close()


class EpochOpener:
    """The duty's `open_epoch`s (module docstring): the head's epoch, or the wall clock's on a
    chain whose head lags it."""

    def __init__(self, duty: LivenessDuty, open_epochs: bool, open_within_s: float,
                 metrics: CollectorRegistry):
        self.duty, self.open_epochs, self.open_within_s = duty, open_epochs, open_within_s
        self._opened: int | None = None      # the last epoch seen opened (at the head)
        self._open_at: tuple[int, float] | None = None   # (epoch, monotonic time to open it)
        self._woken: int | None = None       # the last wall-clock epoch opened ahead of the head
        self._clock: tuple[int, int] | None = None   # Uptime's (genesis, epoch_length)
        self.wall = time.time                # the wall clock (a test's to set)
        self.m_opened = Counter("tessera_validator_epochs_opened", "open_epoch transactions",
                                registry=metrics)

    def wall_epoch(self) -> int:
        """The epoch the wall clock is WALL_MARGIN_S (or a quarter of an epoch) into, by
        Uptime's rule (protocol.figure_parts.epoch_at)."""
        if self._clock is None:
            self._clock = (self.duty.uptime.genesis(), self.duty.uptime.epoch_length())
        genesis, length = self._clock
        return epoch_at(int(self.wall() - min(WALL_MARGIN_S, length / 4)), genesis, length)

    def maybe_open(self, epoch: int) -> None:
        """Open the current epoch a random moment (within `open_within_s`) after first seeing
        it, unless its seed is set by then or no provider is registered (validators race each
        other; providers wait longer before they open it themselves). The current epoch is the
        wall clock's when the head (`epoch`) lags it: no block since the epoch turned."""
        if not self.open_epochs:
            return
        duty = self.duty
        target, wall = epoch, self.wall_epoch()
        if wall > epoch and wall != self._woken:
            target = wall
        if target in duty._seeds or target == self._opened:
            return
        if self._open_at is None or self._open_at[0] != target:
            self._open_at = (target, time.monotonic() + random.uniform(0, self.open_within_s))
            return
        if time.monotonic() < self._open_at[1]:
            return
        if target == epoch and duty.uptime.seed(epoch) != bytes(32):   # opened (at the head)
            self._opened = epoch
            return
        if duty.registry.provider_count() == 0:   # nobody to beat: save the gas
            self._open_at = (target, float("inf"))
            return
        if target > epoch:   # once per wall-clock epoch, whatever comes of it
            self._woken = target
        try:
            receipt = duty.uptime.open_epoch()
        except TxRefused as exc:
            duty.log("open-epoch-refused", "warning", epoch=target, error=str(exc))
            self._open_at = (target, time.monotonic() + 5.0)
            return
        self.m_opened.inc()
        if target > epoch:   # open_epoch opened the epoch of the block it was mined in
            opened = duty._set_epoch(duty.uptime.current_epoch())
            if opened < target:   # the wall clock runs ahead of the chain's
                duty.log("open-epoch-ahead-of-chain", "warning", wall_epoch=target,
                         chain_epoch=opened, tx=tx_hash(receipt))
                return
            target = opened
        duty.log("epoch-opened", epoch=target, tx=tx_hash(receipt), gas=receipt["gasUsed"],
                 quiet_chain=target > epoch)
        self._opened = target
        duty._seed(target)


_REASON = {403: "forbidden", 409: "wrong-epoch", 425: "too-early"}


def liveness_routes(duty: LivenessDuty) -> APIRouter:
    """`POST /liveness/beat` (a SignedBeat; its receipt, or 4xx with the reason),
    `GET /liveness/{epoch}?after=ADDRESS&limit=N` (how many beats it holds, a page of at most
    MAX_PAGE of their providers, and its report) and `GET /liveness/{epoch}/beats/{provider}`
    (`{"provider", "epoch", "signature"}`, or 404)."""
    router = APIRouter()

    @router.post("/liveness/beat")
    async def beat(request: Request) -> dict:
        body = await read_body(request, BEAT_BODY_BYTES, "a beat")
        try:
            signed = liveness.SignedBeat.model_validate_json(bytes(body))
        except ValidationError as exc:
            duty.m_beats.labels("malformed").inc()
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise HTTPException(422, f"not a SignedBeat: {where}: {first['msg']}") from None
        try:
            receipt = await run_in_threadpool(duty.accept, signed)
        except Refused as exc:
            raise HTTPException(exc.status, str(exc)) from None
        except ChainError as exc:   # the validator's RPC, not the caller: try again later
            duty.m_beats.labels("unavailable").inc()
            raise HTTPException(503, f"the validator cannot check the beat now: {exc}") from None
        return receipt.model_dump()

    @router.get("/liveness/{epoch}")
    def status(epoch: PathInt,
               after: str | None = Query(None, pattern=liveness.ADDRESS,
                                         description="the last provider of the previous page"),
               limit: int = Query(PAGE, ge=1, le=MAX_PAGE)) -> dict:
        return duty.status(epoch, after and Web3.to_checksum_address(after), limit)

    @router.get("/liveness/{epoch}/beats/{provider}")
    def beat_of(epoch: PathInt,
                provider: str = PathParam(pattern=liveness.ADDRESS)) -> dict:
        try:
            return duty.beat(epoch, Web3.to_checksum_address(provider))
        except Refused as exc:
            raise HTTPException(exc.status, str(exc)) from None

    return router
