"""Orders funded from a peer chain, from the home chain's logs (docs/explorer.md, "Orders funded
across the bridge"). Pure: events in, rows and problems out.

BridgeOrders (docs/bridge.md, "An order funded in one message") holds, for every funding message,
what it owes the funding's sender: the whole deposit if the Market refused its terms (or it was a
cancel's or a claim's carrier), else what the Market refunded to it for the order so far; less
what went back (`Returned`: sent to the peer or claimed at home), plus what came back of a
send-back the peer cancelled once recovered (`BounceRecovered`). A top-up goes into a lease: what
is left of it comes back among its order's refunds. So from the logs alone, per funding:

    owed = base - returned + recovered
    base = sum(Market.Refunded of its order)   for a funding that opened an order
         = its delivery's amount               for one refused, or a cancel's or claim's carrier
         = 0                                   for a top-up

and BridgeOrders' TUSD must be every funding's `owed` plus the send-backs that bounced back and
are not yet recovered (`recover_bounce`, anyone): each of those has a way out. Tokens delivered
to it without a funding (a plain `send`, not `send_call`) and tokens sent straight to it (a
holder's `transfer`: a Transfer in whose transaction no delivery, refund or bounce to it explains
it) are nobody's: shown, not owed. So, by its TUSD Transfer logs in and out:

    held_by_transfers = owed + bounced + stranded + direct

and the audit reads `owed(id)` and `balanceOf` (which must equal `held_by_transfers`) at its block
(audit_orders.py).

Each funding must have its delivery (the home TokenBridge's `TransferReceived` of the same message
to BridgeOrders, in the same transaction, of the amount the funding event names), no funding
twice, no more returned than its base, and no bounce recovered that never bounced.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields

from tessera.explorer.derive_bridge import ChainEvent, TransferRow

ORDERS = "BridgeOrders"
# The BridgeOrders event that records a funding, and the kind of funding it is
FUNDING_EVENTS = {"OrderFunded": "order", "OrderRefused": "refused", "TopUpFunded": "top-up",
                  "CancelFunded": "cancel", "ClaimFunded": "claim"}
KINDS = tuple(FUNDING_EVENTS.values())
ZERO_ID = "0x" + "00" * 32


@dataclass
class FundingRow:
    """One row of `explorer_bridge_fundings` (db_bridge.BridgeFunding): a message delivered to
    BridgeOrders and what it owes that message's sender."""

    message_id: str
    kind: str                        # FUNDING_EVENTS' values
    source_chain: int | None = None
    sender: str | None = None        # on the source chain: who is owed
    amount: int = 0                  # what the delivery brought (TransferReceived)
    order_id: int | None = None      # the order it opened, or whose lease it topped up
    tenant: str | None = None        # the order's tenant (OrderFunded)
    lease_id: int | None = None      # a top-up's lease
    target: str | None = None        # a top-up's, cancel's or claim's funding
    refunded: int = 0                # Market.Refunded of its order (an order's funding)
    returned: int = 0                # Returned less BounceRecovered
    owed: int = 0
    returns: int = 0                 # Returned events (send-backs and claims)
    delivery_tx: str | None = None
    delivered_at: int = 0

    def values(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


FUNDING_COLUMNS = tuple(f.name for f in fields(FundingRow))


@dataclass
class OrdersBook:
    """Everything BridgeOrders' logs say it holds (base units of the home TUSD)."""

    fundings: dict[str, FundingRow] = field(default_factory=dict)
    # send-backs the peer cancelled and bounced here, not yet recovered: transfer id -> amount
    bounced: dict[str, int] = field(default_factory=dict)
    # deliveries to BridgeOrders that opened no funding: message id -> amount (nobody's)
    stranded: dict[str, int] = field(default_factory=dict)
    # by the TUSD Transfer logs in and out of BridgeOrders: what it holds, and what came in with
    # no event to explain it (a holder's `transfer`: nobody's)
    held_by_transfers: int = 0
    direct: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def owed(self) -> int:
        return sum(f.owed for f in self.fundings.values())

    @property
    def held_by_logs(self) -> int:
        """What BridgeOrders must hold: every funding's owed and every bounce not yet recovered."""
        return self.owed + sum(self.bounced.values())


def orders_book(events: list[ChainEvent], home: int, orders: str,
                rows: dict[str, TransferRow]) -> OrdersBook:
    """BridgeOrders' book from the events of chain `home` (BridgeOrders at address `orders`, its
    TokenBridge's and the Market's `Refunded` to it); `rows` (the cross-chain transfers) give a
    funding's sender on its chain where its event does not."""
    here = sorted((c.record for c in events if c.chain_id == home), key=lambda r: r.order)
    orders = orders.lower()
    book = OrdersBook()
    received: dict[str, tuple] = {}          # message id -> (tx, amount, source chain, time)
    failed: set[str] = set()
    refunds: dict[int, int] = defaultdict(int)
    sent_back: dict[str, str] = {}           # transfer id -> funding
    bounces: dict[str, int] = {}             # TokenBridge TransferBounced: transfer id -> amount
    explained: dict[str, int] = defaultdict(int)   # tx -> tokens its events say came in
    came_in: dict[str, int] = defaultdict(int)     # tx -> tokens its Transfer logs say came in
    for r in here:
        a = r.args
        if r.contract == "TokenBridge" and str(a.get("to", "")).lower() == orders:
            if r.event == "TransferReceived":
                received[a["message_id"]] = (r.tx_hash, int(a["amount"]), a["source_chain"], r.timestamp)
                explained[r.tx_hash] += int(a["amount"])
            elif r.event == "CallFailed":
                failed.add(a["message_id"])
            elif r.event == "TransferBounced":
                explained[r.tx_hash] += int(a["amount"])
        if r.contract == "TokenBridge" and r.event == "TransferBounced":
            bounces[a["cancelled_id"]] = int(a["amount"])
        if r.contract == "Market" and r.event == "Refunded" and str(a["payer"]).lower() == orders:
            refunds[int(a["order_id"])] += int(a["amount"])
            explained[r.tx_hash] += int(a["amount"])
        if r.contract == "PaymentToken" and r.event == "Transfer":
            value = int(a["value"])
            if str(a["receiver"]).lower() == orders:
                book.held_by_transfers += value
                came_in[r.tx_hash] += value
            if str(a["sender"]).lower() == orders:
                book.held_by_transfers -= value
    book.direct = sum(max(0, value - explained[tx]) for tx, value in came_in.items())
    for r in here:
        if r.contract != ORDERS:
            continue
        a, mid = r.args, r.args.get("message_id")
        if r.event in FUNDING_EVENTS:
            _funding(book, r, received, rows)
        elif r.event == "Returned":
            f = book.fundings.get(mid)
            if f is None:
                book.problems.append(f"BridgeOrders returned {a['amount']} for {mid} (tx {r.tx_hash}), "
                                     "which no funding event recorded")
                continue
            f.returned += int(a["amount"])
            f.returns += 1
            if a["transfer_id"] != ZERO_ID:
                sent_back[a["transfer_id"]] = mid
        elif r.event == "BounceRecovered":
            tid = a["transfer_id"]
            if sent_back.get(tid) != mid or tid not in bounces:
                book.problems.append(f"BridgeOrders recovered a bounce of {tid} for {mid} (tx {r.tx_hash}) "
                                     "that no send-back of that funding bounced")
            f = book.fundings.get(mid)
            if f is not None:
                f.returned -= int(a["amount"])
            bounces.pop(tid, None)
            sent_back.pop(tid, None)
    # a send-back that bounced and is not yet recovered is in BridgeOrders, nobody's funding yet
    book.bounced = {tid: amount for tid, amount in bounces.items() if tid in sent_back}
    for f in book.fundings.values():
        base = f.refunded = refunds.get(f.order_id, 0) if f.kind == "order" else 0
        if f.kind in ("refused", "cancel", "claim"):
            base = f.amount
        f.owed = base - f.returned
        if f.owed < 0:
            book.problems.append(f"funding {f.message_id}: {f.returned} returned but only {base} was "
                                 "ever owed to it")
    for mid, (_tx, amount, _source, _t) in received.items():
        if mid not in book.fundings:
            book.stranded[mid] = amount
            if mid in failed and amount:
                book.problems.append(f"message {mid}: delivered {amount} to BridgeOrders, whose call "
                                     "failed: recorded for nobody")
    accounted = book.held_by_logs + sum(book.stranded.values())
    if book.held_by_transfers - book.direct != accounted:
        book.problems.append(
            f"BridgeOrders' TUSD Transfer logs leave it {book.held_by_transfers} ({book.direct} of it sent "
            f"straight to it), its own events account for {accounted}: "
            f"{book.held_by_transfers - book.direct - accounted:+} moved with no event of BridgeOrders")
    return book


def _funding(book: OrdersBook, r, received: dict, rows: dict[str, TransferRow]) -> None:
    a, mid, kind = r.args, r.args["message_id"], FUNDING_EVENTS[r.event]
    if mid in book.fundings:
        book.problems.append(f"funding {mid}: recorded twice (tx {r.tx_hash})")
        return
    delivery = received.get(mid)
    row = rows.get(mid)
    f = FundingRow(message_id=mid, kind=kind, sender=a.get("sender") or (row.sender if row else None))
    # the amount the funding event names (a cancel's or claim's names none: its delivery's)
    named = int(a["amount"]) if kind in ("order", "refused", "top-up") else None
    if delivery is None or delivery[0] != r.tx_hash:
        book.problems.append(f"funding {mid} ({kind}, tx {r.tx_hash}): no delivery of that message to "
                             "BridgeOrders in its transaction: tokens from nowhere")
        f.amount, f.source_chain = named or 0, a.get("source_chain")
    else:
        f.delivery_tx, f.amount, f.source_chain, f.delivered_at = delivery
        if named is not None and named != f.amount:
            book.problems.append(f"funding {mid}: its {r.event} names {named}, its delivery {f.amount}")
    if kind == "order":
        f.order_id, f.tenant = int(a["order_id"]), a["tenant"]
    elif kind == "top-up":
        f.lease_id, f.target = int(a["lease_id"]), a["funding"]
        if a["funding"] in book.fundings:
            f.order_id = book.fundings[a["funding"]].order_id
    elif kind in ("cancel", "claim"):
        f.target = a["funding"]
        if kind == "cancel":
            f.order_id = int(a["order_id"])
    book.fundings[mid] = f
