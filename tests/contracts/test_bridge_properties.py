"""The real bridge contracts on three titanoboa chains under any order of calls (hypothesis).

Chain A: TokenBridge in mint mode over A's TUSD (its only minter); chain B: lock mode over B's
TUSD; chain C: a lock-mode double of B (same addresses) that trusts A and holds tokens worth
stealing, where a message for B must never land. Users send both ways (any amount, with and
without balance or allowance), a relayer delivers any message to any chain with good or bad
signature sets, time jumps, queued messages are executed or cancelled (the bounce is then a
message like any other), guardians pause and the owner unpauses, the committee rotates (and,
when its keys are lost, the owner recovers it once it has stalled), and
a stranger sends junk (value claims, forged bounces) through the outboxes, and the owners list
the stranger as a second value sender with a bucket of its own, change limits and unlist it
(value from an unlisted sender is always refused). A Python model
(bridge_properties_support.BridgeModel) predicts every outcome: each call either does exactly
what the model says or reverts with the reason the model names.

Checked after every step:
- conservation (docs/bridge.md): TUSD held by TokenBridge(B) = A's supply (minted - burned by
  TokenBridge(A)) + in flight B->A + in flight A->B, where a cancelled transfer is in flight
  until its bounce lands; both sides' running totals (total_sent / received / bounced /
  cancelled) give the same figures; A's `backing` for B equals its supply; C's pool never moves;
- every balance, supply, total, value sender's bucket (protocol.bridge.Bucket, the inbox's
  `available`) and large threshold,
  pause flag, epoch and outbox count equals the model's, so a refused call changed nothing
  observed; no user holds more than they started with plus what others sent them;
- each message id is delivered at most once (MessageDelivered events), and delivered /
  queued / cancelled only on its destination (the flags of every message on every inbox
  touched by the step).

At the end of every run ("every wei has a way out"): the owner lifts pauses, the relayer
delivers every pending message with a valid quorum, time passes every delay and refill, every
queued message is executed, until nothing is in flight; then TokenBridge(B) holds exactly A's
supply, and every user bridges all of their A TUSD back to B within 1 + 3 * ceil(x / max
transfer) transactions (an approval, then per chunk a send, a delivery and an execution).

Size: 40 runs of 50 steps (TESSERA_BRIDGE_EXAMPLES / TESSERA_BRIDGE_STEPS to go deeper).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import sys

from bridge_properties_support import (
    BELOW,
    C_POOL,
    CAROL,
    MAXU,
    OUTCOMES,
    QUORUMS,
    RELAYER,
    STRANGER,
    USERS,
    BridgeModel,
    Pen,
    Sent,
    committee,
    other,
    quorum_refusal,
    storage_readers,
    weights_of,
)
from bridge_support import (
    ALICE,
    BOB,
    CAPACITY,
    CHAIN_A,
    CHAIN_B,
    CHAIN_C,
    DELAY,
    LARGE,
    MAX_TRANSFER,
    REFILL,
    USD,
    shared_world,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tessera.protocol import bridge as pb

A, B, C = CHAIN_A, CHAIN_B, CHAIN_C
PEN = Pen()   # signatures are deterministic: one cache for the whole session

PICK = st.integers(0, 40)
EDGES = [0, 1, LARGE, LARGE + 1, MAX_TRANSFER, MAX_TRANSFER + 1, MAXU, "all", "all", "all+1"]
AMOUNTS = st.one_of(st.sampled_from(EDGES), st.integers(1, 3 * LARGE), st.integers(1, 3 * LARGE))
# what `relay` submits (`relay_well` always submits a valid quorum)
SIGS = st.sampled_from(["valid", "below", "duplicate", "duplicate", "unsorted", "non-member", "retired",
                        "retired", "other domain", "empty", "tampered"])
# "edge": to the second where the bucket would be full again (-1, 0, +1)
JUMPS = st.sampled_from([1, 60, 499, DELAY - 1, DELAY, 5_000, 86_400, "edge", "edge", "edge", "edge"])
TO = st.sampled_from([*USERS, BOB.address, ALICE.address, "bridge"])
SENDERS = st.sampled_from([ALICE.address] * 3 + [BOB.address] * 2 + [CAROL.address, STRANGER.address])
QUEUED = st.sampled_from(["transfer", "transfer", "queued", "any"])
# the stranger as a listed value sender: its own small bucket, every value message of its queued
STRANGER_LIMITS = (2 * LARGE, REFILL, 0)


def _pick(items: list, i: int):
    """Newest first: hypothesis favours small numbers, so 0 is the latest."""
    return items[-1 - i % len(items)] if items else None


def _has(status: str):
    return lambda self: any(r.status == status for r in self.msgs)


class BridgeMachine(BridgeModel, RuleBasedStateMachine):

    def teardown(self):
        try:
            if sys.exc_info()[0] is None:   # a failed step is reported as it is
                self._every_wei_has_a_way_out()
        finally:
            self.close()

    @initialize(carol_b=st.sampled_from([0, 500 * USD, 20_000 * USD]),
                carol_allow=st.sampled_from([0, 1_000 * USD, MAXU]), listed=st.booleans(),
                seed=st.sampled_from([0, 300 * USD, 2 * LARGE, MAX_TRANSFER]),
                keys_lost=st.booleans())
    def setup(self, carol_b, carol_allow, listed, seed, keys_lost):
        """Carol's balance and allowance on B; C's pool and its trust in A; each inbox listing
        (or not) the stranger as a second value sender of the other chain, beside the peer
        TokenBridge, with its own bucket (its junk then spends that bucket, never the
        TokenBridge's); and `seed` already bridged from Alice on B to Bob on A, so that A->B
        traffic starts at once. `keys_lost`: at the end, both committees have lost their keys
        and the way out starts with the owner's recovery (BridgeInbox.recover_committee)."""
        self.keys_lost = keys_lost
        a, b, c = self.ch[A], self.ch[B], self.ch[C]
        with self._on(B, b.owner):
            b.token.mint(CAROL.address, carol_b)
        with self._on(B, CAROL.address):
            b.token.approve(b.bridge.address, carol_allow)
        with self._on(C, c.owner):
            c.bridge.set_peer(A, a.bridge.address, MAX_TRANSFER)
            c.token.mint(c.bridge.address, C_POOL)
        if listed:
            for x in (A, B):
                with self._on(x, self.ch[x].owner):
                    self.ch[x].inbox.set_value_sender(other(x), STRANGER.address, *STRANGER_LIMITS)
                self._set_value_sender((x, other(x), STRANGER.address), *STRANGER_LIMITS)
        self.bal[B, CAROL.address] += carol_b
        self.start[CAROL.address] += carol_b
        self.allow[B, CAROL.address] = carol_allow
        self.held[C] += C_POOL
        if seed:
            rec = self._send(B, ALICE.address, BOB.address, seed)
            assert self._deliver(rec, A) is None
            if rec.status == "queued":
                self._travel(A, DELAY)
                assert self._execute(rec) is None

    # ------------------------------------------------------------ users

    @rule(who=SENDERS, to=TO, amount=AMOUNTS)
    def send_b_to_a(self, who, to, amount):
        self._send(B, who, to, amount)

    @rule(who=SENDERS, to=TO, amount=AMOUNTS)
    def send_a_to_b(self, who, to, amount):
        self._send(A, who, to, amount)

    @rule(src=st.sampled_from([B, A, A]), who=st.one_of(SENDERS, st.just("richest")), to=TO,
          amount=st.one_of(st.integers(LARGE + 1, MAX_TRANSFER), st.integers(LARGE + 1, MAX_TRANSFER),
                           st.integers(1, LARGE), st.just("most"), st.just("most")),
          then=st.sampled_from(["wait", "cancel", "cancel", "execute"]))
    def send_and_relay(self, src, who, to, amount, then):
        """A send the relayer carries at once; if it is queued, the guardian may cancel it or
        the relayer execute it after the delay. Transfers reach the queue, large sums reach
        chain A, and bounces the road back, more often than by steps drawn apart ("richest":
        whoever holds the most on the source; "most": all of it, up to the max transfer)."""
        if who == "richest":
            who = max(USERS, key=lambda u: self.bal[src, u])
        if amount == "most":
            amount = min(self.bal[src, who], MAX_TRANSFER)
        rec = self._send(src, who, to, amount)
        if rec is None or self._deliver(rec, rec.dst) is not None or rec.status != "queued":
            return
        if then == "cancel":
            self._cancel(rec, "guardian")
        elif then == "execute":
            self._travel(rec.dst, rec.release_at - self.now(rec.dst))
            self._execute(rec)

    def _send(self, src: int, who: str, to: str, amount) -> Sent | None:
        dst = other(src)
        s, d = self.ch[src], self.ch[dst]
        to = d.bridge.address if to == "bridge" else to
        have, allowed = self.bal[src, who], self.allow[src, who]
        amount = {"all": have, "all+1": have + 1}.get(amount, amount)
        reason = None
        if self.bridge_paused[src]:
            reason = "paused"
        elif to == d.bridge.address:
            reason = "to is the bridge"
        elif amount == 0:
            reason = "zero amount"
        elif amount > MAX_TRANSFER:
            reason = "over max transfer"
        elif src == A and amount > self.supply_a:   # backing[B]: all of A's supply came from B
            reason = "over bridged supply"
        elif allowed < amount:
            reason = "erc20: insufficient allowance"
        elif have < amount:
            reason = ("erc20: burn amount exceeds balance" if src == A
                      else "erc20: transfer amount exceeds balance")
        mid = self._expect(f"send {'A->B' if src == A else 'B->A'}", reason, who, src,
                           s.bridge.send, dst, to, amount)
        if reason:
            return None
        payload = pb.transfer_payload(to, who)
        m = pb.Message(src, s.outbox.address, s.bridge.address, self.count[src], dst,
                       d.bridge.address, pb.KIND_TRANSFER, amount, pb.payload_hash(payload))
        self._emitted(s.bridge, m, payload)
        assert bytes(mid) == m.id
        self.count[src] += 1
        self.bal[src, who] -= amount
        if allowed != MAXU:
            self.allow[src, who] -= amount
        if src == A:
            self.supply_a -= amount
        else:
            self.held[B] += amount
        self.totals[src][0] += amount
        if to != who and to in self.sent_to:
            self.sent_to[to] += amount
        rec = Sent(m, payload, "transfer", user=who, to=to)
        self.msgs.append(rec)
        return rec

    @rule(who=st.sampled_from([BOB.address, CAROL.address, STRANGER.address]),
          chain=st.sampled_from([A, B]), amount=st.sampled_from([0, 10 * USD, 5_000 * USD, MAXU]))
    def approve(self, who, chain, amount):
        x = self.ch[chain]
        with self._on(chain, who):
            x.token.approve(x.bridge.address, amount)
        self.allow[chain, who] = amount

    # ------------------------------------------------------------ the relayer

    @precondition(_has("sent"))
    @rule(pick=PICK, sigs=SIGS, where=st.sampled_from(["dst"] * 5 + ["other", "C"]),
          q=st.integers(0, 9))
    def relay(self, pick, sigs, where, q):
        """Any signature set, to the destination or to a chain that is not it."""
        rec = _pick([r for r in self.msgs if r.status == "sent"], pick)
        self._deliver(rec, {"dst": rec.dst, "other": other(rec.dst), "C": C}[where], sigs, q)

    @precondition(_has("sent"))
    @rule(pick=PICK, q=st.integers(0, 9))
    def relay_well(self, pick, q):
        """What an honest relayer does."""
        rec = _pick([r for r in self.msgs if r.status == "sent"], pick)
        self._deliver(rec, rec.dst, "valid", q)

    @precondition(lambda self: any(r.status != "sent" for r in self.msgs))
    @rule(pick=PICK, q=st.integers(0, 9))
    def relay_again(self, pick, q):
        rec = _pick([r for r in self.msgs if r.status != "sent"], pick)
        self._deliver(rec, rec.dst, "valid", q)

    def _deliver(self, rec: Sent, x: int, kind: str = "valid", q: int = 0) -> str | None:
        inbox = self.ch[x].inbox
        m = rec.m
        if kind == "tampered":   # the relayer changes the amount; the signatures are the original's
            m = dataclasses.replace(m, amount=m.amount ^ 1)
        sigs = self.signatures(PEN, kind, x, rec.m.id, q)
        digest = PEN.attestation_digest(x, inbox.address, m.id, self.epoch[x])
        src = m.source_chain
        if self.inbox_paused.get(x, False):
            reason = "paused"
        elif m.destination_chain != x:
            reason = "wrong chain"
        elif any(r.m.id == m.id and r.status != "sent" for r in self.msgs):
            reason = "already delivered"
        else:
            reason = quorum_refusal([PEN.recover(digest, s) for s in sigs], weights_of(self.epoch[x]))
        key = (x, src, m.sender)
        if reason is None and m.amount > 0:
            if key not in self.bucket or self.bucket[key].capacity == 0:
                reason = "not a value sender"
            else:
                reason = self.bucket[key].refusal(m.amount, self.now(x))
        queued = reason is None and m.amount > self.large.get(key, 0)
        if reason is None and not queued:
            reason = self._recipient_refusal(x, rec, m)
        now = self.now(x)
        done = self._expect(f"deliver {rec.kind} {kind}", reason, RELAYER.address, x,
                            inbox.deliver, m.as_tuple(), rec.payload, sigs)
        if reason:
            return reason
        assert done is (not queued)
        assert m is rec.m, "a tampered message was delivered"
        self._record_events(x, inbox)
        if m.amount > 0:
            self.bucket[key] = self.bucket[key].take(m.amount, now)
        if queued:
            rec.status, rec.release_at = "queued", now + DELAY
        else:
            self._land(x, rec)
        return None

    def _pick_queued(self, pick: int, which: str) -> Sent:
        """A queued transfer (if any: what guardians and executors care about), any queued
        message, or any message at all."""
        queued = [r for r in self.msgs if r.status == "queued"]
        transfers = [r for r in queued if r.kind == "transfer"]
        return _pick({"transfer": transfers or queued, "queued": queued, "any": self.msgs}[which], pick)

    @precondition(_has("queued"))
    @rule(pick=PICK, which=QUEUED)
    def execute(self, pick, which):
        self._execute(self._pick_queued(pick, which))

    @precondition(_has("queued"))
    @rule(pick=PICK, by=st.sampled_from(["guardian", "guardian", "owner", "stranger"]), which=QUEUED)
    def cancel(self, pick, by, which):
        self._cancel(self._pick_queued(pick, which), by)

    # ------------------------------------------------------------ time, guardians, committee

    @rule(seconds=JUMPS, which=st.sampled_from(["all", "all", A, B]), offset=st.sampled_from([-1, 0, 0, 1]))
    def time_passes(self, seconds, which, offset):
        """Clocks move on (all chains or one). "edge": each chain whose bucket is not full yet
        jumps to the second where the inbox's refill arithmetic switches to "full" (+-1)."""
        for x in (A, B, C) if which == "all" or seconds == "edge" else (which,):
            jump = seconds
            if seconds == "edge":
                b = self.bucket[self.tb_key(x, other(x))]
                jump = b.updated_at + (b.capacity - b.tokens) // b.refill_per_s + offset - self.now(x)
                OUTCOMES[f"edge jump {offset}: {'ahead' if jump > 0 else 'passed'}"] += 1
            self._travel(x, jump)

    @rule(chain=st.sampled_from([A, B]), refill=st.sampled_from([1, REFILL, 50 * REFILL]),
          large=st.sampled_from([0, LARGE, LARGE, CAPACITY]),
          by=st.sampled_from(["owner", "owner", "guardian"]),
          sender=st.sampled_from(["peer", "peer", "stranger"]),
          capacity=st.sampled_from([0, LARGE, CAPACITY]))
    def owner_sets_limits(self, chain, refill, large, by, sender, capacity):
        """The owner sets the limits of a value sender of the other chain: the peer TokenBridge
        (another refill rate and large threshold; its capacity stays at the routes' max
        transfer: below it, a transfer already sent could never be delivered), or the stranger
        (listed anew with a full bucket, updated, or unlisted with capacity 0). An update keeps
        what is left in the bucket, refilled to now at the old rate."""
        x, src = self.ch[chain], other(chain)
        who = x.owner if by == "owner" else x.guardian
        reason = None if by == "owner" else "not owner"
        address = self.ch[src].bridge.address if sender == "peer" else STRANGER.address
        capacity = CAPACITY if sender == "peer" else capacity
        self._expect(f"set_value_sender {sender}", reason, who, chain, x.inbox.set_value_sender,
                     src, address, capacity, refill, large)
        if reason is None:
            self._set_value_sender((chain, src, address), capacity, refill, large)

    @rule(target_=st.sampled_from(["inbox", "bridge"]), chain=st.sampled_from([A, B]),
          action=st.sampled_from(["pause", "unpause", "unpause"]),
          by=st.sampled_from(["guardian", "owner", "stranger"]))
    def pause_or_unpause(self, target_, chain, action, by):
        x = self.ch[chain]
        who = {"guardian": x.guardian, "owner": x.owner, "stranger": STRANGER.address}[by]
        if action == "pause":
            reason = None if by != "stranger" else "not guardian"
        else:
            reason = None if by == "owner" else "not owner"
        contract = x.inbox if target_ == "inbox" else x.bridge
        self._expect(f"{action} {target_}", reason, who, chain, getattr(contract, action))
        if reason is None:
            flags = self.inbox_paused if target_ == "inbox" else self.bridge_paused
            flags[chain] = action == "pause"

    @rule(chain=st.sampled_from([A, B]), q=st.integers(0, 9),
          variant=st.sampled_from(["valid", "valid", "wrong epoch", "retired", "below", "other inbox"]))
    def rotate(self, chain, variant, q):
        """The current committee hands over to the next (epochs alternate between the two
        test committees); or a rotation for the wrong epoch, signed by the retired committee,
        below the threshold, or signed for the other chain's inbox."""
        x = self.ch[chain]
        e = self.epoch[chain]
        new = e + 2 if variant == "wrong epoch" else e + 1
        members, weights = committee(new)
        digest = PEN.rotation_digest(chain, x.inbox.address, new)
        signers = {"retired": QUORUMS[(e + 1) % 2], "below": BELOW[e % 2]}.get(variant, QUORUMS[e % 2])
        signed = digest if variant != "other inbox" else PEN.rotation_digest(
            other(chain), self.ch[other(chain)].inbox.address, new)
        sigs = PEN.sign_sorted(signers[q % len(signers)], signed)
        if variant == "wrong epoch":
            reason = "wrong epoch"
        else:
            reason = quorum_refusal([PEN.recover(digest, s) for s in sigs], weights_of(e))
        self._expect(f"rotate {variant}", reason, RELAYER.address, chain, x.inbox.rotate, new,
                     [m.address for m in members], weights, sigs)
        if reason is None:
            self.epoch[chain] = new

    # ------------------------------------------------------------ a stranger

    @rule(chain=st.sampled_from([A, B]), by=st.sampled_from(["owner", "owner", "guardian", "stranger"]))
    def recover_too_early(self, chain, by):
        """Anyone but the owner, or the owner while the committee still rotates within
        STALL_PERIOD: refused, nothing changes. (Once stalled, the owner's recovery is the way
        out below, not a step here: it retires the other test committee for good.)"""
        x = self.ch[chain]
        if by == "owner" and self.now(chain) >= x.inbox.rotated_at() + x.inbox.STALL_PERIOD():
            return
        who = {"owner": x.owner, "guardian": x.guardian, "stranger": STRANGER.address}[by]
        members, weights = committee(self.epoch[chain] + 1)
        self._expect(f"recover by {by}", "committee not stalled" if by == "owner" else "not owner",
                     who, chain, x.inbox.recover_committee, self.epoch[chain] + 1,
                     [m.address for m in members], weights, [])

    @rule(via=st.sampled_from([A, B]), kind=st.sampled_from([1, 2, 2, 7, "direct"]), pick=PICK,
          amount=st.sampled_from([0, 1, LARGE, LARGE + 1, CAPACITY, CAPACITY + 1, MAXU]),
          to=st.sampled_from(["bridge", "bridge", "eoa"]))
    def junk(self, via, kind, amount, to, pick):
        """Anything an ordinary account can emit: a value claim, a forged bounce of a real open
        transfer (the id and amount a genuine bounce would carry), a message to an EOA; or a
        call straight to a TokenBridge's receiver functions. None may move a token."""
        src, dst = via, other(via)
        s, d = self.ch[src], self.ch[dst]
        if kind == "direct":
            fn = s.bridge.on_bridge_cancelled if to == "eoa" else s.bridge.on_bridge_message
            self._expect("direct call", "only inbox", STRANGER.address, src, fn, dst,
                         self.peer[src, dst], pb.KIND_TRANSFER, C_POOL,
                         pb.transfer_payload(STRANGER.address, STRANGER.address), b"\1" * 32)
            return
        if kind == 1:
            payload = pb.transfer_payload(STRANGER.address, STRANGER.address)
        elif kind == 2:
            victim = _pick([r for r in self.msgs if r.kind == "transfer" and r.src == dst
                            and r.in_flight()], pick)
            payload = pb.bounce_payload(victim.m.id if victim else b"\7" * 32)
            amount = victim.amount if victim else amount
        else:
            payload = b"junk"
        recipient = d.bridge.address if to == "bridge" else STRANGER.address
        with self._on(src, STRANGER.address):
            s.outbox.send(dst, recipient, kind, amount, payload)
        m = pb.Message(src, s.outbox.address, STRANGER.address, self.count[src], dst, recipient,
                       kind, amount, pb.payload_hash(payload))
        self._emitted(s.outbox, m, payload)
        self.count[src] += 1
        self.msgs.append(Sent(m, payload, "junk"))

    # ------------------------------------------------------------ invariants

    @invariant()
    def every_step_checks(self):
        self.books_balance()
        self.delivered_at_most_once_and_only_at_its_destination()
        self.dirty = set()

    def books_balance(self):
        obs, exp = self.observe(), self.expected()
        diff = {k: (obs[k], exp[k]) for k in obs if obs[k] != exp[k]}
        assert not diff, f"chain state differs from the model (observed, expected): {diff}"
        # conservation: the real balance and supply, the model's in flight, each side's books
        ta, tb = obs[A, "totals"], obs[B, "totals"]
        held, supply = obs["held", B], obs["supply A"]
        assert held == supply + self.in_flight(B) + self.in_flight(A)
        assert held == tb[0] - tb[1] - tb[2]
        assert supply == ta[1] + ta[2] - ta[0]
        assert self.in_flight(B) == tb[0] - ta[1] - tb[2]
        assert self.in_flight(A) == ta[0] - tb[1] - ta[2]
        for x in (A, B):   # cancelled at x, bounce not landed yet: in flight from the other side
            bouncing = sum(r.amount for r in self.msgs if r.kind == "transfer" and r.dst == x
                           and r.in_flight() and r.status == "cancelled")
            assert bouncing == obs[x, "totals"][3] - obs[other(x), "totals"][2]
        assert obs["held", C] == C_POOL
        for u in USERS:    # nobody profits from the bridge
            assert obs[A, u] + obs[B, u] + obs[C, u] <= self.start[u] + self.sent_to[u]

    def delivered_at_most_once_and_only_at_its_destination(self):
        dst = {r.m.id: r.dst for r in self.msgs}
        for mid, chains in self.delivered_events.items():
            assert chains == [dst[mid]], (mid.hex(), chains)
        for rec in self.msgs:   # storage reads are cheap: every message, on each chain touched
            self.check_flags(rec, self.dirty)

    # ------------------------------------------------------------ every wei has a way out

    def _deliver_surely(self, rec: Sent, txs: collections.Counter) -> None:
        """Relay `rec` with a valid quorum, after waiting for the bucket if need be, then
        execute it after its delay if it was queued."""
        x = rec.dst
        bucket = self.bucket[x, rec.src, rec.m.sender]   # the source TokenBridge's
        short = rec.amount - bucket.at(self.now(x)).tokens
        if short > 0:
            self._travel(x, math.ceil(short / bucket.refill_per_s))
        assert self._deliver(rec, x) is None
        txs["relayer"] += 1
        if rec.status == "queued":
            self._travel(x, rec.release_at - self.now(x))
            assert self._execute(rec) is None
            txs["relayer"] += 1

    def _every_wei_has_a_way_out(self) -> None:
        txs: collections.Counter = collections.Counter()
        for x in (A, B):
            for target_, flags in (("inbox", self.inbox_paused), ("bridge", self.bridge_paused)):
                if flags[x]:
                    self.pause_or_unpause(target_, x, "unpause", "owner")
                    txs["owner"] += 1
            if self.keys_lost:   # nobody can sign: after STALL_PERIOD the owner recovers
                inbox, e = self.ch[x].inbox, self.epoch[x]
                self._travel(x, inbox.rotated_at() + inbox.STALL_PERIOD() - self.now(x))
                members, weights = committee(e + 1)
                lost = [m.address for m in committee(e)[0]]
                self._expect("recover after keys lost", None, self.ch[x].owner, x,
                             inbox.recover_committee, e + 1, [m.address for m in members],
                             weights, lost)
                self.epoch[x] = e + 1
                txs["owner"] += 1
        # 1. nothing left in flight, in at most two relayer transactions per message
        owed = [r for r in self.msgs if r.kind != "junk" and r.status in ("sent", "queued")]
        for rec in owed:
            if rec.status == "queued":
                self._travel(rec.dst, rec.release_at - self.now(rec.dst))
                assert self._execute(rec) is None
                txs["relayer"] += 1
            else:
                self._deliver_surely(rec, txs)
        assert txs["relayer"] <= 2 * len(owed)
        assert not any(r.in_flight() for r in self.msgs)
        self.books_balance()
        assert self.held[B] == self.supply_a
        # 2. every user takes all of their A TUSD back to B
        for u in USERS:
            x = self.bal[A, u]
            if x == 0:
                continue
            used = collections.Counter()
            if self.allow[A, u] < x:
                self.approve(u, A, MAXU)
                used["user"] += 1
            while self.bal[A, u]:
                rec = self._send(A, u, u, min(self.bal[A, u], MAX_TRANSFER))
                used["user"] += 1
                self._deliver_surely(rec, used)
            assert used.total() <= 1 + 3 * math.ceil(x / MAX_TRANSFER), used
            OUTCOMES["way out: transactions"] += used.total()
        self.books_balance()
        self.delivered_at_most_once_and_only_at_its_destination()
        assert self.supply_a == 0 and self.held[B] == 0 and self.held[C] == C_POOL
        assert sum(self.bal[x, u] for x in (A, B, C) for u in USERS) == sum(self.start.values())
        for rec in self.msgs:
            self.check_flags(rec, (A, B, C))


def test_conservation_and_a_way_out_under_any_order_of_calls():
    BridgeMachine.world = shared_world()
    BridgeMachine.raw = storage_readers(BridgeMachine.world)
    run_state_machine_as_test(BridgeMachine, settings=settings(
        max_examples=int(os.environ.get("TESSERA_BRIDGE_EXAMPLES", 40)),
        stateful_step_count=int(os.environ.get("TESSERA_BRIDGE_STEPS", 50)),
        deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    print("bridge calls by outcome:", dict(sorted(OUTCOMES.items())))
    assert OUTCOMES["deliver transfer valid: ok"] > 0 and OUTCOMES["way out: transactions"] > 0
    assert OUTCOMES["recover after keys lost: ok"] > 0
