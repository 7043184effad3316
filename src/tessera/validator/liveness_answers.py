"""The validator's answers to liveness inclusion challenges (the duty:
validator/liveness.py; the rules: Uptime.vy, docs/uptime.md "Fabrication").

One challenge (`Uptime.challenge_inclusions`) names any set of one report's inclusions, by
registry index (`InclusionsChallenged.named`, a bitmap like the report's words). Each named
provider whose beat nobody shows in time costs the validator `inclusion_slash`; each beat shown
pays its shower the fixed `answer_fee` (about its gas), and the rest of the bond goes back to
the challenger, however the challenge ends. So the validator's stake is what is at risk, and
it gains nothing by settling a challenge: it shows the beats, and leaves the settling to
anyone. For every challenge of its own reports (its status in liveness.db's answers table):

- The scan of `InclusionsChallenged` logs (the last `confirmations`
  blocks read again, since a reorg can put a challenge, or take an answer away, there) keeps
  each new one as `open`; one already settled whose log is read again is opened again and
  checked on chain (a reorg may have dropped the answer).
- An open challenge is read from the chain, not from its log (a reorg can give its id to
  another challenge): its state and its named words. The beat of every named provider it
  holds that is not yet proven is shown, MAX_ANSWERS (read from Uptime once) a transaction,
  in groups of up to `group_batches()` transactions (half a block's gas): a group's batches
  are sent one after the other on consecutive nonces without waiting, then their receipts
  are read, so that a group
  can land in one block (one batch a block, a challenge naming a whole large report in the
  last block of the challenge window would outlast the answer window). Before each group
  the epoch's proven words it spans are read again (a reorg, a provider or another answerer
  may have shown beats meanwhile), only those. The chain skips a beat shown meanwhile
  (unpaid) and refuses a batch only when every beat in it was shown already ("every beat
  given was shown already"), so such a batch, refused at estimate time or reverted on chain
  (a griefer that copies one batch of a group from the mempool and front-runs it voids only
  that one), is simply done and the rest of the group stands; any other refusal or revert
  stops the work on the challenge, the rest left to the next scan. A send that fails before
  the node has it ends the group's sending, so no later nonce waits behind a gap. A reorg
  that drops one transaction of a group (and, by nonce, those after it, until the node
  includes them again) only makes its beats unshown again: the next scan's read shows them
  so, and sends them again. So does an answer that will never be mined because a node dropped
  it and another transaction of the account took its nonce (`TxDropped`, once the nonce has
  been used for 3 s with no receipt of ours): it is no longer pending, as if never sent.
- A named provider whose beat it does not hold (a lost database) is logged once as
  unanswerable; the others are still shown (the slash is per unshown provider).
- Answered in full on this challenge, the challenge settles at once. A named beat shown on
  another challenge of the epoch (a provider answering a colleague's challenge first) is not
  shown again, so such a challenge stays open on chain until someone resolves it after its
  answer window (it is then settled as answered: nothing can be slashed for a fully shown
  set). Meanwhile it is checked every WAITING_CHECK_S, since an answer elsewhere can be
  reorged away too; once the window is over with every named beat shown it is closed here
  (`answered`), with nothing left to do; with some never shown it waits for the challenger's
  resolve (`resolved`: the slash), never resolving it itself.

Other validators' challenges are answered too, for the named providers whose beats this
validator holds (those its own report of the epoch names): an inclusion disputed on ANY report
and never proven revokes the provider's bit of the epoch, so an honest provider that is
offline when a colleague's report is challenged (or that a lying colleague leaves unanswered)
keeps its epoch only if someone who holds its beat shows it. Its own challenges come first
(a beat is shown once per epoch, on any challenge, and it is its own stake a missing beat
slashes). Others' challenges are followed until their answer window ends, never resolved
here. The provider also answers any challenge naming it (provider/inclusion_answers.py)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter

from tessera.chain.client import tx_hash
from tessera.errors import ChainError, RpcUnavailable, TxDropped, TxRefused
from tessera.protocol import liveness

WAITING_CHECK_S = 30.0   # an open challenge with nothing left to show: read again this often
# Answer transactions sent before any receipt is waited for (one group, consecutive nonces):
# protocol.liveness.answer_batches_per_group, the rate the answer window is sized to
# (DeployParams): as many full batches as fill half a block, at most MAX_GROUP_BATCHES. On a
# 30 M-gas block: 13 batches of 64 beats, about 13.9 M gas used at 16,772 a beat, under the
# 15 M EIP-1559 target, so a group fits one block beside other traffic; a 10,000-provider
# report named in full (157 batches) takes 13 groups. (A test's knob: a lower cap.)
PIPELINE_BATCHES = liveness.MAX_GROUP_BATCHES
RECEIPT_TIMEOUT_S = 60.0   # the longest wait for one answer's receipt (then: the next scan)
PENDING_CHECK_S = 1.0      # a wait, at each scan, for an answer still pending after that
OPEN = "open"
SHOWN_ALREADY = "shown already"   # a batch the chain refused as wholly shown: nothing to do
# Final statuses (until a reorg reopens them): answered (settled as answered by the last
# answer, or its window over with every named beat shown somewhere), resolved (slashed: some
# named beat never shown, and someone resolved it), gone (no such challenge of this validator
# on chain any more), followed (a colleague's challenge, over). An open challenge whose window
# is over with beats unshown is looked at every WAITING_CHECK_S until someone resolves it (or
# it is pruned with its epoch).


class ChallengeAnswers:
    """Answers the challenges naming this validator's inclusions (module docstring)."""

    def __init__(self, duty, metrics: CollectorRegistry):
        self.duty = duty
        self._max_answers: int | None = None
        self._fill: int | None = None              # batches a group sends (a block's share)
        self._pending: dict[int, list] = {}        # challenge -> [(batch, tx hash)] not mined
        self._warned: set[int] = set()             # challenges logged as unanswerable
        self._unanswered: set[int] = set()         # ... and as over with beats unshown
        self._rechecks: dict[int, str] = {}        # reopened challenge -> its status before
        self._check_at: dict[int, float] = {}      # open challenge -> monotonic time to look
        self._others: set[int] = set()             # challenges of colleagues' reports
        self.m_shown = Counter("tessera_validator_liveness_beats_shown", "named beats shown on "
                               "challenges of this validator's reports", registry=metrics)

    @property
    def max_answers(self) -> int:
        if self._max_answers is None:
            self._max_answers = self.duty.uptime.max_answers()
        return self._max_answers

    def group_batches(self) -> int:
        """Batches a group sends (module constants): those filling ANSWER_GAS_SHARE_BPS of a
        block (the gas limit read once), at least 1, at most PIPELINE_BATCHES."""
        if self._fill is None:
            self._fill = liveness.answer_batches_per_group(self.duty.chain.block_gas_limit(),
                                                           self.max_answers)
        return max(1, min(PIPELINE_BATCHES, self._fill))

    # -- the scan ------------------------------------------------------------------------------
    def scan(self, current: int) -> None:
        """Read new InclusionsChallenged logs of this validator's reports, then work on every
        open challenge (`current`: the duty's epoch)."""
        duty = self.duty
        chain, store = duty.chain, duty.store
        head = chain.block_number()
        deploy = chain.network.deploy_block
        start = max(store.next_block(deploy) - duty.confirmations, deploy)
        if head >= start:
            settled = head - duty.confirmations   # logs in later blocks may still be reorged
            own, others = [], []
            for log in chain.events("Uptime", "InclusionsChallenged", start, head):
                mine = str(log["args"]["validator"]).lower() == duty.address.lower()
                (own if mine else others).append(log)
            for log in own:
                self._found(log["args"], recheck=log["blockNumber"] > settled)
            for log in others:
                if self._holds_named(log["args"]):
                    self._found(log["args"], recheck=log["blockNumber"] > settled, own=False)
            store.set_next_block(head + 1)
        now = time.monotonic()
        open_ = store.open_answers()
        # its own challenges first (a beat is shown once per epoch, on any challenge)
        open_.sort(key=lambda row: row[0] in self._others)
        for cid, epoch in open_:
            if now < self._check_at.get(cid, 0.0):
                continue
            try:
                self._follow(cid, epoch, current)
            except RpcUnavailable:
                raise
            except ChainError as exc:   # not a refusal (a send that failed): next scan
                duty.log("liveness-answer-error", "warning", challenge_id=cid, error=str(exc))

    def _holds_named(self, args) -> bool:
        """Whether a colleague's challenge names a provider this validator reported (holds the
        beat of) in that epoch."""
        report = self.duty.store.report(int(args["epoch"]))
        return bool(report) and any(n & w for n, w in zip(args["named"], report["words"],
                                                             strict=False))

    def _found(self, args, recheck: bool, own: bool = True) -> None:
        duty, cid, epoch = self.duty, int(args["challenge_id"]), int(args["epoch"])
        known = duty.store.answer_status(cid)
        if not own:
            self._others.add(cid)
        if known is None:
            duty.store.save_answer(cid, OPEN, epoch=epoch)
            duty.log("liveness-challenged" if own else "liveness-colleague-challenged",
                     "warning" if own else "info", challenge_id=cid, epoch=epoch,
                     validator=args["validator"], challenger=args["challenger"],
                     named=int(args["named_count"]), bond=int(args["bond"]),
                     answer_by_epoch=int(args["answer_by_epoch"]))
        elif recheck and known != OPEN:   # a reorg may have undone its outcome: look again
            self._rechecks[cid] = known
            duty.store.save_answer(cid, OPEN, f"checked again (was {known})", epoch=epoch)
            self._check_at.pop(cid, None)

    # -- one challenge -------------------------------------------------------------------------
    def _follow(self, cid: int, epoch: int, current: int) -> None:
        uptime = self.duty.uptime
        c = uptime.challenge(cid)
        if c["state"] == 0:
            return self._close(cid, epoch, "gone", "no such challenge on chain (a reorg took "
                               "it)", "warning")
        # The chain says whose it is (a reorg may have given the id to another challenge).
        own = str(c["validator"]).lower() == self.duty.address.lower()
        epoch = int(c["epoch"])
        if not own:
            return self._follow_other(cid, epoch, c, current)
        if c["state"] == liveness.CHALLENGE_ANSWERED:
            return self._close(cid, epoch, "answered", "every named beat was shown")
        if c["state"] == liveness.CHALLENGE_RESOLVED:
            return self._close(cid, epoch, "resolved", "resolved with named beats unshown: "
                               "this validator was slashed", "error")
        named = [uptime.named_word(cid, j) for j in range(int(c["words"]))]
        if current > liveness.answer_end(epoch, self.duty.report_delay, self.duty.answer_epochs):
            return self._over(cid, epoch, named)
        self._answer(cid, epoch, named)

    def _follow_other(self, cid: int, epoch: int, c: dict, current: int) -> None:
        """A colleague's challenge: show the named beats it holds while the window is open."""
        over = current > liveness.answer_end(epoch, self.duty.report_delay,
                                             self.duty.answer_epochs)
        if c["state"] != liveness.CHALLENGE_OPEN or over:
            self._others.discard(cid)
            return self._close(cid, epoch, "followed", "a colleague's challenge: over")
        report = self.duty.store.report(epoch)
        ours = report["words"] if report else []
        named = [uptime_word & (ours[j] if j < len(ours) else 0) for j, uptime_word in
                 enumerate(self.duty.uptime.named_word(cid, j) for j in range(int(c["words"])))]
        self._answer(cid, epoch, named, own=False)

    def _answer(self, cid: int, epoch: int, named: list[int], own: bool = True) -> None:
        """Show every held, unproven named beat, in batches (module docstring); `named`: of a
        colleague's challenge, only the providers this validator reported."""
        duty = self.duty
        indices = liveness.indices_of(named)
        held = held_beats(self.duty, epoch, indices)
        missing = [i for i in indices if i not in held]
        if own and missing and cid not in self._warned:
            self._warned.add(cid)
            duty.m_answers.labels("unanswerable").inc()
            duty.log("liveness-challenge-unanswerable", "error", challenge_id=cid, epoch=epoch,
                     providers=len(missing), indices=missing[:20],
                     note="named without a beat this validator holds: each costs a slash")
        pending, shown = self._still_pending(cid, epoch)
        todo = self._order([i for i in indices if i in held and i not in pending])
        refused = None
        while todo and refused is None:
            group, todo = self._next_group(epoch, todo)
            if not group:
                break
            count, refused = self._send_group(cid, epoch, group, held)
            shown += count
        state = duty.uptime.challenge(cid)["state"]
        if state != liveness.CHALLENGE_OPEN:   # settled by our last batch (or someone's)
            return self._close(cid, epoch, "answered" if state == liveness.CHALLENGE_ANSWERED
                               else "resolved", f"{shown} beats shown by this validator",
                               sent=shown > 0)
        if refused is None:   # nothing left to show: only a reorg or the window's end
            self._check_at[cid] = time.monotonic() + WAITING_CHECK_S
        duty.store.save_answer(cid, OPEN, f"{shown} beats shown by this validator; "
                               f"{len(missing)} not held" + (f"; refused: {refused}" if refused
                                                             else ""), epoch=epoch)

    def _send_group(self, cid: int, epoch: int, group: list[list[int]],
                    held: dict[int, tuple[str, str]]) -> tuple[int, str | None]:
        """Send a group's batches without waiting (consecutive nonces), then read their
        receipts in order (_receipt): (beats shown, the refusal ending this scan's work on the
        challenge, or None). Refused at estimate as wholly shown: done; any other refusal, or a
        send the node did not take (raised after the receipts; RpcUnavailable at once), stops
        the sending there, so no nonce is sent past a gap. A receipt not in within
        RECEIPT_TIMEOUT_S: it and the rest are kept as pending (_still_pending)."""
        duty = self.duty
        sent, refused, failure = [], None, None
        for batch in group:
            try:
                tx = duty.uptime.answer_challenge(
                    cid, [held[i][0] for i in batch],
                    [bytes.fromhex(held[i][1][2:]) for i in batch], wait=False)
            except TxRefused as exc:
                if SHOWN_ALREADY in str(exc):   # every one shown meanwhile (the providers)
                    continue
                refused = str(exc)              # over, or a send that may pass later
                break
            except RpcUnavailable:
                raise
            except ChainError as exc:           # not sent: nothing after it either
                failure = exc
                break
            sent.append((batch, tx["transactionHash"]))
        shown = 0
        for n, (batch, sent_hash) in enumerate(sent):
            count, why = self._receipt(cid, epoch, batch, sent_hash, len(sent),
                                       RECEIPT_TIMEOUT_S)
            if count is None:                   # not mined in time: pending, kept (below)
                self._pending[cid] = sent[n:]
                refused = refused or why
                break
            shown += count
            refused = refused or why
        if refused is not None:
            duty.m_answers.labels("refused").inc()
            duty.log("liveness-answer-refused", "warning", challenge_id=cid, error=refused)
        if failure is not None:
            raise failure
        return shown, refused

    def _receipt(self, cid: int, epoch: int, batch: list[int], sent_hash, group: int,
                 timeout: float) -> tuple[int | None, str | None]:
        """An answer's outcome, waited for up to `timeout`: (beats shown, None) once mined;
        (0, None) reverted with all its beats shown now (a griefer front-ran it from the
        mempool, or the providers showed them: done); (0, why) reverted otherwise, or dropped
        (another transaction took its nonce: it will never be mined, so, like a send that
        never happened, it is not pending and its unshown beats are sent again); (None, why)
        not mined yet."""
        duty = self.duty
        try:
            receipt = duty.chain.wait_for(sent_hash, "answer_challenge", timeout)
        except TxRefused as exc:            # reverted on chain
            return 0, (str(exc) if unproven(self.duty.uptime, epoch, batch) else None)
        except TxDropped as exc:            # never mined, and never will be
            duty.log("liveness-answer-dropped", "warning", challenge_id=cid, epoch=epoch,
                     providers=len(batch), error=str(exc), note="its beats are sent again")
            return 0, str(exc)
        except RpcUnavailable:
            raise
        except ChainError as exc:           # not mined within the timeout: still pending
            return None, str(exc)
        count = len(duty.uptime.answers_in(receipt))
        self.m_shown.inc(count)
        duty.log("liveness-beats-shown", challenge_id=cid, epoch=epoch, providers=count,
                 given=len(batch), group=group, block=receipt["blockNumber"],
                 tx=tx_hash(receipt), gas=receipt["gasUsed"])
        return count, None

    def _still_pending(self, cid: int, epoch: int) -> tuple[set[int], int]:
        """Answers of this challenge sent but not mined when last waited for (a receipt
        timeout: a fee spike, a congested node): looked at again (PENDING_CHECK_S each), so that
        their beats are not sent a second time behind them. One dropped since (TxDropped: its
        nonce taken by another transaction) is pending no more: its beats go into this scan's
        groups again. (The indices still pending, the beats shown by those mined since.)"""
        left, shown, pending = [], 0, set()
        for batch, sent_hash in self._pending.pop(cid, []):
            count, _ = self._receipt(cid, epoch, batch, sent_hash, 1, PENDING_CHECK_S)
            if count is None:
                left.append((batch, sent_hash))
                pending.update(batch)
            else:
                shown += count
        if left:
            self._pending[cid] = left
        return pending, shown

    def _over(self, cid: int, epoch: int, named: list[int]) -> None:
        """The answer window is over and the challenge still open on chain: closed here if
        every named beat was shown (somewhere: no slash can come of it, and resolving it
        would only hand the challenger its bond back, at this validator's gas), else looked
        at again until the challenger resolves it (the slash)."""
        duty = self.duty
        shown = proven(self.duty.uptime, epoch, named)
        unanswered = sum(bin(n & ~p).count("1") for n, p in zip(named, shown, strict=True))
        if not unanswered:
            return self._close(cid, epoch, "answered", "every named beat was shown (some on "
                               "another challenge); left for anyone to resolve")
        detail = f"{unanswered} named beats were never shown: the challenger may resolve it"
        if cid not in self._unanswered:
            self._unanswered.add(cid)
            duty.m_answers.labels("unanswered").inc()
            duty.log("liveness-challenge-unanswered", "error", challenge_id=cid,
                     epoch=epoch, unanswered=unanswered, detail=detail)
        self._check_at[cid] = time.monotonic() + WAITING_CHECK_S
        duty.store.save_answer(cid, OPEN, detail, epoch=epoch)

    def _close(self, cid: int, epoch: int, status: str, detail: str, level: str = "info",
               sent: bool = False, **fields) -> None:
        duty = self.duty
        duty.store.save_answer(cid, status, detail, epoch=epoch)
        self._check_at.pop(cid, None)
        if self._rechecks.pop(cid, None) == status and not sent:
            return   # checked again after a possible reorg: as it was
        duty.m_answers.labels(status).inc()
        duty.log(f"liveness-challenge-{status}", level, challenge_id=cid, epoch=epoch,
                 detail=detail, **fields)

    # -- reads ---------------------------------------------------------------------------------
    def _order(self, todo: list[int]) -> list[int]:
        return own_order(self.duty.address, todo)

    def _next_group(self, epoch: int, todo: list[int]) -> tuple[list[list[int]], list[int]]:
        """The next group: up to group_batches() disjoint batches of max_answers of `todo`,
        in order, not proven yet, and what is left after it. The proven words are read once
        for every group, only those it spans: providers answer their own beats meanwhile, and
        a batch of beats shown already is wasted block space, which a challenge naming a
        large report at the last moment leaves little of."""
        shown = ShownBeats(self.duty.uptime, epoch)
        group: list[list[int]] = []
        batch: list[int] = []
        for n, index in enumerate(todo):
            if len(batch) == self.max_answers:
                group.append(batch)
                batch = []
                if len(group) == self.group_batches():
                    return group, todo[n:]
            if index not in shown:
                batch.append(index)
        return group + ([batch] if batch else []), []


