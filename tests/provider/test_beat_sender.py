"""The provider's liveness against hostile validators (issue 15's security review), in process:
local HTTP servers, a fake chain, the real state DB. Seconds, no anvil.

- A validator endpoint that drips its answer (body or headers) a byte at a time, or never
  answers, holds a round of POSTs no longer than the per-POST deadline or the round's own
  deadline; the honest validator's receipt is kept; the liveness thread goes on.
- With only such validators the on-chain heartbeat fallback goes out by its deadline.
- A challenge naming the node's inclusion in a report, among others (a validator challenging
  its own report from a second address) is answered for the node alone with its stored beat
  signature from the second half of its answer-only epochs (the validators answer first:
  tests/provider/test_inclusion_answer_timing.py) while the beat is not yet shown, after a
  restart too; an unregistered node (index_of reads 0) keeps none. A receipted epoch is not
  settled while its claim window is open, and claimed if its bit is gone at the last check.
- Reorgs: the node signs only a seed `confirmations` blocks deep (a reorg that re-mines the
  open changes the seed), and falls back to the heartbeat at mid-epoch if it never is."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from eth_account import Account
from tests.support.tcp_server import ScriptedTcpServer

from tessera.chain.devnet import liveness_confirmations
from tessera.errors import TxRefused
from tessera.protocol import liveness, messages
from tessera.provider import heartbeats, inclusion_answers
from tessera.provider.beat_sender import MAX_TARGETS, BeatSender
from tessera.provider.config import LivenessSection
from tessera.provider.heartbeats import EpochBeat, Heartbeats
from tessera.provider.metrics import ProviderMetrics
from tessera.provider.state import ProviderState

CHAIN_ID, UPTIME = 31337, "0x" + "11" * 20
SEED = b"\x22" * 32
EPOCH_LENGTH = 60
TX = {"transactionHash": b"\x01" * 32, "gasUsed": 50_000}


class SlowServer(ScriptedTcpServer):
    """A TCP server answering every connection the way `mode` says: 'body' (headers, then one
    byte of body every `pace` s), 'headers' (one byte of the status line and headers every
    `pace` s) or 'silent' (reads the request, says nothing)."""

    def __init__(self, mode: str, pace: float = 0.1):
        self.mode, self.pace = mode, pace
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        status = b"HTTP/1.1 200 OK\r\nX-Slow: "
        with conn:
            try:
                conn.settimeout(0.5)
                conn.recv(65536)
                if self.mode == "body":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                for i in range(100_000 if self.mode != "silent" else 0):
                    if self.stop.wait(self.pace):
                        return
                    conn.sendall(b" " if self.mode == "body" else status[i:i + 1] or b"a")
                self.stop.wait(30)
            except OSError:
                return


class HonestValidator:
    """A validator's /liveness/beat that receipts any beat at once."""

    def __init__(self):
        self.account = Account.create()
        account = self.account

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):   # noqa: N802 (http.server's name)
                beat = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                signature = liveness.sign_receipt(account, CHAIN_ID, UPTIME, beat["provider"],
                                                  beat["epoch"])
                body = json.dumps({"provider": beat["provider"], "validator": account.address,
                                   "epoch": beat["epoch"], "signature": signature}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeUptime:
    address = UPTIME

    def __init__(self):
        self.sent: list[tuple] = []     # (what, args...) of each transaction
        self.live = 0                   # live_word(epoch, 0) for every epoch
        self.proven = 0                 # proven_word(epoch, 0) for every epoch
        self.refuse: str | None = None  # answer_challenge reverts with this reason
        self.challenged = 0             # challenged_word(every validator, epoch, 1)

    def genesis(self): return 0
    def epoch_length(self): return EPOCH_LENGTH
    def liveness_rules(self): return 1, 1
    def seed(self, epoch, block_identifier="latest"): return SEED
    def beats(self, provider, epoch): return False
    def live_word(self, epoch, index): return self.live
    def report_hash(self, validator, epoch): return b"\x01" * 32
    def challenge(self, challenge_id): return {"state": 1}   # open
    def proven_word(self, epoch, index): return self.proven
    def challenged_word(self, validator, epoch, index): return self.challenged if index else 0

    def heartbeat(self, epoch, number, block_hash):
        self.sent.append(("heartbeat", epoch))
        return TX

    def claim_beat(self, epoch, validator, receipt_signature, beat_signature):
        self.sent.append(("claim_beat", epoch, validator))
        return TX

    def answer_challenge(self, challenge_id, providers, beat_signatures):
        if self.refuse:
            raise TxRefused(f"answer_challenge reverted: {self.refuse}")
        self.sent.append(("answer_challenge", challenge_id, providers, beat_signatures))
        return TX


class Log:
    def __init__(self):
        self.lines: list[dict] = []

    def __call__(self, event, level="info", **fields):
        self.lines.append({"event": event, "level": level, **fields})

    def named(self, event):
        return [line for line in self.lines if line["event"] == event]


def node_context(tmp_path, validators, account=None, **liveness_settings):
    pairs = list(validators)
    account = account or Account.create()
    return SimpleNamespace(
        config=SimpleNamespace(liveness=LivenessSection(**liveness_settings)), log=Log(),
        account=account, address=account.address, uptime=FakeUptime(),
        chain=SimpleNamespace(network=SimpleNamespace(chain_id=CHAIN_ID)),
        state=ProviderState(tmp_path / "provider.db"), metrics=ProviderMetrics(),
        validators=SimpleNamespace(count=lambda: len(pairs),
                                   active_with_endpoints=lambda: list(pairs)))


@pytest.fixture
def hostile():
    """Validators whose endpoints drip their body, drip their headers, or never answer."""
    servers = [SlowServer("body"), SlowServer("headers"), SlowServer("silent")]
    yield [(Account.create().address, s.url) for s in servers], servers
    for server in servers:
        server.close()


@pytest.fixture
def honest():
    validator = HonestValidator()
    yield validator
    validator.close()


def test_a_round_of_posts_ends_by_its_deadline_and_keeps_the_honest_receipt(tmp_path, hostile,
                                                                            honest):
    bad, servers = hostile
    # each server sends a byte every 0.1 s: a per-read timeout (1.5 s here) never fires
    ctx = node_context(tmp_path, [*bad, (honest.account.address, honest.url)], timeout_s=1.5)
    sender = BeatSender(ctx)
    try:
        cur = EpochBeat(epoch=5, noticed=time.monotonic(), open_at=0.0)
        cur.signature = liveness.sign_beat(ctx.account, CHAIN_ID, UPTIME, 5, SEED)
        cur.validators = sender.targets()
        started = time.monotonic()
        sender.post(cur, until=started + 0.3)            # the round's deadline comes first
        assert time.monotonic() - started < 1.0
        assert cur.receipts.keys() == {honest.account.address}
        assert ctx.state.receipts(5) == cur.receipts

        sender.post(cur, until=started + 10)             # then each POST's own (1.5 s)
        took = time.monotonic() - started
        # the dripping servers would hold it up to the round's 10 s: 1.5 s plus scheduling slack
        # (the suite runs two workers on two cores) shows the per-POST deadline cut them off
        assert 1.5 <= took < 3.5, took
        assert [s.connections for s in servers] == [1, 1, 1]   # not asked again while in flight
        reasons = {line["endpoint"]: line["reason"] for line in ctx.log.named("beat-not-receipted")}
        assert reasons == {s.url: "no whole answer within 1.5 s" for s in servers}
    finally:
        sender.close()


def test_targets_are_capped_and_start_with_the_validators_that_receipted(tmp_path):
    many = [(Account.create().address, f"http://127.0.0.1:{i}") for i in range(3 * MAX_TARGETS)]
    sender = BeatSender(node_context(tmp_path, many))
    sender._trusted = {many[7][0], many[100][0]}
    targets = sender.targets()
    assert len(targets) == MAX_TARGETS and len(set(targets)) == MAX_TARGETS
    assert {v for v, _ in targets[:2]} == {many[7][0], many[100][0]}
    assert sender.targets() != targets                # a new random sample each epoch


def test_the_heartbeat_fallback_goes_out_by_its_deadline_whatever_the_validators_do(tmp_path,
                                                                                   hostile):
    bad, _ = hostile
    # each POST may take 5 s, but the fallback deadline is 1.5 s: the round ends at 1.5 s
    ctx = node_context(tmp_path, bad, timeout_s=5.0, deadline_s=1.5)
    beats = Heartbeats(ctx)
    head = {"number": 10, "timestamp": 5 * EPOCH_LENGTH + 1, "parentHash": b"\x00" * 32}
    try:
        beats.on_opened(5, SEED)
        started = time.monotonic()
        while not (beats._current and beats._current.done) and time.monotonic() - started < 5:
            beats.step(head)
            time.sleep(0.05)
        took = time.monotonic() - started
    finally:
        beats.close()
    assert beats._current.done == "heartbeat" and ctx.uptime.sent == [("heartbeat", 5)]
    assert took < 2.5, took
    assert "no validator receipted the beat within 1.5 s" in ctx.log.named("heartbeat")[0]["reason"]
    assert ctx.state.beat(5)[0]   # the signature is kept: a report may name the node anyway


INDEX = 300   # this node's registry index in these tests: word 1, bit 44


def at(second: int) -> dict:
    """A head whose timestamp is `second` (FakeUptime's genesis is 0)."""
    return {"number": second, "timestamp": second, "parentHash": b"\0" * 32}


def node_beats(ctx) -> Heartbeats:
    """A node's liveness whose answers judge chain time by the heads they are given (no wall
    clock: FakeUptime's epochs are near 1970), registry index INDEX."""
    beats = Heartbeats(ctx)
    beats.answers.index = INDEX
    beats.answers.wall = lambda: 0.0
    return beats


def challenged(challenge_id, indices, epoch, answer_by, validator="0x" + "33" * 20):
    """An InclusionsChallenged naming these registry indices (in a registry of 600)."""
    named = liveness.words_of(indices, 600)
    return {"challenge_id": challenge_id, "validator": validator, "epoch": epoch,
            "challenger": "0x" + "44" * 20, "named_count": len(indices), "bond": 10**18,
            "answer_by_epoch": answer_by, "named": named}


def test_a_challenge_naming_us_among_others_is_answered_for_us_alone(tmp_path):
    """One challenge names any set of a report's providers (the `named` bitmap): the node keeps
    those whose bitmap holds its registry index and answers each with its own beat alone,
    unless its beat was already shown (by the validator, or on another challenge), or is
    shown while its answer is on its way (the chain refuses it: "shown already").

    Adversary: a challenger hiding the node among many others (a bitmap spanning several
    words; index 0, which an unregistered address reads as) must still be answered; one that
    names the node's neighbours but not the node must not cost it a transaction."""
    ctx = node_context(tmp_path, [])
    signature = liveness.sign_beat(ctx.account, CHAIN_ID, UPTIME, 7, SEED)
    ctx.state.save_beat(7, signature)
    ctx.state.set_beat(7, how="receipts", settled="named")   # as a node before the fix had it
    beats = node_beats(ctx)
    beats.on_challenged(challenged(3, [0, 5, INDEX, 599], 7, answer_by=10))   # us among others
    beats.on_challenged(challenged(4, [0, INDEX - 1, INDEX + 1, 556], 7, answer_by=10))  # not us
    beats.on_challenged(challenged(5, [INDEX], 8, answer_by=11))       # no beat that epoch
    beats.on_challenged(challenged(6, [1, INDEX], 6, answer_by=8))     # window over
    assert [c[0] for c in ctx.state.open_challenges()] == [3, 5, 6]

    # a restart before the answer: the challenges were kept
    ctx.state.close()
    ctx = node_context(tmp_path, [], account=ctx.account)
    beats = node_beats(ctx)
    moment = liveness.provider_answer_from(7, 1, 1, 0, EPOCH_LENGTH)   # mid-epoch 10
    beats.answers.answer(10, at(moment))
    assert ctx.uptime.sent == [("answer_challenge", 3, [ctx.address],
                                [bytes.fromhex(signature[2:])])]
    assert [ctx.state.challenge_outcome(c) for c in (3, 4, 5, 6)] == \
        ["answered", None, "no-beat", "too-late"]
    beats.answers.answer(10, at(moment))
    assert len(ctx.uptime.sent) == 1 and not ctx.state.open_challenges()

    # our beat already shown (the validator's batch came first): no transaction
    beats.on_challenged(challenged(8, [2, INDEX], 7, answer_by=10))
    ctx.uptime.proven = 1 << (INDEX - 256)
    beats.answers.answer(10, at(moment))
    assert len(ctx.uptime.sent) == 1
    assert ctx.state.challenge_outcome(8) == "answered-by-another"

    # shown by someone between our read and our send: the chain skips it and refuses the call
    # (no fee, nothing else to do), never tried again
    ctx.uptime.proven = 0
    ctx.uptime.refuse = "uptime: every beat given was shown already"
    beats.on_challenged(challenged(9, [INDEX], 7, answer_by=10))
    beats.answers.answer(10, at(moment))
    assert ctx.state.challenge_outcome(9) == "answered-by-another"
    assert not ctx.state.open_challenges() and len(ctx.uptime.sent) == 1


def test_an_unregistered_node_keeps_no_challenge(tmp_path, monkeypatch):
    """index_of reads 0 for an address never registered: without the is_registered check the
    node would take a challenge naming registry index 0 (another provider) for its own."""
    registry = SimpleNamespace(is_registered=lambda address, block="latest": False,
                               index_of=lambda address, block="latest": 0)
    monkeypatch.setattr(inclusion_answers, "ProviderRegistry", lambda chain: registry)
    ctx = node_context(tmp_path, [])
    beats = Heartbeats(ctx)
    assert not beats.answers.on_challenged(challenged(1, [0], 7, answer_by=10))
    assert beats.answers.registry_index() is None and not ctx.state.open_challenges()


def test_the_node_reads_its_index_as_deep_as_the_validators(tmp_path, monkeypatch):
    """Review 3 (finding 4, the provider's side): the node's registry index is read
    `confirmations` blocks below the head, as the validators read theirs, so a reorg that
    re-orders two registrations cannot leave the node answering for another's bit; not
    registered that deep yet: no index (it answers nothing, and nothing names it yet)."""
    reads = []

    def is_registered(address, block="latest"):
        reads.append(block)
        return block != 99

    registry = SimpleNamespace(is_registered=is_registered,
                               index_of=lambda address, block="latest": reads.append(block) or 4)
    monkeypatch.setattr(inclusion_answers, "ProviderRegistry", lambda chain: registry)
    monkeypatch.setattr(inclusion_answers, "liveness_confirmations", lambda network, n: 12)
    ctx = node_context(tmp_path, [])
    answers = Heartbeats(ctx).answers
    ctx.chain.block_number = lambda: 111          # 12 below: 99, where it is not registered
    assert answers.registry_index() is None and reads == [99]
    ctx.chain.block_number = lambda: 112
    assert answers.registry_index() == 4 and reads[1:] == [100, 100]


def test_a_receipted_epoch_is_not_settled_while_its_claim_window_is_open(tmp_path):
    ctx = node_context(tmp_path, [])
    ctx.state.save_beat(5, liveness.sign_beat(ctx.account, CHAIN_ID, UPTIME, 5, SEED))
    ctx.state.set_beat(5, how="receipts")
    ctx.state.add_receipt(5, "0x" + "33" * 20, "0x" + "ab" * 65)
    beats = Heartbeats(ctx)
    beats.answers.index = 0
    ctx.uptime.live = 1                          # a report names the node
    beats._check(5, current=6, last=False)
    assert ctx.state.unsettled_beats() == [5]    # named, but a challenge may still come
    ctx.uptime.live = 0                          # challenged: the bit is gone until answered
    beats._claims(7)                             # the last epoch a claim is accepted in
    assert ctx.uptime.sent == [("claim_beat", 5, "0x" + "33" * 20)]
    assert ctx.state.beat(5)[2] == "claimed"

    ctx.state.set_beat(6, how="receipts")
    ctx.uptime.live = 1
    beats._claims(8)                             # epoch 6's last claim epoch: named, kept open
    assert ctx.state.unsettled_beats() == [6]
    beats._claims(9)                             # its claim window is over
    assert ctx.state.beat(6)[2] == "named" and len(ctx.uptime.sent) == 1


class ReorgUptime(FakeUptime):
    """An Uptime whose epoch-5 seed was set in block `opened_in` (zero before it)."""

    def __init__(self, seed: bytes, opened_in: int):
        super().__init__()
        self.value, self.opened_in, self.reads = seed, opened_in, []

    def seed(self, epoch, block_identifier="latest"):
        self.reads.append(block_identifier)
        if block_identifier == "latest" or block_identifier >= self.opened_in:
            return self.value
        return bytes(32)


def head_at(number: int, second: int) -> dict:
    return {"number": number, "timestamp": 5 * EPOCH_LENGTH + second, "parentHash": b"\0" * 32}


def test_the_node_signs_only_a_seed_confirmations_deep_the_one_a_reorg_left(tmp_path, honest):
    """Adversary (or bad luck): a reorg re-mines open_epoch in another block, so the seed the
    node learnt from the first EpochOpened is gone; a beat over it could answer no challenge
    and be claimed nowhere. The node reads the seed `confirmations` blocks below the head (once
    per head) and signs only that one."""
    ctx = node_context(tmp_path, [(honest.account.address, honest.url)], confirmations=3)
    ctx.uptime = ReorgUptime(b"\x01" * 32, opened_in=10)
    beats = Heartbeats(ctx)
    try:
        beats.on_opened(5, b"\x01" * 32)                        # the first open, block 10
        beats.step(head_at(10, 1))
        beats.step(head_at(10, 1))
        assert ctx.uptime.reads == [7] and beats._current.signature is None
        ctx.uptime.value, ctx.uptime.opened_in = SEED, 11        # the reorg: opened in 11
        for number in (12, 13):
            beats.step(head_at(number, 2))
        assert beats._current.signature is None                 # 11 is not 3 deep yet
        beats.step(head_at(14, 3))
        assert beats._current.done == "receipts" and ctx.uptime.sent == []
    finally:
        beats.close()
    typed = liveness.beat_typed_data(CHAIN_ID, UPTIME, ctx.address, 5, SEED)
    assert messages.recover(typed, ctx.state.beat(5)[0]) == ctx.address


def test_a_seed_never_deep_enough_falls_back_to_the_heartbeat_at_mid_epoch(tmp_path, honest,
                                                                           monkeypatch):
    """Waiting for confirmations must not cost the epoch: with the seed never deep (reorgs
    keep moving it, or blocks are slow), the node waits while half the epoch's chain time is
    left, then sends the on-chain heartbeat."""
    monkeypatch.setattr(heartbeats, "OPEN_WAIT_S", (0.0, 0.0))
    ctx = node_context(tmp_path, [(honest.account.address, honest.url)], confirmations=3,
                       deadline_s=0.01)
    ctx.uptime = ReorgUptime(SEED, opened_in=10**9)
    beats = Heartbeats(ctx)
    try:
        beats.step(head_at(20, 1))
        time.sleep(0.05)                                        # past open_at + deadline_s
        beats.step(head_at(21, EPOCH_LENGTH // 2 - 1))
        assert ctx.uptime.sent == []                            # half the epoch is left
        beats.step(head_at(22, EPOCH_LENGTH // 2))
        assert ctx.uptime.sent == [("heartbeat", 5)]
        assert "not set 3 blocks deep" in ctx.log.named("heartbeat")[0]["reason"]
    finally:
        beats.close()


def test_confirmations_default_to_zero_on_the_devnet_only():
    """0 only where anvil mines a block per transaction and never reorgs (waiting there would
    stall a quiet devnet); elsewhere protocol.liveness.CONFIRMATIONS unless configured."""
    devnet, public = SimpleNamespace(chain_id=31337), SimpleNamespace(chain_id=8453)
    assert liveness_confirmations(devnet, None) == 0
    assert liveness_confirmations(public, None) == liveness.CONFIRMATIONS > 0
    assert liveness_confirmations(public, 0) == 0 and liveness_confirmations(devnet, 5) == 5
    with pytest.raises(ValueError):
        LivenessSection(confirmations=-1)
