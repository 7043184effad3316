"""The model, the relayer's pen and the storage readers of test_bridge_properties.py.

- `Pen` signs (and recovers) attestations and rotations, caching both: the pure-Python
  secp256k1 backend takes milliseconds per operation and a run signs the same ids many times.
- `quorum_refusal` names the revert reason BridgeInbox gives for a list of recovered signers,
  in the contract's order (ascending, member, weight); `protocol.bridge.quorum_reached`
  decides pass or fail, and the two must agree.
- `Slots` reads a contract's storage by the names in its compiler layout (microseconds, where
  a view call costs about a millisecond): the invariants read every balance, total, flag and
  bucket after every step.
- `Sent` is one message an outbox emitted, with what the model knows of its fate.
- `BridgeModel` is the state machine's model of the three chains and its observation of them:
  what it expects, what it reads, and how a call is checked against the expected outcome.
"""

from __future__ import annotations

import collections
import itertools
from contextlib import ExitStack
from dataclasses import dataclass, field

from boa import BoaError
from boa.contracts.vyper.vyper_contract import check_boa_error_matches
from bridge_support import (
    ALICE,
    BOB,
    CHAIN_A,
    CHAIN_B,
    CHAIN_C,
    COMMITTEE,
    NEXT_COMMITTEE,
    NEXT_WEIGHTS,
    THRESHOLD,
    USD,
    WEIGHTS,
    isolated,
    sent_messages,
)
from contracts_support import key_account
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from tessera.protocol import bridge as pb

A, B, C = CHAIN_A, CHAIN_B, CHAIN_C
CAROL = key_account(3)          # a user with a limited allowance on B
STRANGER = key_account(250)     # no tokens, no allowance: sends junk, calls what it may not
RELAYER = key_account(260)
EX_MEMBER = key_account(251)    # never in any committee
USERS = [ALICE.address, BOB.address, CAROL.address, STRANGER.address]
MAXU = 2**256 - 1
C_POOL = 50_000 * USD           # what C's TokenBridge holds: a message for B must never take it
OUTCOMES: collections.Counter = collections.Counter()   # what the calls met, for the report


def committee(epoch: int) -> tuple[list[LocalAccount], list[int]]:
    """Epochs alternate between the two test committees (rotation 0 -> 1 -> 2 ...)."""
    return (list(COMMITTEE), list(WEIGHTS)) if epoch % 2 == 0 else (list(NEXT_COMMITTEE),
                                                                    list(NEXT_WEIGHTS))


def _subsets(epoch: int, reached: bool) -> list[list[LocalAccount]]:
    members, weights = committee(epoch)
    by_addr = {m.address: w for m, w in zip(members, weights, strict=True)}
    out = []
    for n in range(1, len(members) + 1):
        for combo in itertools.combinations(members, n):
            if pb.quorum_reached([m.address for m in combo], by_addr, THRESHOLD) == reached:
                out.append(list(combo))
    return out


QUORUMS = {parity: _subsets(parity, True) for parity in (0, 1)}
BELOW = {parity: _subsets(parity, False) for parity in (0, 1)}


def weights_of(epoch: int) -> dict[str, int]:
    members, weights = committee(epoch)
    return {m.address: w for m, w in zip(members, weights, strict=True)}


def quorum_refusal(signers: list[str], weights: dict[str, int]) -> str | None:
    """BridgeInbox._check_quorum's revert reason for these recovered signers, or None."""
    reason = None
    previous = 0
    for signer in signers:
        if int(signer, 16) <= previous:
            reason = "not ascending"
            break
        previous = int(signer, 16)
        if weights.get(signer, 0) == 0:
            reason = "not a member"
            break
    else:
        if not pb.quorum_reached(signers, weights, THRESHOLD):
            reason = "no quorum"
    # the protocol's rule and the named reason agree
    assert (reason is None) == pb.quorum_reached(signers, weights, THRESHOLD)
    return reason


