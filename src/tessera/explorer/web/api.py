"""The JSON API (`/api/...`): each answer is an API model from `models.py` or `models_cases.py`, so
`/openapi.json` describes it. Unknown providers, leases, challenges, validators, transactions and
figures are 404s; lists are paged, newest first."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query

from tessera.explorer.web.agents import agents_out, agents_view, provider_agent_payments, tx_agent_payments
from tessera.explorer.web.liveness import (
    liveness_challenge_out,
    liveness_challenges,
    liveness_report_out,
    liveness_reports,
)
from tessera.explorer.web.models import FigureTxs, Overview, TxOut
from tessera.explorer.web.models_agents import AgentsOut
from tessera.explorer.web.models_cases import (
    ChallengeDetail,
    ChallengePage,
    LeaseDetail,
    LeasePage,
    ProviderDetail,
    ProviderPage,
    ValidatorDetail,
    ValidatorOut,
)
from tessera.explorer.web.outputs import (
    agent_payment_out,
    epoch_strip,
    event_out,
    figure_out,
    lease_out,
    overview,
    paging_out,
    payment_out,
    provider_out,
)
from tessera.explorer.web.outputs_cases import (
    challenge_detail,
    challenge_out,
    hardware_case_out,
    lease_detail,
    slash_out,
    validator_out,
    vote_out,
)
from tessera.explorer.web.queries import Explorer, parse_address, parse_tx_hash
from tessera.explorer.web.site import MAX_PAGE, page_q
from tessera.protocol.figures import ALL


def api_router(explorer: Explorer) -> APIRouter:
    router = APIRouter(tags=["api"])

    @router.get("/api/overview", response_model=Overview)
    def api_overview() -> Overview:
        """Revenue, utilization, prices, stake and lease figures, each with its transactions."""
        return overview(explorer.snapshot())

    @router.get("/api/providers", response_model=ProviderPage,
                responses={404: {"description": "no such page"}})
    def api_providers(page: int = Query(1, ge=1, le=MAX_PAGE)) -> ProviderPage:
        """Registered providers in registration order (50 a page unless the server says
        otherwise): current offer, stake, earnings, lease counts, uptime and reliability."""
        snap = explorer.snapshot()
        found = explorer.providers_page(page)
        return ProviderPage(page=page, pages=found.pages, total=found.total,
                            providers=[provider_out(snap, p) for p in found.rows])

    @router.get("/api/providers/{address}", response_model=ProviderDetail,
                responses={404: {"description": "unknown provider"}})
    def api_provider(address: str, leases_page: int = page_q("leases"),
                     payments_page: int = page_q("payments"), slashes_page: int = page_q("slashes"),
                     challenges_page: int = page_q("challenges"),
                     cases_page: int = page_q("cases"),
                     agent_page: int = page_q("agent_payments"),
                     liveness_page: int = page_q("liveness")) -> ProviderDetail:
        """One provider with a page each of its leases, payouts, agent payments, slashes (each
        with its cause), challenges, hardware cases and inclusion challenges of liveness reports
        naming it (`?leases=N&payments=N&agent_payments=N&slashes=N&challenges=N&cases=N&liveness=N`);
        its uptime by evidence and its recent epochs."""
        snap = explorer.snapshot()
        p, leases, payments = explorer.provider(parse_address(address), leases_page, payments_page)
        slashes, challenges, cases = explorer.provider_cases(p.address, slashes_page, challenges_page,
                                                             cases_page)
        agents = provider_agent_payments(explorer, p.address, agent_page)
        liveness = liveness_challenges(explorer, "provider", p.address, liveness_page)
        return ProviderDetail(**provider_out(snap, p).model_dump(),
                              liveness_challenges=[liveness_challenge_out(c) for c in liveness.rows],
                              liveness_paging=paging_out(liveness),
                              agent_payment_list=[agent_payment_out(x) for x in agents.rows],
                              agent_payments_paging=paging_out(agents),
                              lease_list=[lease_out(snap, row) for row in leases.rows],
                              leases_paging=paging_out(leases),
                              payments=[payment_out(x) for x in payments.rows],
                              payments_paging=paging_out(payments),
                              outage_reports=explorer.outages(p.address),
                              recent_epochs=epoch_strip(snap, explorer, p.address),
                              slashes=[slash_out(s) for s in slashes.rows],
                              slashes_paging=paging_out(slashes),
                              challenges=[challenge_out(c) for c in challenges.rows],
                              challenges_paging=paging_out(challenges),
                              hardware_cases=[hardware_case_out(h) for h in cases.rows],
                              cases_paging=paging_out(cases))

    @router.get("/api/leases", response_model=LeasePage, responses={404: {"description": "no such page"}})
    def api_leases(page: int = Query(1, ge=1, le=MAX_PAGE)) -> LeasePage:
        """Leases, newest first (50 a page unless the server says otherwise)."""
        snap = explorer.snapshot()
        rows, total = explorer.leases_page(page)
        return LeasePage(page=page, pages=explorer.pages(total, page, "leases"), total=total,
                         leases=[lease_out(snap, row) for row in rows])

    @router.get("/api/leases/{lease_id}", response_model=LeaseDetail,
                responses={404: {"description": "unknown lease"}})
    def api_lease(lease_id: int, page: int = page_q(), payments_page: int = page_q("payments"),
                  settlements_page: int = page_q("settlements"),
                  challenges_page: int = page_q("challenges")) -> LeaseDetail:
        """One lease: terms, status, time left, its ledger (budget = every part, from all its money
        events), its job's rounds and their settlement, its challenges with votes and verdicts, and
        one page of the events that touched it (`?page=N`; payouts, settlement events and
        challenges: `?payments=N`, `?settlements=N`, `?challenges=N`)."""
        snap = explorer.snapshot()
        return lease_detail(snap, explorer.lease(lease_id, page, payments_page, settlements_page,
                                                 challenges_page))

    @router.get("/api/challenges", response_model=ChallengePage,
                responses={404: {"description": "no such page"}})
    def api_challenges(page: int = Query(1, ge=1, le=MAX_PAGE)) -> ChallengePage:
        """Challenges of training rounds, newest first (50 a page unless the server says otherwise)."""
        explorer.snapshot()
        rows, total = explorer.challenges_page(page)
        return ChallengePage(page=page, pages=explorer.pages(total, page, "challenges"), total=total,
                             challenges=[challenge_out(c) for c in rows])

    @router.get("/api/challenges/{challenge_id}", response_model=ChallengeDetail,
                responses={404: {"description": "unknown challenge"}})
    def api_challenge(challenge_id: int, page: int = page_q(),
                      votes_page: int = page_q("votes")) -> ChallengeDetail:
        """One challenge: a page of its votes (`?votes=N`), verdict, the money it moved, the slash it
        caused, a page of its events (`?page=N`) and the registry's events of its verdict."""
        explorer.snapshot()
        return challenge_detail(explorer.challenge(challenge_id, page, votes_page))

    @router.get("/api/validators", response_model=list[ValidatorOut])
    def api_validators() -> list[ValidatorOut]:
        """Every registered validator: stake, unbonding, slashes, endpoint, lock, votes, reports."""
        explorer.snapshot()
        return [validator_out(v) for v in explorer.validators()]

    @router.get("/api/validators/{address}", response_model=ValidatorDetail,
                responses={404: {"description": "unknown validator"}})
    def api_validator(address: str, votes_page: int = page_q("votes"),
                      slashes_page: int = page_q("slashes"), reports_page: int = page_q("reports"),
                      liveness_page: int = page_q("liveness")) -> ValidatorDetail:
        """One validator with a page each of its votes, slashes, liveness reports and the inclusion
        challenges against them, newest first (`?votes=N&slashes=N&reports=N&liveness=N`)."""
        explorer.snapshot()
        v, votes, _entries, slashes = explorer.validator(parse_address(address, "validator"), votes_page, 1,
                                                         slashes_page)
        reports = liveness_reports(explorer, v.address, reports_page)
        liveness = liveness_challenges(explorer, "validator", v.address, liveness_page)
        return ValidatorDetail(**validator_out(v).model_dump(), vote_list=[vote_out(x) for x in votes.rows],
                               votes_paging=paging_out(votes),
                               slash_list=[slash_out(s) for s in slashes.rows],
                               slashes_paging=paging_out(slashes),
                               liveness_reports=[liveness_report_out(r) for r in reports.rows],
                               reports_paging=paging_out(reports),
                               liveness_challenges=[liveness_challenge_out(c) for c in liveness.rows],
                               liveness_paging=paging_out(liveness))

    @router.get("/api/tx/{tx_hash}", response_model=TxOut,
                responses={404: {"description": "no indexed event in that transaction"}})
    def api_tx(tx_hash: str, page: int = page_q()) -> TxOut:
        """One page of the indexed events of one transaction, log order (`?page=N`)."""
        tx = parse_tx_hash(tx_hash)
        events = explorer.tx(tx, page)
        return TxOut(tx_hash=tx, events=[event_out(x) for x in events.rows], paging=paging_out(events),
                     agent_payments=[agent_payment_out(x) for x in tx_agent_payments(explorer, tx)])

    @router.get("/api/agents", response_model=AgentsOut, responses={404: {"description": "no such page"}})
    def api_agents(owners_page: int = page_q("owners"), grants_page: int = page_q("grants"),
                   payments_page: int = page_q("payments")) -> AgentsOut:
        """AgentBudget owners (deposited, withdrawn, paid, balance) and grants (limits, status,
        spent), every agent payment, and the agent figures; each list paged newest first
        (`?owners=N&grants=N&payments=N`)."""
        snap = explorer.snapshot()
        return agents_out(snap, agents_view(explorer, owners_page, grants_page, payments_page))

    @router.get("/api/figure", response_model=FigureTxs, responses={404: {"description": "unknown figure"}})
    def api_figure(name: str, key: str = ALL, page: int = page_q()) -> FigureTxs:
        """One figure by name and key, with one page of its transactions (`?page=N`, sorted)."""
        snap = explorer.snapshot()
        f = snap.figures.get((name, key))
        if f is None:
            raise HTTPException(404, f"no figure {name[:200]}[{key[:200]}]")
        txs = explorer.figure_txs(f.txs, page)
        return FigureTxs(figure=figure_out(f, txs.rows), txs_paging=paging_out(txs), block=snap.block)

    return router
