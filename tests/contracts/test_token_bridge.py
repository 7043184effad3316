"""TokenBridge over the bridge: lock on chain B, mint on chain A, bounces, pause, conservation.

Conservation, checked after every step (docs/bridge.md): what B's TokenBridge holds equals
A's TUSD supply (A's TokenBridge is its only minter) plus what is in flight either way (sent,
not yet released; cancelled, not yet bounced back). The lock side's and the mint side's
running totals must match the real balance and supply.
"""

from __future__ import annotations

import dataclasses

import pytest
from bridge_support import (
    ALICE,
    BOB,
    CAPACITY,
    CHAIN_A,
    CHAIN_B,
    CHAIN_C,
    COMMITTEE,
    DELAY,
    LARGE,
    MAX_TRANSFER,
    OUTSIDER,
    QUORUM,
    START_BALANCE,
    USD,
    attest,
    deliver,
    deploy_mock,
    isolated,
    refused,
    send_raw,
    sent_messages,
    shared_world,
    unchanged,
)

from tessera.protocol import bridge as pb

ZERO = "0x" + "00" * 20


@pytest.fixture(scope="module")
def world():
    return shared_world()


@pytest.fixture(autouse=True)
def _isolated(world):
    with isolated(world.envs):
        yield


def conserved(world, in_flight: int) -> None:
    a, b = world.a, world.b
    held = b.token.balanceOf(b.bridge.address)
    supply = a.token.totalSupply()
    assert held == supply + in_flight
    # each side's own books against its real balance / supply
    assert held == b.bridge.total_sent() - b.bridge.total_received() - b.bridge.total_bounced()
    assert supply == a.bridge.total_received() + a.bridge.total_bounced() - a.bridge.total_sent()
    # and the in-flight figure from the two sides' totals
    assert in_flight == ((b.bridge.total_sent() - a.bridge.total_received() - b.bridge.total_bounced())
                         + (a.bridge.total_sent() - b.bridge.total_received() - a.bridge.total_bounced()))


def send(chain, dest, sender, to, amount):
    with chain.prank(sender):
        mid = chain.bridge.send(dest, to.address if hasattr(to, "address") else to, amount)
    [(m, p)] = sent_messages(chain.bridge)
    assert m.id == mid
    return m, p


def b_to_a(world, amount, sender=ALICE, to=BOB):
    return send(world.b, CHAIN_A, sender, to, amount)


# ---------------------------------------------------------------- happy paths


def test_lock_on_b_then_mint_on_a(world):
    a, b = world.a, world.b
    amount = 100 * USD
    m, p = b_to_a(world, amount)
    [sent] = [e for e in b.bridge.get_logs() if type(e).__name__ == "TransferSent"]
    assert (sent.message_id, sent.sender, sent.destination_chain, sent.to, sent.amount) == (
        m.id, ALICE.address, CHAIN_A, BOB.address, amount)
    assert (m.sender, m.recipient, m.kind, m.amount) == (b.bridge.address, a.bridge.address,
                                                          pb.KIND_TRANSFER, amount)
    assert pb.decode_transfer_payload(p) == (BOB.address, ALICE.address)
    assert b.balance(ALICE) == START_BALANCE - amount and b.balance(b.bridge.address) == amount
    assert tuple(b.bridge.origins(m.id)) == (ALICE.address, amount, CHAIN_A, True)
    conserved(world, amount)
    assert deliver(a, m, p) is True
    events = [e for e in a.inbox.get_logs() if type(e).__name__ == "TransferReceived"]
    assert [(e.message_id, e.source_chain, e.to, e.amount) for e in events] == [
        (m.id, CHAIN_B, BOB.address, amount)]
    assert a.balance(BOB) == amount and a.bridge.total_received() == amount
    conserved(world, 0)


def test_burn_on_a_then_unlock_on_b(world):
    a, b = world.a, world.b
    m, p = b_to_a(world, 100 * USD)
    deliver(a, m, p)
    back, bp = send(a, CHAIN_B, BOB, ALICE, 40 * USD)
    assert a.balance(BOB) == 60 * USD and a.token.totalSupply() == 60 * USD   # burned
    conserved(world, 40 * USD)
    deliver(b, back, bp)
    assert b.balance(ALICE) == START_BALANCE - 60 * USD and b.balance(b.bridge.address) == 60 * USD
    conserved(world, 0)


