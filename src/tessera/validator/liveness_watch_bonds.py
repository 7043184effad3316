"""The liveness watch's bonds: sending inclusion challenges within the limits below, finding
them again on chain, noticing answered ones at once, and resolving the rest
(validator/liveness_watch.py decides WHAT to challenge; docs/validators.md, "Watching other
validators' reports").

The limits exist because of one strategy: a validator holding real beats (of its own sybil
providers, which beat to it alone) names them, refuses to serve them to the watcher, lets it
challenge, then answers each challenge and takes the whole bond (Uptime.ANSWERER_SHARE_BPS:
all of it when the validator answers itself). Against it:

- a validator no beat ever answered a challenge of ours on an EARLIER reported epoch is
  challenged on every unproven inclusion, within the caps below: a first-time liar that
  mixes decoys (inclusions of its sybils, which it answers) with a real lie loses the slash
  for the lie, whichever it names (the order is random, liveness_watch.py);
- once beats answered our challenges of validator V's inclusions on k reported epochs
  (earlier ones), V gets one challenge per reported epoch, from reported epoch last + 2^k on (k counted up
  to MAX_BACKOFF_DOUBLINGS), and never while another challenge of V is still out. A proven
  griefer that names d decoys and one lie is then challenged on the lie with chance
  1/(d + 1) an allowed epoch: this escape is what the contract's planned whole-report
  challenge closes (docs/validators.md);
- bonds lost (answered) on the last day's reported epochs plus bonds out now never exceed
  `max_lost_per_day`: a challenge goes out only if, were every bond now out answered, the
  day's losses would stay within it. Past it the watcher stops challenging (logged once an
  epoch, metric) until the window moves on;
- at most `max_challenges` bonds on one reported epoch.

Answers are noticed on every pass (one view call per challenge still out), not only when
the answer window ends, so the back-off and the budget apply from the next challenge on."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge

from tessera.chain.client import Chain, tx_hash
from tessera.chain.tokens import StakeToken
from tessera.chain.uptime import Uptime
from tessera.errors import InsufficientFunds, TxRefused
from tessera.logs import EventLog
from tessera.protocol import liveness
from tessera.validator.liveness_watch_store import WatchStore

OPEN, ANSWERED, RESOLVED = (liveness.CHALLENGE_OPEN, liveness.CHALLENGE_ANSWERED,
                           liveness.CHALLENGE_RESOLVED)
APPROVE_EPOCHS = 16                  # one approval covers this many epochs at the cap
MAX_BACKOFF_DOUBLINGS = 12           # 4,096 epochs (2.8 days of 60 s epochs)
DAY_S = 86_400
SEND_S = 4.0                         # a challenge transaction's time, until one is measured


def backoff_until(answered: int, last_epoch: int) -> int:
    """The first reported epoch on which a validator's inclusions may be challenged again
    after beats answered our challenges of them on `answered` reported epochs, the last
    `last_epoch`."""
    if answered <= 0:
        return 0
    return last_epoch + 2 ** min(answered, MAX_BACKOFF_DOUBLINGS)


class WatchBonds:
    """This validator's inclusion challenges: within the limits (module docstring), sent
    once, settled."""

    def __init__(self, chain: Chain, store: WatchStore, log: EventLog, metrics: CollectorRegistry,
                 max_challenges: int, max_lost_per_day: int):
        self.chain, self.store, self.log = chain, store, log
        self.uptime, self.token = Uptime(chain), StakeToken(chain)
        self.max_challenges, self.max_lost_per_day = max_challenges, max_lost_per_day
        self.bond = self.slash = self.report_delay = self.answer_epochs = 0
        self.epochs_per_day = 1
        self.send_s = SEND_S                   # the slowest recent challenge transaction
        self._budget_logged: int | None = None
        self.m_challenges = Counter("tessera_validator_liveness_watch_challenges",
                                    "inclusion challenges by this validator", ["outcome"],
                                    registry=metrics)
        self.m_open = Gauge("tessera_validator_liveness_watch_open_challenges",
                            "this validator's challenges not yet settled", registry=metrics)
        self.m_lost = Gauge("tessera_validator_liveness_watch_bonds_lost_day",
                            "bonds lost to answered challenges on the last day's epochs",
                            registry=metrics)

    @property
    def address(self) -> str:
        return self.chain.address

    def prepare(self) -> None:
        self.report_delay, self.answer_epochs = self.uptime.liveness_rules()
        self.bond, self.slash = self.uptime.challenge_rules()
        self.epochs_per_day = max(1, -(-DAY_S // self.uptime.epoch_length()))

    # -- the limits --------------------------------------------------------------------------
    def lost_today(self, epoch: int) -> int:
        return self.store.lost_since(epoch - self.epochs_per_day + 1)

    def refusal(self, epoch: int, validator: str) -> str | None:
        """Why `validator`'s inclusions of `epoch` may not be challenged now (None: they may)."""
        lost, out = self.lost_today(epoch), self.store.unsettled()
        if lost + out >= self.max_lost_per_day:
            return (f"daily loss budget: {lost} bond(s) lost on the last day's epochs and "
                    f"{out} out, of {self.max_lost_per_day}")
        if self.store.at_risk(epoch) >= self.max_challenges:
            return f"{self.max_challenges} bonds on epoch {epoch} already"
        answered, last = self.store.answered_by(validator)
        if answered > 1 or (answered == 1 and last != epoch):   # on an earlier epoch
            if self.store.at_risk(epoch, validator):
                return "it answered before: one challenge of it per epoch"
            if self.store.unsettled(validator):
                return "it answered before: one challenge of it out at a time"
            until = backoff_until(answered, last)
            if epoch < until:
                return f"it answered on {answered} epoch(s): backing off until epoch {until}"
        return None

    def can_send(self, epoch: int, validator: str) -> bool:
        return self.refusal(epoch, validator) is None

    def budget_spent(self, epoch: int) -> bool:
        spent = self.lost_today(epoch) + self.store.unsettled() >= self.max_lost_per_day
        if spent and self._budget_logged != epoch:
            self._budget_logged = epoch
            self.m_challenges.labels("budget-spent").inc()
            self.log("liveness-watch-budget-spent", "warning", epoch=epoch,
                     lost=self.lost_today(epoch), out=self.store.unsettled(),
                     budget=self.max_lost_per_day)
        return spent

    # -- sending -----------------------------------------------------------------------------
    def challenge(self, epoch: int, validator: str, provider: str, words: list[int],
                  why: str) -> None:
        """Bond a challenge of `validator`'s inclusion of `provider` (once, within the limits)."""
        key = (epoch, validator, provider)
        known = self.store.challenge(*key)
        if known is not None and known[0] not in ("sending", "retry"):
            return
        if known is not None and self.look_up(*key):   # sent before a crash: mined or not?
            return
        refusal = self.refusal(epoch, validator)
        if refusal is not None:
            self.store.save_challenge(*key, "capped", detail=f"{refusal}; {why}")
            self.m_challenges.labels("capped").inc()
            self.log("liveness-challenge-capped", "warning", epoch=epoch, validator=validator,
                     provider=provider, reason=refusal)
            return
        try:
            self.token.require_balance(self.bond, "an inclusion challenge's bond")
            if self.token.allowance(self.address, self.uptime.address) < self.bond:
                self.token.ensure_allowance(self.uptime.address,
                                            self.bond * self.max_challenges * APPROVE_EPOCHS)
        except InsufficientFunds as exc:
            self.store.save_challenge(*key, "refused", detail=str(exc))
            self.m_challenges.labels("no-funds").inc()
            self.log("liveness-challenge-no-funds", "error", epoch=epoch, validator=validator,
                     provider=provider, error=str(exc))
            return
        self.store.save_challenge(*key, "sending", detail=why)
        started = time.monotonic()
        try:
            receipt, cid = self.uptime.challenge_inclusion(validator, epoch, provider, words)
        except TxRefused as exc:
            if self.look_up(*key):   # "already challenged": by us before, or by someone else
                return
            self.store.save_challenge(*key, "refused", detail=str(exc))
            self.m_challenges.labels("refused").inc()
            self.log("liveness-challenge-refused", "warning", epoch=epoch, validator=validator,
                     provider=provider, error=str(exc))
            return
        self.send_s = max(self.send_s * 0.9, time.monotonic() - started, 0.5)
        self.store.save_challenge(*key, "open", cid, why)
        self.m_challenges.labels("sent").inc()
        self.log("liveness-challenged", epoch=epoch, validator=validator, provider=provider,
                 challenge_id=cid, bond=self.bond, why=why, tx=tx_hash(receipt),
                 gas=receipt["gasUsed"])

    def adopt(self, args: dict) -> bool:
        """Record an InclusionChallenged that settles (epoch, validator, provider): ours, to be
        resolved, or someone else's (no bond of ours needed). True if it was ours or theirs."""
        key = (args["epoch"], args["validator"], args["provider"])
        known = self.store.challenge(*key)
        if known is not None and known[0] not in ("sending", "retry", "refused", "capped"):
            return True
        mine = args["challenger"].lower() == self.address.lower()
        if mine:
            self.store.save_challenge(*key, "open", args["challenge_id"], "found on chain")
        elif known is not None and known[0] in ("sending", "retry"):
            self.store.save_challenge(*key, "taken", args["challenge_id"],
                                      f"challenged by {args['challenger']}")
        return mine or known is not None

    def look_up(self, epoch: int, validator: str, provider: str) -> bool:
        """Find the InclusionChallenged of this inclusion on chain (True if there is one): from
        the block that opened `epoch`, since no challenge of it can come earlier."""
        start = self.uptime.opened_block(epoch) or self.chain.network.deploy_block
        logs = self.chain.events("Uptime", "InclusionChallenged", start,
                                 argument_filters={"validator": validator, "provider": provider})
        for log in logs:
            if log["args"]["epoch"] == epoch:
                return self.adopt(dict(log["args"]))
        return False

    # -- settling ----------------------------------------------------------------------------
    def settle(self, current: int) -> None:
        """Read the state of every challenge of ours still out (answered ones are counted at
        once) and resolve_challenge those whose answer window is over."""
        for key in self.store.sending():   # left by a crash between the save and the send
            if not self.look_up(*key):
                self.store.save_challenge(*key, "retry", detail="not on chain after a restart")
        out = self.store.open_challenges()
        for epoch, validator, provider, cid in out:
            key = (epoch, validator, provider)
            state = self.uptime.challenge(cid)["state"]
            due = current > liveness.answer_end(epoch, self.report_delay, self.answer_epochs)
            if state == OPEN and due:
                state = self._resolve(key, cid)
            if state == RESOLVED:
                self.store.save_challenge(*key, "resolved", cid)
                self.m_challenges.labels("resolved").inc()
            elif state == ANSWERED:
                self._lost(key, cid)
        self.m_open.set(self.store.unsettled())
        self.m_lost.set(self.lost_today(liveness.watched_epoch(current, self.report_delay)))

    def _resolve(self, key: tuple, cid: int) -> int:
        before = self.token.balance_of(self.address)
        try:
            receipt = self.uptime.resolve_challenge(cid)
        except TxRefused as exc:
            self.log("liveness-resolve-refused", "warning", challenge_id=cid, error=str(exc))
            return OPEN   # read again next time
        state = self.uptime.challenge(cid)["state"]
        self.log("liveness-challenge-resolved", epoch=key[0], validator=key[1],
                 provider=key[2], challenge_id=cid, slashed=state == RESOLVED,
                 received=self.token.balance_of(self.address) - before, tx=tx_hash(receipt),
                 gas=receipt["gasUsed"])
        return state

    def _lost(self, key: tuple, cid: int) -> None:
        if not self.store.mark_answered(*key, cid):
            return
        answered, last = self.store.answered_by(key[1])
        self.m_challenges.labels("answered").inc()
        self.log("liveness-challenge-lost", "warning", epoch=key[0], validator=key[1],
                 provider=key[2], challenge_id=cid, bond=self.bond, answered_by_it=answered,
                 next_challenge_from=backoff_until(answered, last))
