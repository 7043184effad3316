"""Cross-chain transfers in the web explorer (docs/explorer.md, "The bridge"): `/bridge` lists
every bridge message of every indexed chain, newest first, with its state and the transactions on
both sides (the send on the source, the queueing, delivery or cancellation on the destination,
the refund back on the source); `/bridge/{message_id}` shows one with every event of it on both
chains; `/bridge/tx/{hash}` the bridge events of one transaction; `/api/bridge/transfers` the
list as JSON. Each message shows its token (TUSD by a TokenBridge, TSTK by a StakeBridge; none
for a message neither sent) and its amounts in that token's decimals; `?token=` filters by it.
Rows come from the derived table (db_bridge.CrossChainTransfer), events from the stored bridge
events. A junk page, state, chain, token, id or hash is a 4xx, never a 500.
"""

from __future__ import annotations

import json
from typing import Literal
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tessera.explorer import db
from tessera.explorer.derive_bridge import (
    BRIDGE_TOKENS,
    IN_FLIGHT,
    STATES,
    TOKEN_DECIMALS,
    exact,
)
from tessera.explorer.web.bridge_orders import funding_html, funding_of
from tessera.explorer.web.markup import (
    address_text,
    amount,
    chain_tx,
    e,
    href,
    kv,
    list_pager,
    message_link,
    page,
    short_hash,
    table,
    when,
)
from tessera.explorer.web.queries import Explorer, Paged, parse_tx_hash
from tessera.explorer.web.site import MAX_PAGE
from tessera.protocol.bridge import KIND_BOUNCE, KIND_TRANSFER, KIND_TRANSFER_CALL
from tessera.protocol.money import PAYMENT_SYMBOL, STAKE_SYMBOL

MAX_CHAIN = 2**63 - 1          # a chain id the database's BIGINT holds
State = Literal["sent", "queued", "delivered", "cancelled", "bounced"]
Token = Literal["TUSD", "TSTK"]
assert set(Token.__args__) == {PAYMENT_SYMBOL, STAKE_SYMBOL} == set(TOKEN_DECIMALS)
STATE_WORDS = {"sent": "sent: waiting for the committee and a relayer",
               "queued": "queued: a large transfer waiting the delay (the guardian may cancel it)",
               "delivered": "delivered", "cancelled": "cancelled by the guardian: its refund is on the way",
               "bounced": "refunded: the bounce gave it back to its sender"}
KIND_WORDS = {KIND_TRANSFER: "transfer", KIND_BOUNCE: "refund (bounce)",
              KIND_TRANSFER_CALL: "transfer with a call (an order)"}


class TransferOut(BaseModel):
    """One cross-chain message and what became of it (amounts in its token's base units, decimal
    text, and exact with the symbol)."""

    message_id: str
    kind: str = Field(description="transfer, refund (bounce), or the message kind's number")
    source_chain: int | None
    destination_chain: int | None
    sender: str | None = Field(description="who sent it (a transfer: the person; else the contract)")
    recipient: str | None
    amount_base_units: str
    amount: str = Field(description="exact, with the token's symbol ('5 TUSD'); base units if none")
    token: str | None = Field(description="TUSD (sent by a TokenBridge) or TSTK (a StakeBridge); "
                                          "null: neither bridge sent it")
    decimals: int | None
    state: str = Field(description="sent | queued | delivered | cancelled | bounced")
    in_flight: bool
    source_tx: str | None = Field(description="the send on the source chain (None: never sent)")
    sent_at: int | None
    queued_tx: str | None
    release_at: int | None
    delivery_chain: int | None
    delivery_tx: str | None
    delivered_at: int | None
    cancelled_tx: str | None
    bounce_id: str | None
    bounce_tx: str | None = Field(description="the refund (TransferBounced) on the source chain")
    refunded_base_units: str
    bounce_of: str | None


class TransferPage(BaseModel):
    page: int
    pages: int
    total: int
    transfers: list[TransferOut]


