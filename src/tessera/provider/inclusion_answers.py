"""Answering challenges of this node's inclusion in a validator's liveness report
(`Uptime.challenge_inclusion`) with the signature of its beat, which the node keeps (state.py).

Why the node must: a report naming it counts only if every challenge of that inclusion is
answered in time, and the only holders of its beat signature are the node and the validators
it sent the beat to. A validator can report the node, then challenge its own report from a
second address in the last block of the challenge window (no answer sends the slash to the
challenger, its own again): unanswered, the node's live bit of that epoch is revoked at
finality, and a node that thought the epoch settled would never notice. So the watcher
(node.py) hands every `InclusionChallenged` event naming this node here; it is stored at once
(a restart keeps it: the watcher moves its last_block past the event only after this), and
the liveness thread answers it while its answer window (protocol.liveness.answer_end: the
event's `answer_by_epoch`) is open.
Answering costs the node one transaction per challenge, and pays it Uptime.ANSWERER_SHARE_BPS
of the challenger's bond (the rest goes to the validator), so a challenge of an honest
inclusion costs its sender.

Repeats: the watcher hands over an event again when a reorg moved it to another block, or
after a restart (it reads its last `confirmations` blocks again). A challenge already known is
not kept twice; one the node saw answered is checked again (a reorg may have dropped the
answer), and every answer is sent only after the chain says the challenge is still open: a
repeat never costs a second transaction."""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import Counter

from tessera.chain.client import tx_hash
from tessera.errors import ChainError, RpcUnavailable
from tessera.protocol import liveness
from tessera.provider.context import NodeContext

ANSWER_RETRY_S = 5.0   # after a refused answer that may pass later (an RPC hiccup, gas)
RECHECKED = ("answered", "answered-by-another")   # outcomes a reorg can undo


class InclusionAnswers:
    """The node's answers to challenges of its inclusion in validators' reports."""

    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self._retry_at: dict[int, float] = {}
        self._rechecks: dict[int, str] = {}   # challenge id -> its outcome before a repeat
        self.m_answers = Counter("tessera_provider_inclusion_challenges", "challenges of this "
                                 "node's inclusion in a liveness report", ["outcome"],
                                 registry=ctx.metrics.registry)

    def on_challenged(self, args: Mapping) -> bool:
        """An `InclusionChallenged` event (in the watcher's thread): kept if it names this
        node; True then."""
        if str(args["provider"]).lower() != self.ctx.address.lower():
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
            if self.ctx.uptime.challenge(challenge_id)["state"] != liveness.CHALLENGE_OPEN:
                previous = self._rechecks.pop(challenge_id, None)
                if previous is not None:   # a repeat: as it was
                    self.ctx.state.set_challenge(challenge_id, previous)
                else:
                    self._close(challenge_id, "answered-by-another", "info", epoch=epoch,
                                validator=validator)
                continue
            try:
                receipt = self.ctx.uptime.answer_challenge(challenge_id,
                                                           bytes.fromhex(signature[2:]))
            except RpcUnavailable:
                raise
            except ChainError as exc:
                reason = str(exc)
                if "not open" in reason:      # answered by someone else (the validator?)
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

    def _close(self, challenge_id: int, outcome: str, level: str, **fields) -> None:
        self.ctx.state.set_challenge(challenge_id, outcome)
        self._retry_at.pop(challenge_id, None)
        self._rechecks.pop(challenge_id, None)
        self.m_answers.labels(outcome).inc()
        self.ctx.log("inclusion-challenge-" + outcome, level, challenge=challenge_id, **fields)