class Pen:
    """Signs what a committee member signs; recovers what the inbox will recover."""

    def __init__(self) -> None:
        self._digests: dict[tuple, bytes] = {}
        self._sigs: dict[tuple, bytes] = {}
        self._recovered: dict[tuple, str] = {}

    def attestation_digest(self, chain_id: int, inbox: str, message_id: bytes, epoch: int) -> bytes:
        key = ("att", chain_id, inbox, bytes(message_id), epoch)
        if key not in self._digests:
            typed = pb.attestation_typed_data(chain_id, inbox, bytes(message_id), epoch)
            self._digests[key] = _hash_eip191_message(encode_typed_data(full_message=typed))
        return self._digests[key]

    def rotation_digest(self, chain_id: int, inbox: str, epoch: int) -> bytes:
        key = ("rot", chain_id, inbox, epoch)
        if key not in self._digests:
            members, weights = committee(epoch)
            typed = pb.rotation_typed_data(chain_id, inbox, epoch, [m.address for m in members],
                                           weights)
            self._digests[key] = _hash_eip191_message(encode_typed_data(full_message=typed))
        return self._digests[key]

    def sign(self, acct: LocalAccount, digest: bytes) -> bytes:
        key = (acct.address, digest)
        if key not in self._sigs:
            self._sigs[key] = bytes(acct.unsafe_sign_hash(digest).signature)
            self._recovered[(digest, self._sigs[key])] = acct.address
        return self._sigs[key]

    def sign_sorted(self, accts: list[LocalAccount], digest: bytes) -> list[bytes]:
        """Signatures ordered by signer, as the inbox requires (protocol.bridge.sort_signatures)."""
        return pb.sort_signatures({a.address: self.sign(a, digest) for a in accts})

    def recover(self, digest: bytes, sig: bytes) -> str:
        key = (digest, sig)
        if key not in self._recovered:
            self._recovered[key] = Account._recover_hash(digest, signature=sig)
        return self._recovered[key]


@dataclass(eq=False)
class Sent:
    """One emitted message. `kind` is the model's: "transfer", "bounce" or "junk"."""
    m: pb.Message
    payload: bytes
    kind: str
    user: str | None = None          # transfer: who sent it (gets the bounce)
    to: str | None = None            # transfer: who receives it
    cancelled: Sent | None = None    # bounce: the transfer it refunds
    status: str = "sent"             # sent | queued | done | cancelled
    release_at: int = 0
    bounce: Sent | None = None       # transfer: the bounce its cancellation emitted
    tags: set = field(default_factory=set)

    @property
    def src(self) -> int:
        return self.m.source_chain

    @property
    def dst(self) -> int:
        return self.m.destination_chain

    @property
    def amount(self) -> int:
        return self.m.amount

    def in_flight(self) -> bool:
        """Value left its source and has not landed: not released at the destination and not
        bounced back (a cancelled transfer stays in flight until its bounce lands)."""
        if self.kind != "transfer":
            return False
        if self.status in ("sent", "queued"):
            return True
        return self.status == "cancelled" and self.bounce is not None and self.bounce.status != "done"


class Slots:
    """A Vyper contract's storage read straight from the chain's state, found by the names in
    the compiler's storage layout: the invariants read every balance, total, flag and bucket
    after every step, and a view call costs about a millisecond where this costs microseconds.
    `Slots.check` compares it with the views once per run."""

    def __init__(self, contract) -> None:
        self.env = contract.env
        self.address = contract.address
        self.layout = contract.compiler_data.storage_layout["storage_layout"]
        self._slots: dict[tuple, int] = {}

    def slot(self, *path: str) -> int:
        if path not in self._slots:
            node = self.layout
            for name in path:
                node = node[name]
            self._slots[path] = node["slot"]
        return self._slots[path]

    def read(self, slot: int) -> int:
        return self.env.evm.get_storage(self.address, slot)

    def var(self, *path: str) -> int:
        return self.read(self.slot(*path))

    def entry(self, key, *path: str, fields: int = 1) -> list[int]:
        """HashMap entry `key` (an address, an int or 32 bytes; a tuple of them for nested
        HashMaps, outermost first): keccak256(slot . key) per level, then `fields` consecutive
        slots for a struct."""
        base = self.slot(*path)
        for k in key if isinstance(key, tuple) else (key,):
            if isinstance(k, str):
                k = bytes.fromhex(k[2:]).rjust(32, b"\0")
            elif isinstance(k, int):
                k = k.to_bytes(32, "big")
            base = int.from_bytes(keccak(base.to_bytes(32, "big") + bytes(k)), "big")
        return [self.read(base + i) for i in range(fields)]

    def mapping(self, key, *path: str) -> int:
        return self.entry(key, *path)[0]