def shown(value: int | None, token: str | None) -> str:
    """HTML: an amount in its token (rounded for a person, exact in the tooltip)."""
    if value is not None and token not in TOKEN_DECIMALS:
        return f'<span class="amt" data-base-units="{int(value)}">{e(value)} base units (no token)</span>'
    return amount(value, token)


def transfer_out(row: db.CrossChainTransfer) -> TransferOut:
    return TransferOut(
        message_id=row.message_id, kind=KIND_WORDS.get(row.kind, str(row.kind)),
        source_chain=row.source_chain, destination_chain=row.destination_chain, sender=row.sender,
        recipient=row.recipient, amount_base_units=str(row.amount), amount=exact(row.amount, row.token),
        token=row.token, decimals=TOKEN_DECIMALS.get(row.token),
        state=row.state, in_flight=row.state in IN_FLIGHT,
        source_tx=row.source_tx, sent_at=row.source_timestamp if row.source_tx else None,
        queued_tx=row.queued_tx, release_at=row.release_at, delivery_chain=row.delivery_chain,
        delivery_tx=row.delivery_tx, delivered_at=row.delivered_at, cancelled_tx=row.cancelled_tx,
        bounce_id=row.bounce_id, bounce_tx=row.bounce_tx, refunded_base_units=str(row.refunded),
        bounce_of=row.bounce_of)


def parse_message_id(text: str) -> str:
    """A message id from a path, lower-cased; 404 if it is not 32 bytes of hex."""
    value = text.lower()
    if len(value) != 66 or not value.startswith("0x") or any(c not in "0123456789abcdef" for c in value[2:]):
        raise HTTPException(404, f"no message {text[:100]!r}: not a 32-byte hex id")
    return value


# -- reads --------------------------------------------------------------------------------------
def transfers_page(explorer: Explorer, page_no: int, state: str | None, chain: int | None,
                   token: str | None = None) -> Paged:
    t = db.CrossChainTransfer
    query = select(t)
    if state:
        query = query.where(t.state == state)
    if token:
        query = query.where(t.token == token)
    if chain is not None:
        query = query.where(or_(t.source_chain == chain, t.destination_chain == chain))
    query = query.order_by(t.source_timestamp.desc(), t.message_id.desc())
    with Session(explorer.engine) as session:
        rows = explorer.paged(session, query, page_no, "cross-chain transfers")
        session.expunge_all()
    return rows


def cursors(explorer: Explorer) -> list[db.BridgeCursor]:
    with Session(explorer.engine) as session:
        found = list(session.scalars(select(db.BridgeCursor).order_by(db.BridgeCursor.chain_id)))
        session.expunge_all()
    return found


def message_events(explorer: Explorer, ids: list[str]) -> list[db.BridgeEvent]:
    ev = db.BridgeEvent
    with Session(explorer.engine) as session:
        rows = list(session.scalars(select(ev).where(ev.message_id.in_(ids)).order_by(
            ev.timestamp, ev.chain_id, ev.block_number, ev.log_index)))
        session.expunge_all()
    return rows


def tx_events(explorer: Explorer, tx: str) -> list[db.BridgeEvent]:
    ev = db.BridgeEvent
    with Session(explorer.engine) as session:
        rows = list(session.scalars(select(ev).where(ev.tx_hash == tx).order_by(ev.chain_id, ev.log_index)))
        session.expunge_all()
    return rows


# -- HTML ---------------------------------------------------------------------------------------
def state_html(row: db.CrossChainTransfer) -> str:
    if row.deliveries and not row.source_tx:
        return '<span class="bad">delivered, never sent</span>'
    cls = "ok" if row.state in ("delivered", "bounced") else "muted"
    return f'<span class="{cls} state" data-state="{e(row.state)}">{e(row.state)}</span>'


def _route(row: db.CrossChainTransfer) -> str:
    return f"{e(row.source_chain if row.source_chain is not None else '?')} → " \
           f"{e(row.destination_chain if row.destination_chain is not None else '?')}"