def test_mint_side_burns_only_what_came_from_that_chain(world):
    """The mint side burns toward B at most what it minted from B (`backing`), so B's lock
    always covers what comes back, and a burn with nothing locked behind it on B is refused at
    the source instead of becoming a message that can never be delivered. (It cannot tell whose
    TUSD it is: with another minter of A's TUSD, unbacked TUSD can still use the backing that
    someone else's transfer created: docs/bridge.md, so a deployment keeps the bridge A's
    only minter.)"""
    a, b = world.a, world.b
    with a.prank(a.owner):                              # the token's deployer: a minter too
        a.token.mint(BOB.address, 1_000 * USD)          # unbacked: nothing locked on B for it
    with unchanged(a, b), a.prank(BOB):
        refused("over bridged supply", a.bridge.send, CHAIN_B, BOB.address, 1)
    m, p = b_to_a(world, 100 * USD)
    deliver(a, m, p)
    assert a.bridge.backing(CHAIN_B) == 100 * USD
    with unchanged(a, b), a.prank(BOB):
        refused("over bridged supply", a.bridge.send, CHAIN_B, BOB.address, 100 * USD + 1)
    back, bp = send(a, CHAIN_B, BOB, ALICE, 100 * USD)
    assert a.bridge.backing(CHAIN_B) == 0
    deliver(b, back, bp)
    assert b.balance(b.bridge.address) == 0 and b.balance(ALICE) == START_BALANCE


def test_transfer_replayed_on_a_third_chain_is_refused(world):
    """A burn on A for B, replayed with the same signatures at chain C (whose inbox and bridge
    have the same addresses as B's, and which trusts A's outbox): refused, nothing moves."""
    a, b, c = world.a, world.b, world.c
    m, p = b_to_a(world, 100 * USD)
    deliver(a, m, p)
    back, bp = send(a, CHAIN_B, BOB, ALICE, 40 * USD)
    sigs = attest(QUORUM, CHAIN_B, b.inbox.address, back.id)
    with c.prank(c.owner):
        c.token.mint(c.bridge.address, 1_000 * USD)      # something there to steal
        c.bridge.set_peer(CHAIN_A, a.bridge.address, MAX_TRANSFER)
    with unchanged(c, ids=[back.id]):
        refused("wrong chain", deliver, c, back, bp, signatures=sigs)
        moved = dataclasses.replace(back, destination_chain=CHAIN_C)   # re-addressed: new id
        refused(("not a member", "not ascending"), deliver, c, moved, bp, signatures=sigs)
    deliver(b, back, bp, signatures=sigs)
    conserved(world, 0)


# ---------------------------------------------------------------- send refusals


@pytest.mark.parametrize("case", ["no route", "zero recipient", "zero amount", "over max",
                                  "to the bridge", "no allowance", "mint side no balance"])
def test_send_refusals(world, case):
    a, b = world.a, world.b
    calls = {
        "no route": (b, OUTSIDER, (4242, BOB.address, 1), "no route"),
        "zero recipient": (b, ALICE, (CHAIN_A, ZERO, 1), "zero recipient"),
        "zero amount": (b, ALICE, (CHAIN_A, BOB.address, 0), "zero amount"),
        "over max": (b, ALICE, (CHAIN_A, BOB.address, MAX_TRANSFER + 1), "over max transfer"),
        "to the bridge": (b, ALICE, (CHAIN_A, a.bridge.address, 1), "to is the bridge"),
        "no allowance": (b, OUTSIDER, (CHAIN_A, BOB.address, 1), "erc20: insufficient allowance"),
        "mint side no balance": (a, BOB, (CHAIN_B, ALICE.address, 1), "over bridged supply"),
    }
    chain, who, args, reason = calls[case]
    with unchanged(a, b), chain.prank(who):
        refused(reason, chain.bridge.send, *args)


# ---------------------------------------------------------------- who may call


def test_only_the_inbox_may_call(world):
    a = world.a
    payload = pb.transfer_payload(OUTSIDER.address, OUTSIDER.address)
    with unchanged(a), a.prank(OUTSIDER):
        refused("only inbox", a.bridge.on_bridge_message, CHAIN_B, world.b.bridge.address, 1,
                10**12, payload, b"\1" * 32)
        refused("only inbox", a.bridge.on_bridge_cancelled, CHAIN_B, world.b.bridge.address, 1,
                10**12, payload, b"\1" * 32)


