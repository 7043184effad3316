"""What every daemon's HTTP server (provider, validator) checks before a handler runs, so that
junk gets a 4xx that says what is wrong, never a 500, and no caller makes the node read more
than a small, known number of bytes before it is known to be entitled to send them.

- **Bodies are capped while they stream.** `RequestGuard` counts the bytes of every request
  body as they arrive and refuses with 413 as soon as the cap is passed, whether or not a
  Content-Length was sent, and whether or not it was honest (a declared length over the cap
  is refused before one byte is read). JSON routes get `JSON_BODY_BYTES`; routes that take a
  raw upload are named with their own ceiling and stream it through `read_body`, after their
  handler has checked who may send it (the handler runs before any byte is read).
  A refusal sent while the upload is still arriving closes the connection, so the rest of it
  is never read (uvicorn would otherwise read and drop it).
- **JSON that is not JSON is refused.** Python's `json` accepts `NaN`, `Infinity` and
  `-Infinity`, which RFC 8259 does not; a body holding one anywhere is refused with 400 before
  a handler parses it (they used to reach the validation-error handler, which could not encode
  them and answered 500), and so are numbers that overflow to infinity (`1e999`). So is a
  body nested deeper than pydantic-core's parser goes (about 200 levels), before Python's
  parser sees it: py_ecc (imported with web3) raises the recursion limit to 100,000, so the C
  JSON parser would recurse through a 100 kB `[[[[...` until the process died of a segfault
  (a stranger could kill a provider with one request) instead of raising RecursionError.
- **Numbers in paths fit the node's storage.** `PathInt` and `QueryInt` bound an integer route
  parameter to 0 .. 2**63-1 (SQLite's INTEGER; every id a node stores, and below uint256, so
  an id never reaches the ABI encoder out of range).

How an attacker gets round it, and what bounds them: a caller may send exactly the cap on
every request, on many connections at once; the caps bound what each request costs, not how
many there are (that is a job for a reverse proxy's rate limit). A raw upload route is only
as safe as the check its handler makes before calling `read_body`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from re import Pattern
from typing import Annotated

import pydantic_core
from fastapi import HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

JSON_BODY_BYTES = 256 << 10        # the largest JSON body any daemon route takes
# Seconds a stopping server waits for requests in flight before it closes their connections:
# uvicorn waits for ever by default, so one client that pipelined requests and never read the
# answers kept a provider or the explorer from exiting on SIGTERM (review 27).
GRACEFUL_SHUTDOWN_S = 5
MAX_PATH_INT = 2**63 - 1           # SQLite INTEGER; every id and index a node stores fits

PathInt = Annotated[int, Path(ge=0, le=MAX_PATH_INT)]
QueryInt = Annotated[int, Query(ge=0, le=MAX_PATH_INT)]


def json_body_problem(body: bytes) -> str | None:
    """Why `body` must be refused before any handler parses it as JSON, or None.

    pydantic-core's parser reads it first: it is fast, and it stops at a fixed depth (about
    200) instead of recursing until the process dies. Only a body it could read goes on to
    Python's `json`, whose hooks name any NaN, Infinity, or number that overflows to one."""
    try:
        pydantic_core.from_json(body, allow_inf_nan=True)
    except ValueError as exc:   # not JSON, not UTF-8, nested too deeply, a number too long
        return f"request body is not JSON: {exc}"
    found: list[str] = []

    def constant(name: str) -> float:
        found.append(name)
        return 0.0

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            found.append(f"{text[:40]} (too large for a float)")
        return value

    try:
        json.loads(body, parse_constant=constant, parse_float=number)
    except ValueError:   # something pydantic-core reads and json does not: the route says why
        return None
    if found:
        return (f"JSON body contains {found[0]}, which is not a finite JSON number "
                "(RFC 8259): send a finite number")
    return None


def _finite(value):
    """`value` with every non-finite float spelled as a string (JSON cannot carry them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, but one that can always be encoded (its own fails on a NaN input)."""
    return JSONResponse(status_code=422, content={"detail": _finite(jsonable_encoder(exc.errors()))})


async def read_body(request: Request, cap: int, what: str) -> bytearray:
    """The request's body, read as it streams and refused with 413 the moment it passes `cap`
    bytes, or before any is read when its Content-Length says it will (one buffer, no copy:
    the caller gets the bytearray itself)."""
    declared = _content_length(request.scope)
    if declared is not None and declared > cap:
        raise HTTPException(413, f"{what} is larger than {cap} bytes ({declared} declared)")
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > cap:
            raise HTTPException(413, f"{what} is larger than {cap} bytes")
        body += chunk
    return body


class RequestGuard:
    """ASGI middleware: caps every request body while it streams and refuses non-JSON JSON
    (module docstring). `streamed`: (path pattern, ceiling in bytes) of the routes that read
    a raw upload themselves; every other route's body is read here first, up to
    `json_cap`, checked, and handed on."""

    def __init__(self, app, json_cap: int = JSON_BODY_BYTES,
                 streamed: Sequence[tuple[Pattern, int]] = ()):
        self.app, self.json_cap, self.streamed = app, json_cap, tuple(streamed)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        ceiling = next((cap for pattern, cap in self.streamed if pattern.match(path)), None)
        cap = self.json_cap if ceiling is None else ceiling
        declared = _content_length(scope)
        if declared == -1:
            await refuse(scope, send, 400, "Content-Length is not a number of bytes")
            return
        if declared is not None and declared > cap:
            await refuse(scope, send, 413, f"request body of {declared} bytes is larger than "
                                            f"{cap} bytes")
            return
        if ceiling is None:
            await self._buffered(scope, receive, send, cap)
        else:
            await self._streamed(scope, receive, send, cap)

    async def _buffered(self, scope, receive, send, cap: int) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return   # the client went away
            body += message.get("body", b"")
            if len(body) > cap:
                await refuse(scope, send, 413, f"request body is larger than {cap} bytes")
                return
            if not message.get("more_body", False):
                break
        problem = json_body_problem(bytes(body)) if body else None
        if problem is not None:
            await refuse(scope, send, 400, problem, close=False)
            return
        await self.app(scope, replaying(bytes(body), receive), send)

    async def _streamed(self, scope, receive, send, cap: int) -> None:
        seen, done = 0, False

        async def counted():
            nonlocal seen, done
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > cap:
                    raise HTTPException(413, f"request body is larger than {cap} bytes")
            return message

        async def closing(message):
            if message["type"] == "http.response.start" and not done:
                # answered before the upload ended: do not read (and drop) the rest of it
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted, closing)


def _content_length(scope) -> int | None:
    """The declared Content-Length; None when absent, -1 when it is not a number."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            if not (text.isascii() and text.isdigit()):
                return -1
            return int(text) if len(text) < 20 else 1 << 64   # past every cap either way
    return None


def replaying(body: bytes, receive):
    """An ASGI `receive` that hands on `body`, already read from `receive`, as one message, and
    then whatever `receive` says next (a disconnect): what a middleware that read the body
    passes to the app behind it."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


async def refuse(scope, send, status: int, detail: str, close: bool = True) -> None:
    """Answer `status` with {"detail": detail} as JSON; `close`: and close the connection."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
