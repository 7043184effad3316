"""BridgeOrders with the real Market and a real mint-mode TokenBridge (titanoboa): a deposit sent
from a peer chain with `send_call` opens a Market order for its tenant in the delivery itself;
every refund of the order and its leases is owed back to the sender; terms the Market refuses
leave the deposit owed back whole; nobody else can take any of it.

The inbox is an address the test speaks as (`prank`): its quorum checks are BridgeInbox's own
tests; here the TokenBridge and BridgeOrders it calls are the subject. The anvil test
(tests/bridge/test_bridge_orders_anvil.py) runs the whole path over two chains.

The adversary, and what the tests below try:
- a relayer sends just too little gas so that the order's opening fails inside the delivery
  and the deposit is stranded (test_a_relayer_cannot_starve_the_call);
- anyone calls the hook or the order step directly to mint an order or a claim
  (test_only_the_token_bridge_and_itself_may_call);
- the tenant (or anyone) takes refunds owed to the sender (claim_here by others, send_back
  twice, a sponsored order's refunds to its tenant: test_refunds_go_to_the_payer_not_the_tenant);
- junk or refused terms trap the deposit (test_terms_the_market_refuses_are_owed_back_whole);
- a top-up from the peer lands in someone else's lease, or in a lease that has ended, or takes
  a refund it did not pay for (test_a_top_up_from_the_peer_..., test_a_top_up_nobody_can_take_
  is_owed_back_whole);
- any sequence of deliveries, leases, closes, cancels (here and by message), top-ups,
  send_backs and claims leaves a token the contract cannot account for
  (test_every_token_is_owed_for_any_sequence); a contract sender's address taken here, and
  cancels by message: tests/contracts/test_bridge_orders_contract_sender.py.
"""

from __future__ import annotations

import boa
import pytest
from boa.contracts.base_evm_contract import BoaError
from contracts_support import HOUR, USD, events, key_account
from eth_abi import encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.protocol.bridge import (
    KIND_BOUNCE,
    KIND_TRANSFER_CALL,
    MAX_CALL_DATA,
    TOP_UP_SELECTOR,
    OrderTerms,
    bounce_payload,
    cancel_call_data,
    claim_call_data,
    order_call_data,
    top_up_call_data,
    transfer_call_payload,
)

PEER_CHAIN = 31338
MAX_TRANSFER = 10_000 * USD
SENDER = key_account(70)     # the tenant's key: its address is the same on both chains


class Home:
    """The home chain's side: Market (from `system`), a mint-mode TokenBridge, BridgeOrders."""

    def __init__(self, system, factories):
        self.system = system
        self.inbox = boa.env.generate_address("inbox")
        self.peer_bridge = boa.env.generate_address("peer-token-bridge")
        self.outbox = factories["BridgeOutbox"].deploy()
        self.bridge = factories["TokenBridge"].deploy(system.usd.address, self.outbox.address,
                                                      self.inbox, True, system.owner)
        system.usd.set_minter(self.bridge.address, True)
        self.bridge.set_peer(PEER_CHAIN, self.peer_bridge, MAX_TRANSFER)
        self.orders = factories["BridgeOrders"].deploy(system.usd.address, system.market.address,
                                                       self.bridge.address)
        self.nonce = 0
        with boa.env.prank(SENDER.address):
            system.usd.approve(system.market.address, 2**256 - 1)   # for top-ups

    def deliver(self, amount: int, data: bytes, sender: str = SENDER.address, **kw) -> bytes:
        """The inbox delivers a send_call from `sender` on the peer chain; returns its id."""
        self.nonce += 1
        message_id = self.nonce.to_bytes(32, "big")
        payload = transfer_call_payload(self.orders.address, sender, data)
        with boa.env.prank(self.inbox):
            self.bridge.on_bridge_message(PEER_CHAIN, self.peer_bridge, KIND_TRANSFER_CALL, amount,
                                          payload, message_id, **kw)
        return message_id

    def bounce(self, transfer_id: bytes, amount: int) -> None:
        """The peer's guardian cancelled the send-back `transfer_id`: its bounce arrives."""
        self.nonce += 1
        with boa.env.prank(self.inbox):
            self.bridge.on_bridge_message(PEER_CHAIN, self.peer_bridge, KIND_BOUNCE, amount,
                                          bounce_payload(transfer_id), self.nonce.to_bytes(32, "big"))

    def owed_total(self, ids) -> int:
        return sum(self.orders.owed(i) for i in ids)


