"""The relayer's second duty: send back what BridgeOrders owes the senders of bridged orders
(docs/bridge.md, "An order funded in one message"). An order funded from a peer chain gets its
refunds (a cancelled order's deposit, a closed lease's unspent budget, a downtime claim, a
verified round refunded) in BridgeOrders on the home chain; anyone may `send_back` them, and the
relayer does so without the tenant's client, so that the refund arrives on the chain the money
came from.

The relayer keeps the fundings it has seen (`OrderFunded`, `OrderRefused`, read incrementally
from a cursor in its state file) and asks BridgeOrders what each is owed at most every
`check_s` seconds (one call each); an owed amount is sent back, which the relayer then carries
like any other message. A funding whose order is no longer open and that owed nothing for
`RETAIN_S` is forgotten (refunds of a verified lease can come well after its close; later ones
can still be sent back by anyone, or claimed at home by the sender). A send back the contract
refuses (the route back paused or over its limit) is logged and tried again at the next check;
the sender can always `claim_here` instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tessera.chain.bridge_orders import BridgeOrders
from tessera.chain.client import Chain, tx_hash
from tessera.chain.market import Market
from tessera.errors import BridgeError
from tessera.logs import EventLog

CHECK_S = 15.0            # how often the owed amounts are read
RETAIN_S = 7 * 86_400     # a settled funding is forgotten after this long without a refund


class OrderRefunds:
    def __init__(self, home: Chain, state: dict, save: Callable[[], None], log: EventLog,
                 check_s: float = CHECK_S, confirmations: int = 0):
        self.orders = BridgeOrders(home)
        self.market = Market(home)
        self.chain = home
        self.state = state.setdefault("fundings", {"scanned": home.network.deploy_block,
                                                   "live": {}})
        self.save = save
        self.log = log
        self.check_s = check_s
        self.confirmations = confirmations   # a funding is tracked once buried this deep
        self._checked_at = 0.0

    def poll(self) -> None:
        self._scan()
        now = time.time()
        if now - self._checked_at < self.check_s:
            return
        self._checked_at = now
        for key in list(self.state["live"]):
            self._check(key, now)

    def _scan(self) -> None:
        head = self.chain.block_number() - self.confirmations
        start = self.state["scanned"]
        if start > head:
            return
        found = [e for name in ("OrderFunded", "OrderRefused")
                 for e in self.chain.events("BridgeOrders", name, start, head)]
        for e in found:
            key = "0x" + bytes(e["args"]["message_id"]).hex()
            self.state["live"].setdefault(key, {"quiet_since": time.time()})
        self.state["scanned"] = head + 1
        if found:
            self.save()

    def _check(self, key: str, now: float) -> None:
        entry = self.state["live"][key]
        message_id = bytes.fromhex(key[2:])
        owed = self.orders.owed(message_id)
        if owed == 0:
            try:
                funding = self.orders.funding(message_id)
            except BridgeError:   # a reorg took the delivery away: the relayer delivers it again
                del self.state["live"][key]
                self.save()
                return
            finished = funding.order_id == 0 or not self.market.order(funding.order_id).open
            if finished and now - entry["quiet_since"] > RETAIN_S:
                del self.state["live"][key]
                self.save()
            return
        try:
            transfer_id, receipt = self.orders.send_back(message_id)
        except BridgeError as exc:
            self.log("order-refund-refused", "warning", message_id=key, owed=owed, reason=str(exc))
            return
        entry["quiet_since"] = now
        self.save()
        self.log("order-refund-sent", message_id=key, amount=owed,
                 transfer_id="0x" + transfer_id.hex(), tx=tx_hash(receipt))