def held_beats(duty, epoch: int, indices: list[int]) -> dict[int, tuple[str, str]]:
    """{registry index: (provider, beat signature)} of the named beats the duty holds."""
    out = {}
    for index in indices:
        provider = duty.indices.provider_at(index)
        signature = provider and duty.store.beat(epoch, provider)
        if signature:
            out[index] = (provider, signature)
    return out


def own_order(address: str, todo: list[int]) -> list[int]:
    """`todo` from a place of this validator's own (its address, modulo), round to the start:
    validators that hold the same beats answer the same challenge from different places, so
    that their groups add up instead of showing the same beats first (the chain skips a beat
    shown already, unpaid: wasted block space)."""
    if not todo:
        return todo
    start = int(address, 16) % len(todo)
    return todo[start:] + todo[:start]


class ShownBeats:
    """The registry indices whose beat of `epoch` was shown (Uptime.proven_word), each word
    read once, when first asked about: `index in shown`."""

    def __init__(self, uptime, epoch: int):
        self.uptime, self.epoch = uptime, epoch
        self.words: dict[int, int] = {}   # word position -> the epoch's proven word, read now

    def __contains__(self, index: int) -> bool:
        j, bit = divmod(index, liveness.WORD_BITS)
        if j not in self.words:
            self.words[j] = self.uptime.proven_word(self.epoch, j)
        return (self.words[j] >> bit) & 1 == 1


def unproven(uptime, epoch: int, indices: list[int]) -> list[int]:
    """The `indices` whose beats of `epoch` are not shown yet, read now (a word once)."""
    shown = ShownBeats(uptime, epoch)
    return [index for index in indices if index not in shown]


def proven(uptime, epoch: int, named: list[int]) -> list[int]:
    """The epoch's proven words over the words `named` spans (only where it names some)."""
    return [uptime.proven_word(epoch, j) if word else 0 for j, word in enumerate(named)]
