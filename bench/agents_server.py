"""The provider side of bench/agents.py, run as its own process (so that the bench's clients, this
server, anvil and the facilitator service do not share one interpreter's GIL).

One uvicorn server, one model, four doors (a path-prefix dispatcher in front of four ASGI apps):

    /v1/...          provider/inference.py's paywalled model server, verifying and settling
                     in-process (chain/x402_facilitator.py, gas from --gas-key): "exact" and
                     "tessera-budget"
    /remote/v1/...   the same paywalled server, verifying and settling through `tessera
                     facilitator run` over HTTP (--facilitator-url; absent when not given)
    /free/v1/...     the same model and handler with no paywall: the "unpaid" baseline
    /credit/...      the amortized way (bench-only prototype, not a feature): POST /credit/buy is
                     paywalled like /v1/generate (either scheme, settled in-process) and sells
                     --credit-requests requests of up to --max-tokens tokens for one payment of
                     that many times the per-request price; it answers a bearer token. POST
                     /credit/v1/generate with `Authorization: Bearer <token>` draws one request
                     down, with no chain work at all.
    GET /bench/stats the facilitator calls this process made (verify and settle, per door and
                     scheme, in ms); `?reset=1` clears them.

The credit prototype's trust model is the point of comparison, not a recommendation: the agent
prepays the provider, so the provider holds the unspent credit (a provider that vanishes keeps
it), and the bearer token is a shared secret. The SDK's own amortized scheme ("batch-settlement":
signed cumulative vouchers claimed in batches) removes both, but needs its Solidity contracts at
canonical CREATE2 addresses (bench/agents.py notes why it is not measured).

    .venv/bin/python bench/agents_server.py --network net.json --model DIR --pay-to 0x.. \\
        --gas-key 0x.. --port 8600 [--facilitator-url http://127.0.0.1:4022]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Header, HTTPException
from fastapi.exceptions import RequestValidationError
from x402 import x402ResourceServer
from x402.http import FacilitatorConfig, HTTPFacilitatorClient, RouteConfig
from x402.http.middleware.fastapi import PaymentMiddlewareASGI

import tessera.chain.x402_budget  # noqa: F401  (registers "tessera-budget" beside "exact")
from tessera.chain.client import Chain
from tessera.chain.network import load_network
from tessera.chain.x402_facilitator import (
    LocalFacilitatorClient,
    TesseraFacilitator,
    X402Network,
    schemes,
)
from tessera.compute.generate import load_model
from tessera.http_limits import RequestGuard, validation_error
from tessera.provider.inference import (
    PAYMENT_TIMEOUT_S,
    GenerateRequest,
    InferencePrices,
    create_inference_app,
)

CREDIT_HEADER = "authorization"


class TimedFacilitator:
    """A FacilitatorClient recording how long each verify and settle took, per scheme."""

    def __init__(self, inner, door: str, stats: dict[str, list[float]]):
        self.inner, self.door, self.stats = inner, door, stats

    def get_supported(self):
        return self.inner.get_supported()

    async def _timed(self, op: str, payload, requirements):
        started = time.perf_counter()
        try:
            return await getattr(self.inner, op)(payload, requirements)
        finally:
            key = f"{self.door} {payload.accepted.scheme} {op}"
            self.stats[key].append(round((time.perf_counter() - started) * 1000, 2))

    async def verify(self, payload, requirements):
        return await self._timed("verify", payload, requirements)

    async def settle(self, payload, requirements):
        return await self._timed("settle", payload, requirements)


def free_app(model) -> FastAPI:
    """The paid server's handler, with no paywall (RequestGuard and the same body model)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.post("/v1/generate")
    async def generate(body: GenerateRequest) -> dict:
        result = await asyncio.to_thread(model.generate, body.prompt, body.max_tokens,
                                         body.temperature, body.seed)
        return {"text": result.text, "tokens": result.tokens, "model_sha256": model.sha256}

    app.add_middleware(RequestGuard)
    return app


