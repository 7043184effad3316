"""The validator's HTTP API: its probe receipts per epoch (with Merkle proofs), health, metrics."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from prometheus_client import generate_latest

from tessera.validator.node import ValidatorNode


def create_app(node: ValidatorNode) -> FastAPI:
    app = FastAPI(title="Tessera validator", version="1")

    @app.get("/healthz")
    def healthz() -> dict:
        return node.health()

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(node.metrics).decode())

    @app.get("/receipts/{epoch}")
    def receipts(epoch: int) -> dict:
        """Every probe of the epoch as a Merkle leaf with its proof, and the report posted."""
        if epoch < 0:
            raise HTTPException(400, "epoch must be >= 0")
        doc = node.receipts(epoch)
        if doc is None:
            raise HTTPException(404, f"no probes recorded for epoch {epoch}")
        return doc

    return app
