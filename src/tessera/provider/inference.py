"""A provider's paywalled model server: text generation from a model trained on Tessera, paid per
request over x402 (docs/agents.md).

    POST /v1/generate  {"prompt": str, "max_tokens": int, "temperature"?: float, "seed"?: int}
    GET  /v1/model     free: the model, the prices, the network, the token and the payee

The paywall is the official SDK's `PaymentMiddlewareASGI`. The price of a request is
`per_request + per_token * max_tokens` TUSD base units, resolved per request by the SDK's dynamic
price hook from the request's own (already validated) body, so the 402 names the exact amount and
a payment made for another `max_tokens` does not match (the SDK compares every term of the
accepted requirements). A byte-level model always generates exactly `max_tokens` tokens, so the
price charged is the price of what is served.

Order of events for one paid request, and what it guarantees:
1. `RequestGuard` caps the body and refuses non-JSON; `_ValidateGenerate` refuses a body that is
   not a valid generate request (422 naming the field): junk never reaches the paywall, and the
   price is never computed from junk. A spelling of the path that the SDK would match but the
   router would not ("/v1/generate/", "/V1/generate") is 404 here, before anyone pays for it.
2. The paywall: no `PAYMENT-SIGNATURE` -> 402 with `PAYMENT-REQUIRED`. A payment that does not
   match the route's requirements (network, asset, payee, amount, scheme, timeout) or that the
   facilitator does not verify (signature, validity window, nonce used, balance) -> 402 naming
   the reason. Nothing has run and nothing has moved.
3. Only then does the model run (in a worker thread); the SDK buffers its answer.
4. The SDK settles (the facilitator sends `transferWithAuthorization`). Settled -> 200 with the
   text and `PAYMENT-RESPONSE` (the settlement transaction). Not settled (the payer spent the
   tokens since verify, the nonce was used by a concurrent replay, the transaction reverted) ->
   402 with a failed `PAYMENT-RESPONSE` and a body saying why: the text is withheld, and nothing
   was transferred. A handler error (>= 400) is never settled.
So content is served only once its payment has settled, and a payment settles only for content
already produced. The one gap is the network after settlement: a client that loses the 200
after its payment settled has paid for an answer it did not receive; the PAYMENT-RESPONSE
transaction is its receipt (generation is deterministic in (prompt, max_tokens, temperature,
seed), so the provider can serve the same text again by hand). The other: a settlement sent
whose receipt the facilitator did not see in time (`settlement_pending`, after the SDK's one
retry) is answered 402 with its transaction, and may still land.

The facilitator is in-process by default (chain/x402_facilitator.py, the provider's key paying
gas) or a `tessera facilitator run` service reached by URL (the SDK's HTTPFacilitatorClient).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from x402 import ERR_SETTLEMENT_PENDING, x402ResourceServer
from x402.http import (
    HTTPResponseBody,
    RouteConfig,
    decode_payment_signature_header,
    x402HTTPResourceServer,
)
from x402.http.middleware.fastapi import PaymentMiddlewareASGI
from x402.schemas import PaymentPayload

from tessera.chain.agent_budget import AgentBudget
from tessera.chain.x402_facilitator import SchemeSupport, X402Network, schemes
from tessera.compute.generate import MAX_PROMPT_BYTES, MAX_TEMPERATURE, MAX_TOKENS, TextModel
from tessera.errors import PaymentError
from tessera.http_limits import (
    RequestGuard,
    json_body_problem,
    refuse,
    replaying,
    validation_error,
)
from tessera.protocol import messages
from tessera.protocol.agent_budget import parse_payment, parse_uint, payment_typed_data
from tessera.protocol.agent_payments import authorization_typed_data

GENERATE_ROUTE, MODEL_ROUTE = "/v1/generate", "/v1/model"
PAYMENT_TIMEOUT_S = 300   # how long a signed payment stays valid (the SDK's maxTimeoutSeconds)
MAX_PRICE = 10**15        # TUSD base units (10^9 TUSD): a per-request price no caller means


@dataclass(frozen=True)
class InferencePrices:
    """Prices in TUSD base units: each request pays `per_request + per_token * max_tokens`."""

    per_request: int
    per_token: int

    def __post_init__(self) -> None:
        for name in ("per_request", "per_token"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number of TUSD base units >= 0, got {value!r}")
        if self.price_for(MAX_TOKENS) > MAX_PRICE:
            raise ValueError(f"a {MAX_TOKENS}-token request would cost {self.price_for(MAX_TOKENS)} "
                             f"base units, over {MAX_PRICE}")
        if self.price_for(1) == 0:
            raise ValueError("a request would cost nothing: set per_request or per_token above 0")

    def price_for(self, max_tokens: int) -> int:
        return self.per_request + self.per_token * int(max_tokens)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_BYTES)
    max_tokens: int = Field(ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=MAX_TEMPERATURE)
    seed: int | None = Field(0, ge=0, lt=2**63)

    @field_validator("prompt")
    @classmethod
    def _prompt_bytes(cls, prompt: str) -> str:
        if len(prompt.encode("utf-8", errors="surrogatepass")) > MAX_PROMPT_BYTES:
            raise ValueError(f"prompt is over {MAX_PROMPT_BYTES} bytes as UTF-8")
        return prompt

    @field_validator("temperature", mode="before")
    @classmethod
    def _number(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)   # strict mode would refuse 1 for a float
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("temperature must be a finite number")
        return value


# The validated body of the request being priced: set by _ValidateGenerate around the paywall,
# read by the SDK's dynamic price hook (which is given no body: the FastAPI adapter cannot read
# one synchronously).
_CURRENT: ContextVar[GenerateRequest | None] = ContextVar("tessera_generate_request", default=None)


# (the payload's inner dict) -> the address that signed it, or None (a signature that does not
# recover): built per app from its network's token and AgentBudget domains (`payment_signer`)
SignerOf = Callable[[dict], "str | None"]


def payment_signer(net: X402Network) -> SignerOf:
    """Who signed a payment's inner payload on `net`: the EIP-3009 authorization's signer
    ("exact") or the AgentPayment's session key ("tessera-budget"); None if it does not recover
    or is malformed."""
    chain_id, token = net.chain.network.chain_id, net.token
    budget = AgentBudget(net.chain) if "AgentBudget" in net.chain.network.contracts else None
    budget_domain = budget.domain() if budget is not None else None

    def signer(inner: dict) -> str | None:
        try:
            authorization = inner.get("authorization")
            if isinstance(authorization, dict):
                typed = authorization_typed_data(chain_id, token.address, token.name,
                                                 token.version, authorization)
                return messages.signer_or_none(typed, str(inner.get("signature")))
            if budget is None:
                return None
            p = parse_payment(inner)
            typed = payment_typed_data(chain_id, budget.address, p.grant, p.payee, p.amount,
                                       p.nonce, p.deadline, *budget_domain)
            return messages.signer_or_none(typed, "0x" + p.signature.hex())
        except (ValueError, TypeError):
            return None
    return signer


def payment_key(scope, signer_of: SignerOf | None = None) -> tuple[str | None, str | None]:
    """(problem, key) of a request's PAYMENT-SIGNATURE header. `problem`: why it is refused
    outright (an x402 version 1 payment: the SDK's matching reads fields only version 2 has and
    would answer 500; a payer that is not written the one way this server reads it). `key`: the
    PAYER, parsed (the authorizer's address for "exact", the grant for "tessera-budget"), so that
    one payer has one paid request in progress at a time. Keyed by the payment instead, the same
    payment spelled N ways (a nonce without 0x or in capitals, a grant " 5 ") or N payments of a
    budget that covers one were each verified against the same chain state and ran the model N
    times for at most one settlement (review 22); keyed by the payer, the second waits for the
    first to settle and is then verified against what it left. (None, None) without a readable
    header: the paywall answers 402 as for no payment. With `signer_of`, the key is the payer
    AND who signed: anyone can name a victim as the payer in a payment it cannot sign, and a
    key of the payer alone let it hold the victim's slot with 409s (review 24)."""
    raw = next((v for k, v in scope["headers"] if k.lower() == b"payment-signature"), None)
    if raw is None:
        return None, None
    try:
        payment = decode_payment_signature_header(raw.decode("latin-1"))
    except (ValueError, TypeError, AttributeError, UnicodeError):
        return None, None
    if not isinstance(payment, PaymentPayload):
        return "the PAYMENT-SIGNATURE is an x402 version 1 payment: pay with x402 version 2", None
    inner = payment.payload if isinstance(payment.payload, dict) else {}
    authorization = inner.get("authorization")
    if isinstance(authorization, dict):
        payer = authorization.get("from")
        if not (isinstance(payer, str) and re.fullmatch(r"0x[0-9a-fA-F]{40}", payer)):
            return f"the payment's authorization.from is not a 0x address: {str(payer)[:80]!r}", None
        key = f"payer:{payer.lower()}"
    elif "grant" in inner:
        try:
            key = f"grant:{parse_uint(inner, 'grant')}"
        except ValueError as exc:
            return str(exc), None
    else:
        return None, "raw:" + hashlib.sha256(raw).hexdigest()
    if signer_of is not None:
        key += f":signed-by:{str(signer_of(inner)).lower()}"
    return None, key


class _ValidateGenerate:
    """ASGI middleware in front of the paywall: a POST to /v1/generate whose body is not a valid
    GenerateRequest gets 422 naming the field before any payment logic runs; a valid one is
    published to the price hook (`_CURRENT`) and passed on unchanged.

    It also holds the payers in progress: the paywall verifies a payment, the model runs, and
    only then is it settled, so payments verified side by side against the same chain state (the
    same one sent N times, or N that the payer's budget or balance covers only once) would each
    run the model for at most one settlement. A request whose payer (`payment_key`) has one in
    progress is answered 409 before anything runs."""

    def __init__(self, app, signer_of: SignerOf | None = None):
        self.app, self.signer_of = app, signer_of
        self.in_use: set[str] = set()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _paywalled(scope):
            await self.app(scope, receive, send)
            return
        if scope["path"] != GENERATE_ROUTE or scope["method"] != "POST":
            # a spelling the paywall would match but the router would not ("/V1/generate/",
            # "//v1/generate"): refused here, before anyone is asked to pay for a 404
            await refuse(scope, send, 404, f"not found: the route is POST {GENERATE_ROUTE}",
                         close=False)
            return
        body = bytearray()
        while True:   # RequestGuard, outside, has already capped and buffered it
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            request = GenerateRequest.model_validate_json(bytes(body))
        except ValidationError as exc:
            problem = json_body_problem(bytes(body)) or "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            await refuse(scope, send, 422, f"not a generate request: {problem}", close=False)
            return
        problem, key = payment_key(scope, self.signer_of)
        if problem is not None:
            await refuse(scope, send, 400, problem, close=False)
            return
        if key is not None and key in self.in_use:
            await refuse(scope, send, 409, "a request paid by this payer is in progress: one at a "
                         "time per payer (send the next when it is answered)", close=False)
            return
        if key is not None:
            self.in_use.add(key)
        token = _CURRENT.set(request)
        try:
            await self.app(scope, replaying(bytes(body), receive), send)
        finally:
            _CURRENT.reset(token)
            self.in_use.discard(key)


def _paywalled(scope) -> bool:
    """Whether the SDK's route matching would take this request for POST /v1/generate: it
    ignores case, repeated and trailing slashes (x402HTTPServerBase._normalize_path)."""
    path = re.sub("/+", "/", scope["path"]).rstrip("/").lower()
    return scope["method"].upper() == "POST" and path == GENERATE_ROUTE


def _price_of_current(prices: InferencePrices):
    def price(_context) -> int:
        request = _CURRENT.get()
        if request is None:   # only reachable if the route table and the validator disagree
            raise PaymentError("no validated generate request to price")
        return prices.price_for(request.max_tokens)
    return price


def _settlement_failed(_context, failure) -> HTTPResponseBody:
    """The 402 body when settlement failed: the text is withheld. A settlement still pending
    (broadcast, its receipt not seen in time) may yet land; every other failure moved nothing."""
    if failure.error_reason == ERR_SETTLEMENT_PENDING:
        error = (f"the settlement transaction {failure.transaction} was sent but not confirmed in "
                 "time: the generated text is withheld; check the transaction before paying again")
    else:
        error = (f"payment did not settle ({failure.error_reason}): the generated text is "
                 "withheld and this request moved no tokens")
    return HTTPResponseBody("application/json", {"error": error,
                                                 "transaction": failure.transaction or None})


def route_extra(model: TextModel) -> dict[str, str]:
    """What the requirements' extra names besides the token's domain: this route and this
    model. The SDK matches a payment's `accepted` against every term, extra included, so a payment
    made for another route or another model's server is refused before verification. ("exact"
    signs only payee, amount, validity and nonce: a client that edits its unsigned `accepted`
    to match has made a payment of this route's price to this payee, which is this route's.)"""
    return {"route": f"POST {GENERATE_ROUTE}", "model": model.sha256}


def build_routes(model: TextModel, net: X402Network, pay_to: str, prices: InferencePrices,
                 supports: tuple[SchemeSupport, ...]) -> dict[str, RouteConfig]:
    """The paywall's route table: /v1/generate, offered in every scheme the network supports."""
    price = _price_of_current(prices)
    accepts = [option for support in supports
               if (option := support.option(net, pay_to, price, PAYMENT_TIMEOUT_S)) is not None]
    for option in accepts:
        option.extra = {**(option.extra or {}), **route_extra(model)}
    if not accepts:
        raise PaymentError(f"no x402 scheme can be offered on {net.caip2}")
    return {f"POST {GENERATE_ROUTE}": RouteConfig(
        accepts=accepts, mime_type="application/json",
        description=f"Text generation: {prices.per_request} + {prices.per_token} x max_tokens "
                    "TUSD base units per request",
        settlement_failed_response_body=_settlement_failed)}


def resource_server(net: X402Network, facilitator, routes: dict[str, RouteConfig],
                    supports: tuple[SchemeSupport, ...]) -> x402ResourceServer:
    """The SDK resource server, initialized and its routes checked here, where a misconfiguration
    is an exception (inside the middleware the SDK would end the process)."""
    server = x402ResourceServer(facilitator)
    for support in supports:
        server.register(net.caip2, support.server(net))
    try:
        x402HTTPResourceServer(server, routes).initialize()
    except Exception as exc:   # the facilitator unreachable, or it lacks the scheme or network
        raise PaymentError(f"the facilitator cannot serve this paywall on {net.caip2}: {exc}") from None
    return server


def create_inference_app(model: TextModel, net: X402Network, pay_to: str, prices: InferencePrices,
                         facilitator, supports: tuple[SchemeSupport, ...] | None = None) -> FastAPI:
    """The model server. `facilitator`: the SDK's async FacilitatorClient, in-process
    (`LocalFacilitatorClient`) or remote (`HTTPFacilitatorClient`)."""
    supports = supports if supports is not None else schemes()
    routes = build_routes(model, net, pay_to, prices, supports)
    server = resource_server(net, facilitator, routes, supports)
    offered = [option.scheme for option in routes[f"POST {GENERATE_ROUTE}"].accepts]
    # no redirect for "/v1/generate/": a paid request must never be answered (and settled) by one
    app = FastAPI(title="Tessera model server", docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False)
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.get(MODEL_ROUTE)
    def describe() -> dict:
        return {"model": model.describe(), "route": f"POST {GENERATE_ROUTE}",
                "price": {"per_request": prices.per_request, "per_token": prices.per_token,
                          "formula": "per_request + per_token * max_tokens",
                          "units": "TUSD base units (6 decimals)"},
                "network": net.caip2, "chain_id": net.chain.network.chain_id,
                "asset": net.token.address, "asset_eip712": net.token.extra(),
                "pay_to": pay_to, "schemes": offered}

    @app.post(GENERATE_ROUTE)
    async def generate(body: GenerateRequest) -> dict:
        result = await asyncio.to_thread(model.generate, body.prompt, body.max_tokens,
                                         body.temperature, body.seed)
        return {"text": result.text, "tokens": result.tokens,
                "price": prices.price_for(body.max_tokens),
                "model_sha256": model.sha256}

    # added innermost first: RequestGuard -> _ValidateGenerate -> the paywall -> the routes
    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)
    app.add_middleware(_ValidateGenerate, signer_of=payment_signer(net))
    app.add_middleware(RequestGuard)
    return app
