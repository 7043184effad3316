"""Proving the node is up each uptime epoch (docs/uptime.md; the rules: protocol/liveness.py).

Off chain first (issue 15: liveness must not cost a transaction per provider per epoch): once
the epoch's seed is set on chain (`Uptime.open_epoch`: validators open it; when nobody has a
few seconds into the epoch, this node does: one transaction for the whole network), the node
signs `Beat(provider, epoch, seed)`, POSTs it to the active validators' `/liveness/beat` (up to
64 of them: beat_sender.py, which also says why no validator can hold this up) and keeps the
signed receipts (state.py). Validators name it in their one report per epoch.

The on-chain heartbeat stays the fallback, so that an honest provider is never punished: with
no validator publishing an endpoint, or none receipting the beat within the deadline
(`[liveness] deadline_s`, default min(10 s, a quarter of the epoch)), the node sends
`Uptime.heartbeat` in the same epoch; a round of POSTs never runs past that deadline. When an
epoch's reports are in (or the last epoch a claim is accepted in has come) without naming it,
it claims the epoch with a receipt (`Uptime.claim_beat`). A receipted epoch is settled only
once its claim window is over, and a challenge naming the node's inclusion in a report (one
challenge names any set of a report's providers) is answered with the beat's signature in the
second half of its answer-only epochs, unless the beat was already shown (the validators answer
first, in batches: inclusion_answers.py): a validator that named the node and then challenged
its own report cannot take the epoch from it.

Reorgs: the node signs only a seed `confirmations` blocks deep (epoch_seeds.py, which also
says how it knows mid-epoch has come on a chain that mines no block without a transaction).

The work runs in its own thread (`start`), woken by each head the watcher reads (`on_head`):
POSTs and transactions never hold up leases. The epoch is computed from that head with Uptime's
genesis and epoch length (immutable, read once). Per epoch an idle node makes a handful of RPC
calls: the validator count (the list itself again every 10 minutes, or when it changes), the
seed, and a few `live_word`s to know that a report named it and still does."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import Counter

from tessera.chain.client import tx_hash
from tessera.errors import ChainError, RpcUnavailable, TxRefused
from tessera.protocol import liveness
from tessera.provider.beat_sender import BeatSender
from tessera.provider.context import NodeContext
from tessera.provider.epoch_seeds import EpochSeeds
from tessera.provider.inclusion_answers import InclusionAnswers

OPEN_WAIT_S = (2.0, 5.0)      # random wait for someone else to open an epoch before we do
RETRY_S = 1.0                 # between rounds of POSTs to validators that did not receipt yet
HEARTBEAT_RETRY_S = 2.0       # after a refused heartbeat
CLAIM_FIRST_CHECK_S = 5.0     # after an epoch ends, before asking whether a report named us


@dataclass
class EpochBeat:
    """This node's progress in one epoch."""

    epoch: int
    noticed: float                          # monotonic time it was first seen
    open_at: float                          # monotonic time to open the epoch ourselves
    done: str = ""                          # 'receipts' or 'heartbeat' once proven
    seed: bytes | None = None
    signature: str | None = None
    validators: list[tuple[str, str]] = field(default_factory=list)
    receipts: dict[str, str] = field(default_factory=dict)
    deadline: float | None = None           # monotonic: heartbeat after this without receipts
    retry_at: float = 0.0


