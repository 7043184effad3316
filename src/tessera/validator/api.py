"""The validator's HTTP API: its probe receipts per epoch (with Merkle proofs), health, metrics,
and (validator/liveness.py) providers' beats.

Every request passes `http_limits.RequestGuard` first (JSON bodies, such as a challenge case,
capped while they stream; NaN or Infinity refused; numbers in paths bounded)."""

from __future__ import annotations

import re

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from prometheus_client import generate_latest

from tessera.http_limits import PathInt, RequestGuard, validation_error
from tessera.validator.liveness import BEAT_BODY_BYTES, liveness_routes
from tessera.validator.node import ValidatorNode

# A beat's route reads its own body, capped far below the JSON routes' (it is ~250 bytes).
STREAMED = ((re.compile(r"^/liveness/beat$"), BEAT_BODY_BYTES),)


def create_app(node: ValidatorNode) -> FastAPI:
    app = FastAPI(title="Tessera validator", version="1")
    app.add_middleware(RequestGuard, streamed=STREAMED)
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

    if node.liveness is not None:
        app.include_router(liveness_routes(node.liveness))
    return app
