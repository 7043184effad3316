"""BridgeOrders and a sender that is a contract on its chain (a Safe, a DAO, a smart wallet):
its address on the home chain may be someone else's contract (the Wintermute loss: a Safe's
address deployed on another chain by whoever got there first). That contract must not take
what the funding is owed (`claim_here`) nor cancel its order (`cancel_order`): both now need
the caller to be the key behind the address (`tx.origin`). The sender cancels by a message from
its own chain instead (data: `cancel_order(bytes32)`'s selector and the funding's id), and is
paid back there by `send_back`, or here by a claim from its chain (data: the selector of
`claim_here(bytes32,address)`, the funding's id, the recipient here) when the route back takes
nothing (review 18: anyone bridging home TUSD out can drain the route's backing). Real Market
and mint-mode TokenBridge, as in tests/contracts/test_bridge_orders.py (whose property test also
sends cancels and claims by message)."""

from __future__ import annotations

import boa
import pytest
from contracts_support import USD, events, key_account
from test_bridge_orders import SENDER, Home, terms

from tessera.protocol.bridge import (
    CANCEL_SELECTOR,
    cancel_call_data,
    claim_call_data,
    order_call_data,
    top_up_call_data,
)

HIJACKER = key_account(72)

# Whoever deployed a contract at the sender's address on this chain, calling as that address.
SQUATTER = """
# pragma version ~=0.4.3
interface IBridgeOrders:
    def claim_here(message_id: bytes32, to: address): nonpayable
    def cancel_order(message_id: bytes32): nonpayable

@external
def claim(orders: address, message_id: bytes32, to: address):
    extcall IBridgeOrders(orders).claim_here(message_id, to)

@external
def cancel(orders: address, message_id: bytes32):
    extcall IBridgeOrders(orders).cancel_order(message_id)
"""


@pytest.fixture
def home(system, factories) -> Home:
    return Home(system, factories)


def test_a_contract_at_the_senders_address_here_takes_nothing(home):
    s, m, usd, orders = home.system, home.system.market, home.system.usd, home.orders
    squatter = boa.loads(SQUATTER)
    # a funding sent by the contract that has this address on the peer chain
    mid = home.deliver(4 * USD, order_call_data(terms(s.tenant2.address)), sender=squatter.address)
    oid = orders.fundings(mid).order_id
    refused = home.deliver(3 * USD, b"\x00", sender=squatter.address)     # owed back whole
    with boa.env.prank(HIJACKER.address):
        with boa.reverts("a contract sender claims from its chain"):
            squatter.claim(orders.address, refused, HIJACKER.address)
        with boa.reverts("a contract sender cancels from its chain"):
            squatter.cancel(orders.address, mid)
    assert m.orders(oid).open and orders.owed(refused) == 3 * USD
    assert usd.balanceOf(HIJACKER.address) == 0
    # what it is owed goes back to the sender's own chain
    orders.send_back(refused)
    assert orders.owed(refused) == 0 and usd.balanceOf(orders.address) == 0


def test_an_account_with_a_key_still_claims_and_cancels_here(home):
    s, m, usd, orders = home.system, home.system.market, home.system.usd, home.orders
    mid = home.deliver(4 * USD, order_call_data(terms(s.tenant2.address)))
    with boa.env.prank(SENDER.address):
        orders.cancel_order(mid)
        orders.claim_here(mid, SENDER.address)
    assert not m.orders(orders.fundings(mid).order_id).open
    assert usd.balanceOf(SENDER.address) == 4 * USD and orders.owed(mid) == 0


def test_the_sender_cancels_by_a_message_from_its_chain(home):
    s, m, usd, orders = home.system, home.system.market, home.system.usd, home.orders
    safe = boa.env.generate_address("a Safe on the peer chain")
    mid = home.deliver(4 * USD, order_call_data(terms(s.tenant2.address)), sender=safe)
    oid = orders.fundings(mid).order_id
    cancel = home.deliver(1, cancel_call_data(mid), sender=safe)
    (ev,) = events(home.bridge, "CancelFunded")
    assert (ev.message_id, ev.funding, ev.order_id) == (cancel, mid, oid)
    assert not m.orders(oid).open
    assert orders.owed(mid) == 4 * USD == m.refunded(oid)    # the unallocated deposit
    assert orders.owed(cancel) == 1 and orders.fundings(cancel).order_id == 0
    assert usd.balanceOf(orders.address) == 4 * USD + 1
    for funding in (mid, cancel):
        orders.send_back(funding)
    assert usd.balanceOf(orders.address) == 0