def _destination_tx(row: db.CrossChainTransfer) -> str:
    """What happened on the destination: the delivery, else the cancellation, else the queueing."""
    if row.delivery_tx:
        return chain_tx(row.delivery_chain, row.delivery_tx)
    return chain_tx(row.destination_chain, row.cancelled_tx or row.queued_tx)


def transfers_html(rows: Paged, chains: list[db.BridgeCursor], state: str | None, chain: int | None,
                   token: str | None = None) -> str:
    indexed = ", ".join(f"chain {c.chain_id} up to block {c.last_block:,} ({when(c.last_timestamp)})"
                        for c in chains)
    filters = " ".join(f'<a href="{href("/bridge", state=s)}">{e(s)}</a>' for s in STATES)
    tokens = " ".join(f'<a href="{href("/bridge", token=t)}">{e(t)}</a>' for t in BRIDGE_TOKENS.values())
    body = [f"<p>Indexed: {e(indexed)}.</p>",
            f'<p>Every message the bridge carried between these chains, newest first: TUSD by the '
            f'TokenBridges, TSTK (stake) by the StakeBridges. Show only: {filters} · {tokens} · '
            f'<a href="{href("/bridge")}">all</a> · orders funded from a peer chain: '
            f'<a href="{href("/bridge/orders")}">BridgeOrders</a></p>']
    table_rows = [[when(r.source_timestamp) if r.source_tx else "-", message_link(r.message_id),
                   e(KIND_WORDS.get(r.kind, str(r.kind))), _route(r),
                   f'<span class="token">{e(r.token or "-")}</span>', address_text(r.sender),
                   address_text(r.recipient), shown(r.amount, r.token), state_html(r),
                   chain_tx(r.source_chain, r.source_tx), _destination_tx(r),
                   chain_tx(r.source_chain, r.bounce_tx)] for r in rows.rows]
    body.append(table(["sent", "message", "kind", "route", "token", "sender", "recipient", "amount",
                       "state", "source tx", "destination tx", "refund tx"], table_rows, {7},
                      cls="transfers"))
    query = {k: str(v) for k, v in (("state", state), ("chain", chain), ("token", token)) if v is not None}
    path = "/bridge" + ("?" + urlencode(query) if query else "")
    body.append(list_pager(path, rows, "transfers", newest_first=True))
    return "".join(body)


def transfer_html(row: db.CrossChainTransfer, events: list[db.BridgeEvent]) -> str:
    parts = [("message id", short_hash(row.message_id)), ("kind", e(KIND_WORDS.get(row.kind, str(row.kind)))),
             ("route", _route(row)), ("sender", address_text(row.sender)),
             ("recipient", address_text(row.recipient)),
             ("token", e(row.token) if row.token else
              '<span class="bad">none: neither TokenBridge nor StakeBridge sent it</span>'),
             ("amount", shown(row.amount, row.token)),
             ("state", state_html(row) + f' <span class="muted">{e(STATE_WORDS.get(row.state, ""))}</span>'),
             ("sent", f"{chain_tx(row.source_chain, row.source_tx)} {e(when(row.source_timestamp))}"
              if row.source_tx else '<span class="bad">no MessageSent on an indexed chain</span>')]
    if row.queued_tx:
        parts.append(("queued", f"{chain_tx(row.destination_chain, row.queued_tx)} until "
                                f"{e(when(row.release_at))}"))
    if row.delivery_tx:
        parts.append(("delivered", f"{chain_tx(row.delivery_chain, row.delivery_tx)} "
                                   f"{e(when(row.delivered_at))}" + (f" ({row.deliveries} times)"
                                                                     if row.deliveries > 1 else "")))
    if row.cancelled_tx:
        parts.append(("cancelled", chain_tx(row.destination_chain, row.cancelled_tx)))
    if row.bounce_id:
        parts.append(("refund message", message_link(row.bounce_id)))
    if row.bounce_tx:
        parts.append(("refunded", f"{chain_tx(row.source_chain, row.bounce_tx)} "
                                  f"{shown(row.refunded, row.token)}"))
    if row.bounce_of:
        parts.append(("refund of", message_link(row.bounce_of)))
    return kv(parts) + "<h2>Events on both chains</h2>" + events_table(events, row.token)


