"""Buying completions from a provider's model server, paid per request from an AgentBudget grant
with the "tessera-budget" x402 scheme (chain/x402_spend.budget_client, docs/agents_budget.md).

A request the grant does not allow is refused by the client before anything is signed: `buy`
then answers a `Refusal` naming the limit (and how many signatures were asked of the session
key for it: none), not an exception, because for an agent a spent budget is an expected end,
not a failure. Everything else that goes wrong (the server unreachable, a payment the server
did not accept or settle) raises PaymentError naming what happened."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from x402.http import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    decode_payment_required_header,
    decode_payment_response_header,
)
from x402.http.clients.httpx import PaymentError as X402PaymentError
from x402.http.clients.httpx import x402AsyncTransport
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import NoMatchingRequirementsError

from tessera.chain.network import Network
from tessera.chain.x402_spend import budget_client
from tessera.errors import PaymentError, PaymentRefused
from tessera.http_deadline import DeadlineClient, json_of, within

GENERATE, MODEL = "/v1/generate", "/v1/model"
REFUSED_PREFIX = "payment refused before signing: "
ANSWER_BYTES = 4 << 20   # the largest answer a model server may send (a completion and its price)


class CountingSigner:
    """The session key as the SDK's signer, counting the signatures asked of it: the evidence
    that a refusal came before signing."""

    def __init__(self, account: Any):
        self.inner = EthAccountSigner(account)
        self.calls = 0

    @property
    def address(self) -> str:
        return self.inner.address

    def sign_typed_data(self, *args: Any) -> bytes:
        self.calls += 1
        return self.inner.sign_typed_data(*args)


@dataclass(frozen=True)
class Purchase:
    """One completion bought and settled on chain."""
    prompt: str
    max_tokens: int
    text: str
    tokens: int
    amount: int          # TUSD base units settled
    tx: str              # the settlement transaction (AgentBudget.pay)
    payee: str
    model_sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Refusal:
    """A request the agent's client refused before signing (nothing sent, nothing moved)."""
    prompt: str
    max_tokens: int
    price: int | None    # what the server asked, when known
    limit: str           # the limit, as the contract names it ("over cap", ...)
    reason: str          # the whole message
    signatures: int      # signatures the session key was asked for (0)

    def to_dict(self) -> dict:
        return asdict(self)


