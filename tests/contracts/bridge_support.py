"""Two chains in one test process, for the bridge contract tests (titanoboa).

Each chain is its own `boa.Env()` with its own py-evm state and `evm.patch.chain_id`
(31337 = chain A, the home chain, TokenBridge in mint mode; 31338 = chain B, lock mode;
31339 = chain C, a third chain for replay tests). Contract objects remember their env, so a
call goes to the right chain; `env.prank` (not `boa.env.prank`) picks the caller there.
Nothing in one env can call the other: a `Relayer` copies `MessageSent` events across, signing
with the committee's keys exactly as an attester would (protocol.bridge typed data, signatures
ordered by `protocol.bridge.sort_signatures`).

titanoboa's pytest plugin anchors only the global `boa.env`, so `isolated(world)` anchors each
chain's env around a test (module-scoped deployments, rolled back per test).

Chain C is deployed by the same key, in the same order, as chain B: its contracts have the same
addresses as B's, so only the chain id in the EIP-712 domain and in the message tells them apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import boa
from boa import BoaError
from boa.contracts.vyper.vyper_contract import check_boa_error_matches
from contracts_support import CONTRACTS_DIR, key_account, snekmate_search_root
from eth_account.signers.local import LocalAccount

from tessera.protocol import bridge as pb

CHAIN_A, CHAIN_B, CHAIN_C = 31337, 31338, 31339
USD = 10**6
CAPACITY = 10_000 * USD          # bucket capacity of a value sender (a TokenBridge)
REFILL = 2 * USD                 # per second
LARGE = 1_000 * USD              # above this a transfer waits DELAY seconds
DELAY = 3_600
MAX_TRANSFER = CAPACITY
THRESHOLD = pb.DEFAULT_THRESHOLD_BPS
START_BALANCE = 1_000_000 * USD

# epoch-0 committee (weights 10, 20, 30, 40 in address order: 70 of 100 is a quorum, and
# so is no set of three that leaves out the heaviest two), and a replacement committee
COMMITTEE = sorted((key_account(200 + i) for i in range(4)), key=lambda a: int(a.address, 16))
WEIGHTS = [10, 20, 30, 40]
NEXT_COMMITTEE = sorted((key_account(220 + i) for i in range(3)), key=lambda a: int(a.address, 16))
NEXT_WEIGHTS = [4, 4, 2]
OUTSIDER = key_account(250)
ALICE = key_account(1)   # holds TUSD on chain B
BOB = key_account(2)     # holds TUSD on chain A (after a transfer)

_FACTORIES: dict = {}


def factories() -> dict:
    """Compiled once per test process (about 6 s) and shared by the three bridge test files."""
    if not _FACTORIES:
        boa.interpret.set_search_paths([str(CONTRACTS_DIR), str(snekmate_search_root())])
        for name in ("BridgeOutbox", "BridgeInbox", "TokenBridge", "PaymentToken"):
            _FACTORIES[name] = boa.load_partial(str(CONTRACTS_DIR / f"{name}.vy"))
    return _FACTORIES


def new_env(chain_id: int) -> boa.Env:
    env = boa.Env()
    env.evm.patch.chain_id = chain_id
    return env


@dataclass
class Chain:
    env: boa.Env
    chain_id: int
    owner: str
    guardian: str
    token: object
    outbox: object
    inbox: object
    bridge: object
    mint_mode: bool

    def prank(self, who):
        return self.env.prank(who if isinstance(who, str) else who.address)

    def balance(self, who) -> int:
        return self.token.balanceOf(who if isinstance(who, str) else who.address)


def deploy_inbox(env: boa.Env, deployer: str, committee=COMMITTEE, weights=WEIGHTS,
                 threshold=THRESHOLD, delay=DELAY, guardian: str | None = None):
    with env.prank(deployer):
        return factories()["BridgeInbox"].deploy(
            [a.address for a in committee], list(weights), threshold, delay,
            guardian or key_account(400).address, env=env)


def deploy_chain(chain_id: int, mint_mode: bool, who: int) -> Chain:
    """Token, outbox, inbox and TokenBridge on a fresh chain; `who` picks the deployer key
    (the owner) and guardian key, so that two chains deployed with the same `who` have the
    same addresses."""
    env = new_env(chain_id)
    f = factories()
    owner, guardian = key_account(300 + who).address, key_account(310 + who).address
    with env.prank(owner):
        token = f["PaymentToken"].deploy("Tessera USD", "TUSD", 6, "Tessera USD", "1", env=env)
        outbox = f["BridgeOutbox"].deploy(env=env)
    inbox = deploy_inbox(env, owner, guardian=guardian)
    with env.prank(owner):
        bridge = f["TokenBridge"].deploy(token.address, outbox.address, inbox.address, mint_mode,
                                         guardian, env=env)
        if mint_mode:
            token.set_minter(bridge.address, True)
        else:  # lock side: users start with TUSD
            token.mint(ALICE.address, START_BALANCE)
    for user in (ALICE, BOB):
        with env.prank(user.address):
            token.approve(bridge.address, 2**256 - 1)
    return Chain(env, chain_id, owner, guardian, token, outbox, inbox, bridge, mint_mode)


def connect(src: Chain, dst: Chain, capacity=CAPACITY, refill=REFILL, large=LARGE,
            max_transfer=MAX_TRANSFER) -> None:
    """Open the route src -> dst: dst's inbox trusts src's outbox and lets src's TokenBridge
    (only) carry value, within these limits; the bridges trust each other."""
    with src.prank(src.owner):
        src.outbox.set_inbox(dst.chain_id, dst.inbox.address)
        src.bridge.set_peer(dst.chain_id, dst.bridge.address, max_transfer)
    with dst.prank(dst.owner):
        dst.inbox.register_source(src.chain_id, src.outbox.address)
    list_sender(dst, src.chain_id, src.bridge.address, capacity, refill, large)


def list_sender(dst: Chain, source_chain: int, sender, capacity=CAPACITY, refill=REFILL,
                large=LARGE, inbox=None) -> None:
    """dst's owner lets `sender` on `source_chain` carry value to dst (capacity 0: unlists)."""
    sender = sender if isinstance(sender, str) else sender.address
    with dst.prank(dst.owner):
        (inbox or dst.inbox).set_value_sender(source_chain, sender, capacity, refill, large)