@pytest.fixture
def home(system, factories) -> Home:
    return Home(system, factories)


def terms(tenant: str = SENDER.address, *, max_price=2 * USD, duration=HOUR, nodes=1,
          min_gpus=1, model="") -> OrderTerms:
    return OrderTerms(tenant, b"\x33" * 32, model, min_gpus, 0, max_price, duration, nodes)


def test_a_delivered_deposit_opens_the_order_for_its_tenant(home):
    m, usd = home.system.market, home.system.usd
    t = terms(max_price=2 * USD, duration=3 * HOUR, nodes=2)
    mid = home.deliver(12 * USD, order_call_data(t))
    (funded,) = events(home.bridge, "OrderFunded")
    oid = funded.order_id
    assert (funded.message_id, funded.tenant, funded.sender, funded.amount) == (
        mid, SENDER.address, SENDER.address, 12 * USD)
    o = m.orders(oid)
    assert (o.tenant, o.deposit, o.nodes, o.duration, o.open) == (SENDER.address, 12 * USD, 2,
                                                                   3 * HOUR, True)
    assert m.refund_to(oid) == home.orders.address and m.refunded(oid) == 0
    assert home.orders.fundings(mid).order_id == oid and home.orders.owed(mid) == 0
    assert home.orders.funding_of(oid) == mid
    assert usd.balanceOf(home.orders.address) == 0 and usd.balanceOf(m.address) == 12 * USD
    assert home.bridge.backing(PEER_CHAIN) == 12 * USD
    assert not events(home.bridge, "CallFailed")