def limit_of(reason: str) -> str:
    """'over cap' out of 'payment refused before signing: over cap (grant 3, 1 to 0x..)'."""
    text = reason.split(REFUSED_PREFIX, 1)[-1]
    return text.split(" (grant ", 1)[0].strip()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class InferenceBuyer:
    """Completions from the model server at `url`, paid by `session_key` (an eth_account
    account) from grant `grant_id` of the network's AgentBudget. `max_price` (base units),
    when given, is also the SDK's spend-controls cap per payment."""

    def __init__(self, network: Network, session_key: Any, grant_id: int, url: str,
                 max_price: int | None = None, timeout: float = 120):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.signer = CountingSigner(session_key)
        self.client = budget_client(network, self.signer, grant_id,
                                    max_amount_per_payment=max_price)
        self._terms: dict | None = None

    def describe(self, timeout: float = 5) -> dict:
        """The server's free GET /v1/model: model, prices, network, payee, schemes."""
        try:   # the whole exchange within `timeout`, a capped, unencoded body (review 15)
            with DeadlineClient(timeout=timeout, max_body=ANSWER_BYTES) as http, \
                    within(time.monotonic() + timeout):
                response = http.get(self.url + MODEL)
        except httpx.HTTPError as exc:
            raise PaymentError(f"model server {self.url} unreachable: {type(exc).__name__}") \
                from None
        if response.status_code != 200:
            raise PaymentError(f"model server {self.url}{MODEL} answered {response.status_code}")
        try:
            self._terms = json_of(response.content)
            self._terms["model"]["model_sha256"]   # noqa: B018  (the shape we rely on)
        except (ValueError, KeyError, TypeError):
            raise PaymentError(f"{self.url}{MODEL} is not a Tessera model server") from None
        return self._terms

    def price(self, max_tokens: int) -> int | None:
        """per_request + per_token * max_tokens, from the server's published prices."""
        terms = self._terms or self.describe()
        try:
            price = terms["price"]
            return int(price["per_request"]) + int(price["per_token"]) * int(max_tokens)
        except (KeyError, TypeError, ValueError):
            return None

    def _paying_client(self) -> httpx.AsyncClient:
        """x402's paying client (it pays a 402 and retries) over a transport that reads every
        answer capped and unencoded, and refuses a 402 whose body or payment header is not
        depth-bounded JSON before x402's code parses it (review 16: a 200 kB `[[[[` body or a
        93 kB header killed the agent, a gzip body took 1.3 GB)."""
        return httpx.AsyncClient(transport=x402AsyncTransport(self.client, CappedTransport()),
                                 base_url=self.url, timeout=self.timeout)

    async def _post(self, body: dict) -> tuple[httpx.Response, bytes]:
        """The paid request (x402's client pays a 402 and retries) and its answer's body, read
        unencoded and capped by the transport; the whole exchange within `timeout` (a server
        that drips its answer, or sends one that inflates to gigabytes, is refused)."""
        async def exchange() -> tuple[httpx.Response, bytes]:
            async with self._paying_client() as http:
                response = await http.post(GENERATE, json=body,
                                           headers={"Accept-Encoding": "identity"})
                return response, response.content
        try:
            return await asyncio.wait_for(exchange(), self.timeout)
        except TimeoutError:
            raise PaymentError(f"model server {self.url} did not answer within "
                               f"{self.timeout:g} s") from None

    def buy(self, prompt: str, max_tokens: int, temperature: float = 0.0,
            seed: int = 0) -> Purchase | Refusal:
        """Pay for one completion and return it, or the client's refusal before signing.
        (Greedy at temperature 0; sampled with `seed` above it: the same request gives the same
        text either way.)"""
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": float(temperature),
                "seed": seed}
        signed_before = self.signer.calls
        try:
            response, content = asyncio.run(self._post(body))
        except X402PaymentError as exc:
            cause = exc.__cause__
            if isinstance(cause, PaymentRefused | NoMatchingRequirementsError):
                reason = str(cause) or type(cause).__name__
                return Refusal(prompt, max_tokens, self.price(max_tokens),
                               limit_of(reason) if isinstance(cause, PaymentRefused)
                               else "no payment option within the client's spend controls",
                               reason, self.signer.calls - signed_before)
            raise PaymentError(f"paying {self.url}{GENERATE} failed: {exc}") from None
        except httpx.HTTPError as exc:
            raise PaymentError(f"model server {self.url} unreachable: {type(exc).__name__}: "
                               f"{exc}") from None
        if response.status_code != 200:
            raise PaymentError(f"model server answered {response.status_code} to a paid "
                               f"request: {_why(response, content)}")
        try:
            header = response.headers[PAYMENT_RESPONSE_HEADER]
            json_of(base64.b64decode(header))   # bounded first: x402 parses it with json
            settled = decode_payment_response_header(header)
            answer = json_of(content)
            return Purchase(prompt, max_tokens, str(answer["text"]), int(answer["tokens"]),
                            int(settled.amount or answer.get("price") or 0), settled.transaction,
                            (self._terms or {}).get("pay_to", ""),
                            str(answer.get("model_sha256", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PaymentError(f"model server's answer to a paid request does not read "
                               f"({type(exc).__name__}: {str(exc)[:120]}); "
                               f"{len(content)} bytes") from None


def _why(response: httpx.Response, content: bytes) -> str:
    """What a non-200 answer to a paid request says: the paywall's error, or the body."""
    header = response.headers.get(PAYMENT_REQUIRED_HEADER)
    if header:
        try:
            json_of(base64.b64decode(header))   # bounded first: x402 parses it with json
            error = decode_payment_required_header(header).error
            if error:
                return error
        except Exception:   # a header we cannot read: fall back to the body
            pass
    return content[:300].decode("utf-8", "replace")


class CappedTransport(httpx.AsyncBaseTransport):
    """httpx's transport, each answer read whole here: unencoded, at most ANSWER_BYTES, and a
    402's body and PAYMENT-REQUIRED header checked as depth-bounded JSON (`json_of`) before the
    x402 library parses them with Python's json. A refusal is an httpx.DecodingError."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        try:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise httpx.DecodingError(f"a {encoding[:40]}-encoded answer; identity was asked for",
                                          request=request)
            chunks, size = [], 0
            async for chunk in response.stream:
                size += len(chunk)
                if size > ANSWER_BYTES:
                    raise httpx.DecodingError(f"an answer over {ANSWER_BYTES} bytes", request=request)
                chunks.append(chunk)
        finally:
            await response.aclose()
        content = b"".join(chunks)
        if response.status_code == 402:
            header = response.headers.get(PAYMENT_REQUIRED_HEADER)
            try:
                if content.strip():
                    json_of(content)
                if header:
                    json_of(base64.b64decode(header, validate=False))
            except ValueError as exc:
                raise httpx.DecodingError(f"a 402 answer that is not bounded JSON: "
                                          f"{str(exc)[:120]}", request=request) from None
        return httpx.Response(response.status_code, headers=response.headers, content=content,
                              extensions=response.extensions, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()