@dataclass
class World:
    a: Chain
    b: Chain
    c: Chain
    envs: list = field(default_factory=list)


_WORLD: list = []


def shared_world() -> World:
    """One deployment per test process, shared by the bridge test files: every test runs
    inside `isolated(world.envs)`, so none sees another's changes."""
    if not _WORLD:
        _WORLD.append(build_world())
    return _WORLD[0]


def build_world() -> World:
    a = deploy_chain(CHAIN_A, True, 0)
    b = deploy_chain(CHAIN_B, False, 1)
    c = deploy_chain(CHAIN_C, False, 1)   # same deployer and order as b: same addresses
    assert c.inbox.address == b.inbox.address and c.bridge.address == b.bridge.address
    connect(a, b)
    connect(b, a)
    connect(a, c)
    return World(a, b, c, [a.env, b.env, c.env])


@contextlib.contextmanager
def isolated(envs) -> Iterator[None]:
    """Roll every chain back after a test; drop titanoboa's per-address storage record (see
    tests/contracts/conftest.py) so a revert's debug dump never reads a stale layout."""
    with contextlib.ExitStack() as stack:
        for env in envs:
            env.sstore_trace.clear()
            stack.enter_context(env.anchor())
        yield


# ---------------------------------------------------------------- messages and signatures


def sent_messages(contract) -> list[tuple[pb.Message, bytes]]:
    """The (message, payload) of every MessageSent in `contract`'s last call (what a relayer
    reads from the source chain's receipt)."""
    out = []
    chain_id = contract.env.evm.patch.chain_id
    for e in contract.get_logs():
        if type(e).__name__ != "MessageSent":
            continue
        m = pb.Message(source_chain=chain_id, source_outbox=str(e.address), sender=str(e.sender),
                       nonce=e.nonce, destination_chain=e.destination_chain,
                       recipient=str(e.recipient), kind=e.kind, amount=e.amount,
                       payload_hash=pb.payload_hash(e.payload))
        assert m.id == e.message_id
        out.append((m, bytes(e.payload)))
    return out


