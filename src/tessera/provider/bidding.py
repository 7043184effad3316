"""Bidding: an order seen on chain gets an EIP-712 signed bid if the pricing policy says so;
bids cost no gas, they are kept and served to tenants from the node's endpoint."""

from __future__ import annotations

import secrets
import time

from tessera.errors import Refused
from tessera.protocol import messages
from tessera.protocol.matching import OrderRequirements
from tessera.protocol.wire import BidMessage
from tessera.provider.context import NodeContext
from tessera.provider.pricing import decide_bid
from tessera.provider.registration import registered_offer
from tessera.provider.standing import Standing
from tessera.provider.state import ACTIVE_STATUSES


class Bidder:
    def __init__(self, ctx: NodeContext, standing: Standing):
        self.ctx = ctx
        self.standing = standing

    def on_order(self, args) -> None:
        """An `OrderCreated` event: sign and keep a bid, or log why not (once per order)."""
        ctx = self.ctx
        order_id = args["order_id"]
        if ctx.state.bid(order_id) is not None:
            return
        _, jailed_until = self.standing.check()
        if jailed_until:
            ctx.log("no-bid", order_id=order_id, reason=f"jailed until {jailed_until}")
            return
        order = ctx.market.order(order_id)
        if not order.open:
            return
        requirements = OrderRequirements(order_id, order.gpu_model, order.min_gpus,
                                         order.min_gpu_memory_mb, order.max_price_per_gpu_hour)
        decision = decide_bid(requirements, registered_offer(ctx),
                              len(ctx.state.leases(ACTIVE_STATUSES)),
                              ctx.config.pricing.max_concurrent_leases)
        if decision.price_per_gpu_hour is None:
            ctx.log("no-bid", order_id=order_id, reason=decision.reason)
            return
        nonce = secrets.randbits(64)
        expiry = int(time.time()) + ctx.config.pricing.bid_validity
        typed = messages.bid_typed_data(ctx.chain.network.chain_id, ctx.market.address,
                                        order_id, ctx.address, decision.price_per_gpu_hour,
                                        nonce, expiry)
        bid = BidMessage(order_id=order_id, provider=ctx.address,
                         price_per_gpu_hour=decision.price_per_gpu_hour, nonce=nonce,
                         expiry=expiry, signature=messages.sign(ctx.account, typed))
        ctx.state.save_bid(order_id, bid.model_dump())
        ctx.metrics.bids.inc()
        ctx.log("bid", order_id=order_id, price_per_gpu_hour=bid.price_per_gpu_hour,
                reason=decision.reason)

    def bid_for(self, order_id: int) -> BidMessage:
        body = self.ctx.state.bid(order_id)
        if body is None:
            raise Refused(404, f"no bid for order {order_id} (not seen yet, or it does not fit)")
        return BidMessage.model_validate(body)