def test_a_rogue_sender_through_the_real_outbox_is_refused(world):
    """Anyone may send through an outbox, and the committee attests whatever was emitted: a
    transfer message to A's TokenBridge sent by an ordinary account (not B's TokenBridge) is
    refused by the inbox (not a value sender), and, even with no amount for the inbox to see,
    by the bridge, so nothing is minted."""
    a, b = world.a, world.b
    payload = pb.transfer_payload(OUTSIDER.address, OUTSIDER.address)
    for amount, reason in ((1_000 * USD, "not a value sender"), (0, "unknown peer")):
        m, p = send_raw(b, a, a.bridge.address, amount=amount, kind=pb.KIND_TRANSFER,
                        payload=payload, sender=OUTSIDER)
        with unchanged(a, b, ids=[m.id]):
            refused(reason, deliver, a, m, p)
        assert not a.inbox.delivered(m.id) and a.balance(OUTSIDER) == 0


def _as_inbox(chain, fn, *args):
    with chain.prank(chain.inbox.address):
        return fn(*args)


def test_peer_is_per_chain(world):
    """B trusts A's TokenBridge as sent from chain A only: the same address claimed as the
    sender on chain C (where anyone could deploy at that address) is not a peer."""
    a, b = world.a, world.b
    payload = pb.transfer_payload(OUTSIDER.address, OUTSIDER.address)
    m, p = b_to_a(world, 10 * USD)   # something held on B
    with unchanged(a, b, ids=[m.id]):
        refused("unknown peer", _as_inbox, b, b.bridge.on_bridge_message, CHAIN_C, a.bridge.address,
                1, 10 * USD, payload, b"\1" * 32)
        refused("unknown peer", _as_inbox, b, b.bridge.on_bridge_message, 4242, ZERO,
                1, 10 * USD, payload, b"\1" * 32)   # an unset peer reads as 0x0: never matches
    _as_inbox(b, b.bridge.on_bridge_message, CHAIN_A, a.bridge.address, 1, 10 * USD, payload,
              b"\1" * 32)                         # the real peer's claim passes (sanity)
    assert b.balance(OUTSIDER) == 10 * USD


@pytest.mark.parametrize("moved", ["destination", "origin"])
def test_a_transfer_in_flight_when_the_route_moves_still_bounces_home(world, moved):
    """Review 29: the owner (a Timelock) re-pointed a route while a transfer was in flight,
    and its way back was shut: the destination's guardian could not cancel a transfer from a
    former peer, and the origin refused a bounce from the peer its transfer was sent to. A
    cancel now accepts any peer the route ever had, and a bounce must come from the peer its
    transfer went to (`origin_peer`), whatever the route is now."""
    a, b = world.a, world.b
    elsewhere = "0x000000000000000000000000000000000000dEaD"
    with a.prank(a.owner):     # everything queues on A; B delivers bounces at once
        a.inbox.set_value_sender(CHAIN_B, b.bridge.address, CAPACITY, 1, 0)
    m, p = b_to_a(world, 5 * USD)
    assert b.bridge.origin_peer(m.id) == a.bridge.address
    assert deliver(a, m, p) is False
    chain, route = (a, CHAIN_B) if moved == "destination" else (b, CHAIN_A)
    with chain.prank(chain.owner):
        chain.bridge.set_peer(route, elsewhere, MAX_TRANSFER)
    if moved == "destination":   # the former peer's transfer itself is not delivered
        with unchanged(a, b, ids=[m.id]):
            refused("unknown peer", _as_inbox, a, a.bridge.on_bridge_message, CHAIN_B,
                    b.bridge.address, pb.KIND_TRANSFER, 5 * USD, p, m.id)
    with a.prank(a.guardian):
        a.inbox.cancel(m.as_tuple(), p)
    [(bounce, bp)] = sent_messages(a.inbox)
    assert deliver(b, bounce, bp) is True
    assert b.balance(ALICE) == START_BALANCE and not b.bridge.origins(m.id).open
    conserved(world, 0)


