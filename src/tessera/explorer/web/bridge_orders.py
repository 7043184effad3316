"""Orders funded across the bridge in the web explorer (docs/explorer.md, "Orders funded across
the bridge"): `/bridge/orders` lists every message BridgeOrders recorded (an order opened, a
deposit refused, a top-up, a cancel or a claim by message), newest first, with what it owes the
sender now; `/api/bridge/fundings` the same as JSON; a funding's message page
(`/bridge/{message_id}`) shows its part. Rows come from the derived table
(db_bridge.BridgeFunding). A junk page is a 4xx, never a 500.
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from tessera.explorer import db
from tessera.explorer.derive_orders import KINDS
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
    table,
    when,
)
from tessera.explorer.web.queries import Explorer, Paged
from tessera.explorer.web.site import MAX_PAGE
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL, format_amount

KIND_WORDS = {"order": "opened an order", "refused": "refused (owed back whole)",
              "top-up": "topped up a lease", "cancel": "cancelled an order (its carrier owed back)",
              "claim": "claimed what a funding was owed (its carrier owed back)"}
assert set(KIND_WORDS) == set(KINDS)


class FundingOut(BaseModel):
    """A message BridgeOrders recorded and what it owes the sender now (TUSD base units as text,
    and exact with the symbol)."""

    message_id: str
    kind: str = Field(description="order | refused | top-up | cancel | claim")
    source_chain: int | None
    sender: str | None = Field(description="who sent it on its chain: every refund is its")
    amount_base_units: str
    order_id: int | None
    tenant: str | None
    lease_id: int | None
    target: str | None = Field(description="the funding a top-up, cancel or claim names")
    refunded_base_units: str = Field(description="the Market's refunds of its order so far")
    returned_base_units: str = Field(description="sent back or claimed, less bounces recovered")
    owed_base_units: str
    owed: str
    delivery_tx: str | None
    delivered_at: int


class FundingPage(BaseModel):
    page: int
    pages: int
    total: int
    fundings: list[FundingOut]


def funding_out(row: db.BridgeFunding) -> FundingOut:
    return FundingOut(
        message_id=row.message_id, kind=row.kind, source_chain=row.source_chain, sender=row.sender,
        amount_base_units=str(row.amount), order_id=row.order_id, tenant=row.tenant,
        lease_id=row.lease_id, target=row.target, refunded_base_units=str(row.refunded),
        returned_base_units=str(row.returned), owed_base_units=str(row.owed),
        owed=format_amount(row.owed, PAYMENT_DECIMALS, PAYMENT_SYMBOL), delivery_tx=row.delivery_tx,
        delivered_at=row.delivered_at)


def funding_of(explorer: Explorer, message_id: str) -> db.BridgeFunding | None:
    with Session(explorer.engine) as session:
        row = session.get(db.BridgeFunding, message_id)
        if row is not None:
            session.expunge(row)
        return row


def fundings_page(explorer: Explorer, page_no: int) -> Paged:
    f = db.BridgeFunding
    with Session(explorer.engine) as session:
        rows = explorer.paged(session, select(f).order_by(f.delivered_at.desc(), f.message_id.desc()),
                              page_no, "fundings")
        session.expunge_all()
    return rows


def funding_html(row: db.BridgeFunding, home: int | None) -> str:
    """The funding's part of its message page."""
    parts = [("recorded as", e(KIND_WORDS.get(row.kind, row.kind))),
             ("delivered", f"{chain_tx(home, row.delivery_tx)} {e(when(row.delivered_at))}"),
             ("amount", amount(row.amount))]
    if row.order_id is not None:
        parts.append(("order", e(f"#{row.order_id}") + (f" for tenant {address_text(row.tenant)}"
                                                         if row.tenant else "")))
    if row.lease_id is not None:
        parts.append(("lease", f'<a href="{href(f"/leases/{row.lease_id}")}">#{row.lease_id}</a>'))
    if row.target:
        parts.append(("funding it names", message_link(row.target)))
    if row.kind == "order":
        parts.append(("refunded by the Market", amount(row.refunded)))
    parts += [("returned (sent back or claimed)", amount(row.returned)),
              ("owed to the sender now", amount(row.owed))]
    return "<h2>BridgeOrders</h2>" + kv(parts)


def fundings_router(explorer: Explorer) -> APIRouter:
    """Included before the bridge's router: `/bridge/orders` is not a message id."""
    router = APIRouter()

    @router.get("/bridge/orders", response_class=HTMLResponse, include_in_schema=False)
    def orders_page(page_no: int = Query(1, alias="page", ge=1, le=MAX_PAGE)):
        rows = fundings_page(explorer, page_no)
        body = ["<p>Every message BridgeOrders recorded on the home chain, newest first: a deposit "
                "sent from a peer chain that opened a Market order (or was refused and is owed back "
                "whole), a top-up, a cancel or a claim by message. <i>Owed</i> is what its sender "
                "can still take: sent back by anyone's <code>send_back</code>, or claimed.</p>"]
        body.append(table(["delivered", "message", "kind", "from", "sender", "amount", "order",
                           "returned", "owed"],
                          [[e(when(r.delivered_at)), message_link(r.message_id), e(r.kind),
                            e(r.source_chain if r.source_chain is not None else "?"),
                            address_text(r.sender), amount(r.amount),
                            e(r.order_id if r.order_id is not None else "-"), amount(r.returned),
                            amount(r.owed)] for r in rows.rows], {5, 7, 8}, cls="fundings"))
        body.append(list_pager("/bridge/orders", rows, "fundings", newest_first=True))
        return page("Orders funded across the bridge", "".join(body))

    @router.get("/api/bridge/fundings", response_model=FundingPage,
                responses={404: {"description": "no such page"}})
    def api_fundings(page: int = Query(1, ge=1, le=MAX_PAGE)) -> FundingPage:
        """Every message BridgeOrders recorded, newest first, with what it owes its sender now."""
        rows = fundings_page(explorer, page)
        return FundingPage(page=page, pages=rows.pages, total=rows.total,
                           fundings=[funding_out(r) for r in rows.rows])

    return router
