"""An order funded from the peer chain in one message, on two real anvil nodes: the tenant's TUSD
is locked on chain B and the delivery itself opens its order on chain A's Market (no transaction
of the tenant on A); the order's refund comes back to the tenant on B, sent by the relayer, not
by the tenant's client. A deposit whose order the Market refuses comes back whole the same way.
Conservation across the bridge holds at every step: locked on B = minted on A + in flight."""

from __future__ import annotations

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_orders import BridgeOrders, fund_order
from tessera.chain.market import Market
from tessera.chain.token_bridge import TokenBridge
from tessera.chain.tokens import PaymentToken
from tessera.errors import BridgeError
from tessera.protocol.bridge import MAX_CALL_DATA, OrderTerms, order_call_data

from .conftest import GUARDIAN, HOME, OTHER, OWNER, PEER, SENDER, TUSD


def _terms(tenant: str, nodes: int = 1) -> OrderTerms:
    return OrderTerms(tenant, b"\x55" * 32, "", 1, 0, 2 * TUSD, 3600, nodes)


def _bridge_books(bridge) -> tuple[int, int]:
    """(TUSD locked in the peer's TokenBridge, TUSD the home TokenBridge minted for the peer and
    not yet burned back), read from the chains."""
    peer_bridge = TokenBridge(bridge.chain(PEER))
    return (PaymentToken(bridge.chain(PEER)).balance_of(peer_bridge.address),
            TokenBridge(bridge.chain(HOME)).backing(PEER))


def test_an_order_funded_in_one_message_and_refunded_without_the_client(bridge):
    sender = devnet_account(SENDER).address
    peer_before = bridge.tusd(PEER, sender)
    home_before = bridge.tusd(HOME, sender)
    orders = BridgeOrders(bridge.chain(HOME))
    books = _bridge_books(bridge)
    message_id, _ = fund_order(bridge.chain(PEER, SENDER), bridge.chain(HOME),
                               _terms(sender, nodes=2), 4 * TUSD)
    assert bridge.tusd(PEER, sender) == peer_before - 4 * TUSD
    relayer = bridge.relayer(refund_check_s=0)
    bridge.settle(relayer)
    locked, backing = _bridge_books(bridge)
    assert (locked - books[0], backing - books[1]) == (4 * TUSD, 4 * TUSD)   # locked = minted
    order_id = orders.funded_order(message_id, timeout_s=0)
    market = Market(bridge.chain(HOME, SENDER))
    order = market.order(order_id)
    assert (order.tenant, order.deposit, order.nodes, order.open) == (sender, 4 * TUSD, 2, True)
    assert market.refund_to(order_id) == orders.address
    assert bridge.tusd(HOME, sender) == home_before       # nothing of the tenant's moved at home

    market.cancel_order(order_id)                         # the tenant runs its order at home
    assert orders.owed(message_id) == 4 * TUSD and bridge.tusd(HOME, sender) == home_before
    bridge.settle(relayer)                                # the relayer sends it back ...
    assert orders.owed(message_id) == 0 and relayer.state["done"]["delivered"] == 1
    bridge.settle(relayer)                                # ... and carries it, once confirmed
    assert orders.owed(message_id) == 0
    assert bridge.tusd(PEER, sender) == peer_before       # whole again, on the chain it came from
    assert PaymentToken(bridge.chain(HOME)).balance_of(orders.address) == 0
    assert not relayer.state["open"]
    locked, backing = _bridge_books(bridge)
    assert (locked - books[0], backing - books[1]) == (0, 0)      # nothing left on either side