def test_a_former_peer_cannot_bounce_its_successors_transfers(world):
    """The other side of `origin_peer`: after the route moved, a transfer sent to the new peer
    may be bounced only by it, never by the peer before (which would refund a transfer the new
    peer delivers: paid twice)."""
    a, b = world.a, world.b
    successor = "0x000000000000000000000000000000000000bEEF"
    with b.prank(b.owner):
        b.bridge.set_peer(CHAIN_A, successor, MAX_TRANSFER)
    m, p = b_to_a(world, 5 * USD)
    assert b.bridge.origin_peer(m.id) == successor
    with unchanged(a, b, ids=[m.id]):
        refused("unknown peer", _as_inbox, b, b.bridge.on_bridge_message, CHAIN_A,
                a.bridge.address, pb.KIND_BOUNCE, 5 * USD, pb.bounce_payload(m.id), b"\2" * 32)
    _as_inbox(b, b.bridge.on_bridge_message, CHAIN_A, successor, pb.KIND_BOUNCE, 5 * USD,
              pb.bounce_payload(m.id), b"\2" * 32)
    assert b.balance(ALICE) == START_BALANCE and not b.bridge.origins(m.id).open


def test_unknown_kinds_and_bad_bounces_are_refused(world):
    a, b = world.a, world.b
    m, p = b_to_a(world, 100 * USD)
    peer = a.bridge.address
    with unchanged(a, b, ids=[m.id]):
        for kind in (0, 4, 255):   # 1 transfer, 2 bounce, 3 transfer with a call
            refused("unknown kind", _as_inbox, b, b.bridge.on_bridge_message, CHAIN_A, peer, kind,
                    1, p, b"\2" * 32)
        refused("unknown kind", _as_inbox, b, b.bridge.on_bridge_cancelled, CHAIN_A, peer, 4, 1, p,
                b"\2" * 32)
        # a bounce must name an open transfer sent from here, to that chain, for that amount
        refused("not open", _as_inbox, b, b.bridge.on_bridge_message, CHAIN_A, peer, 2, 100 * USD,
                pb.bounce_payload(b"\7" * 32), b"\2" * 32)
        refused("bounce mismatch", _as_inbox, b, b.bridge.on_bridge_message, CHAIN_A, peer, 2,
                100 * USD + 1, pb.bounce_payload(m.id), b"\2" * 32)
        with b.prank(b.owner):
            b.bridge.set_peer(CHAIN_C, peer, MAX_TRANSFER)
        refused("bounce mismatch", _as_inbox, b, b.bridge.on_bridge_message, CHAIN_C, peer, 2,
                100 * USD, pb.bounce_payload(m.id), b"\2" * 32)


# ---------------------------------------------------------------- delay, cancel, bounce


def test_large_transfer_waits_then_executes(world):
    a = world.a
    amount = LARGE + 1
    m, p = b_to_a(world, amount)
    assert deliver(a, m, p) is False and a.balance(BOB) == 0
    conserved(world, amount)
    a.env.time_travel(seconds=DELAY)
    with a.prank(OUTSIDER):
        a.inbox.execute(m.as_tuple(), p)
    assert a.balance(BOB) == amount
    conserved(world, 0)


def test_cancelled_transfer_bounces_back_to_its_sender(world):
    a, b = world.a, world.b
    amount = 2 * LARGE
    m, p = b_to_a(world, amount)
    deliver(a, m, p)
    with unchanged(a, b, ids=[m.id]), a.prank(OUTSIDER):
        refused("not guardian", a.inbox.cancel, m.as_tuple(), p)
    with a.prank(a.guardian):
        a.inbox.cancel(m.as_tuple(), p)
    [(bounce, bp)] = sent_messages(a.inbox)                  # sent by A's TokenBridge
    [cancelled] = [e for e in a.inbox.get_logs() if type(e).__name__ == "TransferCancelled"]
    assert (cancelled.message_id, cancelled.bounce_id) == (m.id, bounce.id)
    assert (bounce.sender, bounce.recipient, bounce.kind, bounce.amount, bp) == (
        a.bridge.address, b.bridge.address, pb.KIND_BOUNCE, amount, pb.bounce_payload(m.id))
    assert a.balance(BOB) == 0 and a.bridge.total_cancelled() == amount
    conserved(world, amount)
    a.env.time_travel(seconds=DELAY)
    with unchanged(a, b, ids=[m.id]), a.prank(OUTSIDER):
        refused("not queued", a.inbox.execute, m.as_tuple(), p)   # never delivered after all
    # the bounce is large too: queued on B, and B's guardian cannot cancel a refund
    assert deliver(b, bounce, bp) is False
    with unchanged(a, b, ids=[m.id, bounce.id]), b.prank(b.guardian):
        refused("bounce cannot be cancelled", b.inbox.cancel, bounce.as_tuple(), bp)
    b.env.time_travel(seconds=DELAY)
    with b.prank(OUTSIDER):
        b.inbox.execute(bounce.as_tuple(), bp)
    [bounced] = [e for e in b.inbox.get_logs() if type(e).__name__ == "TransferBounced"]
    assert (bounced.cancelled_id, bounced.to, bounced.amount) == (m.id, ALICE.address, amount)
    assert b.balance(ALICE) == START_BALANCE and not b.bridge.origins(m.id).open
    conserved(world, 0)
    with unchanged(a, b, ids=[m.id, bounce.id]):
        refused("already delivered", deliver, b, bounce, bp)


