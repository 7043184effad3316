"""A tenant paying from a peer chain (`Tenant.pay_from`, docs/bridge.md "An order funded in one
message"): each order's deposit and each top-up leaves the peer chain in one bridge message to
the home chain's BridgeOrders. What this client keeps meanwhile: top-ups sent and not yet seen
delivered (the escrow watch counts them against its ceiling), and order fundings whose delivery
came after it stopped waiting (each may still open an order: a DiLoCo job cancels those at its
end, `multinode.cancel_late_orders`). A DiLoCo job keeps both in its folder (`keep_in`), so that
`tessera job resume` counts and cancels what an earlier run of it sent (review 16)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tessera.chain.bridge_orders import BridgeOrders, fund_order, fund_top_up
from tessera.chain.client import Chain, tx_hash
from tessera.errors import BridgeError
from tessera.files import write_atomic
from tessera.protocol.bridge import OrderTerms

BRIDGED_ORDER_TIMEOUT_S = 180.0   # how long the client waits for a deposit's delivery


class PeerPayments:
    def __init__(self, home: Chain, peer: Chain, emit: Callable[[str, dict], None]):
        self.home, self.peer, self.emit = home, peer, emit
        self.in_flight: dict[bytes, tuple[int, int]] = {}   # message id -> (lease, amount)
        self.late_fundings: list[bytes] = []
        self.path: Path | None = None

    def keep_in(self, path: Path) -> None:
        """Keep the in-flight top-ups and late fundings in `path` from now on, after taking
        back what an earlier run left there."""
        self.path = path
        if path.is_file():
            saved = json.loads(path.read_text())
            self.in_flight.update({bytes.fromhex(m): (int(lease), int(amount))
                                   for m, (lease, amount) in saved["in_flight"].items()})
            self.late_fundings += [bytes.fromhex(m) for m in saved["late_fundings"]
                                   if bytes.fromhex(m) not in self.late_fundings]
        self._save()

    def _save(self) -> None:
        if self.path is not None:
            write_atomic(self.path, json.dumps({
                "in_flight": {m.hex(): list(v) for m, v in self.in_flight.items()},
                "late_fundings": [m.hex() for m in self.late_fundings]}), durable=True)

    def post_order(self, terms: OrderTerms, escrow: int) -> tuple[int, list[str]]:
        """The deposit leaves the peer chain in one message to the home chain's BridgeOrders,
        whose delivery opens the order with this account as its tenant; wait for it."""
        orders = BridgeOrders(self.home)
        message_id, receipts = fund_order(self.peer, self.home, terms, escrow)
        hashes = [tx_hash(r) for r in receipts]
        self.emit("order-funding-sent", {"message_id": "0x" + message_id.hex(),
                                         "from_chain": self.peer.network.chain_id,
                                         "escrow": escrow, "txs": hashes})
        try:
            order_id = orders.funded_order(message_id, timeout_s=BRIDGED_ORDER_TIMEOUT_S)
        except BridgeError:
            if not orders.arrived(message_id):   # late, not refused: it may open an order later
                self.late_fundings.append(message_id)
                self._save()
            raise
        self.emit("order-posted", {"order_id": order_id, "escrow": escrow, "txs": hashes,
                                   "funded_by": "0x" + message_id.hex()})
        return order_id, hashes

    def top_up(self, lease_id: int, amount: int, wait: bool) -> list[str]:
        """A top-up of a lease of an order paid from the peer, in one message; `wait`: until
        its delivery (else it stays in `in_flight`). The peer chain's transaction hashes."""
        message_id, receipts = fund_top_up(self.peer, self.home, lease_id, amount)
        hashes = [tx_hash(r) for r in receipts]
        self.emit("top-up-sent", {"message_id": "0x" + message_id.hex(), "lease_id": lease_id,
                                  "from_chain": self.peer.network.chain_id,
                                  "amount": amount, "txs": hashes})
        self.in_flight[message_id] = (lease_id, amount)
        self._save()
        if wait:
            BridgeOrders(self.home).topped_up(message_id, timeout_s=BRIDGED_ORDER_TIMEOUT_S)
            self.in_flight.pop(message_id, None)
            self._save()
        return hashes

    def top_ups_in_flight(self) -> dict[int, int]:
        """lease id -> the amount of the top-ups sent and not yet delivered (each delivered one,
        whether it topped the lease up or was refused, drops out)."""
        orders, pending, before = BridgeOrders(self.home), {}, len(self.in_flight)
        for message_id, (lease_id, amount) in list(self.in_flight.items()):
            if orders.arrived(message_id):
                del self.in_flight[message_id]
            else:
                pending[lease_id] = pending.get(lease_id, 0) + amount
        if len(self.in_flight) != before:
            self._save()
        return pending