def attest(signers: list[LocalAccount], chain_id: int, inbox: str, message_id: bytes,
           epoch: int = 0) -> list[bytes]:
    signed = {}
    for acct in signers:
        typed = pb.attestation_typed_data(chain_id, inbox, message_id, epoch)
        signed[acct.address] = bytes(acct.sign_typed_data(full_message=typed).signature)
    return pb.sort_signatures(signed)


def sign_rotation(signers: list[LocalAccount], chain: Chain, epoch: int, members, weights,
                  inbox=None) -> list[bytes]:
    inbox = inbox or chain.inbox
    signed = {}
    for acct in signers:
        typed = pb.rotation_typed_data(chain.chain_id, inbox.address, epoch,
                                       [m.address for m in members], list(weights))
        signed[acct.address] = bytes(acct.sign_typed_data(full_message=typed).signature)
    return pb.sort_signatures(signed)


QUORUM = [COMMITTEE[2], COMMITTEE[3]]   # weight 70 of 100
# A signature made for another domain or epoch recovers to an arbitrary address: the first
# such signer fails one of these two checks, depending on where that address falls.
FOREIGN = ("not a member", "not ascending")


def deliver(dst: Chain, m: pb.Message, payload: bytes, signers=None, epoch=0, signatures=None,
            inbox=None, relayer=None):
    """Relay `m` to `dst` with a quorum's attestations (or the given signatures)."""
    inbox = inbox or dst.inbox
    if signatures is None:
        signatures = attest(signers or QUORUM, dst.chain_id, inbox.address, m.id, epoch)
    with dst.prank(relayer or OUTSIDER):
        return inbox.deliver(m.as_tuple(), payload, signatures)


def relay_all(src_contract, dst: Chain, **kw) -> list[tuple[pb.Message, bytes, bool]]:
    """Carry every message of `src_contract`'s last call to `dst`."""
    msgs = sent_messages(src_contract)
    return [(m, p, deliver(dst, m, p, **kw)) for m, p in msgs]


def refused(reasons, call, *args, **kwargs) -> None:
    """`call` reverts with one of `reasons` (a string or a tuple of them: a signature over
    another domain recovers to an arbitrary address, which fails either check first)."""
    reasons = (reasons,) if isinstance(reasons, str) else tuple(reasons)
    try:
        call(*args, **kwargs)
    except BoaError as err:
        for reason in reasons:
            try:
                check_boa_error_matches(err, reason)
                return
            except ValueError:
                continue
        raise AssertionError(f"reverted, but not with {reasons}: {err.stack_trace.last_frame}") from err
    raise AssertionError(f"did not revert (expected {reasons})")


# ---------------------------------------------------------------- state snapshots


def value_senders() -> list[str]:
    """Whose buckets `state` compares: the people's, OUTSIDER's, and the shared world's
    TokenBridges' (B's and C's have the same address)."""
    bridges = [c.bridge.address for c in (_WORLD[0].a, _WORLD[0].b)] if _WORLD else []
    return [ALICE.address, BOB.address, OUTSIDER.address, *bridges]


def state(*chains: Chain, ids=(), people=(ALICE, BOB)) -> dict:
    """Balances and bridge state that a refused call must leave unchanged."""
    snap = {}
    for ch in chains:
        k = ch.chain_id
        snap[k, "supply"] = ch.token.totalSupply()
        for who in (*people, ch.bridge):
            addr = who.address if hasattr(who, "address") else str(who)
            snap[k, "balance", str(addr)] = ch.token.balanceOf(addr)
        snap[k, "totals"] = (ch.bridge.total_sent(), ch.bridge.total_received(),
                             ch.bridge.total_bounced(), ch.bridge.total_cancelled())
        snap[k, "outbox"] = ch.outbox.count()
        snap[k, "epoch"] = ch.inbox.epoch()
        snap[k, "paused"] = (ch.inbox.paused(), ch.bridge.paused())
        for src in (CHAIN_A, CHAIN_B, CHAIN_C):
            for sender in value_senders():
                snap[k, "bucket", src, sender] = (tuple(ch.inbox.bucket(src, sender)),
                                                  ch.inbox.large_threshold(src, sender))
        for mid in ids:
            snap[k, "id", bytes(mid)] = (ch.inbox.delivered(mid), ch.inbox.pending(mid),
                                         ch.inbox.cancelled(mid), tuple(ch.bridge.origins(mid)))
    return snap


