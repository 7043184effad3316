"""An idle provider daemon's load on its RPC endpoint (issue 15: it made 10-13 calls a second,
half of them eth_chainId; the goal is under one). A real `tessera provider run` process, its
network file pointed at a counting JSON-RPC proxy in front of anvil mining a block every 2 s,
counted over WINDOW_S seconds once it is registered and serving: polling the head (the proxy
serves no websocket) and with new heads pushed over the node's websocket. And the watcher's
log feed itself: its bloom test and its one eth_getLogs."""

from __future__ import annotations

import time

import pytest
from tests.provider_http.rpc_counter import CountingProxy
from tests.support.processes import ProviderProcess, tessera_home, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.market import Market
from tessera.chain.uptime import Uptime
from tessera.protocol.lease import order_deposit
from tessera.provider.node import WATCHED, LogFeed

WINDOW_S = 24


@pytest.mark.parametrize("websocket", [False, True], ids=["polling", "websocket"])
def test_an_idle_provider_makes_less_than_one_rpc_call_a_second(tmp_path, private_devnet,
                                                                 websocket):
    """`polling`: the proxy serves no websocket, so the provider reads the head every 3 s (the
    worst case). `websocket`: new heads are pushed to it and it reads almost nothing."""
    with tessera_home(tmp_path), private_devnet(tmp_path, block_time=2) as (devnet, network), \
            CountingProxy(network.rpc_url, websocket=websocket) as proxy:
        proxied = proxy.network_file(devnet.network_file, tmp_path / "proxied.json")
        node = ProviderProcess(tmp_path, proxied, account=2, price="1.00", name="idle")
        node.start()
        try:
            uptime = Uptime(Chain(network))
            # registered, and its first heartbeat sent: from here on it is idle
            wait_until(lambda: uptime.beats(node.address, uptime.current_epoch()), timeout=60,
                       what="the provider's first heartbeat")
            before, _ = proxy.snapshot()
            proxy.window()
            time.sleep(WINDOW_S)
            total, per_method = proxy.rates()
            counts, seconds = proxy.snapshot()
        finally:
            node.stop()
    print(f"\nidle provider ({'websocket' if websocket else 'polling'}) over {seconds:.1f} s: "
          f"{total:.2f} calls/s {per_method}")
    assert counts.get("eth_chainId", 0) == 0, counts       # asked once, at the start
    # at most one heartbeat (about 8 calls) if an epoch turned inside the window
    if websocket:
        assert before.get("eth_subscribe (websocket)", 0) >= 1, before
        assert total < 0.5, (total, counts)
    else:
        # the head every 3 s, logs only when a block may hold a watched event
        assert counts.get("eth_getBlockByNumber", 0) <= seconds / 3 + 2, counts
        assert total < 1.0, (total, counts)


def test_the_watchers_feed_reads_logs_only_where_a_block_may_hold_them(tmp_path, private_devnet):
    """The provider's LogFeed: a block with an order passes its bloom test and its log decodes;
    an empty block and a block with an unwatched event (a token approval) do not pass."""
    with private_devnet(tmp_path) as (devnet, network):
        chain = Chain(network, devnet_account(5))
        market = Market(chain)
        feed = LogFeed(Chain(network), WATCHED)
        price = 10**6
        order_id, receipts = market.create_order(b"\x01" * 32, "cpu", 1, 1, price, 600, 1,
                                                 order_deposit(price, 1, 1, 600))
        assert len(receipts) == 2                        # the approval, then the order
        approval, order = (chain.w3.eth.get_block(r["blockNumber"]) for r in receipts)
        chain.w3.provider.make_request("evm_mine", [])
        empty = chain.w3.eth.get_block("latest")
        assert feed.may_hold(order)
        assert not feed.may_hold(approval) and not feed.may_hold(empty)
        found = list(feed.logs(approval["number"], empty["number"]))
        assert [(c, e, a["order_id"]) for c, e, a in found] == [("Market", "OrderCreated", order_id)]