def events_table(events: list[db.BridgeEvent], token: str | None = None) -> str:
    """The events, an `amount` in the token of the bridge that emitted it (the outbox's and the
    inbox's: in `token`, the message's; raw base units where unknown)."""
    rows = []
    for ev in events:
        args = json.loads(ev.args)
        unit = BRIDGE_TOKENS.get(ev.contract, token)

        def value(k, v, unit=unit):
            return shown(v, unit) if k == "amount" and isinstance(v, int) and unit else e(v)

        args_html = "".join(f"<div><b>{e(k)}</b> {value(k, v)}</div>" for k, v in sorted(args.items()))
        rows.append([e(ev.chain_id), f"{ev.block_number:,}", e(when(ev.timestamp)),
                     chain_tx(ev.chain_id, ev.tx_hash), e(f"{ev.contract}.{ev.event}"),
                     f'<div class="args">{args_html}</div>'])
    return table(["chain", "block", "time", "tx", "event", "args"], rows, cls="events")


def bridge_router(explorer: Explorer) -> APIRouter:
    router = APIRouter()

    def chain_q():
        return Query(None, ge=1, le=MAX_CHAIN, description="only messages from or to this chain id")

    @router.get("/bridge", response_class=HTMLResponse, include_in_schema=False)
    def bridge_page(page_no: int = Query(1, alias="page", ge=1, le=MAX_PAGE), state: State | None = None,
                    chain: int | None = chain_q(), token: Token | None = None):
        chains = cursors(explorer)
        if not chains:
            return page("Cross-chain transfers", "<p>No bridge is indexed: the network file names one "
                        "chain, or <code>tessera explorer index</code> has not run on a network with "
                        "peer chains.</p>")
        rows = transfers_page(explorer, page_no, state, chain, token)
        return page("Cross-chain transfers", transfers_html(rows, chains, state, chain, token))

    @router.get("/bridge/tx/{tx_hash}", response_class=HTMLResponse, include_in_schema=False)
    def bridge_tx_page(tx_hash: str):
        tx = parse_tx_hash(tx_hash)
        events = tx_events(explorer, tx)
        if not events:
            raise HTTPException(404, f"no indexed bridge event in transaction {tx}")
        ids = sorted({ev.message_id for ev in events if ev.message_id})
        links = " ".join(message_link(mid) for mid in ids)
        return page(f"Bridge transaction {tx}", f"<p>Messages: {links or '-'}</p>" + events_table(events))

    @router.get("/bridge/{message_id}", response_class=HTMLResponse, include_in_schema=False)
    def transfer_page(message_id: str):
        mid = parse_message_id(message_id)
        with Session(explorer.engine) as session:
            row = session.get(db.CrossChainTransfer, mid)
            if row is None:
                raise HTTPException(404, f"no cross-chain message {mid}")
            session.expunge(row)
        ids = [i for i in (mid, row.bounce_id, row.bounce_of) if i]
        body = transfer_html(row, message_events(explorer, ids))
        funding = funding_of(explorer, mid)
        if funding is not None:
            body += funding_html(funding, row.delivery_chain)
        return page(f"Cross-chain message {mid[:10]}…", body)

    @router.get("/api/bridge/transfers", response_model=TransferPage,
                responses={404: {"description": "no such page"}})
    def api_transfers(page: int = Query(1, ge=1, le=MAX_PAGE), state: State | None = None,
                      chain: int | None = chain_q(), token: Token | None = None) -> TransferPage:
        """Cross-chain messages of every indexed chain, newest first, with their token and both
        sides' transactions (`token`: only TUSD's or TSTK's)."""
        rows = transfers_page(explorer, page, state, chain, token)
        return TransferPage(page=page, pages=rows.pages, total=rows.total,
                            transfers=[transfer_out(r) for r in rows.rows])

    return router
