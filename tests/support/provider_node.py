"""A provider's node in the test's own process, against a real anvil (its watcher driven by the
test: `node.poll_once()`), and a real lease with it from a real signed bid. Used by
tests/provider/test_round_authorization.py and tests/tenant/test_review8_round_requests.py."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.registry import ProviderRegistry
from tessera.logs import EventLog
from tessera.protocol import messages
from tessera.protocol.wire import BidMessage
from tessera.provider.config import ProviderConfig
from tessera.provider.node import ProviderNode
from tessera.tenant.client import Tenant

PRICE = 1_000_000   # base units per GPU-hour


def registered_node(home: Path, devnet, network, account: int) -> ProviderNode:
    """Devnet account `account` registered as a provider, and its node, its cursor at the head."""
    registry = ProviderRegistry(Chain(network, devnet_account(account)))
    registry.register(registry.min_stake(), "cpu-x86_64", 1, 16_000, 1000,
                      "http://127.0.0.1:9", PRICE)
    config = ProviderConfig.model_validate({
        "provider": {"account": f"devnet:{account}", "network": str(devnet.network_file),
                     "port": 9, "state_dir": str(home / "provider")},
        "pricing": {"price_per_gpu_hour": "1.00"}})
    node = ProviderNode(config, EventLog("provider", io.StringIO()))
    node.chain_every_s = 0                                 # each poll reads the head
    node.state.put("last_block", str(node.ctx.chain.block_number()))
    return node


@contextmanager
def provider_world(home: Path, private_devnet, account: int) -> Iterator[tuple]:
    """(network, node) on a devnet of its own (day-long uptime epochs: nothing here sends
    heartbeats) with `account`'s registered provider node."""
    with private_devnet(home, epoch_length=86_400) as (devnet, network):
        yield network, registered_node(home, devnet, network, account)


def lease_of(network, tenant: Tenant, provider: int) -> int:
    """A one-node order of `tenant` and its lease with devnet account `provider`."""
    market, account = tenant.market, devnet_account(provider)
    order_id, _ = market.create_order(b"\x01" * 32, "", 1, 0, PRICE, 3600, 1, PRICE)
    expiry = tenant.chain.block_timestamp() + 3600
    nonce = secrets.randbits(63)
    typed = messages.bid_typed_data(network.chain_id, market.address, order_id, account.address,
                                    PRICE, nonce, expiry)
    return market.accept_bid(BidMessage(order_id=order_id, provider=account.address,
                                        price_per_gpu_hour=PRICE, nonce=nonce, expiry=expiry,
                                        signature=messages.sign(account, typed)))[0]