def test_a_cancel_nobody_may_send_cancels_nothing_and_is_owed_back(home):
    """Another sender's order, an unknown funding, a top-up's funding, a refused funding, an
    order already closed, data one byte short or over: no order changes, and the message's
    tokens are owed back whole."""
    s, m, usd, orders = home.system, home.system.market, home.system.usd, home.orders
    other = key_account(71)
    mid = home.deliver(8 * USD, order_call_data(terms()))
    oid = orders.fundings(mid).order_id
    lease_id = s.accept(oid, s.providers[0], USD, tenant=SENDER)
    top = home.deliver(USD, top_up_call_data(lease_id))
    refused = home.deliver(USD, b"\x01")
    closed = home.deliver(8 * USD, order_call_data(terms()))
    with boa.env.prank(SENDER.address):
        orders.cancel_order(closed)
    cases = [("another sender's order", cancel_call_data(mid), other.address),
             ("an unknown funding", cancel_call_data(b"\x07" * 32), SENDER.address),
             ("a top-up's funding", cancel_call_data(top), SENDER.address),
             ("a refused funding", cancel_call_data(refused), SENDER.address),
             ("an order already closed", cancel_call_data(closed), SENDER.address),
             ("one byte short", cancel_call_data(mid)[:-1], SENDER.address),
             ("one byte over", cancel_call_data(mid) + b"\x00", SENDER.address),
             ("the zero funding", CANCEL_SELECTOR + bytes(32), SENDER.address)]
    held = usd.balanceOf(orders.address)
    for case, data, sender in cases:
        message = home.deliver(2 * USD, data, sender=sender)
        assert not events(home.bridge, "CancelFunded"), case
        assert m.orders(oid).open, case
        assert orders.owed(message) == 2 * USD and orders.fundings(message).order_id == 0, case
        held += 2 * USD
        assert usd.balanceOf(orders.address) == held, case
    with pytest.raises(ValueError):
        cancel_call_data(bytes(32))


def test_the_sender_claims_here_by_a_message_from_its_chain(home):
    usd, orders = home.system.usd, home.orders
    safe = boa.env.generate_address("a Safe on the peer chain")
    treasury = boa.env.generate_address("the Safe's account here")
    refused = home.deliver(3 * USD, b"\x00", sender=safe)              # owed back whole
    claim = home.deliver(USD // 2, claim_call_data(refused, treasury), sender=safe)
    (ev,) = events(home.bridge, "ClaimFunded")
    assert (ev.message_id, ev.funding, ev.to, ev.amount) == (claim, refused, treasury, 3 * USD)
    assert usd.balanceOf(treasury) == 3 * USD and orders.owed(refused) == 0
    assert orders.owed(claim) == USD // 2 == usd.balanceOf(orders.address)   # the carrier
    (ret,) = [e for e in events(home.bridge, "Returned")]
    assert (ret.message_id, ret.to, ret.amount, ret.transfer_id) == (refused, treasury, 3 * USD,
                                                                   bytes(32))


def test_a_claim_nobody_may_send_pays_nothing_and_is_owed_back(home):
    usd, orders = home.system.usd, home.orders
    other = key_account(71)
    to = boa.env.generate_address("somewhere")
    refused = home.deliver(3 * USD, b"\x00")
    mid = home.deliver(8 * USD, order_call_data(terms()))               # open: nothing owed yet
    cases = [("another sender's funding", claim_call_data(refused, to), other.address),
             ("nothing owed", claim_call_data(mid, to), SENDER.address),
             ("an unknown funding", claim_call_data(b"\x07" * 32, to), SENDER.address),
             ("the zero recipient", claim_call_data(refused, to)[:36] + bytes(32), SENDER.address),
             ("BridgeOrders itself", claim_call_data(refused, orders.address), SENDER.address),
             # a recipient word wider than an address: refused, not a reverted delivery that
             # strands the carrier (review 19)
             ("a dirty recipient word", claim_call_data(refused, to)[:36] + b"\x01" * 12
              + claim_call_data(refused, to)[48:], SENDER.address),
             ("one byte short", claim_call_data(refused, to)[:-1], SENDER.address),
             ("one byte over", claim_call_data(refused, to) + b"\x00", SENDER.address)]
    held = usd.balanceOf(orders.address)
    for case, data, sender in cases:
        message = home.deliver(2 * USD, data, sender=sender)
        assert not events(home.bridge, "ClaimFunded"), case
        assert orders.owed(refused) == 3 * USD and usd.balanceOf(to) == 0, case
        assert orders.owed(message) == 2 * USD, case
        held += 2 * USD
        assert usd.balanceOf(orders.address) == held, case
    with pytest.raises(ValueError):
        claim_call_data(refused, "0x" + "00" * 20)
