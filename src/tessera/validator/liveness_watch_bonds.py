"""The liveness watch's bonds: one `Uptime.challenge_inclusions` per report (and part of the
registry: WORDS_PER_CHALLENGE words, so that each fits a block) naming every inclusion no one
could show a beat for, within a daily loss budget; finding them again on
chain, noticing answered ones at once, and resolving the rest (validator/liveness_watch.py
decides WHAT is unproven; docs/validators.md, "Watching other validators' reports").

Why all at once: a liar may name, next to a lie (an offline provider), decoys (its own sybil
providers, whose beats it holds and answers on chain but refuses to serve the watcher). The
watcher cannot tell them apart, so it names them all in one challenge, with one bond per
Uptime.NAMED_PER_BOND named (`challenge_bond_for`): the decoys' answers cannot settle the
challenge while the lie stays unanswered, so the liar is slashed for the lie whatever it adds.
Inclusions already named by a challenge (anyone's: `challenged_word`) or whose beat was shown
already (`proven_word`: the inclusion is true) are left out before anything is sent.

What a challenge can lose: each beat shown on it pays its shower `Uptime.answer_fee`
(challenge_bond / 512), or, shown by its own provider alone in the second half of the window,
that answer's gas (`most_paid_per_beat`, 16 fees, at most); the rest of the bond always comes
back; a resolved one also pays 20 % of the slash. So its loss is paid - to_challenger, never
below zero: the fees of its answered beats, at most named x most_paid_per_beat, never the
bond. The budget: what settled challenges of the last day's reported epochs lost, plus that
worst case of every challenge out now, stays within `max_lost_per_day` x challenge_bond (8 x
10 TSTK on the devnet: 80 TSTK / 0.3125 TSTK = 256 named inclusions out at once; settled
ones count what they really paid, one fee a beat a validator's batch showed). Posting a bond
takes the whole of it from the balance for a few epochs, so the balance bounds the bonds out
too.

When an epoch's challenges need more than the budget (in named providers) or the balance (in
bonds) leaves, `share_named` hands out one bond's worth (NAMED_PER_BOND named) at a time to
the reports in an order drawn from os.urandom (as many reports as possible get one), and a
report given fewer than its full set names a random subset of that many
(`liveness-challenge-capped`, with `named` and `unproven`). Random, because any order a liar
can predict (index, size, time of answer) is one it can arrange its decoys by.

No back-off per validator: a watcher that skipped a validator on known epochs (as before)
would hand a liar that once answered a challenge epochs on which its lies are free."""

from __future__ import annotations

import random
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
APPROVE_BUDGETS = 16                 # one approval covers this many daily budgets of bonds
DAY_S = 86_400
SEND_S = 4.0                         # a challenge transaction's time, until one is measured
NOTHING_NEW = "challenged already"   # the refusal when every provider named was named before
FINAL = ("open", "answered", "resolved", "refused", "taken")   # no second send for the report
_RANDOM = random.SystemRandom()      # os.urandom: an order and a subset no liar can predict
# Registry words one challenge names at most (a *part* of the report: words [p*W, (p+1)*W)):
# a challenge costs about 295,000 gas plus 69,600 per further word it names
# (bench/results/liveness_challenge_gas.json), so a liar whose decoys sit one per word made one
# challenge of a report past ~425 words (~109,000 providers) more than a 30 M-gas block; 256
# words is about 18 M gas. Below 65,536 providers a report is one part.
WORDS_PER_CHALLENGE = 256


def part_of(index: int) -> int:
    """The part of the registry (one challenge's words) holding registry index `index`."""
    return index // (liveness.WORD_BITS * WORDS_PER_CHALLENGE)


def part_named(named_words: list[int]) -> int:
    """The part a challenge's `named` bitmap is in (its first named word's)."""
    first = next((j for j, w in enumerate(named_words) if w), 0)
    return first // WORDS_PER_CHALLENGE


def share_named(needs: list[int], slots: int, units: int, per_bond: int) -> list[int]:
    """Providers each report may name (`needs[i]`: its whole unproven set), in the order given:
    one bond's worth (up to `per_bond` named, one of `units` bonds the balance pays for) each in
    turn, while `slots` (the named the loss budget still covers) and `units` last. So each
    report's share takes ceil(share / per_bond) bonds, as challenge_bond_for does."""
    given = [0] * len(needs)
    while slots > 0 and units > 0 and any(g < n for g, n in zip(given, needs, strict=True)):
        for i, need in enumerate(needs):
            if slots > 0 and units > 0 and given[i] < need:
                take = min(per_bond, need - given[i], slots)
                given[i] += take
                slots -= take
                units -= 1
    return given


