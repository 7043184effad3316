"""The HTML pages (left out of `/openapi.json`): each route reads its rows, lets `pages.py` or
`pages_cases.py` build the body and wraps it in the page frame. Unknown things are 404 pages; a
junk page number or id is a 4xx (FastAPI's 422 for what is not an integer in range)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse

from tessera.explorer.web.agents import agents_html, agents_view, provider_agent_payments, tx_agent_payments
from tessera.explorer.web.liveness import liveness_challenges, liveness_reports
from tessera.explorer.web.markup import page
from tessera.explorer.web.pages import figure_html, overview_html, provider_html, providers_html, tx_html
from tessera.explorer.web.pages_cases import (
    challenge_html,
    challenges_list_html,
    lease_html,
    leases_list_html,
    validator_html,
    validators_html,
)
from tessera.explorer.web.queries import Explorer, parse_address, parse_tx_hash
from tessera.protocol.figures import ALL

MAX_PAGE = 10**9


def page_q(name: str = "page"):
    """A page number in the query string: 1..MAX_PAGE, anything else a 422 (never a 500)."""
    return Query(1, alias=name, ge=1, le=MAX_PAGE)


def site_router(explorer: Explorer) -> APIRouter:
    router = APIRouter(default_response_class=HTMLResponse, include_in_schema=False)

    @router.get("/")
    def home():
        snap = explorer.snapshot()
        first = explorer.providers_page(1)
        return page("Overview", overview_html(snap, first.rows, first.total), snap)

    @router.get("/providers")
    def providers_page(page_no: int = Query(1, alias="page", ge=1, le=MAX_PAGE)):
        snap = explorer.snapshot()
        return page("Providers", providers_html(snap, explorer.providers_page(page_no)), snap)

    @router.get("/providers/{address}")
    def provider_page(address: str, leases_page: int = page_q("leases"),
                      payments_page: int = page_q("payments"), slashes_page: int = page_q("slashes"),
                      challenges_page: int = page_q("challenges"),
                      cases_page: int = page_q("cases"), agent_page: int = page_q("agent_payments"),
                      liveness_page: int = page_q("liveness")):
        snap = explorer.snapshot()
        p, leases, payments = explorer.provider(parse_address(address), leases_page, payments_page)
        cases = explorer.provider_cases(p.address, slashes_page, challenges_page, cases_page)
        agents = provider_agent_payments(explorer, p.address, agent_page)
        liveness = liveness_challenges(explorer, "provider", p.address, liveness_page)
        return page(f"Provider {p.address}",
                    provider_html(snap, explorer, p, leases, payments, cases, agents, liveness), snap)

    @router.get("/agents")
    def agents_page(owners_page: int = page_q("owners"), grants_page: int = page_q("grants"),
                    payments_page: int = page_q("payments")):
        snap = explorer.snapshot()
        view = agents_view(explorer, owners_page, grants_page, payments_page)
        return page("Agents: budgets, grants and payments", agents_html(snap, view), snap)

    @router.get("/leases")
    def leases_page(page_no: int = Query(1, alias="page", ge=1, le=MAX_PAGE)):
        snap = explorer.snapshot()
        rows, total = explorer.leases_page(page_no)
        pages = explorer.pages(total, page_no, "leases")
        return page("Leases", leases_list_html(snap, rows, page_no, pages, total), snap)

    @router.get("/leases/{lease_id}")
    def lease_page(lease_id: int, page_no: int = page_q(), payments_page: int = page_q("payments"),
                   settlements_page: int = page_q("settlements"),
                   challenges_page: int = page_q("challenges")):
        snap = explorer.snapshot()
        view = explorer.lease(lease_id, page_no, payments_page, settlements_page, challenges_page)
        return page(f"Lease #{view.lease.lease_id}", lease_html(snap, view), snap)

    @router.get("/challenges")
    def challenges_page(page_no: int = Query(1, alias="page", ge=1, le=MAX_PAGE)):
        snap = explorer.snapshot()
        rows, total = explorer.challenges_page(page_no)
        pages = explorer.pages(total, page_no, "challenges")
        return page("Challenges", challenges_list_html(rows, page_no, pages, total), snap)

    @router.get("/challenges/{challenge_id}")
    def challenge_page(challenge_id: int, page_no: int = page_q(), votes_page: int = page_q("votes")):
        snap = explorer.snapshot()
        view = explorer.challenge(challenge_id, page_no, votes_page)
        return page(f"Challenge #{challenge_id}", challenge_html(view), snap)

    @router.get("/validators")
    def validators_page():
        snap = explorer.snapshot()
        return page("Validators", validators_html(explorer.validators()), snap)

    @router.get("/validators/{address}")
    def validator_page(address: str, votes_page: int = page_q("votes"),
                       entries_page: int = page_q("hardware"), slashes_page: int = page_q("slashes"),
                       reports_page: int = page_q("reports"), liveness_page: int = page_q("liveness")):
        snap = explorer.snapshot()
        v, votes, entries, slashes = explorer.validator(parse_address(address, "validator"), votes_page,
                                                        entries_page, slashes_page)
        reports = liveness_reports(explorer, v.address, reports_page)
        liveness = liveness_challenges(explorer, "validator", v.address, liveness_page)
        return page(f"Validator {v.address}",
                    validator_html(v, votes, entries, slashes, reports, liveness), snap)

    @router.get("/tx/{tx_hash}")
    def tx_page(tx_hash: str, page_no: int = page_q()):
        tx = parse_tx_hash(tx_hash)
        events = explorer.tx(tx, page_no)   # a 404 for an unknown tx comes before a 503 for an empty database
        snap = explorer.snapshot()
        return page(f"Transaction {tx}", tx_html(tx, events, tx_agent_payments(explorer, tx)), snap)

    @router.get("/figure")
    def figure_page(name: str, key: str = ALL, page_no: int = page_q()):
        snap = explorer.snapshot()
        f = snap.figures.get((name, key))
        if f is None:
            raise HTTPException(404, f"no figure {name[:200]}[{key[:200]}] as of block {snap.block}")
        txs = explorer.figure_txs(f.txs, page_no)
        body = figure_html(f, txs, explorer.tx_summaries(tuple(txs.rows)))
        return page(f"Figure {name}[{key}]", body, snap)

    return router
