"""BridgeInbox.handle and HyperlaneDispatcher: the bridge's second transport (docs/bridge.md,
"Hyperlane"), on the titanoboa chains of bridge_support with a mock Mailbox on each.

A transfer leaves chain B (TokenBridge in lock mode) through B's outbox; B's dispatcher hands
it to B's mock Mailbox, which records it; the test then plays the Hyperlane relayer and has
A's mock Mailbox call A's inbox (`handle`), as a real Mailbox does once its ISM has verified
the message. Every refusal leaves balances and bridge state unchanged. The real Hyperlane
core, on two anvil nodes, is in tests/bridge_hyperlane.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import boa
import pytest
from bridge_support import (
    ALICE,
    BOB,
    CAPACITY,
    CHAIN_A,
    CHAIN_B,
    CHAIN_C,
    DELAY,
    LARGE,
    OUTSIDER,
    USD,
    Chain,
    deliver,
    deploy_mock,
    deploy_null_receiver,
    factories,
    isolated,
    refused,
    send_raw,
    sent_messages,
    shared_world,
    unchanged,
)
from contracts_support import CONTRACTS_DIR, key_account

from tessera.protocol import bridge as pb
from tessera.protocol.bridge import MAX_BODY, address_to_bytes32, hyperlane_body

ZERO = "0x" + "00" * 20
GAS_LIMIT = 300_000   # the destination gas a dispatch asks the (mock) paymaster for

# A stand-in for Hyperlane's Mailbox: `dispatch` (the 4-argument overload with hook
# metadata) records what a dispatcher sent and takes a fee; `process` calls a recipient's
# `handle` as the real Mailbox does after its ISM's verification (here: none).
MOCK_MAILBOX = """
# pragma version ~=0.4.3

interface IMessageRecipient:
    def handle(origin: uint32, sender: bytes32, body: Bytes[2048]): payable

fee: public(uint256)
count: public(uint256)
last_domain: public(uint32)
last_recipient: public(bytes32)
last_body: public(Bytes[2048])
last_metadata: public(Bytes[256])
last_sender: public(address)
last_value: public(uint256)


@external
def set_fee(fee_: uint256):
    self.fee = fee_


@external
@payable
def dispatch(destinationDomain: uint32, recipientAddress: bytes32, messageBody: Bytes[2048],
             hookMetadata: Bytes[256]) -> bytes32:
    assert msg.value >= self.fee, "fee"
    self.count += 1
    self.last_domain = destinationDomain
    self.last_recipient = recipientAddress
    self.last_body = messageBody
    self.last_metadata = hookMetadata
    self.last_sender = msg.sender
    self.last_value = msg.value
    return keccak256(concat(convert(self.count, bytes32), messageBody))


@external
@view
def quoteDispatch(destinationDomain: uint32, recipientAddress: bytes32, messageBody: Bytes[2048],
                  hookMetadata: Bytes[256]) -> uint256:
    return self.fee


@external
@payable
def process(origin: uint32, sender: bytes32, recipient: address, body: Bytes[2048]):
    extcall IMessageRecipient(recipient).handle(origin, sender, body, value=msg.value)