def test_small_bounce_is_delivered_at_once(world):
    a, b = world.a, world.b
    with a.prank(a.owner):     # everything queues on A; B delivers bounces at once
        a.inbox.set_value_sender(CHAIN_B, b.bridge.address, CAPACITY, 1, 0)
    m, p = b_to_a(world, 5 * USD)
    assert deliver(a, m, p) is False
    with a.prank(a.guardian):
        a.inbox.cancel(m.as_tuple(), p)
    [(bounce, bp)] = sent_messages(a.inbox)
    assert deliver(b, bounce, bp) is True
    assert b.balance(ALICE) == START_BALANCE
    conserved(world, 0)


def test_junk_value_messages_cannot_starve_transfers(world):
    """Bucket griefing end to end: OUTSIDER emits a value message (no tokens needed: the amount
    is just a number) to a recipient of its own on A, to empty the bucket that Alice's real
    transfers spend. Only B's TokenBridge is listed as chain B's value sender: refused, and
    Alice's transfer passes with the whole bucket."""
    a, b = world.a, world.b
    sink = deploy_mock(a)
    junk, jp = send_raw(b, a, sink.address, amount=CAPACITY, sender=OUTSIDER)
    m, p = b_to_a(world, 100 * USD)
    with unchanged(a, b, ids=[junk.id]):
        refused("not a value sender", deliver, a, junk, jp)
    assert a.inbox.available(CHAIN_B, b.bridge.address) == CAPACITY
    deliver(a, m, p)
    assert a.balance(BOB) == 100 * USD
    conserved(world, 0)


# ---------------------------------------------------------------- pause


def test_pause_by_guardian_unpause_by_owner(world):
    a, b = world.a, world.b
    m, p = b_to_a(world, 10 * USD)
    with a.prank(OUTSIDER):
        refused("not guardian", a.bridge.pause)
    with a.prank(a.guardian):
        a.bridge.pause()
    with b.prank(b.guardian):
        b.bridge.pause()
    with unchanged(a, b, ids=[m.id]):
        with b.prank(ALICE):
            refused("paused", b.bridge.send, CHAIN_A, BOB.address, 1)
        refused("paused", deliver, a, m, p)         # the delivery reverts and can be retried
        for chain in (a, b):
            with chain.prank(chain.guardian):
                refused("not owner", chain.bridge.unpause)
    for chain in (a, b):
        with chain.prank(chain.owner):
            chain.bridge.unpause()
    deliver(a, m, p)
    assert a.balance(BOB) == 10 * USD
    conserved(world, 0)


def test_owner_setters(world):
    b = world.b
    with unchanged(b):
        for who in (OUTSIDER.address, b.guardian):
            with b.prank(who):
                refused("not owner", b.bridge.set_peer, 4242, BOB.address, 1)
                refused("not owner", b.bridge.set_guardian, BOB.address)
        with b.prank(b.owner):
            refused("same chain", b.bridge.set_peer, CHAIN_B, BOB.address, 1)
            refused("same chain", b.bridge.set_peer, 0, BOB.address, 1)
            refused("zero peer", b.bridge.set_peer, 4242, ZERO, 1)
    with b.prank(b.owner):
        b.bridge.set_peer(CHAIN_A, world.a.bridge.address, 0)   # closes the route
    with b.prank(ALICE):
        refused("over max transfer", b.bridge.send, CHAIN_A, BOB.address, 1)