def storage_readers(world) -> dict:
    """chain id => contract name => `Slots`, checked once against the views."""
    raw = {}
    for x, c in ((A, world.a), (B, world.b), (C, world.c)):
        raw[x] = {n: Slots(getattr(c, n)) for n in ("token", "bridge", "inbox", "outbox")}
        for who in (ALICE.address, c.bridge.address):
            assert raw[x]["token"].mapping(who, "erc20", "balanceOf") == c.token.balanceOf(who)
        assert raw[x]["token"].var("erc20", "totalSupply") == c.token.totalSupply()
        src = B if x == A else A
        sender = (world.b if x == A else world.a).bridge.address   # the source's TokenBridge
        assert raw[x]["inbox"].entry((src, sender), "bucket", fields=4) == list(
            c.inbox.bucket(src, sender))
        assert raw[x]["inbox"].var("bridge_committee", "epoch") == c.inbox.epoch()
        assert raw[x]["outbox"].var("count") == c.outbox.count()
        assert raw[x]["bridge"].var("total_sent") == c.bridge.total_sent()
        assert raw[x]["bridge"].mapping(src, "backing") == c.bridge.backing(src)
    return raw


def other(chain: int) -> int:
    return B if chain == A else A


class BridgeModel:
    """What the chains should hold, and how the machine reads and checks them.

    Chain A mints (A's TokenBridge is its TUSD's only minter, so A's supply is what was bridged
    in from B), chain B locks, chain C is B's double (same addresses, trusts A, holds C_POOL)
    where nothing may ever land. Here: the model's state, how a queued message is executed
    or cancelled and what the recipient answers, and the reads; the rules (what happens, in
    which order) and the properties live in the test.
    """

    world = None     # set by the test: bridge_support.shared_world()
    raw: dict = {}   # storage_readers(world)

    def __init__(self):
        super().__init__()
        self._stack = ExitStack()
        self._stack.enter_context(isolated(self.world.envs))   # every run starts from the deployment
        w = self.world
        self.ch = {A: w.a, B: w.b, C: w.c}
        self.bal = {(x, u): self.ch[x].token.balanceOf(u) for x in (A, B, C) for u in USERS}
        self.allow = {(x, u): self.ch[x].token.allowance(u, self.ch[x].bridge.address)
                      for x in (A, B) for u in USERS}
        self.supply_a = w.a.token.totalSupply()
        self.held = {B: w.b.token.balanceOf(w.b.bridge.address),
                     C: w.c.token.balanceOf(w.c.bridge.address)}
        assert self.supply_a == 0 and self.held[B] == 0
        self.totals = {x: [0, 0, 0, 0] for x in (A, B)}     # sent, received, bounced, cancelled
        self.count = {x: self.ch[x].outbox.count() for x in (A, B)}
        self.epoch = {x: 0 for x in (A, B, C)}
        self.inbox_paused = {x: False for x in (A, B)}
        self.bridge_paused = {x: False for x in (A, B)}
        # (inbox's chain, source chain, value sender) => its bucket and large threshold: the
        # source's TokenBridge (listed by bridge_support.connect) and the stranger (not yet)
        keys = [*((x, s, self.ch[s].bridge.address) for x, s in ((A, B), (B, A), (C, A))),
                (A, B, STRANGER.address), (B, A, STRANGER.address)]
        self.bucket = {k: pb.Bucket(*self.ch[k[0]].inbox.bucket(k[1], k[2])) for k in keys}
        self.large = {k: self.ch[k[0]].inbox.large_threshold(k[1], k[2]) for k in keys}
        self.peer = {(A, B): w.b.bridge.address, (B, A): w.a.bridge.address}
        self.msgs: list[Sent] = []
        self.delivered_events: dict[bytes, list[int]] = collections.defaultdict(list)
        # A call on one chain's env cannot change another's: the invariants read again only
        # the chains a step touched (every transaction and time jump goes through _on/_travel).
        self.dirty = {A, B, C}
        self.seen: dict[int, dict] = {}
        self.start = {u: sum(self.bal[x, u] for x in (A, B, C)) for u in USERS}
        self.sent_to = dict.fromkeys(USERS, 0)

    def close(self) -> None:
        self._stack.close()

    # ------------------------------------------------------------ calls

    def now(self, x: int) -> int:
        return self.ch[x].env.timestamp

    def _on(self, x: int, who: str):
        self.dirty.add(x)
        return self.ch[x].prank(who)

    def _travel(self, x: int, seconds: int) -> None:
        self.dirty.add(x)
        if seconds > 0:
            self.ch[x].env.time_travel(seconds=seconds)

    def _expect(self, tag: str, reason: str | None, who: str, chain: int, fn, *args):
        """Call `fn` as `who` on `chain`: it must succeed when `reason` is None, else revert
        with `reason` ("*": any revert). A refusal leaves the model as it was, and the
        invariants compare everything observed with the model after every step: a refused
        call that changed anything observed fails there."""
        OUTCOMES[f"{tag}: {reason or 'ok'}"] += 1
        with self._on(chain, who):
            if reason is None:
                return fn(*args)
            try:
                fn(*args)
            except BoaError as err:
                if reason != "*":
                    try:
                        check_boa_error_matches(err, reason)
                    except ValueError:
                        raise AssertionError(f"{tag}: reverted, but not with {reason!r}: "
                                             f"{err.stack_trace.last_frame}") from err
            else:
                raise AssertionError(f"{tag}: did not revert (the model expected {reason!r})")
        return None

    def _record_events(self, chain: int, contract) -> None:
        for e in contract.get_logs():
            if type(e).__name__ == "MessageDelivered":
                self.delivered_events[bytes(e.message_id)].append(chain)

    def _emitted(self, contract, expected: pb.Message, payload: bytes) -> None:
        """The one MessageSent of `contract`'s last call is the message the model built."""
        [(m, p)] = sent_messages(contract)
        assert m.as_tuple() == expected.as_tuple() and p == payload

    # ------------------------------------------------------------ the model's rules

    def tb_key(self, x: int, src: int) -> tuple[int, int, str]:
        """The bucket key of `src`'s TokenBridge on x's inbox."""
        return x, src, self.ch[src].bridge.address

    def _set_value_sender(self, key: tuple, capacity: int, refill: int, large: int) -> None:
        """BridgeInbox.set_value_sender: a new sender's bucket starts full, an update keeps
        what is left (refilled to now at the old rate) up to the new capacity, 0 unlists."""
        now = self.now(key[0])
        old = self.bucket[key]
        if capacity == 0:
            self.bucket[key], self.large[key] = pb.Bucket(0, 0, 0, 0), 0
            return
        tokens = capacity if old.capacity == 0 else min(old.at(now).tokens, capacity)
        self.bucket[key], self.large[key] = pb.Bucket(capacity, refill, tokens, now), large

    def _credit(self, x: int, who: str, amount: int) -> None:
        self.bal[x, who] += amount
        if x == A:
            self.supply_a += amount
        else:
            self.held[x] -= amount

    def _land(self, x: int, rec: Sent) -> None:
        """`rec` reaches its recipient on x: a transfer pays `to`, a bounce refunds the sender
        of the transfer it cancels."""
        rec.status = "done"
        if rec.kind == "transfer":
            self._credit(x, rec.to, rec.amount)
            self.totals[x][1] += rec.amount
        else:
            assert rec.kind == "bounce"
            self._credit(x, rec.cancelled.user, rec.amount)
            self.totals[x][2] += rec.amount

    def _execute(self, rec: Sent) -> str | None:
        """Anyone executes queued `rec` at its destination; returns the refusal, if any."""
        x = rec.dst
        if self.inbox_paused[x]:
            reason = "paused"
        elif rec.status != "queued":
            reason = "not queued"
        elif self.now(x) < rec.release_at:
            reason = "delayed"
        else:
            reason = self._recipient_refusal(x, rec, rec.m)
        inbox = self.ch[x].inbox
        self._expect(f"execute {rec.kind}", reason, RELAYER.address, x, inbox.execute,
                     rec.m.as_tuple(), rec.payload)
        if reason is None:
            self._record_events(x, inbox)
            self._land(x, rec)
        return reason

    def _cancel(self, rec: Sent, by: str) -> None:
        """The guardian, the owner or a stranger cancels `rec` at its destination: a queued
        transfer from the peer is never delivered, and its bounce is emitted there."""
        x, m = rec.dst, rec.m
        d = self.ch[x]
        who = {"guardian": d.guardian, "owner": d.owner, "stranger": STRANGER.address}[by]
        if by == "stranger":
            reason = "not guardian"
        elif rec.status != "queued":
            reason = "not queued"
        elif m.recipient != d.bridge.address:
            reason = "*"
        elif m.sender != self.peer[x, m.source_chain]:
            reason = "unknown peer"
        elif rec.kind == "bounce":
            reason = "bounce cannot be cancelled"
        else:
            reason = None
        self._expect(f"cancel {rec.kind} at {'A' if x == A else 'B'}", reason, who, x, d.inbox.cancel,
                     m.as_tuple(), rec.payload)
        if reason:
            return
        payload = pb.bounce_payload(m.id)
        bm = pb.Message(x, d.outbox.address, d.bridge.address, self.count[x], m.source_chain,
                        m.sender, pb.KIND_BOUNCE, m.amount, pb.payload_hash(payload))
        self._emitted(d.inbox, bm, payload)
        self.count[x] += 1
        self.totals[x][3] += m.amount
        rec.status = "cancelled"
        rec.bounce = Sent(bm, payload, "bounce", cancelled=rec)
        self.msgs.append(rec.bounce)

    def _recipient_refusal(self, x: int, rec: Sent, m: pb.Message) -> str | None:
        """What the recipient (TokenBridge on x) answers when the inbox calls it."""
        if m.recipient != self.ch[x].bridge.address:
            return "*"                       # an account without code: the extcall reverts
        if m.kind == pb.KIND_BOUNCE:
            return self._bounce_refusal(x, rec, m)
        if m.sender != self.peer.get((x, m.source_chain)):
            return "unknown peer"
        if self.bridge_paused.get(x, False):
            return "paused"
        if rec.kind == "transfer":
            return None
        return "unknown kind"

    def _bounce_refusal(self, x: int, rec: Sent, m: pb.Message) -> str | None:
        """A bounce is judged by the transfer it names (review 29): open (not bounced yet),
        sent from x, and bounced by the peer it was sent to (`origin_peer`: this model never
        re-points a route, so the route's peer), for its chain and amount."""
        if self.bridge_paused.get(x, False):
            return "paused"
        named = rec.payload[:32]
        [t] = [r for r in self.msgs if r.kind == "transfer" and r.m.id == named] or [None]
        if t is None or t.src != x or (t.bounce is not None and t.bounce.status == "done"):
            return "not open"
        if m.sender != self.peer.get((x, t.dst)):
            return "unknown peer"
        if (t.dst, t.amount) != (m.source_chain, m.amount):
            return "bounce mismatch"
        return None

    def in_flight(self, src: int) -> int:
        return sum(r.amount for r in self.msgs if r.src == src and r.in_flight())

    def signatures(self, pen: Pen, kind: str, x: int, mid: bytes, q: int) -> list[bytes]:
        """What a relayer submits to x's inbox for message id `mid`: a valid quorum of the
        current committee, or one of the bad sets; `q` picks among the quorums."""
        inbox, epoch = self.ch[x].inbox.address, self.epoch[x]
        quorum = QUORUMS[epoch % 2][q % len(QUORUMS[epoch % 2])]
        digest = pen.attestation_digest(x, inbox, mid, epoch)
        if kind in ("valid", "tampered"):   # tampered: the message changes, not the signatures
            return pen.sign_sorted(quorum, digest)
        if kind == "below":
            return pen.sign_sorted(BELOW[epoch % 2][q % len(BELOW[epoch % 2])], digest)
        if kind == "duplicate":
            sigs = pen.sign_sorted(quorum, digest)
            return sigs[:q % len(sigs) + 1] + sigs[q % len(sigs):]
        if kind == "unsorted":
            return pen.sign_sorted(quorum, digest)[::-1]
        if kind == "non-member":
            return pen.sign_sorted([*quorum, EX_MEMBER], digest)
        if kind == "retired":
            # the previous epoch's committee (before any rotation: the next one's), signing
            # for its own epoch or for the current one
            old = epoch - 1 if epoch else 1
            accts = QUORUMS[old % 2][q % len(QUORUMS[old % 2])]
            signed = epoch if q % 2 else old
            return pen.sign_sorted(accts, pen.attestation_digest(x, inbox, mid, signed))
        if kind == "other domain":   # the same inbox address on another chain (B and C)
            return pen.sign_sorted(quorum, pen.attestation_digest(C if x != C else B, inbox, mid, epoch))
        assert kind == "empty"
        return []

    # ------------------------------------------------------------ observation

    def _observe_chain(self, x: int) -> dict:
        """Everything the model predicts on chain x, read from its storage, plus the inbox's
        own `available` view (its refill arithmetic at this second)."""
        c, raw = self.ch[x], self.raw[x]
        obs = {(x, u): raw["token"].mapping(u, "erc20", "balanceOf") for u in USERS}
        if x in (A, B):
            br = raw["bridge"]
            obs[x, "totals"] = [br.var(f"total_{t}") for t in ("sent", "received", "bounced",
                                                                 "cancelled")]
            obs[x, "paused"] = (bool(raw["inbox"].var("paused")), bool(br.var("paused")))
            obs[x, "epoch"] = raw["inbox"].var("bridge_committee", "epoch")
            obs[x, "count"] = raw["outbox"].var("count")
        if x == A:
            obs["supply A"] = raw["token"].var("erc20", "totalSupply")
            obs["backing A<-B"] = raw["bridge"].mapping(B, "backing")
        else:
            obs["held", x] = raw["token"].mapping(c.bridge.address, "erc20", "balanceOf")
        for dst, src, sender in self.bucket:
            if dst == x:
                obs["bucket", x, src, sender] = pb.Bucket(*raw["inbox"].entry(
                    (src, sender), "bucket", fields=4))
                obs["large", x, src, sender] = raw["inbox"].mapping((src, sender), "large_threshold")
                obs["available", x, src, sender] = c.inbox.available(src, sender)
        return obs

    def observe(self) -> dict:
        for x in self.dirty:
            self.seen[x] = self._observe_chain(x)
        return {k: v for x in (A, B, C) for k, v in self.seen[x].items()}

    def expected(self) -> dict:
        exp = {(C, u): self.bal[C, u] for u in USERS}
        for x in (A, B):
            for u in USERS:
                exp[x, u] = self.bal[x, u]
            exp[x, "totals"] = self.totals[x]
            exp[x, "paused"] = (self.inbox_paused[x], self.bridge_paused[x])
            exp[x, "epoch"] = self.epoch[x]
            exp[x, "count"] = self.count[x]
        exp["supply A"] = self.supply_a
        # A's TUSD has no other minter and B is the only route that brings value to A: what
        # A may burn toward B (`backing`) is exactly its supply
        exp["backing A<-B"] = self.supply_a
        for x in (B, C):
            exp["held", x] = self.held[x]
        for (x, s, sender), bucket in self.bucket.items():
            exp["bucket", x, s, sender] = bucket
            exp["large", x, s, sender] = self.large[x, s, sender]
            exp["available", x, s, sender] = bucket.at(self.now(x)).tokens
        return exp

    def check_flags(self, rec: Sent, chains) -> None:
        """delivered / pending / cancelled of `rec` on each of `chains`' inboxes (set only at
        its destination), and its origin record at its source."""
        mid = rec.m.id
        for x in chains:
            inbox = self.raw[x]["inbox"]
            here = x == rec.dst
            flags = (inbox.mapping(mid, "delivered"), inbox.mapping(mid, "pending"),
                     inbox.mapping(mid, "cancelled"))
            assert flags == (here and rec.status != "sent",
                             rec.release_at if here and rec.status == "queued" else 0,
                             here and rec.status == "cancelled"), (rec.kind, rec.status, x, flags)
        if rec.src not in chains:
            return
        origin = tuple(self.raw[rec.src]["bridge"].entry(mid, "origins", fields=4))
        if rec.kind == "transfer":
            still_open = rec.bounce is None or rec.bounce.status != "done"
            assert origin == (int(rec.user, 16), rec.amount, rec.dst, still_open), (rec.status, origin)
        else:
            assert origin == (0, 0, 0, 0), (rec.kind, origin)