def test_a_refused_order_comes_back_whole(bridge):
    """Terms the Market refuses (here a deposit under the worst case, sent past the client's
    own check) open nothing; the deposit is owed back and the relayer returns it."""
    sender = devnet_account(SENDER).address
    peer_before = bridge.tusd(PEER, sender)
    orders = BridgeOrders(bridge.chain(HOME))
    orders_before = Market(bridge.chain(HOME))._call("order_count")
    try:
        fund_order(bridge.chain(PEER, SENDER), bridge.chain(HOME), _terms(sender), TUSD)
    except ValueError as exc:
        assert "below the order's worst case" in str(exc)
    else:
        raise AssertionError("the client sent a deposit the Market refuses")
    message_id, _ = TokenBridge(bridge.chain(PEER, SENDER)).send_call(
        HOME, orders.address, TUSD, order_call_data(_terms(sender)))
    relayer = bridge.relayer(refund_check_s=0)
    bridge.settle(relayer)
    try:
        orders.funded_order(message_id, timeout_s=0)
    except BridgeError as exc:
        assert "refused its order" in str(exc)
    else:
        raise AssertionError("a refused order was reported as opened")
    assert Market(bridge.chain(HOME))._call("order_count") == orders_before
    bridge.settle(relayer)
    bridge.settle(relayer)
    assert bridge.tusd(PEER, sender) == peer_before and orders.owed(message_id) == 0


def test_send_call_refuses_oversized_data_before_sending(bridge):
    chain = bridge.chain(PEER, SENDER)
    before = bridge.tusd(PEER, chain.address)
    try:
        TokenBridge(chain).send_call(HOME, BridgeOrders(bridge.chain(HOME)).address, TUSD,
                                     b"\x00" * (MAX_CALL_DATA + 1))
    except ValueError as exc:
        assert str(MAX_CALL_DATA) in str(exc)
    else:
        raise AssertionError("oversized call data was sent")
    assert bridge.tusd(PEER, chain.address) == before
    assert TokenBridge(bridge.chain(PEER))._call("MAX_CALL_DATA") == MAX_CALL_DATA   # one rule


