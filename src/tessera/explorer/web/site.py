"""The HTML pages (left out of `/openapi.json`): each route reads its rows, lets `pages.py` build
the body and wraps it in the page frame. Unknown things are 404 pages."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from tessera.explorer.web.markup import page
from tessera.explorer.web.pages import (
    figure_html,
    lease_html,
    overview_html,
    provider_html,
    providers_html,
    tx_html,
)
from tessera.explorer.web.queries import Explorer, parse_address, parse_tx_hash
from tessera.protocol.figures import ALL


def site_router(explorer: Explorer) -> APIRouter:
    router = APIRouter(default_response_class=HTMLResponse, include_in_schema=False)

    @router.get("/")
    def home():
        snap = explorer.snapshot()
        return page("Overview", overview_html(snap, explorer.providers()), snap)

    @router.get("/providers")
    def providers_page():
        snap = explorer.snapshot()
        return page("Providers", providers_html(snap, explorer.providers()), snap)

    @router.get("/providers/{address}")
    def provider_page(address: str):
        snap = explorer.snapshot()
        p, leases, payments = explorer.provider(parse_address(address))
        return page(f"Provider {p.address}", provider_html(snap, explorer, p, leases, payments), snap)

    @router.get("/leases/{lease_id}")
    def lease_page(lease_id: int):
        snap = explorer.snapshot()
        row, events, payments = explorer.lease(lease_id)
        return page(f"Lease #{row.lease_id}", lease_html(snap, row, events, payments), snap)

    @router.get("/tx/{tx_hash}")
    def tx_page(tx_hash: str):
        tx = parse_tx_hash(tx_hash)
        events = explorer.tx(tx)      # a 404 for an unknown tx comes before a 503 for an empty database
        snap = explorer.snapshot()
        return page(f"Transaction {tx}", tx_html(events), snap)

    @router.get("/figure")
    def figure_page(name: str, key: str = ALL):
        snap = explorer.snapshot()
        f = snap.figures.get((name, key))
        if f is None:
            raise HTTPException(404, f"no figure {name}[{key}] as of block {snap.block}")
        return page(f"Figure {name}[{key}]", figure_html(f, explorer.tx_summaries(f.txs)), snap)

    return router
