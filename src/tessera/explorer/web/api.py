"""The JSON API (`/api/...`): each answer is an API model from `models.py`, so `/openapi.json`
describes it. Unknown providers, leases, transactions and figures are 404s."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from tessera.explorer.web.models import FigureTxs, LeaseDetail, Overview, ProviderDetail, ProviderOut, TxOut
from tessera.explorer.web.outputs import (
    epoch_strip,
    event_out,
    figure_out,
    lease_out,
    overview,
    payment_out,
    provider_out,
)
from tessera.explorer.web.queries import Explorer, parse_address, parse_tx_hash
from tessera.protocol.figures import ALL


def api_router(explorer: Explorer) -> APIRouter:
    router = APIRouter(tags=["api"])

    @router.get("/api/overview", response_model=Overview)
    def api_overview() -> Overview:
        """Revenue, utilization, prices, stake and lease figures, each with its transactions."""
        return overview(explorer.snapshot())

    @router.get("/api/providers", response_model=list[ProviderOut])
    def api_providers() -> list[ProviderOut]:
        """Every registered provider: current offer, stake, earnings and lease counts."""
        snap = explorer.snapshot()
        return [provider_out(snap, p) for p in explorer.providers()]

    @router.get("/api/providers/{address}", response_model=ProviderDetail,
                responses={404: {"description": "unknown provider"}})
    def api_provider(address: str) -> ProviderDetail:
        """One provider with its leases and payouts."""
        snap = explorer.snapshot()
        p, leases, payments = explorer.provider(parse_address(address))
        return ProviderDetail(**provider_out(snap, p).model_dump(),
                              lease_list=[lease_out(snap, row) for row in leases],
                              payments=[payment_out(x) for x in payments],
                              outage_reports=explorer.outages(p.address),
                              recent_epochs=epoch_strip(snap, explorer, p.address))

    @router.get("/api/leases/{lease_id}", response_model=LeaseDetail,
                responses={404: {"description": "unknown lease"}})
    def api_lease(lease_id: int) -> LeaseDetail:
        """One lease: terms, money, status, and every event that touched it."""
        snap = explorer.snapshot()
        row, events, payments = explorer.lease(lease_id)
        return LeaseDetail(**lease_out(snap, row).model_dump(), events=[event_out(x) for x in events],
                           payments=[payment_out(x) for x in payments])

    @router.get("/api/tx/{tx_hash}", response_model=TxOut,
                responses={404: {"description": "no indexed event in that transaction"}})
    def api_tx(tx_hash: str) -> TxOut:
        """The indexed events of one transaction."""
        tx = parse_tx_hash(tx_hash)
        return TxOut(tx_hash=tx, events=[event_out(x) for x in explorer.tx(tx)])

    @router.get("/api/figure", response_model=FigureTxs, responses={404: {"description": "unknown figure"}})
    def api_figure(name: str, key: str = ALL) -> FigureTxs:
        """One figure by name and key, with its transactions."""
        snap = explorer.snapshot()
        f = snap.figures.get((name, key))
        if f is None:
            raise HTTPException(404, f"no figure {name}[{key}]")
        return FigureTxs(figure=figure_out(f), block=snap.block)

    return router