class WatchBonds:
    """This validator's inclusion challenges: within the budget (module docstring), sent
    once per report, settled."""

    def __init__(self, chain: Chain, store: WatchStore, log: EventLog, metrics: CollectorRegistry,
                 max_lost_per_day: int):
        self.chain, self.store, self.log = chain, store, log
        self.uptime, self.token = Uptime(chain), StakeToken(chain)
        self.max_lost_per_day = max_lost_per_day
        self.bond = self.slash = self.fee = self.report_delay = self.answer_epochs = 0
        self.most_per_beat = 0                 # Uptime.most_paid_per_beat
        self.per_bond = 1                      # Uptime.NAMED_PER_BOND
        self.epochs_per_day = 1
        self.send_s = SEND_S                   # the slowest recent challenge transaction
        self._budget_logged: int | None = None
        self.m_challenges = Counter("tessera_validator_liveness_watch_challenges",
                                    "inclusion challenges by this validator", ["outcome"],
                                    registry=metrics)
        self.m_open = Gauge("tessera_validator_liveness_watch_open_challenges",
                            "this validator's challenges not yet settled", registry=metrics)
        self.m_lost = Gauge("tessera_validator_liveness_watch_bonds_lost_day",
                            "what challenges of the last day's epochs lost (answer fees less "
                            "slash shares), in units of challenge_bond", registry=metrics)

    @property
    def address(self) -> str:
        return self.chain.address

    def prepare(self) -> None:
        self.report_delay, self.answer_epochs = self.uptime.liveness_rules()
        self.bond, self.slash = self.uptime.challenge_rules()
        self.fee, self.per_bond = self.uptime.answer_fee(), self.uptime.named_per_bond()
        self.most_per_beat = self.uptime.most_paid_per_beat()
        self.epochs_per_day = max(1, -(-DAY_S // self.uptime.epoch_length()))

    # -- the budget --------------------------------------------------------------------------
    def lost_today(self, epoch: int) -> int:
        """Base units lost on settled challenges of the day of reported epochs up to `epoch`."""
        return self.store.lost_since(epoch - self.epochs_per_day + 1)

    @property
    def budget(self) -> int:
        return self.max_lost_per_day * self.bond

    def at_risk(self) -> int:
        """Base units the challenges out now may still lose: most_paid_per_beat for every
        provider they name (the worst case, every named beat shown by its own provider alone;
        the rest of each bond comes back, so the bonds themselves are not at risk)."""
        return self.store.named_out() * self.most_per_beat

    def room(self, epoch: int) -> int:
        """Base units new challenges on `epoch` may put at risk (named x most_paid_per_beat): the
        budget less the day's losses and what the challenges out may still lose."""
        return self.budget - self.lost_today(epoch) - self.at_risk()

    def budget_spent(self, epoch: int) -> bool:
        spent = self.room(epoch) < max(self.most_per_beat, 1)
        if spent and self._budget_logged != epoch:
            self._budget_logged = epoch
            self.m_challenges.labels("budget-spent").inc()
            self.log("liveness-watch-budget-spent", "warning", epoch=epoch,
                     lost=self.lost_today(epoch), at_risk=self.at_risk(), budget=self.budget)
        return spent

    # -- sending -----------------------------------------------------------------------------
    def challenge_all(self, epoch: int, due: dict[str, tuple[list[int], list[int]]],
                      why: str) -> None:
        """One challenge per report in `due` (validator -> (its report's words, the registry
        indices of its unproven inclusions)) and part of the registry (WORDS_PER_CHALLENGE),
        naming those no challenge named yet and whose beat nobody showed, within the budget
        and the balance (module docstring). A challenge settled, or found on chain after a
        crash, is not sent again; one the budget or the balance left out ('capped') is tried
        again on the next call."""
        units: dict[tuple[str, int], list[int]] = {}   # (validator, part) -> its unproven
        for validator, (_, unproven) in due.items():
            for index in unproven:
                units.setdefault((validator, part_of(index)), []).append(index)
        left = []
        for validator, part in units:
            known = self.store.challenge(epoch, validator, part)
            if known is not None and known["status"] in FINAL:
                continue
            if known is not None and known["status"] in ("sending", "retry") \
                    and part in self.look_up(epoch, validator):   # sent before a crash
                continue
            left.append((validator, part))
        if left and self.budget_spent(epoch):   # logged once an epoch; no chain reads
            for validator, part in left:
                self._capped(epoch, validator, units[validator, part], 0,
                             self._why_capped(epoch), part)
            return
        plans: dict[tuple[str, int], list[int]] = {}
        for validator, part in left:
            unproven = units[validator, part]
            named = self._fresh(epoch, validator, unproven)
            if named:
                plans[validator, part] = named
            else:
                self._taken(epoch, validator, unproven, part)
        if not plans:
            return
        order = list(plans)
        _RANDOM.shuffle(order)
        balance = self.token.balance_of(self.address)
        slots = max(0, self.room(epoch)) // max(self.most_per_beat, 1)
        given = share_named([len(plans[u]) for u in order], slots, balance // self.bond,
                            self.per_bond)
        for (validator, part), share in zip(order, given, strict=True):
            named, words = plans[validator, part], due[validator][0]
            if share < len(named):
                self._capped(epoch, validator, named, share,
                             self._why_capped(epoch, balance), part)
                if not share:
                    continue
                named = _RANDOM.sample(named, share)
            self._send(epoch, validator, words, named, why, part)

    def _why_capped(self, epoch: int, balance: int | None = None) -> str:
        why = (f"daily loss budget: {self.lost_today(epoch)} lost on the last day's epochs "
               f"and {self.at_risk()} at risk on challenges out, of {self.budget}")
        return why if balance is None else f"{why}; balance {balance}, {self.bond} a bond"

    def _capped(self, epoch: int, validator: str, unproven: list[int], named: int,
                reason: str, part: int = 0) -> None:
        """The budget (or the balance) lets a challenge of this report name only `named` of
        its `unproven` inclusions (none: the report is left 'capped', tried again on the next
        call; logged once)."""
        known = self.store.challenge(epoch, validator, part)
        if known is not None and known["status"] == "capped" and not named:
            return
        self.m_challenges.labels("trimmed" if named else "capped").inc()
        self.log("liveness-challenge-capped", "warning", epoch=epoch, validator=validator,
                 part=part, named=named, unproven=len(unproven), reason=reason)
        if not named:
            self.store.save_challenge(epoch, validator, "capped",
                                      detail=f"{reason}; {len(unproven)} unproven", part=part)

    def _fresh(self, epoch: int, validator: str, unproven: list[int]) -> list[int]:
        """`unproven` less what a challenge (anyone's) already named and what was proven (a
        beat shown on any challenge of the epoch: the inclusion is true, and naming it would
        only take budget): two view calls per 256-index word that holds some of it."""
        left = set(unproven)
        for j in sorted({i // liveness.WORD_BITS for i in unproven}):
            gone = self.uptime.challenged_word(validator, epoch, j) \
                | self.uptime.proven_word(epoch, j)
            left.difference_update(j * liveness.WORD_BITS + i
                                   for i in liveness.indices_of([gone]))
        return sorted(left)

    def _taken(self, epoch: int, validator: str, unproven: list[int], part: int = 0) -> None:
        self.store.save_challenge(epoch, validator, "taken", named=unproven,
                                  detail="every unproven inclusion already named by a "
                                         "challenge, or its beat shown", part=part)
        self.m_challenges.labels("taken").inc()

    def _send(self, epoch: int, validator: str, words: list[int], named: list[int],
              why: str, part: int = 0) -> None:
        bond = self.uptime.challenge_bond_for(len(named))   # at most: some may be left out
        try:
            self.token.require_balance(bond, "an inclusion challenge's bond")
            if self.token.allowance(self.address, self.uptime.address) < bond:
                self.token.ensure_allowance(self.uptime.address, max(
                    bond, self.bond * self.max_lost_per_day * APPROVE_BUDGETS))
        except InsufficientFunds as exc:   # spent since the plan (a race): tried again
            self.store.save_challenge(epoch, validator, "capped", named=named,
                                      detail=str(exc), part=part)
            self.m_challenges.labels("no-funds").inc()
            self.log("liveness-challenge-no-funds", "error", epoch=epoch,
                     validator=validator, named=len(named), error=str(exc))
            return
        self.store.save_challenge(epoch, validator, "sending", named=named, bond=bond,
                                  detail=why, part=part)
        started = time.monotonic()
        bitmap = liveness.words_of(named, max(named) + 1)
        try:
            receipt, cid = self.uptime.challenge_inclusions(validator, epoch, words, bitmap)
        except TxRefused as exc:
            if part in self.look_up(epoch, validator):   # ours after all (a retried send)
                return
            if NOTHING_NEW in str(exc):          # someone named all of them first
                self._taken(epoch, validator, named, part)
                return
            self.store.save_challenge(epoch, validator, "refused", named=named,
                                      detail=str(exc), part=part)
            self.m_challenges.labels("refused").inc()
            self.log("liveness-challenge-refused", "warning", epoch=epoch,
                     validator=validator, named=len(named), error=str(exc))
            return
        self.send_s = max(self.send_s * 0.9, time.monotonic() - started, 0.5)
        # What the contract named (those named meanwhile left out) and the bond it took.
        event = self.uptime.challenged_set(receipt)
        taken = liveness.indices_of(list(event["named"]))
        self.store.save_challenge(epoch, validator, "open", cid, taken, event["bond"],
                                  detail=why, part=part)
        self.m_challenges.labels("sent").inc()
        self.log("liveness-challenged", epoch=epoch, validator=validator, challenge_id=cid,
                 named=len(taken), left_out=len(named) - len(taken), bond=event["bond"],
                 why=why, tx=tx_hash(receipt), gas=receipt["gasUsed"])

    def adopt(self, args: dict) -> bool:
        """Record an InclusionsChallenged of ours (found by the scan or a look-up): True if it
        is ours. Someone else's needs no row: its set is read (challenged_word) before ours
        is sent."""
        if args["challenger"].lower() != self.address.lower():
            return False
        part = part_named(list(args["named"]))
        known = self.store.challenge(args["epoch"], args["validator"], part)
        if known is None or known["status"] in ("sending", "retry", "capped") \
                or known["challenge_id"] != args["challenge_id"]:
            self.store.save_challenge(args["epoch"], args["validator"], "open",
                                      args["challenge_id"], liveness.indices_of(args["named"]),
                                      args["bond"], detail="found on chain", part=part)
        return True

    def look_up(self, epoch: int, validator: str) -> set[int]:
        """Find our InclusionsChallenged of this report on chain, from the block that opened
        `epoch` (no challenge of it can come earlier): the parts they are in."""
        start = self.uptime.opened_block(epoch) or self.chain.network.deploy_block
        logs = self.chain.events("Uptime", "InclusionsChallenged", start,
                                 argument_filters={"validator": validator, "epoch": epoch})
        return {part_named(list(log["args"]["named"])) for log in logs
                if self.adopt(dict(log["args"]))}

    # -- settling ----------------------------------------------------------------------------
    def settle(self, current: int) -> None:
        """Read the state of every challenge of ours still out (answered ones are counted at
        once) and resolve_challenge those whose answer window is over (the bond less the fees
        comes back only then: nobody else gains by resolving one whose beats were all shown)."""
        for epoch, validator, part in self.store.sending():   # a crash between save and send
            if part not in self.look_up(epoch, validator):
                self.store.save_challenge(epoch, validator, "retry",
                                          detail="not on chain after a restart", part=part)
        for epoch, validator, part, cid, bond in self.store.open_challenges():
            c = self.uptime.challenge(cid)
            if c["challenger"].lower() != self.address.lower() or c["epoch"] != epoch \
                    or c["validator"].lower() != validator.lower():   # a reorg took it away
                self.store.save_challenge(epoch, validator, "retry",
                                          detail=f"challenge {cid} is not ours on chain",
                                          part=part)
                continue
            state = c["state"]
            if state == OPEN and current > liveness.answer_end(epoch, self.report_delay,
                                                               self.answer_epochs):
                state = self._resolve(epoch, validator, cid)
            if state == RESOLVED and self.store.settle_challenge(
                    epoch, validator, "resolved", lost := self._loss(epoch, cid, c), part):
                self.m_challenges.labels("resolved").inc()
                self.log("liveness-challenge-resolved", epoch=epoch, validator=validator,
                         challenge_id=cid, named=c["named"], answered=c["answered"], lost=lost)
            elif state == ANSWERED and self.store.settle_challenge(
                    epoch, validator, "answered", c["paid"], part):
                self.m_challenges.labels("answered").inc()
                self.log("liveness-challenge-lost", "warning", epoch=epoch, validator=validator,
                         challenge_id=cid, bond=bond, named=c["named"], lost=c["paid"])
        tally = self.store.tally()
        self.m_open.set(tally.get("open", 0) + tally.get("sending", 0))
        watched = liveness.watched_epoch(current, self.report_delay)
        self.m_lost.set(self.lost_today(watched) / self.bond if self.bond else 0)

    def _loss(self, epoch: int, cid: int, c: dict) -> int:
        """What a resolved challenge lost: the answer fees it paid less its share of the slash
        (to_challenger of its ChallengeResolved), never below zero; the rest of the bond came
        back (bond_returned = bond - paid)."""
        start = self.uptime.opened_block(epoch) or self.chain.network.deploy_block
        for log in self.chain.events("Uptime", "ChallengeResolved", start,
                                     argument_filters={"challenge_id": cid}):
            return max(0, c["paid"] - log["args"]["to_challenger"])
        return c["paid"]   # not found (cannot happen once resolved): the fees, at most

    def _resolve(self, epoch: int, validator: str, cid: int) -> int:
        try:
            receipt = self.uptime.resolve_challenge(cid)
        except TxRefused as exc:
            self.log("liveness-resolve-refused", "warning", challenge_id=cid, error=str(exc))
            return OPEN   # read again next time
        self.log("liveness-resolve-sent", epoch=epoch, validator=validator, challenge_id=cid,
                 tx=tx_hash(receipt), gas=receipt["gasUsed"])
        return self.uptime.challenge(cid)["state"]
