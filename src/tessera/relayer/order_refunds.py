"""The relayer's second duty: send back what BridgeOrders owes the senders of bridged orders
(docs/bridge.md, "An order funded in one message"). An order funded from a peer chain gets its
refunds (the escrow no lease took, a cancelled order, a closed lease's unspent budget, a downtime
claim, a verified round refunded) in BridgeOrders on the home chain; anyone may `send_back`
them, and the relayer does so without the tenant's client, so that the refund arrives on the
chain the money came from.

Driven by events, read from a cursor `confirmations` blocks behind the head, so that the work of
a poll follows what happened since the last one, not how many orders exist (review 12):
- `OrderFunded`: the order's id, remembered with its funding's id (one entry per bridged order);
- `OrderRefused`: the whole deposit is owed back;
- the Market's `Refunded` to BridgeOrders: that order's funding is owed something;
- the TokenBridge's `TransferBounced` to BridgeOrders: a send-back the peer cancelled came back;
  `recover_bounce` makes it owed again.
Each funding found owed is sent back (as much as the route takes; the rest on a later poll),
unless less than `min_return` is owed (left for `claim_here` or anyone's `send_back`: a dust
refund must not cost a relayer a delivery), or the way back is paused (the sender can then
`claim_here`; a send-back would only wait in flight). A refused send-back is tried again after
a growing wait; a funding whose send-backs the peer cancelled MAX_BOUNCES times is left to the
sender (`claim_here`) or anyone's `send_back`, so a guardian cancelling every one cannot make
the relayer pay for the round trip for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tessera.chain.bridge_orders import BridgeOrders
from tessera.chain.client import Chain, tx_hash
from tessera.errors import BridgeError
from tessera.logs import EventLog

CHECK_S = 15.0        # how often the events are read
MIN_RETURN = 10_000   # base units (0.01 TUSD): smaller amounts owed are not sent back by the relayer
RETRY_S, MAX_RETRY_S = 30.0, 3_600.0
MAX_BOUNCES = 2       # send-backs of one funding the peer may cancel before the relayer stops


class OrderRefunds:
    def __init__(self, home: Chain, state: dict, save: Callable[[], None], log: EventLog,
                 route_open: Callable[[int], bool], check_s: float = CHECK_S,
                 confirmations: int = 0, min_return: int = MIN_RETURN):
        self.orders = BridgeOrders(home)
        self.chain = home
        self.state = state.setdefault("order_refunds", {
            "scanned": home.network.deploy_block, "orders": {}, "owed": {}})
        self.save, self.log, self.route_open = save, log, route_open
        self.check_s, self.confirmations, self.min_return = check_s, confirmations, min_return
        self._checked_at = 0.0

    def poll(self) -> None:
        now = time.time()
        if now - self._checked_at < self.check_s:
            return
        self._checked_at = now
        self._scan()
        for key in list(self.state["owed"]):
            self._return(key, now)

    def _events(self, contract: str, event: str, start: int, end: int, **filters) -> list:
        return self.chain.events(contract, event, start, end, argument_filters=filters or None)

    def _scan(self) -> None:
        end = self.chain.block_number() - self.confirmations
        start = self.state["scanned"]
        if start > end:
            return
        here, known = self.orders.address, self.state["orders"]
        owed = self.state["owed"]
        for e in self._events("BridgeOrders", "OrderFunded", start, end):
            known[str(e["args"]["order_id"])] = "0x" + bytes(e["args"]["message_id"]).hex()
        for e in self._events("BridgeOrders", "OrderRefused", start, end):
            owed.setdefault("0x" + bytes(e["args"]["message_id"]).hex(), {"retry_at": 0.0})
        for e in self._events("Market", "Refunded", start, end, payer=here):
            key = known.get(str(e["args"]["order_id"]))
            if key:
                owed.setdefault(key, {"retry_at": 0.0})
        for e in self._events("TokenBridge", "TransferBounced", start, end, to=here):
            self._recover(bytes(e["args"]["cancelled_id"]))
        self.state["scanned"] = end + 1
        self.save()

    def _recover(self, transfer_id: bytes) -> None:
        back = self.orders.sent_back(transfer_id)
        if not any(bytes(back["message_id"])):   # not a send-back of BridgeOrders
            return
        key = "0x" + bytes(back["message_id"]).hex()
        # owed again either way: recovered now, or already by anyone else (review 13)
        entry = self.state["owed"].setdefault(key, {"retry_at": 0.0})
        entry["bounces"] = entry.get("bounces", 0) + 1
        if back["amount"] == 0:
            return
        try:
            receipt = self.orders.recover_bounce(transfer_id)
        except BridgeError as exc:
            self.log("order-refund-bounce", "warning", transfer_id="0x" + transfer_id.hex(),
                     reason=str(exc))
            return
        self.log("order-refund-bounced", message_id=key, amount=back["amount"], tx=tx_hash(receipt))

    def _return(self, key: str, now: float) -> None:
        entry = self.state["owed"][key]
        if entry["retry_at"] > now:
            return
        message_id = bytes.fromhex(key[2:])
        owed = self.orders.owed(message_id)
        if owed < self.min_return:   # nothing (a reorg took it, or anyone sent it), or dust
            del self.state["owed"][key]
            self.save()
            return
        if entry.get("bounces", 0) >= MAX_BOUNCES:   # the way back keeps cancelling it
            del self.state["owed"][key]
            self.save()
            self.log("order-refund-held", "warning", message_id=key, owed=owed,
                     reason=f"cancelled {entry['bounces']} times on the way back: left for the "
                            "sender's claim_here or anyone's send_back")
            return
        source = self.orders.funding(message_id).source_chain
        if not self.route_open(source):
            return   # paused on the way back: the sender may claim_here meanwhile
        try:
            transfer_id, receipt = self.orders.send_back(message_id)
        except BridgeError as exc:
            tries = entry.get("tries", 0)
            entry.update(tries=tries + 1, retry_at=now + min(RETRY_S * 2**tries, MAX_RETRY_S))
            self.save()
            self.log("order-refund-refused", "warning", message_id=key, owed=owed, reason=str(exc))
            return
        left = self.orders.owed(message_id)
        if left < self.min_return:
            del self.state["owed"][key]
        self.save()
        self.log("order-refund-sent", message_id=key, amount=owed - left,
                 transfer_id="0x" + transfer_id.hex(), tx=tx_hash(receipt))