"""

_PARTIALS: dict = {}


def partials() -> dict:
    if not _PARTIALS:
        factories()   # sets the search paths
        _PARTIALS["mailbox"] = boa.loads_partial(MOCK_MAILBOX, name="MockMailbox")
        _PARTIALS["dispatcher"] = boa.load_partial(str(CONTRACTS_DIR / "HyperlaneDispatcher.vy"))
    return _PARTIALS


@dataclass
class Hyperlane:
    mailbox_a: object
    mailbox_b: object
    dispatcher_b: object
    sender_b: bytes      # dispatcher_b, left-padded: the registered sender of chain B at A


def open_hyperlane(a: Chain, b: Chain) -> Hyperlane:
    """Mock Mailboxes on A and B, B's dispatcher, and A's inbox trusting both."""
    p = partials()
    deployer = key_account(410).address
    with a.prank(deployer):
        mailbox_a = p["mailbox"].deploy(env=a.env)
    with b.prank(deployer):
        mailbox_b = p["mailbox"].deploy(env=b.env)
        dispatcher_b = p["dispatcher"].deploy(b.outbox.address, mailbox_b.address, env=b.env)
    sender_b = address_to_bytes32(dispatcher_b.address)
    with a.prank(a.owner):
        a.inbox.set_mailbox(mailbox_a.address)
        a.inbox.set_hyperlane_sender(CHAIN_B, sender_b)
    return Hyperlane(mailbox_a, mailbox_b, dispatcher_b, sender_b)


@pytest.fixture(scope="module")
def world():
    return shared_world()


@pytest.fixture(autouse=True)
def _isolated(world):
    with isolated(world.envs):
        yield


@pytest.fixture
def hl(world, _isolated) -> Hyperlane:
    return open_hyperlane(world.a, world.b)


def transfer_from_b(b: Chain, amount: int, to=BOB) -> tuple[pb.Message, bytes]:
    """ALICE sends `amount` TUSD from chain B to `to` on chain A through TokenBridge."""
    with b.prank(ALICE):
        b.bridge.send(CHAIN_A, to.address, amount)
    [(m, p)] = sent_messages(b.bridge)
    return m, p


def dispatch(b: Chain, hl: Hyperlane, m: pb.Message, payload: bytes, value: int = 0,
             caller=OUTSIDER) -> bytes:
    with b.prank(caller):
        b.env.set_balance(caller.address, 10**18)
        return hl.dispatcher_b.dispatch(m.as_tuple(), payload, GAS_LIMIT, value=value)


def relay(a: Chain, hl: Hyperlane, body: bytes, origin: int = CHAIN_B, sender: bytes | None = None,
          recipient: str | None = None, value: int = 0) -> None:
    """What a Hyperlane relayer gets done on A: the Mailbox calls the inbox's `handle`."""
    with a.prank(OUTSIDER):
        a.env.set_balance(OUTSIDER.address, 10**18)
        hl.mailbox_a.process(origin, hl.sender_b if sender is None else sender,
                             recipient or a.inbox.address, body, value=value)


# ---------------------------------------------------------------- the happy path


def test_a_deposit_crosses_through_the_dispatcher_and_the_mailbox(world, hl):
    a, b = world.a, world.b
    m, p = transfer_from_b(b, 100 * USD)
    hyperlane_id = dispatch(b, hl, m, p)
    # B's Mailbox got exactly the body the inbox decodes, for A's inbox, from the dispatcher
    assert hl.mailbox_b.last_domain() == CHAIN_A
    assert hl.mailbox_b.last_recipient() == address_to_bytes32(a.inbox.address)
    assert hl.mailbox_b.last_body() == hyperlane_body(m, p)
    assert hl.mailbox_b.last_sender() == hl.dispatcher_b.address
    [event] = [e for e in hl.dispatcher_b.get_logs() if type(e).__name__ == "Dispatched"]
    assert (event.message_id, event.hyperlane_id) == (m.id, hyperlane_id)
    assert (event.destination_chain, str(event.inbox)) == (CHAIN_A, a.inbox.address)

    before = a.balance(BOB)
    relay(a, hl, bytes(hl.mailbox_b.last_body()))
    assert a.balance(BOB) == before + 100 * USD
    assert a.inbox.delivered(m.id)
    [delivered] = [e for e in hl.mailbox_a.get_logs() if type(e).__name__ == "MessageDelivered"]
    assert (delivered.message_id, delivered.source_chain, delivered.amount) == (m.id, CHAIN_B, 100 * USD)
    assert a.inbox.available(CHAIN_B, b.bridge.address) == CAPACITY - 100 * USD


def test_dispatch_hook_metadata_refunds_the_caller_and_value_pays_the_fee(world, hl):
    b = world.b
    m, p = transfer_from_b(b, USD)
    with b.prank(OUTSIDER):
        hl.mailbox_b.set_fee(1_000)
        assert hl.dispatcher_b.quote(m.as_tuple(), p, GAS_LIMIT) == 1_000
    refused("fee", dispatch, b, hl, m, p, value=999)
    dispatch(b, hl, m, p, value=1_000)
    assert hl.mailbox_b.last_value() == 1_000
    # StandardHookMetadata: variant 1, msgValue 0, gas limit, refund address = the caller
    assert hl.mailbox_b.last_metadata() == (
        (1).to_bytes(2, "big") + (0).to_bytes(32, "big") + GAS_LIMIT.to_bytes(32, "big")
        + bytes.fromhex(OUTSIDER.address[2:]))


# ---------------------------------------------------------------- one delivery per id


def test_a_message_handled_cannot_then_be_delivered_by_the_committee(world, hl):
    a, b = world.a, world.b
    m, p = transfer_from_b(b, 100 * USD)
    dispatch(b, hl, m, p)
    relay(a, hl, hyperlane_body(m, p))
    with unchanged(a, b, ids=[m.id]):
        refused("already delivered", deliver, a, m, p)
        refused("already delivered", relay, a, hl, hyperlane_body(m, p))   # a second dispatch