class Heartbeats:
    """The node's liveness, epoch by epoch: beats, the heartbeat fallback, receipt claims."""

    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self.settings = ctx.config.liveness
        self._clock: tuple[int, int] | None = None   # Uptime (genesis, epoch_length)
        self._rules: tuple[int, int] | None = None   # (report_delay, answer_epochs)
        self._current: EpochBeat | None = None
        self._started = False                        # an epoch was begun by this process
        # epoch -> (monotonic time of the next check, the gap after it, last-chance check made)
        self._claim_at: dict[int, tuple[float, float, bool]] = {}
        self._head: Mapping | None = None
        self._lock = threading.Lock()                # one step at a time
        self._wake = threading.Event()
        self.sender = BeatSender(ctx)
        self.answers = InclusionAnswers(ctx)
        self.seeds = EpochSeeds(ctx)
        registry = ctx.metrics.registry
        self.m_epochs = Counter("tessera_provider_liveness_epochs", "epochs proven",
                                ["how"], registry=registry)
        self.m_claims = Counter("tessera_provider_beat_claims", "receipted epochs after their "
                                "reports", ["outcome"], registry=registry)

    # -- clock ---------------------------------------------------------------------------
    def epoch_of(self, timestamp: int) -> int:
        """The uptime epoch of a block with this timestamp (Uptime._current_epoch's rule)."""
        if self._clock is None:
            uptime = self.ctx.uptime
            self._clock = (uptime.genesis(), uptime.epoch_length())
        genesis, length = self._clock
        return (timestamp - genesis) // length

    @property
    def rules(self) -> tuple[int, int]:
        if self._rules is None:
            self._rules = self.ctx.uptime.liveness_rules()
        return self._rules

    def deadline_s(self) -> float:
        if self.settings.deadline_s is not None:
            return self.settings.deadline_s
        return min(10.0, self._clock[1] / 4)

    # -- driving -------------------------------------------------------------------------
    def on_head(self, head: Mapping) -> None:
        """The watcher read (or was pushed) a new head: step soon."""
        if self._head is None or int(head["number"]) >= int(self._head["number"]):
            self._head = head
        self._wake.set()

    def on_opened(self, epoch: int, seed: bytes) -> None:
        """The watcher read an EpochOpened: the seed, without asking the chain for it."""
        self.seeds.on_opened(epoch, seed)
        self._wake.set()

    def on_challenged(self, args: Mapping) -> None:
        """The watcher read an InclusionsChallenged: kept if it names this node (state.py),
        answered by the next step."""
        if self.answers.on_challenged(args):
            self._wake.set()

    def start(self, stop: threading.Event) -> None:
        threading.Thread(target=self._run, args=(stop,), name="liveness", daemon=True).start()

    def _run(self, stop: threading.Event) -> None:
        delay = RETRY_S
        while not stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            if stop.is_set() or self._head is None:
                continue
            try:
                self.step(self._head)
                delay = RETRY_S
            except RpcUnavailable as exc:
                delay = min(delay * 2, 10.0)
                self.ctx.log("rpc-unavailable", "warning", error=str(exc), retry_in=delay)
            except Exception as exc:   # keep the thread alive; the error is logged
                delay = min(delay * 2, 10.0)
                self.ctx.log("liveness-error", "error", error=f"{type(exc).__name__}: {exc}")

    def beat(self, head: Mapping | None = None) -> int | None:
        """One step now (`head`: the latest block; read when None); the epoch if it is proven."""
        if head is None:
            chain = self.ctx.chain
            head = chain.rpc(lambda: chain.w3.eth.get_block("latest"), what="get block")
        self.step(head)
        current = self._current
        return current.epoch if current is not None and current.done else None

    def step(self, head: Mapping) -> None:
        with self._lock:
            epoch = self.epoch_of(int(head["timestamp"]))   # the head's: never a clock's
            self.seeds.saw(head, time.monotonic())
            if self._current is None or self._current.epoch < epoch:
                self._current = self._begin(epoch)
            if self._current.epoch == epoch:
                self._advance(self._current, head)
            self.answers.answer(epoch, head)
            self._claims(epoch)

    def _begin(self, epoch: int) -> EpochBeat:
        now = time.monotonic()
        state = EpochBeat(epoch, now, now + random.uniform(*OPEN_WAIT_S))
        known = self.ctx.state.beat(epoch)
        if known is not None and known[1]:
            state.done = known[1]
        elif not self._started and self.ctx.uptime.beats(self.ctx.address, epoch):
            state.done = "heartbeat"   # sent before a restart
        self._started = True
        return state

    # -- this epoch ------------------------------------------------------------------------
    def _advance(self, cur: EpochBeat, head: Mapping) -> None:
        now = time.monotonic()
        if cur.seed is None and self.seeds.opened(cur.epoch):
            cur.retry_at = 0.0   # the seed came with an EpochOpened: no need to wait
        if cur.done or now < cur.retry_at:
            return
        if not self.settings.offchain:
            return self._heartbeat(cur, head, "off-chain beats are turned off")
        if not cur.validators:
            cur.validators = self.sender.targets()
            if not cur.validators:
                return self._heartbeat(cur, head, "no validator publishes an endpoint")
        if cur.seed is None and not self.seeds.find(cur, now, head):
            if self.seeds.overdue(cur, now, head, self.deadline_s(), self._clock):
                deep = self.seeds.confirmations
                self._heartbeat(cur, head, "the epoch's seed is still not set"
                                + (f" {deep} blocks deep" if deep else ""))
            return
        if cur.signature is None:
            cur.signature = liveness.sign_beat(self.ctx.account, self.ctx.chain.network.chain_id,
                                               self.ctx.uptime.address, cur.epoch, cur.seed)
            self.ctx.state.save_beat(cur.epoch, cur.signature)
        if cur.deadline is None:
            cur.deadline = now + self.deadline_s()
        self.sender.post(cur, until=cur.deadline)   # back by the deadline, whatever they do
        if cur.receipts:
            cur.done = "receipts"
            self.ctx.state.set_beat(cur.epoch, how="receipts")
            self.m_epochs.labels("receipts").inc()
            self.ctx.log("beat", epoch=cur.epoch, receipts=len(cur.receipts),
                         validators=sorted(cur.receipts))
        elif time.monotonic() >= cur.deadline:
            self.sender.forget_validators()
            self._heartbeat(cur, head, f"no validator receipted the beat within "
                                       f"{self.deadline_s():g} s")
        else:
            cur.retry_at = min(time.monotonic() + RETRY_S, cur.deadline)

    def _heartbeat(self, cur: EpochBeat, head: Mapping, reason: str) -> None:
        """The on-chain heartbeat: the fallback (or the only way, with off-chain beats off)."""
        try:
            # Name the head's parent: some nodes (anvil) estimate gas in the latest block's
            # own context, where BLOCKHASH(latest) is not yet known.
            number, block_hash = int(head["number"]) - 1, bytes(head["parentHash"])
            receipt = self.ctx.uptime.heartbeat(cur.epoch, number, block_hash)
        except RpcUnavailable:
            raise
        except ChainError as exc:
            if "already beat" in str(exc):
                cur.done = "heartbeat"
                return
            self.ctx.metrics.heartbeats.labels("refused").inc()
            cur.retry_at = time.monotonic() + HEARTBEAT_RETRY_S
            self.ctx.log("heartbeat-refused", "warning", epoch=cur.epoch, error=str(exc))
            return
        cur.done = "heartbeat"
        self.ctx.state.set_beat(cur.epoch, how="heartbeat", settled="heartbeat")
        self.ctx.metrics.heartbeats.labels("sent").inc()
        self.ctx.metrics.heartbeat_epoch.set(cur.epoch)
        self.m_epochs.labels("heartbeat").inc()
        self.ctx.log("heartbeat", epoch=cur.epoch, block=number, tx=tx_hash(receipt),
                     gas=receipt["gasUsed"], reason=reason)

    # -- earlier epochs: was the node named, or must it claim? -------------------------------
    def _claims(self, current: int) -> None:
        """Check each receipted epoch after it ends: CLAIM_FIRST_CHECK_S in, then at doubling
        intervals until a report names the node, once at the start of the last epoch a claim
        is accepted in, and once after that. Named is not settled before the claim window is
        over: an inclusion can still be challenged until then (the challenge takes the bit
        away until answered, and the last check claims the epoch if it is gone)."""
        report_delay, _ = self.rules
        now = time.monotonic()
        for epoch in self.ctx.state.unsettled_beats():
            if epoch >= current:
                continue
            over = not liveness.claims_accepted(epoch, current, report_delay)
            last = not over and current >= epoch + report_delay + 1
            at, gap, last_checked = self._claim_at.setdefault(
                epoch, (now + CLAIM_FIRST_CHECK_S, CLAIM_FIRST_CHECK_S, False))
            if over:
                pass
            elif last and not last_checked:
                self._claim_at[epoch] = (at, gap, True)
            elif now >= at:
                self._claim_at[epoch] = (now + 2 * gap, 2 * gap, last_checked)
            else:
                continue
            self._check(epoch, current, last)

    def _check(self, epoch: int, current: int, last: bool) -> None:
        report_delay, _ = self.rules
        state, uptime = self.ctx.state, self.ctx.uptime
        index = self.answers.registry_index()   # None: not registered, so never reported
        over = not liveness.claims_accepted(epoch, current, report_delay)
        # A challenge of the inclusion still to be answered (its bit is gone until then): the
        # answer brings it back, so nothing to claim (inclusion_answers.answering, disputed).
        if index is not None and (self.answers.answering(epoch)
                                  or uptime.live_word(epoch, index >> 8) >> (index & 255) & 1
                                  or self.answers.disputed(epoch, state.receipts(epoch))):
            if over:
                return self._settle(epoch, "named")
            _, gap, last_checked = self._claim_at.get(epoch, (0.0, CLAIM_FIRST_CHECK_S, last))
            self._claim_at[epoch] = (float("inf"), gap, last_checked)   # next: the last check
            return
        if over:
            self.m_claims.labels("missed").inc()
            self.ctx.log("beat-claim-missed", "warning", epoch=epoch, current=current)
            return self._settle(epoch, "missed")
        receipts = state.receipts(epoch)
        if not last and any(uptime.report_hash(v, epoch) == bytes(32) for v in receipts):
            return   # a receipting validator may still report it
        signature = state.beat(epoch)[0]
        for validator, receipt in receipts.items():
            try:
                tx = uptime.claim_beat(epoch, validator, bytes.fromhex(receipt[2:]),
                                       bytes.fromhex(signature[2:]))
            except TxRefused as exc:
                self.ctx.log("beat-claim-refused", "warning", epoch=epoch, validator=validator,
                             error=str(exc))
                continue
            self.m_claims.labels("claimed").inc()
            self.ctx.log("beat-claimed", "warning", epoch=epoch, validator=validator,
                         tx=tx_hash(tx), gas=tx["gasUsed"])
            return self._settle(epoch, "claimed")
        self.m_claims.labels("refused").inc()
        self._settle(epoch, "claim-refused")

    def _settle(self, epoch: int, how: str) -> None:
        self.ctx.state.set_beat(epoch, settled=how)
        self._claim_at.pop(epoch, None)
        if how == "named":
            self.m_claims.labels("named").inc()

    # -- reads -----------------------------------------------------------------------------
    def status(self) -> dict | None:
        cur = self._current
        if cur is None:
            return None
        return {"epoch": cur.epoch, "proven": cur.done or None, "receipts": sorted(cur.receipts)}

    def close(self) -> None:
        self.sender.close()