# ---------------------------------------------------------------- a compromised committee


def test_a_compromised_quorum_is_bounded_by_the_bucket_and_provable(world):
    """Ronin/Multichain: the keys of a quorum are stolen. They can sign a transfer A never sent;
    B's bucket caps what leaves per window, a larger one waits and can be cancelled, and every
    signer is provably a forger on A."""
    a, b = world.a, world.b
    m, p = b_to_a(world, 5_000 * USD)          # B holds 5,000
    deliver(a, m, p)
    payload = pb.transfer_payload(OUTSIDER.address, OUTSIDER.address)
    forged = pb.Message(CHAIN_A, a.outbox.address, a.bridge.address, 1_000, CHAIN_B,
                        b.bridge.address, pb.KIND_TRANSFER, 0, pb.payload_hash(payload))
    too_big = dataclasses.replace(forged, amount=CAPACITY + 1)
    with unchanged(a, b, ids=[too_big.id]):
        refused("over capacity", deliver, b, too_big, payload)
    small = dataclasses.replace(forged, amount=LARGE)
    deliver(b, small, payload)                 # at most the large threshold leaves at once
    assert b.balance(OUTSIDER) == LARGE
    large = dataclasses.replace(forged, nonce=1_001, amount=3 * LARGE)
    assert deliver(b, large, payload) is False
    with b.prank(b.guardian):
        b.inbox.pause()
        b.inbox.cancel(large.as_tuple(), payload)   # B's bridge bounces it to A ...
    [(bounce, bp)] = sent_messages(b.inbox)
    assert deliver(a, bounce, bp) is False          # ... large: queued there too ...
    a.env.time_travel(seconds=DELAY)
    with unchanged(a, ids=[bounce.id]), a.prank(OUTSIDER):  # ... no transfer open: nobody paid
        refused("not open", a.inbox.execute, bounce.as_tuple(), bp)
    assert b.balance(OUTSIDER) == LARGE and a.balance(OUTSIDER) == 0
    assert b.balance(b.bridge.address) == 5_000 * USD - LARGE   # the loss: exactly what passed


def test_forgers_are_provable(world):
    a, b = world.a, world.b
    payload = pb.transfer_payload(OUTSIDER.address, OUTSIDER.address)
    forged = pb.Message(CHAIN_A, a.outbox.address, a.bridge.address, 1_000, CHAIN_B,
                        b.bridge.address, pb.KIND_TRANSFER, LARGE, pb.payload_hash(payload))
    sigs = attest(QUORUM, CHAIN_B, b.inbox.address, forged.id)
    for acct, sig in zip(sorted(QUORUM, key=lambda x: int(x.address, 16)), sigs, strict=True):
        with a.prank(OUTSIDER):
            assert a.outbox.prove_forgery(forged.as_tuple(), 0, sig) == acct.address
        assert a.outbox.forgeries(acct.address) == 1
    assert a.outbox.forgeries(COMMITTEE[0].address) == 0


# ---------------------------------------------------------------- gas


def test_gas_of_send_and_deliver(world, capsys):
    """Execution gas (boa's computation: without the 21,000 base and calldata)."""
    a, b = world.a, world.b
    gas = {}
    m, p = b_to_a(world, 100 * USD)
    gas["TokenBridge.send lock (B)"] = b.bridge._computation.get_gas_used()
    deliver(a, m, p)
    gas["deliver+mint, 2 signatures (A)"] = a.inbox._computation.get_gas_used()
    back, bp = send(a, CHAIN_B, BOB, ALICE, 40 * USD)
    gas["TokenBridge.send burn (A)"] = a.bridge._computation.get_gas_used()
    deliver(b, back, bp, signers=COMMITTEE)
    gas["deliver+unlock, 4 signatures (B)"] = b.inbox._computation.get_gas_used()
    send_raw(a, b, BOB.address, amount=1, payload=b"\1" * 64)
    gas["BridgeOutbox.send, 64-byte payload"] = a.outbox._computation.get_gas_used()
    with capsys.disabled():
        print("\n" + "\n".join(f"{k}: {v}" for k, v in gas.items()))
    assert all(v < 300_000 for v in gas.values())