def test_refunds_go_to_the_payer_not_the_tenant(home):
    """The order's tenant runs it (accepts, closes, cancels) but its refunds are the sender's:
    collected in BridgeOrders, sent back by anyone, once."""
    s, m, usd = home.system, home.system.market, home.system.usd
    tenant = s.tenant2                       # another key runs the order the sender paid for
    mid = home.deliver(20 * USD, order_call_data(terms(tenant.address, nodes=2, duration=5 * HOUR)))
    oid = home.orders.fundings(mid).order_id
    tenant_before = usd.balanceOf(tenant.address)
    lease_id = s.accept(oid, s.providers[0], USD, tenant=tenant)   # 8 GPUs x 1 USD x 5 h = 40 > 20
    boa.env.time_travel(seconds=HOUR // 2)
    with boa.env.prank(tenant.address):
        m.close_lease(lease_id)
        m.cancel_order(oid)
    assert usd.balanceOf(tenant.address) == tenant_before     # the tenant got nothing
    refunded = m.refunded(oid)
    lease = m.leases(lease_id)
    assert refunded == 20 * USD - lease.paid > 0
    assert home.orders.owed(mid) == refunded == usd.balanceOf(home.orders.address)
    with boa.env.prank(s.outsider.address):                    # anyone may send it back
        transfer_id = home.orders.send_back(mid)
    (ret,) = events(home.orders, "Returned")
    assert (ret.to, ret.amount, ret.transfer_id) == (SENDER.address, refunded, transfer_id)
    origin = home.bridge.origins(transfer_id)
    assert (origin.sender, origin.amount, origin.destination_chain) == (
        home.orders.address, refunded, PEER_CHAIN)
    (sent,) = events(home.orders, "MessageSent")
    assert sent.destination_chain == PEER_CHAIN and sent.amount == refunded
    assert usd.balanceOf(home.orders.address) == 0 and home.orders.owed(mid) == 0
    with boa.reverts("nothing owed"):
        home.orders.send_back(mid)
    with boa.env.prank(SENDER.address), boa.reverts("nothing owed"):
        home.orders.claim_here(mid, SENDER.address)


def _raw_terms(**over) -> bytes:
    values = {"tenant": SENDER.address, "spec": b"\x33" * 32, "model": "", "gpus": 1, "mem": 0,
              "price": 2 * USD, "duration": HOUR, "nodes": 1, "verified": False, **over}
    types = ["address", "bytes32", "string", "uint32", "uint32", "uint256", "uint256", "uint32",
             "bool"]
    return encode(types, list(values.values()))


def _widen(data: bytes, word: int, value: int) -> bytes:
    """Overwrite head word `word` of abi-encoded terms with `value` (a uint32 out of range)."""
    return data[:32 * word] + value.to_bytes(32, "big") + data[32 * word + 32:]


@pytest.mark.parametrize("case, amount, data", [
    ("deposit too small", 2 * USD - 1, _raw_terms()),
    ("zero nodes", 2 * USD, _raw_terms(nodes=0)),
    ("zero tenant", 2 * USD, _raw_terms(tenant="0x" + "00" * 20)),
    ("verified without settlement", 2 * USD, _raw_terms(verified=True)),
    ("junk", 2 * USD, b"\x01" * 7),
    ("empty", 2 * USD, b""),
    ("uint32 overflow", 2 * USD, _widen(_raw_terms(), 3, 2**32)),
    # the string's length word says 65 (a longer one would not fit what send_call carries)
    ("model over 64 bytes", 2 * USD, _widen(_raw_terms(model="x" * 64), 9, 65)),
    ("largest data", 2 * USD, b"\xff" * MAX_CALL_DATA),
    ("tenant is BridgeOrders", 2 * USD, None),
])
def test_terms_the_market_refuses_are_owed_back_whole(home, case, amount, data):
    s, usd = home.system, home.system.usd
    if data is None:   # a tenant that could never run or cancel the order
        data = order_call_data(terms(home.orders.address))
    mid = home.deliver(amount, data)
    (refused,) = events(home.bridge, "OrderRefused")
    assert (refused.message_id, refused.sender, refused.amount) == (mid, SENDER.address, amount)
    assert home.orders.fundings(mid).order_id == 0 and s.market.next_order_id() == 1
    assert home.orders.owed(mid) == amount == usd.balanceOf(home.orders.address)
    with boa.env.prank(s.outsider.address), boa.reverts("not the sender"):
        home.orders.claim_here(mid, s.outsider.address)
    with boa.env.prank(SENDER.address):
        home.orders.claim_here(mid, SENDER.address)
    assert usd.balanceOf(SENDER.address) == amount and home.orders.owed(mid) == 0


def test_a_cancelled_send_back_is_owed_again(home):
    """The peer's guardian cancels a send-back (say, a large one held for the delay): its bounce
    refunds BridgeOrders, and anyone makes it owed again, once."""
    s, usd, orders = home.system, home.system.usd, home.orders
    mid = home.deliver(20 * USD, order_call_data(terms(nodes=2, duration=5 * HOUR)))
    with boa.env.prank(SENDER.address):
        orders.cancel_order(mid)                 # the sender cancels the order it paid for
    transfer_id = orders.send_back(mid)
    with boa.reverts("not bounced"):
        orders.recover_bounce(transfer_id)
    home.bounce(transfer_id, 20 * USD)
    assert usd.balanceOf(orders.address) == 20 * USD and orders.owed(mid) == 0
    with boa.env.prank(s.outsider.address):
        orders.recover_bounce(transfer_id)
    (ev,) = events(orders, "BounceRecovered")
    assert (ev.message_id, ev.transfer_id, ev.amount) == (mid, transfer_id, 20 * USD)
    assert orders.owed(mid) == 20 * USD == usd.balanceOf(orders.address)
    with boa.reverts("no send-back to recover"):
        orders.recover_bounce(transfer_id)
    with boa.env.prank(SENDER.address):
        orders.claim_here(mid, SENDER.address)
    assert usd.balanceOf(SENDER.address) == 20 * USD and usd.balanceOf(orders.address) == 0


def test_the_sender_cancels_an_order_its_tenant_never_runs(home):
    s, m, orders = home.system, home.system.market, home.orders
    mid = home.deliver(2 * USD, order_call_data(terms(s.tenant2.address)))
    oid = orders.fundings(mid).order_id
    for who in (s.outsider.address, s.tenant.address):
        with boa.env.prank(who), boa.reverts("not the sender"):
            orders.cancel_order(mid)
    with boa.env.prank(s.outsider.address), boa.reverts("market: caller is not the tenant"):
        m.cancel_order(oid)
    with boa.env.prank(SENDER.address):
        orders.cancel_order(mid)
    assert not m.orders(oid).open and orders.owed(mid) == 2 * USD == m.refunded(oid)


def test_send_back_takes_what_the_route_takes_and_leaves_the_rest_owed(home):
    s, orders = home.system, home.orders
    mid = home.deliver(20 * USD, order_call_data(terms(nodes=2, duration=5 * HOUR)))
    with boa.env.prank(SENDER.address):
        orders.cancel_order(mid)
    home.bridge.set_peer(PEER_CHAIN, home.peer_bridge, 6 * USD)    # the owner lowers the limit
    orders.send_back(mid)
    assert orders.owed(mid) == 14 * USD
    home.bridge.set_peer(PEER_CHAIN, home.peer_bridge, 0)          # the route closed
    with boa.reverts("the route back takes nothing now"):
        orders.send_back(mid)
    with boa.env.prank(SENDER.address):
        orders.claim_here(mid, SENDER.address)
    assert orders.owed(mid) == 0 and s.usd.balanceOf(orders.address) == 0


def test_only_the_token_bridge_and_itself_may_call(home):
    s = home.system
    data = order_call_data(terms())
    s.usd.mint(home.orders.address, 5 * USD)    # tokens sent here directly: nobody's claim
    with boa.env.prank(s.outsider.address):
        with boa.reverts("only the token bridge"):
            home.orders.on_bridged_tokens(PEER_CHAIN, s.outsider.address, 5 * USD, data, b"\x01" * 32)
        with boa.reverts("only this contract"):
            home.orders.open_order(5 * USD, data)
        with boa.reverts("unknown funding"):
            home.orders.send_back(b"\x01" * 32)
    assert s.market.next_order_id() == 1
    mid = home.deliver(2 * USD, data)
    with boa.env.prank(home.bridge.address), boa.reverts("funding seen"):   # a replayed id
        home.orders.on_bridged_tokens(PEER_CHAIN, SENDER.address, 2 * USD, data, mid)


def test_a_relayer_cannot_starve_the_call(home):
    """Whatever gas the delivery is sent with, it either reverts (and can be retried) or opens
    the order: never a delivery whose call failed for lack of gas."""
    data = order_call_data(terms())
    outcomes = set()
    for gas in range(150_000, 2_400_001, 75_000):
        with boa.env.anchor():
            try:
                mid = home.deliver(2 * USD, data, gas=gas)
            except BoaError:
                outcomes.add("reverted")
                continue
            assert not events(home.bridge, "CallFailed"), gas
            assert home.orders.fundings(mid).order_id == 1, gas
            outcomes.add("opened")
    assert outcomes == {"reverted", "opened"}


# -- top-ups from the peer chain ----------------------------------------------------------------

def test_a_top_up_from_the_peer_adds_to_the_lease_and_its_rest_comes_back_with_the_order(home):
    """The order's sender tops up one of its leases in one message: the tokens go into the
    lease's budget (nothing stays in BridgeOrders, nothing is owed for the top-up itself), and
    what the lease did not spend of them comes back with the order's refunds, to the sender."""
    s, m, usd, orders = home.system, home.system.market, home.system.usd, home.orders
    tenant = s.tenant2                      # the sender named another key as the tenant
    mid = home.deliver(8 * USD, order_call_data(terms(tenant.address, duration=HOUR)))
    oid = orders.fundings(mid).order_id
    lease_id = s.accept(oid, s.providers[0], USD, tenant=tenant)
    budget = m.leases(lease_id).budget                            # the rest stays in the order
    boa.env.time_travel(seconds=HOUR // 4)
    top = home.deliver(3 * USD, top_up_call_data(lease_id))
    (ev,) = events(home.bridge, "TopUpFunded")
    assert (ev.message_id, ev.funding, ev.lease_id, ev.amount) == (top, mid, lease_id, 3 * USD)
    assert m.leases(lease_id).budget == budget + 3 * USD
    f = orders.fundings(top)
    assert (f.order_id, f.added_to, f.amount) == (oid, mid, 3 * USD) and orders.owed(top) == 0
    assert usd.balanceOf(orders.address) == 0 and orders.owed(mid) == 0
    with boa.env.prank(tenant.address):
        m.close_lease(lease_id)
    spent = m.leases(lease_id).paid
    assert m.refunded(oid) == budget + 3 * USD - spent            # its rest, with the lease's
    assert orders.owed(mid) == m.refunded(oid) == usd.balanceOf(orders.address)
    orders.send_back(mid)
    assert usd.balanceOf(orders.address) == 0 and orders.owed(mid) == 0
    with boa.reverts("nothing owed"):
        orders.send_back(top)


def test_a_top_up_nobody_can_take_is_owed_back_whole(home):
    """A top-up BridgeOrders refuses opens nothing and adds to nothing: another sender's order,
    an order paid at home, a lease that closed or ran out, no such lease, data that is not a
    top-up. Each is owed back whole to its sender, as a refused order is."""
    s, m, usd, orders = home.system, home.system.market, home.system.usd, home.orders
    other = key_account(71)
    mid = home.deliver(8 * USD, order_call_data(terms(duration=HOUR)))
    oid = orders.fundings(mid).order_id
    lease_id = s.accept(oid, s.providers[0], USD, tenant=SENDER)
    home_order = s.create_order(s.tenant)                        # paid at home by its tenant
    home_lease = s.accept(home_order, s.providers[1], USD, nonce=2, tenant=s.tenant)
    closed = s.accept(home.orders.fundings(home.deliver(8 * USD, order_call_data(terms(
        duration=HOUR)))).order_id, s.providers[2], USD, nonce=3, tenant=SENDER)
    with boa.env.prank(SENDER.address):
        m.close_lease(closed)
    budgets = {lid: m.leases(lid).budget for lid in (lease_id, home_lease, closed)}
    cases = [("another sender's order", top_up_call_data(lease_id), other.address),
             ("an order paid at home", top_up_call_data(home_lease), SENDER.address),
             ("a closed lease", top_up_call_data(closed), SENDER.address),
             ("no such lease", top_up_call_data(999), SENDER.address),
             ("lease 0", TOP_UP_SELECTOR + bytes(32), SENDER.address),
             ("another selector", b"\x00\x00\x00\x01" + top_up_call_data(lease_id)[4:], SENDER.address),
             ("one byte short", top_up_call_data(lease_id)[:-1], SENDER.address),
             ("one byte over", top_up_call_data(lease_id) + b"\x00", SENDER.address)]
    held = usd.balanceOf(orders.address)
    for case, data, sender in cases:
        top = home.deliver(2 * USD, data, sender=sender)
        assert not events(home.bridge, "TopUpFunded"), case
        f = orders.fundings(top)
        assert (f.order_id, f.added_to, orders.owed(top)) == (0, bytes(32), 2 * USD), case
        held += 2 * USD
        assert usd.balanceOf(orders.address) == held, case
    boa.env.time_travel(seconds=2 * HOUR)                         # the lease ran out
    top = home.deliver(2 * USD, top_up_call_data(lease_id))
    assert orders.owed(top) == 2 * USD and orders.fundings(top).order_id == 0
    # nothing was added anywhere
    assert {lid: m.leases(lid).budget for lid in budgets} == budgets
    with pytest.raises(ValueError):
        top_up_call_data(0)


def test_only_the_payer_tops_up_a_paid_for_lease_at_the_market(home):
    """At the Market: a sponsored order's lease takes a top-up from its payer only (its refunds
    go there); its tenant and strangers are refused, a home order's tenant is not."""
    s, m = home.system, home.system.market
    mid = home.deliver(8 * USD, order_call_data(terms(duration=HOUR)))
    lease_id = s.accept(home.orders.fundings(mid).order_id, s.providers[0], USD, tenant=SENDER)
    budget = m.leases(lease_id).budget
    for who in (SENDER.address, s.outsider.address):
        with boa.env.prank(who), boa.reverts("market: the order's refunds go to its payer"):
            m.top_up(lease_id, USD)
    home_lease = s.accept(s.create_order(s.tenant), s.providers[1], USD, nonce=2, tenant=s.tenant)
    with boa.env.prank(s.outsider.address), boa.reverts("market: caller is not the tenant"):
        m.top_up(home_lease, USD)
    s.usd.mint(home.orders.address, USD)
    with boa.env.prank(home.orders.address):       # the payer itself (its self-call does this)
        s.usd.approve(m.address, USD)
        m.top_up(lease_id, USD)
    assert m.leases(lease_id).budget == budget + USD


# -- every token is owed to someone, for any sequence ----------------------------------------

fund_op = st.tuples(st.just("fund"), st.booleans(), st.integers(1, 3), st.integers(1, 8),
                    st.integers(0, 3 * USD))
op = st.one_of(
    fund_op,
    fund_op,
    st.tuples(st.just("accept"), st.integers(0, 20), st.integers(0, 3)),
    st.tuples(st.just("accept"), st.integers(0, 20), st.integers(0, 3)),
    st.tuples(st.just("time"), st.integers(0, 4 * HOUR)),
    st.tuples(st.just("close"), st.integers(0, 20)),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(st.just("top_up"), st.integers(0, 20), st.integers(1, 5 * USD)),
    st.tuples(st.just("bridged_top_up"), st.integers(0, 20), st.integers(1, 5 * USD),
              st.booleans()),
    st.tuples(st.just("send_back"), st.integers(0, 20)),
    st.tuples(st.just("claim"), st.integers(0, 20)),
    st.tuples(st.just("bounce"), st.integers(0, 20)),
    st.tuples(st.just("recover"), st.integers(0, 20)),
    st.tuples(st.just("sender_cancel"), st.integers(0, 20)),
    st.tuples(st.just("bridged_cancel"), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("bridged_claim"), st.integers(0, 20), st.booleans()),
)


def _pick(ids: list, i: int):
    return ids[-1 - i % len(ids)] if ids else None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=5, max_size=30))