def test_a_send_back_the_peer_cancels_is_owed_again_and_left_to_the_sender(bridge):
    """The peer's inbox holds send-backs over 1 TUSD for its delay (its owner lowered the
    threshold, through the peer's Timelock) and its guardian cancels one: the bounce lands in
    BridgeOrders, the relayer recovers it (owed again) and does not undo the guardian's cancel
    by sending it again (review 13); the sender takes it at home."""
    sender = devnet_account(SENDER).address
    home_bridge = TokenBridge(bridge.chain(HOME)).address
    bridge.owner_action(PEER, "BridgeInbox", "set_value_sender", HOME, home_bridge,
                        100_000 * TUSD, 100_000 * TUSD // 86_400, TUSD)
    orders = BridgeOrders(bridge.chain(HOME))
    message_id, _ = fund_order(bridge.chain(PEER, SENDER), bridge.chain(HOME), _terms(sender), 4 * TUSD)
    relayer = bridge.relayer(refund_check_s=0)
    bridge.settle(relayer)
    BridgeOrders(bridge.chain(HOME, SENDER)).cancel_order(message_id)   # the sender, at home
    bridge.settle(relayer)                         # the relayer sends it back ...
    bridge.settle(relayer)                         # ... and carries it: held on the peer
    [ret] = bridge.chain(HOME).events("BridgeOrders", "Returned", 0)
    transfer_id = bytes(ret["args"]["transfer_id"])
    peer_inbox = bridge.inbox(PEER)
    [sent] = [s for s in bridge.outbox(HOME).messages(0, "latest") if s.message.id == transfer_id]
    assert peer_inbox.delivered(transfer_id) and peer_inbox.pending(transfer_id)   # held
    bridge.inbox(PEER, GUARDIAN).cancel(sent.message, sent.payload)
    for _ in range(3):                             # the bounce crosses home, then is recovered
        bridge.settle(relayer)
    recovered = bridge.chain(HOME).events("BridgeOrders", "BounceRecovered", 0)
    assert [bytes(e["args"]["transfer_id"]) for e in recovered] == [transfer_id]
    assert len(bridge.chain(HOME).events("BridgeOrders", "Returned", 0)) == 1   # not sent again
    assert orders.owed(message_id) == 4 * TUSD
    assert relayer.state["order_refunds"]["owed"]["0x" + message_id.hex()]["held"]
    home_before = bridge.tusd(HOME, sender)
    BridgeOrders(bridge.chain(HOME, SENDER)).claim_here(message_id)
    assert bridge.tusd(HOME, sender) == home_before + 4 * TUSD
    assert PaymentToken(bridge.chain(HOME)).balance_of(orders.address) == 0


def test_the_relayer_carries_calls_to_bridge_orders_only(bridge):
    """A transfer with a call to any other contract would make the relayer pay CALL_GAS (1.5 M)
    for 1 base unit: it is not carried (the sender may deliver it itself); one to BridgeOrders
    is."""
    chain = bridge.chain(PEER, SENDER)
    to_timelock, _ = TokenBridge(chain).send_call(HOME, bridge.net(HOME).address("Timelock"), 1,
                                                  b"\x01")
    relayer = bridge.relayer(refund_check_s=0)
    bridge.settle(relayer)
    assert not bridge.inbox(HOME).delivered(to_timelock)
    [(key, reason)] = relayer.state["not_served"]["latest"].items()
    assert relayer.state["not_served"]["count"] == 1
    assert key.startswith(f"{PEER}:") and "not to BridgeOrders" in reason
    message_id, _ = fund_order(chain, bridge.chain(HOME), _terms(chain.address), 2 * TUSD)
    bridge.settle(relayer)
    assert bridge.inbox(HOME).delivered(message_id)


def test_the_order_commands(bridge):
    """`tessera bridge order-status / order-cancel / order-claim` on a funded order: the status
    in words, the sender's cancel and claim at home; junk ids and other accounts refused in words."""
    from typer.testing import CliRunner

    from tessera.cli import app

    def tessera(*args):
        result = CliRunner().invoke(app, [*args, "--network", str(bridge.env.devnet.network_file)])
        return result.exit_code, " ".join((result.stdout + result.stderr).split())

    sender = devnet_account(SENDER).address
    message_id, _ = fund_order(bridge.chain(PEER, SENDER), bridge.chain(HOME), _terms(sender), 2 * TUSD)
    bridge.settle(bridge.relayer(refund_check_s=3_600))     # delivered; no refund duty now
    mid = "0x" + message_id.hex()
    code, out = tessera("bridge", "order-status", mid)
    assert code == 0 and "opened order" in out and "owed now 0.00 TUSD" in out, out
    for args, said in ((("order-status", "0x12"), "32-byte message id"),
                       (("order-cancel", mid, "--account", f"devnet:{OTHER}"), "not the sender"),
                       (("order-claim", mid, "--account", f"devnet:{SENDER}"), "nothing owed")):
        code, out = tessera("bridge", *args)
        assert code == 1 and said in out and "Traceback" not in out, (args, out)
    home_before = bridge.tusd(HOME, sender)
    assert tessera("bridge", "order-cancel", mid, "--account", f"devnet:{SENDER}")[0] == 0
    code, out = tessera("bridge", "order-claim", mid, "--account", f"devnet:{SENDER}")
    assert code == 0 and "claimed 2.00 TUSD" in out, out
    assert bridge.tusd(HOME, sender) == home_before + 2 * TUSD


def test_a_replacement_workers_order_is_funded_from_the_peer_like_the_jobs(bridge):
    """A DiLoCo job paid from the peer chain posts a replacement worker's order the same way
    (multinode.Replacer: `Tenant.post_order(..., nodes=1, escrow=one lease's budget)`): the
    override reaches the order that the delivery opens, and nothing moves at home."""
    import threading
    from pathlib import Path

    from tessera.protocol.jobspec import parse_job_spec
    from tessera.protocol.lease import lease_budget
    from tessera.tenant.client import Tenant

    example = Path(__file__).parents[2] / "examples" / "diloco.toml"
    spec = parse_job_spec(example.read_text(), example)
    o = spec.order
    budget = lease_budget(o.max_price_per_gpu_hour, o.min_gpus, o.duration)
    assert o.nodes > 1 and budget < o.escrow
    sender = devnet_account(SENDER).address
    peer_before, home_before = bridge.tusd(PEER, sender), bridge.tusd(HOME, sender)
    tenant = Tenant(bridge.chain(HOME, SENDER), pay_from=bridge.chain(PEER, SENDER))
    posted: list = []
    worker = threading.Thread(target=lambda: posted.append(
        tenant.post_order(spec, verified=True, nodes=1, escrow=budget)))
    worker.start()
    relayer = bridge.relayer(refund_check_s=0)
    while worker.is_alive():          # the client waits for the delivery the relayer makes
        bridge.settle(relayer, rounds=1)
        worker.join(0.2)
    [(order_id, txs)] = posted
    order = Market(bridge.chain(HOME)).order(order_id)
    assert (order.tenant, order.nodes, order.deposit, order.verified, order.spec_hash) == \
        (sender, 1, budget, True, spec.spec_hash())
    assert Market(bridge.chain(HOME)).refund_to(order_id) == BridgeOrders(bridge.chain(HOME)).address
    assert bridge.tusd(PEER, sender) == peer_before - budget and len(txs) >= 1
    assert bridge.tusd(HOME, sender) == home_before


PROVIDER = 4


def _leased(bridge, relayer) -> tuple[int, int]:
    """An order funded from the peer by SENDER (one node, 2 TUSD an hour for 2 h), leased at
    1 TUSD an hour by PROVIDER (registered at home): (order id, lease id)."""
    import secrets
    import time

    from tessera.chain.registry import ProviderRegistry
    from tessera.chain.tokens import StakeToken
    from tessera.protocol import messages
    from tessera.protocol.wire import BidMessage

    home = bridge.chain(HOME)
    provider = devnet_account(PROVIDER)
    registry = ProviderRegistry(bridge.chain(HOME, PROVIDER))
    if not registry.is_registered(provider.address):
        StakeToken(bridge.chain(HOME, OWNER)).transfer(provider.address, 200 * 10**18, "stake")
        registry.register(200 * 10**18, "cpu", 1, 1024, 1, "http://127.0.0.1:9", 1)
    message_id, _ = fund_order(bridge.chain(PEER, SENDER), home,
                               OrderTerms(devnet_account(SENDER).address, b"\x55" * 32, "", 1, 0,
                                          2 * TUSD, 7200, 1), 4 * TUSD)
    bridge.settle(relayer)
    order_id = BridgeOrders(home).funded_order(message_id, timeout_s=0)
    expiry = int(time.time()) + 600
    nonce = secrets.randbits(64)
    typed = messages.bid_typed_data(HOME, Market(home).address, order_id, provider.address,
                                    TUSD, nonce, expiry)
    bid = BidMessage(order_id=order_id, provider=provider.address, price_per_gpu_hour=TUSD,
                     nonce=nonce, expiry=expiry, signature=messages.sign(provider, typed))
    lease_id, _ = Market(bridge.chain(HOME, SENDER)).accept_bid(bid)
    return order_id, lease_id


def test_a_lease_paid_from_the_peer_is_topped_up_from_there(bridge):
    """`tessera job top-up LEASE AMOUNT --pay-from-chain 31338` for a lease of an order funded
    from 31338: one message adds to the lease's budget at home (nothing of the tenant's moves
    there), and what the lease did not spend of it comes back to 31338 with the order's refunds.
    Without the option the Market's refusal is said in words, and a top-up of a lease paid at
    home is refused before anything is sent."""
    import threading

    from typer.testing import CliRunner

    from tessera.cli import app

    sender = devnet_account(SENDER).address
    relayer = bridge.relayer(refund_check_s=0)
    peer_before, home_before = bridge.tusd(PEER, sender), bridge.tusd(HOME, sender)
    order_id, lease_id = _leased(bridge, relayer)
    market = Market(bridge.chain(HOME))
    budget = market.lease(lease_id).budget
    network = str(bridge.env.devnet.network_file)
    cli = ["job", "top-up", str(lease_id), "0.75", "--network", network, "--account",
           f"devnet:{SENDER}"]
    said = CliRunner().invoke(app, cli)          # at home: refused in words, nothing sent
    assert said.exit_code == 1 and "only that payer tops it up" in " ".join(said.stderr.split())
    assert market.lease(lease_id).budget == budget

    stop = threading.Event()

    def relay() -> None:                          # the relayer and the committee, meanwhile
        while not stop.is_set():
            bridge.settle(relayer, rounds=1)
            stop.wait(0.2)

    helper = threading.Thread(target=relay)
    helper.start()
    try:
        done = CliRunner().invoke(app, [*cli, "--pay-from-chain", str(PEER)])
    finally:
        stop.set()
        helper.join()
    assert done.exit_code == 0, done.stderr
    assert f"lease {lease_id} topped up by 0.75 TUSD" in " ".join(done.stdout.split())
    assert market.lease(lease_id).budget == budget + 750_000
    assert bridge.tusd(HOME, sender) == home_before            # nothing moved at home
    home = bridge.chain(HOME)
    [topped] = home.events("BridgeOrders", "TopUpFunded", home.network.deploy_block,
                           argument_filters={"lease_id": lease_id})
    top_id = "0x" + bytes(topped["args"]["message_id"]).hex()
    status = CliRunner().invoke(app, ["bridge", "order-status", top_id, "--network", network])
    assert status.exit_code == 0 and f"topped up a lease of order {order_id}" in \
        " ".join(status.stdout.split())
    Market(bridge.chain(HOME, SENDER)).close_lease(lease_id)
    Market(bridge.chain(HOME, SENDER)).cancel_order(order_id)
    spent = market.lease(lease_id).paid
    bridge.settle(relayer)                                      # the refund duty sends it back
    bridge.settle(relayer)
    assert BridgeOrders(bridge.chain(HOME)).owed(BridgeOrders(bridge.chain(HOME)).funding_of(order_id)) == 0
    assert bridge.tusd(PEER, sender) == peer_before - spent
    # the cost a job summary reports counts the top-up's way in as well as its rest's way back
    from tessera.tenant.client import Tenant
    from tessera.tenant.escrow import paid_from_peer

    paid = paid_from_peer(Tenant(bridge.chain(HOME, SENDER), pay_from=bridge.chain(PEER, SENDER)),
                          [(order_id, lease_id)])
    [order] = paid["orders"]
    assert (order["deposit"], order["topped_up"]) == (4 * TUSD, 750_000)
    assert paid["spent"] == spent == peer_before - bridge.tusd(PEER, sender) > 0
    assert PaymentToken(bridge.chain(HOME)).balance_of(BridgeOrders(bridge.chain(HOME)).address) == 0


def test_automatic_top_ups_from_the_peer_do_not_wait_and_keep_to_the_ceiling(bridge):
    """`[escrow]` top-ups of a lease paid from the peer (review 14): the watch sends one and goes
    on (no relayer is running: waiting would hold the job 180 s); while it is in flight it counts
    against the ceiling and its lease gets no second one; once delivered the next one takes only
    what is left under the ceiling, and then they stop."""
    import time

    from tessera.protocol.jobspec import EscrowSpec
    from tessera.tenant.client import Tenant
    from tessera.tenant.escrow import EscrowWatch

    relayer = bridge.relayer(refund_check_s=0)
    _, lease_id = _leased(bridge, relayer)
    market = Market(bridge.chain(HOME))
    budget = market.lease(lease_id).budget
    tenant = Tenant(bridge.chain(HOME, SENDER), pay_from=bridge.chain(PEER, SENDER))
    notices: list[str] = []
    watch = EscrowWatch(tenant, EscrowSpec(top_up=500_000, top_up_ceiling=750_000,
                                           top_up_when_left=3 * 3600), notices.append)
    started = time.monotonic()
    watch.check([lease_id], force=True)
    assert time.monotonic() - started < 30
    [sent] = watch.top_ups
    assert (sent.amount, sent.in_flight_from) == (500_000, PEER) and "on its way" in notices[-1]
    assert tenant.peer_payments().top_ups_in_flight() == {lease_id: 500_000}
    watch.check([lease_id], force=True)                        # in flight: no second one
    assert len(watch.top_ups) == 1 and market.lease(lease_id).budget == budget
    bridge.settle(relayer)
    assert tenant.peer_payments().top_ups_in_flight() == {}
    assert market.lease(lease_id).budget == budget + 500_000
    watch.check([lease_id], force=True)                        # only what the ceiling has left
    assert [u.amount for u in watch.top_ups] == [500_000, 250_000]
    bridge.settle(relayer)
    watch.check([lease_id], force=True)
    assert len(watch.top_ups) == 2 and "automatic top-ups stop" in notices[-1]
    assert market.lease(lease_id).budget == budget + 750_000


def test_a_restarted_tenant_still_counts_a_top_up_in_flight(bridge, tmp_path):
    """A DiLoCo job keeps its in-flight top-ups in its folder (`PeerPayments.keep_in`): a tenant
    process started again (`tessera job resume`) counts the one still crossing, so the ceiling
    holds across the restart (review 16: it sent a second one and passed the ceiling)."""
    from tessera.tenant.client import Tenant

    relayer = bridge.relayer(refund_check_s=0)
    _, lease_id = _leased(bridge, relayer)
    kept = tmp_path / "peer_payments.json"
    first = Tenant(bridge.chain(HOME, SENDER), pay_from=bridge.chain(PEER, SENDER))
    first.peer_payments().keep_in(kept)
    first.top_up(lease_id, 400_000, wait=False)
    again = Tenant(bridge.chain(HOME, SENDER), pay_from=bridge.chain(PEER, SENDER))
    again.peer_payments().keep_in(kept)                     # the resumed process
    assert again.peer_payments().top_ups_in_flight() == {lease_id: 400_000}
    bridge.settle(relayer)
    assert again.peer_payments().top_ups_in_flight() == {}
    third = Tenant(bridge.chain(HOME, SENDER), pay_from=bridge.chain(PEER, SENDER))
    third.peer_payments().keep_in(kept)
    assert third.peer_payments().in_flight == {}             # delivered ones are not kept


def test_an_order_funded_too_late_to_wait_for_is_cancelled_at_the_jobs_end(bridge, monkeypatch):
    """A replacement worker's order whose delivery comes after the client stopped waiting
    (review 14): the client keeps its funding, and the DiLoCo job's end cancels the order it
    opened (`multinode.cancel_late_orders`), so its deposit goes back without a hand."""
    from pathlib import Path

    import pytest
    from rich.console import Console

    from tessera.protocol.jobspec import parse_job_spec
    from tessera.tenant import peer_payments
    from tessera.tenant.client import Tenant
    from tessera.tenant.multinode import cancel_late_orders

    monkeypatch.setattr(peer_payments, "BRIDGED_ORDER_TIMEOUT_S", 1.0)   # no relayer meanwhile
    example = Path(__file__).parents[2] / "examples" / "diloco.toml"
    spec = parse_job_spec(example.read_text(), example)
    sender = devnet_account(SENDER).address
    peer_before = bridge.tusd(PEER, sender)
    tenant = Tenant(bridge.chain(HOME, SENDER), pay_from=bridge.chain(PEER, SENDER))
    with pytest.raises(BridgeError, match="has not been delivered"):
        tenant.post_order(spec, nodes=1, escrow=2 * TUSD)
    [late] = tenant.peer_payments().late_fundings
    relayer = bridge.relayer(refund_check_s=0)
    bridge.settle(relayer)                                   # it opens its order now
    order_id = BridgeOrders(bridge.chain(HOME)).funding(late).order_id
    assert Market(bridge.chain(HOME)).order(order_id).open
    assert cancel_late_orders(tenant, Console(quiet=True)) == [(order_id, 0)]
    assert not Market(bridge.chain(HOME)).order(order_id).open
    bridge.settle(relayer)
    bridge.settle(relayer)
    assert bridge.tusd(PEER, sender) == peer_before            # the deposit came back whole