def test_a_message_delivered_by_the_committee_cannot_then_be_handled(world, hl):
    a, b = world.a, world.b
    m, p = transfer_from_b(b, 100 * USD)
    assert deliver(a, m, p)
    dispatch(b, hl, m, p)   # anyone may still dispatch it: it can only be refused on A
    with unchanged(a, b, ids=[m.id]):
        refused("already delivered", relay, a, hl, hyperlane_body(m, p))


def test_a_queued_message_is_not_delivered_twice_either(world, hl):
    a, b = world.a, world.b
    m, p = transfer_from_b(b, LARGE + USD)
    relay(a, hl, hyperlane_body(m, p))
    assert a.inbox.pending(m.id) != 0
    with unchanged(a, b, ids=[m.id]):
        refused("already delivered", deliver, a, m, p)


# ---------------------------------------------------------------- who may call handle


def test_only_the_registered_mailbox_calls_handle(world, hl):
    a, b = world.a, world.b
    m, p = transfer_from_b(b, 100 * USD)
    body = hyperlane_body(m, p)
    with unchanged(a, b, ids=[m.id]):
        with a.prank(OUTSIDER):   # straight to the inbox, with the registered sender
            refused("not mailbox", a.inbox.handle, CHAIN_B, hl.sender_b, body)
        other = partials()["mailbox"].deploy(env=a.env)   # a Mailbox, but not the one named
        with a.prank(OUTSIDER):
            refused("not mailbox", other.process, CHAIN_B, hl.sender_b, a.inbox.address, body)
        with a.prank(a.owner):
            a.inbox.set_mailbox(ZERO)   # Hyperlane off: no caller matches
        refused("not mailbox", relay, a, hl, body)


def test_only_the_registered_sender_of_the_origin(world, hl):
    a, b = world.a, world.b
    m, p = transfer_from_b(b, 100 * USD)
    body = hyperlane_body(m, p)
    with unchanged(a, b, ids=[m.id]):
        # anyone can dispatch anything through B's Mailbox: it arrives with their address
        refused("unknown sender", relay, a, hl, body, sender=address_to_bytes32(ALICE.address))
        refused("unknown sender", relay, a, hl, body, sender=address_to_bytes32(b.outbox.address))
        # B's dispatcher is registered for B only, not for C (nothing registered: zero)
        refused("unknown sender", relay, a, hl, body, origin=CHAIN_C)
        # Nomad: an unregistered origin's zero sender must never match
        refused("unknown sender", relay, a, hl, body, origin=CHAIN_C, sender=b"\x00" * 32)
        with a.prank(a.owner):
            a.inbox.set_hyperlane_sender(CHAIN_B, b"\x00" * 32)   # route closed
        refused("unknown sender", relay, a, hl, body)


def test_the_origin_must_be_the_messages_source(world, hl):
    """A dispatcher registered for chain C can only vouch for chain C's outbox."""
    a, b = world.a, world.b
    m, p = transfer_from_b(b, 100 * USD)
    c_sender = address_to_bytes32(key_account(420).address)
    with a.prank(a.owner):
        a.inbox.set_hyperlane_sender(CHAIN_C, c_sender)
    with unchanged(a, b, ids=[m.id]):
        refused("wrong origin", relay, a, hl, hyperlane_body(m, p), origin=CHAIN_C, sender=c_sender)


def test_handle_refuses_value(world, hl):
    a, b = world.a, world.b
    m, p = transfer_from_b(b, 100 * USD)
    with unchanged(a, b, ids=[m.id]):
        refused("no value", relay, a, hl, hyperlane_body(m, p), value=1)


def test_a_body_that_does_not_decode_is_refused(world, hl):
    a, b = world.a, world.b
    m, p = transfer_from_b(b, 100 * USD)
    body = hyperlane_body(m, p)
    with unchanged(a, b, ids=[m.id]):
        for junk in (b"", body[:-32], b"\x00" * 64, body + b"\x00" * (MAX_BODY + 1 - len(body))):
            with pytest.raises(boa.BoaError):
                relay(a, hl, junk)
        # a kind above 255 (uint8) in the body
        bad_kind = body[:7 * 32] + (256).to_bytes(32, "big") + body[8 * 32:]
        with pytest.raises(boa.BoaError):
            relay(a, hl, bad_kind)


# ---------------------------------------------------------------- the checks deliver makes