def test_every_token_is_owed_for_any_sequence(home, ops):
    s, m, usd, orders = home.system, home.system.market, home.system.usd, home.orders
    with boa.env.anchor():
        usd.mint(SENDER.address, 1_000 * USD)   # for top-ups
        fundings, leases, nonce, sent, bounced = [], [], 0, [], set()
        for step in ops:
            kind = step[0]
            try:
                if kind == "fund":
                    _, good, nodes, hours, extra = step
                    deposit = 2 * USD * nodes * hours + extra
                    data = order_call_data(terms(nodes=nodes, duration=hours * HOUR)) if good else b"\x00"
                    fundings.append(home.deliver(deposit, data))
                elif kind == "accept":
                    mid = _pick(fundings, step[1])
                    if mid is not None and orders.fundings(mid).order_id:
                        nonce += 1
                        leases.append(s.accept(orders.fundings(mid).order_id, s.providers[step[2]],
                                               USD, nonce=nonce, tenant=SENDER))
                elif kind == "bridged_top_up":   # from the order's sender, or from another
                    lease_id = _pick(leases, step[1])
                    if lease_id is not None:
                        sender = SENDER.address if step[3] else s.outsider.address
                        fundings.append(home.deliver(step[2], top_up_call_data(lease_id),
                                                     sender=sender))
                elif kind == "time":
                    boa.env.time_travel(seconds=step[1])
                elif kind in ("close", "top_up"):
                    lease_id = _pick(leases, step[1])
                    if lease_id is not None:
                        with boa.env.prank(SENDER.address):
                            if kind == "close":
                                m.close_lease(lease_id)
                            else:   # refused: its refund would be the payer's
                                with boa.reverts("market: the order's refunds go to its payer"):
                                    m.top_up(lease_id, step[2])
                elif kind == "cancel":
                    mid = _pick(fundings, step[1])
                    if mid is not None and orders.fundings(mid).order_id:
                        with boa.env.prank(SENDER.address):
                            m.cancel_order(orders.fundings(mid).order_id)
                elif kind == "send_back":
                    mid = _pick(fundings, step[1])
                    if mid is not None:
                        sent.append(orders.send_back(mid))
                elif kind == "bounce":   # the peer cancels a send-back: its bounce arrives
                    tid = _pick(sent, step[1])
                    if tid is not None and tid not in bounced:
                        home.bounce(tid, home.bridge.origins(tid).amount)
                        bounced.add(tid)
                elif kind == "recover":
                    tid = _pick(sent, step[1])
                    if tid is not None:
                        orders.recover_bounce(tid)
                elif kind == "sender_cancel":
                    mid = _pick(fundings, step[1])
                    if mid is not None:
                        with boa.env.prank(SENDER.address):
                            orders.cancel_order(mid)
                elif kind == "bridged_cancel":   # by message, from the sender or another
                    mid = _pick(fundings, step[1])
                    if mid is not None:
                        sender = SENDER.address if step[2] else s.outsider.address
                        fundings.append(home.deliver(1, cancel_call_data(mid), sender=sender))
                elif kind == "bridged_claim":   # by message, to an account here
                    mid = _pick(fundings, step[1])
                    if mid is not None:
                        sender = SENDER.address if step[2] else s.outsider.address
                        fundings.append(home.deliver(1, claim_call_data(mid, SENDER.address),
                                                     sender=sender))
                elif kind == "claim":
                    mid = _pick(fundings, step[1])
                    if mid is not None:
                        with boa.env.prank(SENDER.address):
                            orders.claim_here(mid, SENDER.address)
            except BoaError:
                pass   # a refusal changes nothing: the invariants below still hold
            unrecovered = sum(orders.sent_back(t).amount for t in bounced)   # recover_bounce's
            assert usd.balanceOf(orders.address) == home.owed_total(fundings) + unrecovered
            assert usd.balanceOf(m.address) == s.held()
        # the way out, in a bounded number of transactions: recover the bounces, close, cancel,
        # send back
        for tid in bounced:
            if orders.sent_back(tid).amount:
                orders.recover_bounce(tid)
        with boa.env.prank(SENDER.address):
            for lease_id in leases:
                if m.leases(lease_id).closed_at == 0:
                    m.close_lease(lease_id)
            for mid in fundings:
                oid = orders.fundings(mid).order_id
                if oid and m.orders(oid).open:
                    m.cancel_order(oid)
        for mid in fundings:
            if orders.owed(mid):
                orders.send_back(mid)
        assert usd.balanceOf(orders.address) == 0
