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
it: the watcher moves its last_block past the event only after this), and the liveness thread
answers it while its answer window (protocol.liveness.answer_end: the event's
`answer_by_epoch`) is open, for this node alone (`answer_challenge(id, [node], [signature])`),
unless the chain says the challenge is no longer open or the node's beat of that epoch was
already shown (`proven_word`: on this challenge or any other of the epoch, by anyone; it
cannot be shown twice). A challenge naming many providers is answered by each of them, and by
the validator for the beats it holds (validator/liveness_answers.py): whoever comes first.
Answering costs the node one transaction per challenge, and pays it the fixed
`Uptime.answer_fee` (challenge_bond / 512: about one batched answer's gas) out of the bond, so a
challenge of an honest inclusion costs its sender that fee per beat shown. Should another
answer land first, the chain skips the node's beat (unpaid) and refuses the call as "every beat
given was shown already": the challenge is then answered, by another.

Repeats: the watcher hands over an event again when a reorg moved it to another block, or
after a restart (it reads its last `confirmations` blocks again). A challenge already known is
not kept twice; one the node saw answered is checked again (a reorg may have dropped the
answer), and every answer is sent only after the chain says the challenge is still open and
the beat not yet shown: a repeat never costs a second transaction."""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import Counter

from tessera.chain.client import tx_hash
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
        self.m_answers = Counter("tessera_provider_inclusion_challenges", "challenges of this "
                                 "node's inclusion in a liveness report", ["outcome"],
                                 registry=ctx.metrics.registry)

    def registry_index(self) -> int | None:
        """This node's registry index (its bit in reports and challenges), read once; None
        while it is not registered (index_of says 0 then, another provider's index)."""
        if self.index is None:
            registry = ProviderRegistry(self.ctx.chain)
            if registry.is_registered(self.ctx.address):
                self.index = registry.index_of(self.ctx.address)
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
        self.ctx.state.add_challenge(challenge_id, epoch, str(args["validator"]),
                                     int(args["answer_by_epoch"]))
        self.ctx.log("inclusion-challenged", "warning", challenge=challenge_id, epoch=epoch,
                     validator=args["validator"], challenger=args.get("challenger"),
                     answer_by_epoch=int(args["answer_by_epoch"]))
        return True

    def pending(self) -> bool:
        return bool(self.ctx.state.open_challenges())

    def answer(self, current: int) -> None:
        """Answer every open challenge, `current` being the epoch of the latest head."""
        now = time.monotonic()
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
