"""`tessera facilitator run`: the x402 facilitator of one Tessera network over HTTP, so that a
paywall on the user's own chain depends on no hosted facilitator (docs/agents.md).

    POST /verify     {"x402Version": 2, "paymentPayload": {...}, "paymentRequirements": {...}}
    POST /settle     the same body; settles on chain, the facilitator's key paying gas
    GET  /supported  the schemes and network it serves, and its signer address
    GET  /health     liveness, with the network and the signer

The wire format is the one the SDK's `HTTPFacilitatorClient` speaks (camelCase, x402 v2): a
payment that fails its checks answers 200 with `isValid: false` / `success: false` and the
reason, as x402 facilitators do; a body that is not a verify or settle request at all (not JSON,
missing fields, a payload no scheme can read, x402 version 1) answers 400 or 422 naming the
problem; an unreachable chain 503. Bodies are capped by `http_limits.RequestGuard`. The
handlers are plain functions: FastAPI runs them in its thread pool, since verify and settle
block on the chain.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from x402.schemas import PaymentPayload, PaymentRequirements

from tessera.chain.x402_facilitator import TesseraFacilitator
from tessera.errors import PaymentError, RpcUnavailable
from tessera.http_limits import GRACEFUL_SHUTDOWN_S, RequestGuard, validation_error

X402_VERSION = 2


class FacilitatorRequest(BaseModel):
    """The body of /verify and /settle (x402 v2). Extra top-level keys are ignored, as the
    SDK's own clients may add some."""

    model_config = ConfigDict(extra="ignore")

    x402Version: int = X402_VERSION
    paymentPayload: dict[str, Any] = Field(description="the client's PaymentPayload")
    paymentRequirements: dict[str, Any] = Field(description="the resource server's requirements")


def _describe(exc: ValidationError, what: str) -> str:
    return f"{what} is invalid: " + "; ".join(
        f"{'.'.join(map(str, e['loc'])) or what}: {e['msg']}" for e in exc.errors()[:5])


def parse_request(body: FacilitatorRequest) -> tuple[PaymentPayload, PaymentRequirements]:
    """The SDK's objects from a request body; HTTPException(400) naming what is wrong."""
    if body.x402Version != X402_VERSION:
        raise HTTPException(400, f"x402Version {body.x402Version} is not served: this "
                                 f"facilitator speaks x402 version {X402_VERSION}")
    version = body.paymentPayload.get("x402Version", X402_VERSION)
    if version != X402_VERSION:
        raise HTTPException(400, f"paymentPayload.x402Version {version!r} is not served: this "
                                 f"facilitator speaks x402 version {X402_VERSION}")
    try:
        payload = PaymentPayload.model_validate(body.paymentPayload)
    except ValidationError as exc:
        raise HTTPException(400, _describe(exc, "paymentPayload")) from None
    try:
        requirements = PaymentRequirements.model_validate(body.paymentRequirements)
    except ValidationError as exc:
        raise HTTPException(400, _describe(exc, "paymentRequirements")) from None
    return payload, requirements


def _run(action):
    try:
        return action()
    except PaymentError as exc:   # a payload that cannot be read at all
        raise HTTPException(400, str(exc)) from None
    except RpcUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


def _wire(model) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", by_alias=True, exclude_none=True))


def create_facilitator_app(facilitator: TesseraFacilitator) -> FastAPI:
    app = FastAPI(title="Tessera x402 facilitator", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(RequestGuard)
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.post("/verify")
    def verify(body: FacilitatorRequest) -> JSONResponse:
        payload, requirements = parse_request(body)
        return _wire(_run(lambda: facilitator.verify(payload, requirements)))

    @app.post("/settle")
    def settle(body: FacilitatorRequest) -> JSONResponse:
        payload, requirements = parse_request(body)
        return _wire(_run(lambda: facilitator.settle(payload, requirements)))

    @app.get("/supported")
    def supported() -> JSONResponse:
        return _wire(facilitator.get_supported())

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "network": facilitator.net.caip2,
                "asset": facilitator.net.token.address, "signer": facilitator.address,
                "schemes": facilitator.schemes}

    return app


def run_facilitator(facilitator: TesseraFacilitator, host: str, port: int) -> None:
    """Serve until stopped (Ctrl-C or SIGTERM)."""
    import uvicorn

    uvicorn.run(create_facilitator_app(facilitator), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
