"""The validator's HTTP API: its probe receipts per epoch (with Merkle proofs), health, metrics.

Every request passes `http_limits.RequestGuard` first (JSON bodies, such as a challenge case,
capped while they stream; NaN or Infinity refused; numbers in paths bounded)."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from prometheus_client import generate_latest

from tessera.http_limits import PathInt, RequestGuard, validation_error
from tessera.validator.node import ValidatorNode


def create_app(node: ValidatorNode) -> FastAPI:
    app = FastAPI(title="Tessera validator", version="1")
    app.add_middleware(RequestGuard)
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.get("/healthz")
    def healthz() -> dict:
        return node.health()

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(node.metrics).decode())

    @app.get("/receipts/{epoch}")
    def receipts(epoch: PathInt) -> dict:
        """Every probe of the epoch as a Merkle leaf with its proof, and the report posted."""
        doc = node.receipts(epoch)
        if doc is None:
            raise HTTPException(404, f"no probes recorded for epoch {epoch}")
        return doc

    return app
