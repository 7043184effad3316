"""`tessera bridge order-cancel --from-chain`, on two real anvil nodes: the sender of a deposit
cancels the order it opened with a message from its own chain (no transaction, no gas, on the
home chain; the one way for a sender that is a contract: docs/bridge.md), the relayer delivers
it, the order closes, and the relayer's refund duty sends the deposit and the cancel's carrier
back (the carrier's one base unit, below the relayer's least return, by anyone's `send_back`),
so the sender is whole again on the chain its money came from."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_orders import CANCEL_CARRIER, BridgeOrders, fund_order
from tessera.chain.market import Market
from tessera.chain.token_bridge import TokenBridge
from tessera.cli import app
from tessera.protocol.bridge import OrderTerms, claim_call_data

from .conftest import HOME, OTHER, PEER, SENDER, TUSD


def tessera(bridge, *args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--network", str(bridge.env.devnet.network_file)])
    return result.exit_code, " ".join(result.output.split())


def test_the_sender_cancels_its_order_from_its_own_chain(bridge):
    sender = devnet_account(SENDER).address
    peer_before = bridge.tusd(PEER, sender)
    home_before = bridge.tusd(HOME, sender)
    terms = OrderTerms(sender, b"\x55" * 32, "", 1, 0, 2 * TUSD, 3600, 1)
    message_id, _ = fund_order(bridge.chain(PEER, SENDER), bridge.chain(HOME), terms, 3 * TUSD)
    relayer = bridge.relayer(refund_check_s=0)
    bridge.settle(relayer)
    order_id = BridgeOrders(bridge.chain(HOME)).funded_order(message_id, timeout_s=0)
    mid = "0x" + message_id.hex()
    cancel = ["bridge", "order-cancel", mid, "--from-chain", str(PEER)]
    for account, said in ((OTHER, "only that sender cancels its order"),):
        code, out = tessera(bridge, *cancel, "--account", f"devnet:{account}")
        assert code == 1 and said in out and "Traceback" not in out, out
    code, out = tessera(bridge, *cancel, "--account", f"devnet:{SENDER}")
    assert code == 0 and "cancel sent from chain" in out, out
    cancel_id = bytes.fromhex(re.search(r"as message 0x([0-9a-f]{64})", out).group(1))
    assert bridge.tusd(PEER, sender) == peer_before - 3 * TUSD - CANCEL_CARRIER
    assert Market(bridge.chain(HOME)).order(order_id).open      # not before it is delivered
    bridge.settle(relayer)                                       # delivered: the order closes
    assert not Market(bridge.chain(HOME)).order(order_id).open
    code, out = tessera(bridge, "bridge", "order-status", mid)
    assert code == 0 and f"opened order {order_id} (closed)" in out, out
    code, out = tessera(bridge, *cancel, "--account", f"devnet:{SENDER}")
    assert code == 1 and "already closed" in out, out
    for _ in range(3):                                           # sent back, then carried
        bridge.settle(relayer)
    # the deposit is back; the carrier (1 base unit) is below the relayer's least return and
    # stays owed to the sender: anyone's `send_back` takes it home
    assert bridge.tusd(PEER, sender) == peer_before - CANCEL_CARRIER
    assert bridge.tusd(HOME, sender) == home_before              # nothing spent at home
    orders = BridgeOrders(bridge.chain(HOME, OTHER))
    assert orders.owed(message_id) == 0
    assert orders.owed(cancel_id) == CANCEL_CARRIER
    orders.send_back(cancel_id)                                  # anyone, at their own gas
    for _ in range(2):
        bridge.settle(relayer)
    assert bridge.tusd(PEER, sender) == peer_before and orders.owed(cancel_id) == 0


def test_the_sender_claims_here_from_its_own_chain_and_the_carrier_comes_back(bridge):
    """A refused deposit is owed back; the sender has it paid on the home chain by a message
    from its own chain (`order-claim --from-chain --to`): for a contract sender when the route
    back takes nothing. A carrier worth sending (0.02 TUSD, sent by hand as a Safe would) comes
    back by the relayer's refund duty (review 18, L-1)."""
    sender = devnet_account(SENDER).address
    receiver = devnet_account(OTHER).address
    peer = bridge.chain(PEER, SENDER)
    refused_id, _ = TokenBridge(peer).send_call(HOME, BridgeOrders(bridge.chain(HOME)).address,
                                                2 * TUSD, b"\x01")          # no order's terms
    relayer = bridge.relayer(refund_check_s=3_600)      # the duty does not send it back first
    bridge.settle(relayer)
    orders = BridgeOrders(bridge.chain(HOME))
    assert orders.owed(refused_id) == 2 * TUSD
    before = bridge.tusd(HOME, receiver)
    code, out = tessera(bridge, "bridge", "order-claim", "0x" + refused_id.hex(), "--from-chain",
                        str(PEER), "--to", receiver, "--account", f"devnet:{SENDER}")
    assert code == 0 and f"paid to {receiver}" in out, out
    bridge.settle(relayer)
    assert bridge.tusd(HOME, receiver) == before + 2 * TUSD and orders.owed(refused_id) == 0
    code, out = tessera(bridge, "bridge", "order-claim", "0x" + refused_id.hex(), "--from-chain",
                        str(PEER), "--account", f"devnet:{SENDER}")
    assert code == 1 and "owed nothing now" in out, out

    # a claim carrying 0.02 TUSD: the carrier is owed back and the relayer's duty returns it
    refused_id, _ = TokenBridge(peer).send_call(HOME, orders.address, TUSD, b"\x01")
    bridge.settle(relayer)
    peer_before, home_before = bridge.tusd(PEER, sender), bridge.tusd(HOME, receiver)
    carrier = TUSD // 50
    claim_id, _ = TokenBridge(peer).send_call(HOME, orders.address, carrier,
                                              claim_call_data(refused_id, receiver))
    duty = bridge.relayer("refunds", refund_check_s=0)
    for _ in range(4):
        bridge.settle(duty)
    assert orders.owed(claim_id) == 0 and orders.owed(refused_id) == 0
    assert bridge.tusd(HOME, receiver) == home_before + TUSD   # the claim paid here
    assert bridge.tusd(PEER, sender) == peer_before        # the carrier went out and came back


def test_a_failing_committee_read_stops_neither_deliveries_nor_refunds(bridge, monkeypatch):
    """Review 18, L-3: an error reading the committees (an RPC answering 503 after web3's
    retries is an HTTPError, not a ChainError) aborted the relayer's poll before its refund
    duty. A stand-in raises it (an RPC that fails on cue cannot be caused here otherwise)."""
    import requests

    relayer = bridge.relayer(refund_check_s=0)
    polled = []

    def failing():
        raise requests.HTTPError("503 Server Error: Service Unavailable")

    monkeypatch.setattr(relayer.committees, "due", failing)
    monkeypatch.setattr(relayer.refunds, "poll", lambda: polled.append(True))
    message_id = bridge.send(PEER, SENDER, TUSD)
    bridge.mine(PEER)
    bridge.mine(HOME)
    bridge.attest()
    relayer.poll_once()
    assert polled                                                  # the poll went on
    for _ in range(3):
        bridge.mine(PEER)
        bridge.attest()
        relayer.poll_once()
    assert bridge.inbox(HOME).delivered(message_id)
