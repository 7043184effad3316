"""The relayer's second duty: send back what BridgeOrders owes the senders of bridged orders
(docs/bridge.md, "An order funded in one message"). An order funded from a peer chain gets its
refunds (the escrow no lease took, a cancelled order, a closed lease's unspent budget, a downtime
claim, a verified round refunded) in BridgeOrders on the home chain; anyone may `send_back`
them, and the relayer does so without the tenant's client, so that the refund arrives on the
chain the money came from.

Driven by events, read from a cursor `confirmations` blocks behind the head, so that the work of
a poll follows what happened since the last one, not how many orders exist (review 12):
- `OrderRefused`: the whole deposit is owed back;
- the Market's `Refunded` to BridgeOrders: that order's funding (`BridgeOrders.funding_of`, the
  chain's own record, so nothing is remembered per order and a reorg cannot misdirect it) is
  owed something;
- the TokenBridge's `TransferBounced` to BridgeOrders: a send-back the peer cancelled came back;
  `recover_bounce` makes it owed again (or someone else already did).
Each funding found owed is sent back (as much as the route takes), unless:
- less than `min_return` is owed, or the route takes less than that now (dust must not cost a
  relayer a delivery; it stays for `claim_here` or anyone's `send_back`);
- the way back is paused (read once per chain per poll; the sender can `claim_here`);
- the peer cancelled a send-back of it before: the relayer does not undo a guardian's cancel
  (review 13), it leaves the funding to the sender or anyone's `send_back`.
A refused send-back is tried again after a growing wait; at most `MAX_PER_POLL` fundings are
tried in one poll, so the relaying thread is never held for long.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tessera.chain.bridge_orders import BridgeOrders
from tessera.chain.client import Chain, tx_hash
from tessera.chain.token_bridge import TokenBridge
from tessera.errors import BridgeError
from tessera.logs import EventLog

CHECK_S = 15.0        # how often the events are read
MIN_RETURN = 10_000   # base units (0.01 TUSD): the least the relayer sends back
RETRY_S, MAX_RETRY_S = 30.0, 3_600.0
MAX_PER_POLL = 32     # fundings tried per poll


class OrderRefunds:
    def __init__(self, home: Chain, state: dict, save: Callable[[], None], log: EventLog,
                 route_open: Callable[[int], bool], check_s: float = CHECK_S,
                 confirmations: int = 0, min_return: int = MIN_RETURN):
        self.orders = BridgeOrders(home)
        self.bridge = TokenBridge(home)
        self.chain = home
        self.state = state.setdefault("order_refunds", {
            "scanned": home.network.deploy_block, "owed": {}})
        self.save, self.log, self.route_open = save, log, route_open
        self.check_s, self.confirmations, self.min_return = check_s, confirmations, min_return
        self._checked_at = 0.0

    def poll(self) -> None:
        now = time.time()
        if now - self._checked_at < self.check_s:
            return
        self._checked_at = now
        self._scan()
        owed = self.state["owed"]
        due = sorted((k for k in owed if owed[k]["retry_at"] <= now and not owed[k].get("held")),
                     key=lambda k: owed[k]["retry_at"])[:MAX_PER_POLL]
        open_routes = {cid: self.route_open(cid) for cid in {owed[k]["source"] for k in due}}
        for key in due:
            if open_routes[owed[key]["source"]]:
                self._return(key, now)

    def _events(self, contract: str, event: str, start: int, end: int, **filters) -> list:
        return self.chain.events(contract, event, start, end, argument_filters=filters or None)

    def _owe(self, key: str, source: int) -> dict:
        return self.state["owed"].setdefault(key, {"retry_at": 0.0, "source": source})

    def _scan(self) -> None:
        end = self.chain.block_number() - self.confirmations
        start = self.state["scanned"]
        if start > end:
            return
        here = self.orders.address
        for e in self._events("BridgeOrders", "OrderRefused", start, end):
            self._owe("0x" + bytes(e["args"]["message_id"]).hex(), e["args"]["source_chain"])
        for name in ("CancelFunded", "ClaimFunded"):   # the carrier of a cancel or a claim
            for e in self._events("BridgeOrders", name, start, end):
                message_id = bytes(e["args"]["message_id"])
                self._owe("0x" + message_id.hex(), self.orders.funding(message_id).source_chain)
        for order_id in {e["args"]["order_id"] for e in self._events("Market", "Refunded", start,
                                                                      end, payer=here)}:
            message_id = self.orders.funding_of(order_id)
            if any(message_id):
                self._owe("0x" + message_id.hex(), self.orders.funding(message_id).source_chain)
        for e in self._events("TokenBridge", "TransferBounced", start, end, to=here):
            self._recover(bytes(e["args"]["cancelled_id"]))
        self.state["scanned"] = end + 1
        self.save()

    def _recover(self, transfer_id: bytes) -> None:
        back = self.orders.sent_back(transfer_id)
        if not any(bytes(back["message_id"])):   # not a send-back of BridgeOrders
            return
        key = "0x" + bytes(back["message_id"]).hex()
        source = self.orders.funding(bytes(back["message_id"])).source_chain
        # owed again either way (recovered now, or already by anyone else), but not sent back
        # again by the relayer: the peer's guardian cancelled it once (review 13)
        self._owe(key, source)["held"] = "a send-back was cancelled on the way back"
        if back["amount"] == 0:
            return
        try:
            receipt = self.orders.recover_bounce(transfer_id)
        except BridgeError as exc:
            self.log("order-refund-bounce", "warning", transfer_id="0x" + transfer_id.hex(),
                     reason=str(exc))
            return
        self.log("order-refund-bounced", message_id=key, amount=back["amount"], tx=tx_hash(receipt),
                 note="owed again; left to the sender's claim_here or anyone's send_back")

    def _back_off(self, key: str, now: float) -> None:
        entry = self.state["owed"][key]
        tries = entry.get("tries", 0)
        entry.update(tries=tries + 1, retry_at=now + min(RETRY_S * 2**tries, MAX_RETRY_S))
        self.save()

    def _return(self, key: str, now: float) -> None:
        entry = self.state["owed"][key]
        message_id = bytes.fromhex(key[2:])
        owed = self.orders.owed(message_id)
        if owed < self.min_return:   # nothing (a reorg took it, or anyone sent it), or dust
            del self.state["owed"][key]
            self.save()
            return
        source = entry["source"]
        room = min(self.bridge.max_transfer(source), self.bridge.backing(source))
        if room < self.min_return:   # the route would carry only dust now
            self._back_off(key, now)
            return
        try:
            transfer_id, receipt = self.orders.send_back(message_id)
        except BridgeError as exc:
            self._back_off(key, now)
            self.log("order-refund-refused", "warning", message_id=key, owed=owed, reason=str(exc))
            return
        left = self.orders.owed(message_id)
        if left < self.min_return:
            del self.state["owed"][key]
        self.save()
        self.log("order-refund-sent", message_id=key, amount=owed - left,
                 transfer_id="0x" + transfer_id.hex(), tx=tx_hash(receipt))
