"""Bidding: an order seen on chain gets an EIP-712 signed bid if the pricing policy says so;
bids cost no gas, they are kept and served to tenants from the node's endpoint.

An order is judged once, whichever comes first: the chain watcher seeing its `OrderCreated`
(judged from the event's own fields, so an order this node would not bid on costs no call), or
a tenant asking for a bid the node has not made yet (the watcher reads the chain every few
seconds, issue 15; a tenant's bid window may be two). Asking about orders the node has not
seen makes it read the chain, so those look-ups are rationed (LOOKUP_RATE_PER_S, LOOKUP_BURST)
and a stranger asking about made-up orders cannot turn requests into RPC calls."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict

from tessera.errors import ChainError, Refused
from tessera.protocol import messages
from tessera.protocol.matching import OrderRequirements
from tessera.protocol.wire import BidMessage
from tessera.provider.context import NodeContext
from tessera.provider.pricing import decide_bid
from tessera.provider.standing import Standing
from tessera.provider.state import ACTIVE_STATUSES

LOOKUP_RATE_PER_S = 2.0    # chain look-ups of unseen orders a tenant's request may cause
LOOKUP_BURST = 10
JUDGED_KEPT = 10_000       # order ids remembered as judged (a no-bid is not judged again)
LOCK_WAIT_S = 0.5          # how long a tenant's request waits for the watcher's lock


class Bidder:
    def __init__(self, ctx: NodeContext, standing: Standing):
        self.ctx = ctx
        self.standing = standing
        self._judged: OrderedDict[int, None] = OrderedDict()
        self._tokens, self._filled_at = float(LOOKUP_BURST), time.monotonic()
        self._bucket = threading.Lock()

    def on_order(self, args) -> None:
        """An `OrderCreated` event (or just {"order_id": ...} for an order a tenant asked about
        first): sign and keep a bid, or log why not (once per order). An error leaves the order
        unjudged, for the watcher to try again."""
        order_id = args["order_id"]
        if order_id in self._judged or self.ctx.state.bid(order_id) is not None:
            return
        self._judge(order_id, args)
        self._judged[order_id] = None
        while len(self._judged) > JUDGED_KEPT:
            self._judged.popitem(last=False)

    def _judge(self, order_id: int, args) -> None:
        ctx = self.ctx
        _, jailed_until = self.standing.check()
        if jailed_until:
            ctx.log("no-bid", order_id=order_id, reason=f"jailed until {jailed_until}")
            return
        if "max_price_per_gpu_hour" in args:    # the event says what the order needs
            requirements = OrderRequirements(order_id, args["gpu_model"], args["min_gpus"],
                                             args["min_gpu_memory_mb"],
                                             args["max_price_per_gpu_hour"])
        else:
            order = ctx.market.order(order_id)
            if not order.open:
                return
            requirements = OrderRequirements(order_id, order.gpu_model, order.min_gpus,
                                             order.min_gpu_memory_mb, order.max_price_per_gpu_hour)
        decision = decide_bid(requirements, self.standing.offer(),
                              len(ctx.state.leases(ACTIVE_STATUSES)),
                              ctx.config.pricing.max_concurrent_leases)
        if decision.price_per_gpu_hour is None:
            ctx.log("no-bid", order_id=order_id, reason=decision.reason)
            return
        if "max_price_per_gpu_hour" in args and not ctx.market.order(order_id).open:
            return   # filled or cancelled since (a watcher catching up after a restart)
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

    def _may_look_up(self) -> bool:
        """One token of the look-up bucket, if there is one."""
        with self._bucket:
            now = time.monotonic()
            self._tokens = min(LOOKUP_BURST, self._tokens + (now - self._filled_at) * LOOKUP_RATE_PER_S)
            self._filled_at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def bid_for(self, order_id: int) -> BidMessage:
        body = self.ctx.state.bid(order_id)
        # One judgement at a time, as the watcher makes them; a watcher busy with a transaction
        # is not waited for long: the tenant asks again, or the watcher judges the order.
        if body is None and order_id not in self._judged and self._may_look_up() and \
                self.ctx.lock.acquire(timeout=LOCK_WAIT_S):
            try:
                self.on_order({"order_id": order_id})
            except ChainError:   # no such order, or the chain cannot say now: a 404
                pass
            finally:
                self.ctx.lock.release()
            body = self.ctx.state.bid(order_id)
        if body is None:
            raise Refused(404, f"no bid for order {order_id} (not seen yet, or it does not fit)")
        return BidMessage.model_validate(body)