@contextlib.contextmanager
def unchanged(*chains: Chain, ids=()) -> Iterator[None]:
    before = state(*chains, ids=ids)
    yield
    assert state(*chains, ids=ids) == before


# ---------------------------------------------------------------- a test recipient

MOCK_RECEIVER = """
# pragma version ~=0.4.3
# A BridgeInbox recipient for the tests: records calls, can refuse, can re-enter.

calls: public(uint256)
cancels: public(uint256)
last_source_chain: public(uint256)
last_sender: public(address)
last_kind: public(uint8)
last_amount: public(uint256)
last_payload: public(Bytes[512])
last_id: public(bytes32)
fail: public(bool)
reenter_target: public(address)
reenter_data: public(Bytes[4096])
reentry_tried: public(bool)
reentry_ok: public(bool)


@external
def set_fail(fail_: bool):
    self.fail = fail_


@external
def set_reentry(target: address, data: Bytes[4096]):
    self.reenter_target = target
    self.reenter_data = data


@internal
def _record(source_chain: uint256, sender: address, kind: uint8, amount: uint256,
            payload: Bytes[512], message_id: bytes32):
    assert not self.fail, "recipient refuses"
    if self.reenter_target != empty(address):
        self.reentry_tried = True
        self.reentry_ok = raw_call(self.reenter_target, self.reenter_data, revert_on_failure=False)
    self.last_source_chain = source_chain
    self.last_sender = sender
    self.last_kind = kind
    self.last_amount = amount
    self.last_payload = payload
    self.last_id = message_id


@external
def on_bridge_message(source_chain: uint256, sender: address, kind: uint8, amount: uint256,
                      payload: Bytes[512], message_id: bytes32):
    self._record(source_chain, sender, kind, amount, payload, message_id)
    self.calls += 1


@external
def on_bridge_cancelled(source_chain: uint256, sender: address, kind: uint8, amount: uint256,
                        payload: Bytes[512], message_id: bytes32):
    self._record(source_chain, sender, kind, amount, payload, message_id)
    self.cancels += 1
"""


NULL_RECEIVER = """
# pragma version ~=0.4.3
# A recipient that does nothing: what deliver itself costs.


@external
def on_bridge_message(source_chain: uint256, sender: address, kind: uint8, amount: uint256,
                      payload: Bytes[512], message_id: bytes32):
    pass
"""


def deploy_null_receiver(chain: Chain):
    if "null" not in _FACTORIES:
        _FACTORIES["null"] = boa.loads_partial(NULL_RECEIVER, name="NullReceiver")
    with chain.prank(key_account(402).address):
        return _FACTORIES["null"].deploy(env=chain.env)


def deploy_mock(chain: Chain):
    if "mock" not in _FACTORIES:
        _FACTORIES["mock"] = boa.loads_partial(MOCK_RECEIVER, name="MockReceiver")
    with chain.prank(key_account(401).address):
        return _FACTORIES["mock"].deploy(env=chain.env)


def send_raw(src: Chain, dst: Chain, recipient: str, amount: int = 0, payload: bytes = b"hello",
             kind: int = 7, sender=ALICE) -> tuple[pb.Message, bytes]:
    """`sender` (any account) sends a message straight through `src`'s outbox."""
    with src.prank(sender):
        src.outbox.send(dst.chain_id, recipient, kind, amount, payload)
    [(m, p)] = sent_messages(src.outbox)
    return m, p