class Credit:
    """Prepaid requests, kept in memory: token -> requests left."""

    def __init__(self):
        self.left: dict[str, int] = {}
        self.lock = threading.Lock()

    def issue(self, requests: int) -> str:
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.left[token] = requests
        return token

    def draw(self, token: str) -> int | None:
        """Take one request; the requests left after it, or None when there is none."""
        with self.lock:
            left = self.left.get(token, 0)
            if left <= 0:
                return None
            self.left[token] = left - 1
            return left - 1


def credit_app(model, net: X402Network, pay_to: str, prices: InferencePrices, facilitator,
               requests: int, max_tokens: int) -> FastAPI:
    price = requests * prices.price_for(max_tokens)
    supports = schemes()
    accepts = [o for s in supports
               if (o := s.option(net, pay_to, price, PAYMENT_TIMEOUT_S)) is not None]
    for option in accepts:
        option.extra = {**(option.extra or {}), "route": "POST /buy",
                        "credit": f"{requests} x {max_tokens} tokens"}
    server = x402ResourceServer(facilitator)
    for support in supports:
        server.register(net.caip2, support.server(net))
    server.initialize()
    credit = Credit()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.post("/buy")
    def buy() -> dict:
        return {"credit": credit.issue(requests), "requests": requests, "max_tokens": max_tokens,
                "price": price}

    @app.post("/v1/generate")
    async def generate(body: GenerateRequest,
                       authorization: str | None = Header(default=None)) -> dict:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "send Authorization: Bearer <credit token> (POST /buy)")
        if body.max_tokens > max_tokens:
            raise HTTPException(422, f"max_tokens is over the credit's {max_tokens}")
        left = credit.draw(token)
        if left is None:
            raise HTTPException(402, "no credit left on this token: POST /buy")
        result = await asyncio.to_thread(model.generate, body.prompt, body.max_tokens,
                                         body.temperature, body.seed)
        return {"text": result.text, "tokens": result.tokens, "credit_left": left}

    app.add_middleware(PaymentMiddlewareASGI, routes={"POST /buy": RouteConfig(accepts=accepts)},
                       server=server)
    app.add_middleware(RequestGuard)
    return app


class Doors:
    """ASGI: the first path segment picks the app; the app sees the path without it."""

    def __init__(self, default, prefixed: dict[str, object], stats: dict[str, list[float]]):
        self.default, self.prefixed, self.stats = default, prefixed, stats

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/bench/stats"):
            body = json.dumps(self.stats).encode()
            if b"reset=1" in scope.get("query_string", b""):
                self.stats.clear()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http":
            for prefix, app in self.prefixed.items():
                if scope["path"].startswith(prefix + "/"):
                    rest = scope["path"][len(prefix):]
                    scope = {**scope, "path": rest, "raw_path": rest.encode()}
                    await app(scope, receive, send)
                    return
        await self.default(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--pay-to", required=True)
    parser.add_argument("--gas-key", required=True, help="0x key paying in-process settlements")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--facilitator-url")
    parser.add_argument("--per-request", type=int, default=1_000)
    parser.add_argument("--per-token", type=int, default=10)
    parser.add_argument("--credit-requests", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    model = load_model(args.model)
    net = X402Network.read(Chain(load_network(args.network)))
    prices = InferencePrices(args.per_request, args.per_token)
    stats: dict[str, list[float]] = defaultdict(list)
    local = TimedFacilitator(LocalFacilitatorClient(TesseraFacilitator(net, args.gas_key)),
                             "in-process", stats)
    prefixed = {"/free": free_app(model),
                "/credit": credit_app(model, net, args.pay_to, prices, local,
                                      args.credit_requests, args.max_tokens)}
    if args.facilitator_url:
        remote = TimedFacilitator(HTTPFacilitatorClient(FacilitatorConfig(url=args.facilitator_url)),
                                  "http", stats)
        prefixed["/remote"] = create_inference_app(model, net, args.pay_to, prices, remote)
    paid = create_inference_app(model, net, args.pay_to, prices, local)
    print(f"agents_server: serving on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(Doors(paid, prefixed, stats), host="127.0.0.1", port=args.port,
                log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
