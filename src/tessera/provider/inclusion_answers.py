"""Answering challenges of this node's inclusion in a validator's liveness report
(`Uptime.challenge_inclusions`) with the signature of its beat, which the node keeps (state.py).

Why the node must: a report naming it counts only if its beat is shown in time on every
challenge naming it, and the only holders of its beat signature are the node and the
validators it sent the beat to. A validator can report the node, then challenge its own
report from a second address in the last block of the challenge window (no answer sends the
slash to the challenger, its own again): unanswered, the node's live bit of that epoch is
revoked at finality, and a node that thought the epoch settled would never notice. So the
watcher (node.py) hands every `InclusionsChallenged` event here; one whose `named` bitmap holds
this node's registry index (read once, and only once the node is registered: an unregistered
address reads as index 0, which is some other provider's) is stored at once (a restart keeps
it: the watcher moves its last_block past the event only after this).

When: validators first, the node in the second half. Showing a beat pays its sender
`Uptime.answer_fee` (challenge_bond / 512) out of the bond, sized to one beat in a batch of 64
(about 16,700 gas). The validator that reported the node holds its beat and answers every
challenge of its report at once, 64 beats a transaction (validator/liveness_answers.py), and so
does every other validator that reported it, for its own report's providers. So the node
waits: it answers a challenge only from `protocol.liveness.provider_answer_from` on, the second
half of the answer-only epochs (after the last epoch a challenge is accepted in, up to the
event's `answer_by_epoch`), and only if its beat is still unshown then. That moment is also
Uptime's `own_answer_from`: from it on, the node's own lone answer (94,300-177,900 gas) is paid
the gas it used at the fee's rate, not one fee (an own answer), so answering costs the node
nothing. Before that moment it sends nothing and reads nothing for the challenge; the moment
comes from Uptime's immutables (read once), so a restart does not move it. Chain time is
judged from the latest head the liveness thread follows: the latest of its timestamp, that
plus the time since this process first saw it (a chain that mines only when there are
transactions stops at its last block), and the wall clock; every error of these clocks makes
the node answer earlier, never later (a node whose clock runs ahead of the chain's may then
land before `own_answer_from` and be paid one fee: its epoch comes first). From the moment
on, the node answers for itself alone (`answer_challenge(id, [node], [signature])`) while the
answer window is open, unless the chain says the challenge is no longer open or its beat of
that epoch was already shown (`proven_word`: on this challenge or any other of the epoch, by
anyone; it cannot be shown twice): then it sends nothing and records `answered-by-another`.
Should another answer land between its read and its send, the chain skips the node's beat
(unpaid) and refuses the call as "every beat given was shown already": answered by another,
too. While such a challenge is open, the node's live bit of the epoch is gone; the
receipt-claim check (heartbeats.py) asks `answering` (or, before the watcher has handed the
challenge over, `disputed`) and claims nothing for it, since the answer brings the bit back.

The griefing this removes: naming every inclusion of an honest report used to make each named
provider pay a lone answer at once, 3-9 answer fees of gas, every epoch the griefer liked. Now
the honest validator's batches show them all in the first half and the providers send nothing
(tests/provider/test_inclusion_answer_timing.py). What remains (adversary notes):
- A challenge sent in the last block of the challenge window: the moment is fixed by the
  epochs, not by the challenge, so the node still has `answer_epochs * epoch_length / 2`.
- A validator that answers only in the second half: the providers answer first at the moment,
  each paid its gas by the challenger's bond. The validator gains nothing by it.
- A validator that never answers (offline, or lying: it challenges its own report from a
  second address, or leaves a griefer's challenge alone): every other validator that reported
  the node answers for it in the first half; if none did, the node sends its own answer, which
  protects its epoch and is paid its gas (1.01-1.07 times, measured: bench/results/
  liveness_challenge_gas.json). All named beats shown, the challenge settles as answered:
  the validator is not slashed and the challenger gets its bond back less what was paid, so a
  validator colluding with a griefer pays its providers' gas (the node's
  `inclusion-challenge-answered` lines name the validator).

Repeats: the watcher hands over an event again when a reorg moved it to another block, or
after a restart (it reads its last `confirmations` blocks again). A challenge already known is
not kept twice; one the node saw answered is checked again (a reorg may have dropped the
answer), from the moment on, and every answer is sent only after the chain says the challenge
is still open and the beat not yet shown: a repeat never costs a second transaction."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from prometheus_client import Counter
from web3.exceptions import BadFunctionCallOutput

from tessera.chain.client import tx_hash
from tessera.chain.devnet import liveness_confirmations
from tessera.chain.registry import ProviderRegistry
from tessera.errors import ChainError, RpcUnavailable
from tessera.protocol import liveness
from tessera.provider.context import NodeContext

ANSWER_RETRY_S = 5.0   # after a refused answer that may pass later (an RPC hiccup, gas)
RECHECKED = ("answered", "answered-by-another")   # outcomes a reorg can undo


class InclusionAnswers:
    """The node's answers to challenges of its inclusion in validators' reports."""

    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self.index: int | None = None   # this node's registry index, once registered
        self._retry_at: dict[int, float] = {}
        self._rechecks: dict[int, str] = {}   # challenge id -> its outcome before a repeat
        self._clock: tuple[int, int, int, int] | None = None   # Uptime's immutables (answer_from)
        self._seen: tuple[int, int, float] | None = None   # (head, its timestamp, first seen)
        self.wall = time.time                             # the local wall clock
        self.m_answers = Counter("tessera_provider_inclusion_challenges", "challenges of this "
                                 "node's inclusion in a liveness report", ["outcome"],
                                 registry=ctx.metrics.registry)

    def registry_index(self) -> int | None:
        """This node's registry index (its bit in reports and challenges), read once, as deep
        as the validators read it (`confirmations` below the head: a reorg cannot re-order it
        then); None while it is not registered that deep (index_of says 0 then, another
        provider's index)."""
        if self.index is None:
            chain = self.ctx.chain
            deep = liveness_confirmations(chain.network, self.ctx.config.liveness.confirmations)
            block = max(0, chain.block_number() - deep) if deep else "latest"
            registry = ProviderRegistry(chain)
            try:
                if registry.is_registered(self.ctx.address, block):
                    self.index = registry.index_of(self.ctx.address, block)
            except BadFunctionCallOutput:   # no registry yet that deep (a young chain)
                return None
        return self.index

    def on_challenged(self, args: Mapping) -> bool:
        """An `InclusionsChallenged` event (in the watcher's thread): kept if its `named`
        bitmap names this node; True then."""
        index = self.registry_index()
        if index is None or not liveness.named(list(args["named"]), index):
            return False
        challenge_id, epoch = int(args["challenge_id"]), int(args["epoch"])
        known = self.ctx.state.challenge_outcome(challenge_id)
        if known is not None:   # a repeat (module docstring)
            if known not in RECHECKED:
                return False
            self._rechecks[challenge_id] = known
            self.ctx.state.set_challenge(challenge_id, "")   # open again: checked on chain
            return True
        answer_from = self.answer_from(epoch)   # (Uptime's immutables, read once)
        self.ctx.state.add_challenge(challenge_id, epoch, str(args["validator"]),
                                     int(args["answer_by_epoch"]))
        self.ctx.log("inclusion-challenged", "warning", challenge=challenge_id, epoch=epoch,
                     validator=args["validator"], challenger=args.get("challenger"),
                     answer_by_epoch=int(args["answer_by_epoch"]),
                     answer_from=answer_from)
        return True

    def pending(self) -> bool:
        return bool(self.ctx.state.open_challenges())

    def answering(self, epoch: int) -> bool:
        """Whether a kept challenge of this node's inclusion in `epoch` is still to be answered
        (by a validator first, else by this node) with a beat the node holds: its live bit of
        the epoch is gone until then, and comes back with the answer, so heartbeats.py claims
        nothing for it (a griefer timing its challenge just before the node's last claim check
        would otherwise cost it a `claim_beat`). Local reads only."""
        beat = self.ctx.state.beat(epoch)
        return bool(beat and beat[0]) and any(
            e == epoch for _, e, _, _ in self.ctx.state.open_challenges())

    def disputed(self, epoch: int, validators: Iterable[str]) -> bool:
        """Whether a challenge of one of these validators' reports (those that receipted the
        beat) names this node's inclusion in `epoch` (`Uptime.challenged_word`), kept or not:
        the watcher hands a challenge over a poll after its block, and a claim check in between
        must not take the gone bit for an omission (a griefer could time its challenge to the
        node's claim checks, 5 s, 10 s, 20 s ... after the epoch). One read per validator,
        asked only once the live bit is gone."""
        index = self.registry_index()
        if index is None:
            return False
        return any(self.ctx.uptime.challenged_word(v, epoch, index // liveness.WORD_BITS)
                   >> (index % liveness.WORD_BITS) & 1 for v in validators)

    def answer_from(self, epoch: int) -> int:
        """The chain time from which this node answers a challenge on `epoch`
        (protocol.liveness.provider_answer_from; Uptime's immutables, read once)."""
        if self._clock is None:
            uptime = self.ctx.uptime
            self._clock = (uptime.genesis(), uptime.epoch_length(), *uptime.liveness_rules())
        genesis, length, report_delay, answer_epochs = self._clock
        return liveness.provider_answer_from(epoch, report_delay, answer_epochs, genesis, length)

    def chain_time(self, head: Mapping, now: float) -> float:
        """The chain's time as far as the node can tell without a call (module docstring): the
        latest of `head`'s timestamp plus the time since this process first saw that head
        (at monotonic `now`), and the wall clock."""
        key = (int(head["number"]), int(head["timestamp"]))
        if self._seen is None or self._seen[:2] != key:
            self._seen = (*key, now)
        return max(key[1] + max(now - self._seen[2], 0.0), self.wall())

    def answer(self, current: int, head: Mapping | None = None) -> None:
        """Answer every open challenge whose moment has come (module docstring), `current`
        being the epoch of `head`, the latest head (read when None)."""
        if head is None:
            chain = self.ctx.chain
            head = chain.rpc(lambda: chain.w3.eth.get_block("latest"), what="get block")
        now = time.monotonic()
        chain_now = self.chain_time(head, now)   # every step: a head's first sight counts
        for challenge_id, epoch, validator, answer_by in self.ctx.state.open_challenges():
            if now < self._retry_at.get(challenge_id, 0.0):
                continue
            if current > answer_by and challenge_id in self._rechecks:   # nothing to redo
                self.ctx.state.set_challenge(challenge_id, self._rechecks.pop(challenge_id))
                continue
            if current > answer_by:
                self._close(challenge_id, "too-late", "error", epoch=epoch, validator=validator,
                            note=f"its answer window ended with epoch {answer_by}")
                continue
            beat = self.ctx.state.beat(epoch)
            signature = beat[0] if beat else ""
            if not signature:
                self._close(challenge_id, "no-beat", "warning", epoch=epoch, validator=validator,
                            note="this node signed no beat in that epoch: the report was wrong")
                continue
            if chain_now < self.answer_from(epoch):   # the validators' half: nothing read
                continue
            if not self._unshown(challenge_id, epoch):
                previous = self._rechecks.pop(challenge_id, None)
                if previous is not None:   # a repeat: as it was
                    self.ctx.state.set_challenge(challenge_id, previous)
                else:
                    self._close(challenge_id, "answered-by-another", "info", epoch=epoch,
                                validator=validator)
                continue
            try:
                receipt = self.ctx.uptime.answer_challenge(
                    challenge_id, [self.ctx.address], [bytes.fromhex(signature[2:])])
            except RpcUnavailable:
                raise
            except ChainError as exc:
                reason = str(exc)
                if "not open" in reason or "shown already" in reason:   # someone came first
                    self._close(challenge_id, "answered-by-another", "info", epoch=epoch,
                                validator=validator)
                elif "too late" in reason:
                    self._close(challenge_id, "too-late", "error", epoch=epoch,
                                validator=validator, note=reason)
                else:
                    self._retry_at[challenge_id] = now + ANSWER_RETRY_S
                    self.ctx.log("inclusion-answer-refused", "warning", challenge=challenge_id,
                                 epoch=epoch, error=reason)
                continue
            self._close(challenge_id, "answered", "info", epoch=epoch, validator=validator,
                        tx=tx_hash(receipt), gas=receipt["gasUsed"])

    def _unshown(self, challenge_id: int, epoch: int) -> bool:
        """The challenge is open and this node's beat of `epoch` not yet shown on any."""
        uptime = self.ctx.uptime
        if uptime.challenge(challenge_id)["state"] != liveness.CHALLENGE_OPEN:
            return False
        index = self.registry_index()
        if index is None:   # not registered (a chain reset under the same state?): not ours
            return False
        proven = uptime.proven_word(epoch, index // liveness.WORD_BITS)
        return not proven >> (index % liveness.WORD_BITS) & 1

    def _close(self, challenge_id: int, outcome: str, level: str, **fields) -> None:
        self.ctx.state.set_challenge(challenge_id, outcome)
        self._retry_at.pop(challenge_id, None)
        self._rechecks.pop(challenge_id, None)
        self.m_answers.labels(outcome).inc()
        self.ctx.log("inclusion-challenge-" + outcome, level, challenge=challenge_id, **fields)