def test_the_same_message_checks_as_deliver(world, hl):
    a, b = world.a, world.b
    m, p = transfer_from_b(b, 100 * USD)
    with unchanged(a, b, ids=[m.id]):
        refused("bad payload", relay, a, hl, hyperlane_body(m, p)[:-64] + b"\x01" * 64)
        other = dataclasses.replace(m, version=2)
        refused("bad version", relay, a, hl, hyperlane_body(other, p))
        other = dataclasses.replace(m, destination_chain=CHAIN_C)
        refused("wrong chain", relay, a, hl, hyperlane_body(other, p))
        other = dataclasses.replace(m, source_outbox=ALICE.address)
        refused("unknown outbox", relay, a, hl, hyperlane_body(other, p))
        with a.prank(a.guardian):
            a.inbox.pause()
        refused("paused", relay, a, hl, hyperlane_body(m, p))
        with a.prank(a.owner):
            a.inbox.unpause()


def test_the_bucket_applies_to_handle(world, hl):
    a, b = world.a, world.b
    null = deploy_null_receiver(a)
    # messages as B's TokenBridge sends them (the test speaks for it): they spend its bucket
    big, bp = send_raw(b, a, null.address, amount=CAPACITY + 1, sender=b.bridge.address)
    with unchanged(a, b, ids=[big.id]):
        refused("over capacity", relay, a, hl, hyperlane_body(big, bp))
    # empty the bucket through the committee, then the Mailbox finds it empty
    full, fp = send_raw(b, a, null.address, amount=CAPACITY, sender=b.bridge.address)
    deliver(a, full, fp)
    assert a.inbox.available(CHAIN_B, b.bridge.address) == 0
    m, p = transfer_from_b(b, 100 * USD)
    with unchanged(a, b, ids=[m.id]):
        refused("rate limited", relay, a, hl, hyperlane_body(m, p))
    refill = a.inbox.bucket(CHAIN_B, b.bridge.address)[1]
    a.env.time_travel(seconds=100 * USD // refill)   # refilled enough
    relay(a, hl, hyperlane_body(m, p))
    assert a.inbox.delivered(m.id)


def test_value_senders_apply_to_handle(world, hl):
    a, b = world.a, world.b
    null = deploy_null_receiver(a)
    m, p = send_raw(b, a, null.address, amount=USD)   # from ALICE, not the TokenBridge
    with unchanged(a, b, ids=[m.id]):
        refused("not a value sender", relay, a, hl, hyperlane_body(m, p))
    t, tp = transfer_from_b(b, USD)
    relay(a, hl, hyperlane_body(t, tp))
    assert a.inbox.delivered(t.id)


def test_a_large_transfer_through_handle_is_queued_then_executed(world, hl):
    a, b = world.a, world.b
    amount = LARGE + USD
    m, p = transfer_from_b(b, amount)
    before = a.balance(BOB)
    relay(a, hl, hyperlane_body(m, p))
    [queued] = [e for e in hl.mailbox_a.get_logs() if type(e).__name__ == "MessageQueued"]
    assert queued.message_id == m.id
    assert a.balance(BOB) == before and a.inbox.pending(m.id) == queued.release_at
    a.env.time_travel(seconds=DELAY - 1)
    with a.prank(OUTSIDER):
        refused("delayed", a.inbox.execute, m.as_tuple(), p)
    a.env.time_travel(seconds=1)
    with a.prank(OUTSIDER):
        a.inbox.execute(m.as_tuple(), p)
    assert a.balance(BOB) == before + amount


def test_a_large_transfer_through_handle_can_be_cancelled(world, hl):
    a, b = world.a, world.b
    m, p = transfer_from_b(b, LARGE + USD)
    relay(a, hl, hyperlane_body(m, p))
    with a.prank(a.guardian):
        a.inbox.cancel(m.as_tuple(), p)
    [(bounce, _)] = sent_messages(a.inbox)   # A's TokenBridge sends the amount back
    assert a.inbox.cancelled(m.id) and a.inbox.pending(m.id) == 0
    assert (bounce.kind, bounce.amount, bounce.destination_chain) == (pb.KIND_BOUNCE, LARGE + USD, CHAIN_B)


def test_the_recipient_is_called_with_the_message(world, hl):
    a, b = world.a, world.b
    mock = deploy_mock(a)
    m, p = send_raw(b, a, mock.address, payload=b"through hyperlane", kind=9)
    relay(a, hl, hyperlane_body(m, p))
    assert (mock.calls(), mock.last_source_chain(), mock.last_sender(), mock.last_kind()) == (
        1, CHAIN_B, ALICE.address, 9)
    assert (bytes(mock.last_payload()), bytes(mock.last_id())) == (b"through hyperlane", m.id)


# ---------------------------------------------------------------- the dispatcher's checks


def test_the_dispatcher_only_dispatches_what_the_outbox_emitted(world, hl):
    a, b = world.a, world.b
    to_c, cp = send_raw(b, world.c, ALICE.address)
    m, p = transfer_from_b(b, 100 * USD)
    with unchanged(a, b, ids=[m.id]):
        forged = dataclasses.replace(m, amount=10**6 * USD)
        refused("not sent", dispatch, b, hl, forged, p)
        future = dataclasses.replace(m, nonce=m.nonce + 1)
        refused("not sent", dispatch, b, hl, future, p)
        refused("bad payload", dispatch, b, hl, m, p + b"\x00")
        elsewhere = dataclasses.replace(m, source_outbox=a.outbox.address)
        refused("not this outbox", dispatch, b, hl, elsewhere, p)
        other_chain = dataclasses.replace(m, source_chain=CHAIN_C)
        refused("not this outbox", dispatch, b, hl, other_chain, p)
        # B's outbox names no inbox for C: nowhere to dispatch to
        refused("unknown destination", dispatch, b, hl, to_c, cp)
    assert hl.mailbox_b.count() == 0


def test_the_dispatcher_has_no_owner_and_checks_its_constructor(world):
    b = world.b
    d = partials()["dispatcher"]
    with b.prank(OUTSIDER):
        refused("zero outbox", d.deploy, ZERO, b.outbox.address, env=b.env)
        refused("zero mailbox", d.deploy, b.outbox.address, ZERO, env=b.env)
    abi = d.deploy(b.outbox.address, b.inbox.address, env=b.env).abi
    names = {item["name"] for item in abi if item["type"] != "constructor"}
    assert names == {"dispatch", "quote", "outbox", "mailbox", "Dispatched"}


# ---------------------------------------------------------------- owner settings


def test_only_the_owner_sets_the_mailbox_the_senders_and_the_ism(world, hl):
    a = world.a
    ism = key_account(430).address
    with a.prank(OUTSIDER):
        refused("not owner", a.inbox.set_mailbox, OUTSIDER.address)
        refused("not owner", a.inbox.set_hyperlane_sender, CHAIN_C, address_to_bytes32(OUTSIDER.address))
        refused("not owner", a.inbox.set_ism, ism)
    with a.prank(a.owner):
        refused("same chain", a.inbox.set_hyperlane_sender, CHAIN_A, hl.sender_b)
        assert a.inbox.interchainSecurityModule() == ZERO   # the Mailbox's default ISM
        a.inbox.set_ism(ism)
        [event] = [e for e in a.inbox.get_logs() if type(e).__name__ == "IsmSet"]
        a.inbox.set_hyperlane_sender(CHAIN_C, address_to_bytes32(ism))
        [sender_set] = [e for e in a.inbox.get_logs() if type(e).__name__ == "HyperlaneSenderSet"]
    assert str(event.ism) == ism and a.inbox.interchainSecurityModule() == ism
    assert (sender_set.origin, sender_set.sender) == (CHAIN_C, address_to_bytes32(ism))
    assert a.inbox.mailbox() == hl.mailbox_a.address
    assert a.inbox.hyperlane_sender(CHAIN_B) == hl.sender_b


# ---------------------------------------------------------------- gas


def test_handle_gas_against_deliver(world, hl, capsys):
    """Execution gas (boa: without the 21,000 base and calldata) of the same kind of message
    (a 64-byte payload, an amount, a recipient that does nothing): `deliver` with the
    two-signature quorum of bridge_support's committee, and `handle` called by the Mailbox
    (alone, and inside the mock Mailbox's `process`; a real Mailbox adds its ISM check and
    its delivery record to that)."""
    a, b = world.a, world.b
    null = deploy_null_receiver(a)
    msgs = [send_raw(b, a, null.address, amount=USD, payload=bytes([i]) * 64, sender=b.bridge.address)
            for i in range(3)]
    (m1, p1), (m2, p2), (m3, p3) = msgs
    deliver(a, m1, p1)
    deliver_gas = a.inbox._computation.get_gas_used()
    with a.prank(hl.mailbox_a.address):
        a.inbox.handle(CHAIN_B, hl.sender_b, hyperlane_body(m2, p2))
    handle_gas = a.inbox._computation.get_gas_used()
    relay(a, hl, hyperlane_body(m3, p3))
    process_gas = hl.mailbox_a._computation.get_gas_used()
    with capsys.disabled():
        print(f"\nexecution gas: deliver (2 signatures) {deliver_gas}, handle {handle_gas}, "
              f"mock Mailbox.process -> handle {process_gas}")
    assert handle_gas < deliver_gas and handle_gas < process_gas
