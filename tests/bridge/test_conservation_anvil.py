"""Conservation on real anvil nodes, property-tested (hypothesis): whatever sequence of transfers
both ways (some over the large threshold, some refused for want of funds, backing or bucket),
relays, guardian cancellations and time passing, at every step

    TUSD that TokenBridge holds on the peer = what TokenBridge minted at home and has not burned
                                              + what is in flight either way,

and every transfer ends delivered or bounced back once time has passed and the relayer has run.
The contract-level property test (tests/contracts/test_bridge_properties.py) explores many more
sequences in titanoboa; this one runs the same rule through the real nodes, attesters and
relayer. The chains keep their state from example to example (the attesters' records must stay
true to them), which the rule does not mind: it holds from any state."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.bridge.conftest import GUARDIAN, HOME, OTHER, PEER, SENDER, TUSD

from tessera.chain.bridge_inbox import BridgeInbox
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.token_bridge import TokenBridge
from tessera.chain.tokens import PaymentToken
from tessera.errors import BridgeError, InsufficientFunds

DAY = 86_400
send = st.tuples(st.just("send"), st.sampled_from([PEER, HOME]), st.sampled_from([SENDER, OTHER]),
                 st.one_of(st.integers(1, 10_000), st.integers(10_001, 25_000)))   # then queued
op = st.one_of(send, send, st.tuples(st.just("settle")), st.tuples(st.just("cancel")),
               st.tuples(st.just("warp"), st.sampled_from([600, 3_700, DAY])))
# the paths a few random examples may miss, always run first: queued, cancelled, bounced back;
# burned at home and released on the peer; queued and executed after the delay
CANCELLED = [("send", PEER, SENDER, 20_000), ("settle",), ("cancel",), ("settle",),
             ("warp", 3_700), ("settle",), ("send", HOME, OTHER, 5)]
BOTH_WAYS = [("send", PEER, OTHER, 12_000), ("send", PEER, SENDER, 40), ("settle",),
             ("send", HOME, SENDER, 30), ("settle",), ("warp", 3_700), ("settle",)]


def in_flight(bridge, source: int, destination: int) -> int:
    """Value TokenBridge sent from `source` not yet released on `destination` (not delivered,
    or queued there)."""
    sender = TokenBridge(bridge.chain(source)).address.lower()
    inbox = BridgeInbox(bridge.chain(destination))
    return sum(s.message.amount for s in BridgeOutbox(bridge.chain(source)).messages(
                   0, "latest", destination_chain=destination)
               if s.message.sender.lower() == sender
               and (not inbox.delivered(s.message.id) or inbox.pending(s.message.id)))


def check(bridge) -> None:
    peer_bridge, home_bridge = TokenBridge(bridge.chain(PEER)), TokenBridge(bridge.chain(HOME))
    locked = PaymentToken(bridge.chain(PEER)).balance_of(peer_bridge.address)
    minted = home_bridge.total_received() + home_bridge.total_bounced() - home_bridge.total_sent()
    flight = in_flight(bridge, PEER, HOME) + in_flight(bridge, HOME, PEER)
    assert locked == minted + flight, (locked, minted, flight)
    assert minted == home_bridge.backing(PEER)


def cancel_queued(bridge) -> None:
    """The guardian cancels every transfer queued at either inbox."""
    for chain_id, source in ((HOME, PEER), (PEER, HOME)):
        inbox = BridgeInbox(bridge.chain(chain_id, GUARDIAN))
        for sent in BridgeOutbox(bridge.chain(source)).messages(0, "latest",
                                                                destination_chain=chain_id):
            if inbox.pending(sent.message.id):
                inbox.cancel(sent.message, sent.payload)


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=3, max_size=8))
@example(ops=CANCELLED)
@example(ops=BOTH_WAYS)
def test_locked_equals_minted_plus_in_flight_at_every_step(bridge, ops):
    relayer = bridge.relayer("property")
    check(bridge)
    for step in ops:
        if step[0] == "send":
            _, source, account, whole = step
            try:
                bridge.send(source, account, whole * TUSD)
            except (BridgeError, InsufficientFunds):
                pass   # refused before sending (backing, balance, max transfer): nothing moved
        elif step[0] == "settle":
            bridge.settle(relayer)
        elif step[0] == "cancel":
            cancel_queued(bridge)
        else:
            bridge.warp(HOME, step[1])
            bridge.warp(PEER, step[1])
        check(bridge)
    # every wei has a way out: after a day and the relayer, nothing is left in flight
    for _ in range(3):
        bridge.warp(HOME, DAY)
        bridge.warp(PEER, DAY)
        bridge.settle(relayer)
    check(bridge)
    assert in_flight(bridge, PEER, HOME) == in_flight(bridge, HOME, PEER) == 0
    assert relayer.state["open"] == {}
