"""`tessera.http_limits` in a real uvicorn server over real sockets, with a small app of its
own (the daemons' own routes are tested against real provider and validator processes in
test_daemon_http_hardening.py): bodies capped while they stream, with or without a
Content-Length, the answer sent before the upload ends; NaN and Infinity refused; path
numbers bounded; the 422 handler able to encode any input."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from tests.provider_http.raw import upload

from tessera.chain.devnet import free_port
from tessera.http_limits import (
    JSON_BODY_BYTES,
    MAX_PATH_INT,
    PathInt,
    RequestGuard,
    json_body_problem,
    read_body,
    validation_error,
)

RAW_CEILING = 8 << 20     # what the guard lets the raw route stream at most
RAW_CAP = 1 << 20         # what the raw route's handler reads at most
reads: list[int] = []     # bytes the raw handler read, per request


class Item(BaseModel):
    n: int
    x: float = 0.0


def app() -> FastAPI:
    api = FastAPI()
    api.add_middleware(RequestGuard, streamed=[(re.compile(r"^/raw/"), RAW_CEILING)])
    api.add_exception_handler(RequestValidationError, validation_error)

    @api.post("/items/{item_id}")
    def item(item_id: PathInt, body: Item) -> dict:
        return {"id": item_id, "n": body.n, "x": body.x}

    @api.put("/raw/{who}")
    async def raw(who: str, request: Request) -> dict:
        if who != "tenant":   # who may send is known before a byte is read
            raise HTTPException(403, f"{who} may not upload here")
        body = await read_body(request, RAW_CAP, "upload")
        reads.append(len(body))
        return {"bytes": len(body)}

    return api


@pytest.fixture(scope="module")
def url():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.05)
    yield base
    server.should_exit = True
    thread.join(timeout=10)


def test_a_json_body_past_the_cap_is_refused_while_it_streams(url):
    """No Content-Length (chunked): the guard counts the bytes as they come and answers 413
    once JSON_BODY_BYTES is passed; the client has by then sent little more than the cap
    (loopback socket buffers), not the 64 MiB it meant to."""
    answer = upload(url, "POST", "/items/1", 64 << 20, {"Content-Type": "application/json"})
    assert answer.status == 413 and "larger than" in answer.detail()
    assert answer.sent < JSON_BODY_BYTES + (16 << 20), answer.sent
    assert answer.headers.get("connection") == "close"


def test_a_declared_length_past_the_cap_is_refused_before_any_byte(url):
    answer = upload(url, "POST", "/items/1", 0, {"Content-Length": str(JSON_BODY_BYTES + 1),
                                                 "Content-Type": "application/json"},
                    chunked=False)
    assert answer.status == 413 and str(JSON_BODY_BYTES + 1) in answer.detail()
    huge = upload(url, "POST", "/items/1", 0, {"Content-Length": "9" * 40}, chunked=False)
    assert 400 <= huge.status < 500   # h11 itself refuses a 40-digit length


def test_a_stranger_is_refused_before_the_upload_is_read(url):
    """The raw route's handler refuses before reading: the answer comes while the upload is
    still being sent, and the connection is closed so the rest is never read."""
    reads.clear()
    answer = upload(url, "PUT", "/raw/stranger", 200 << 20)
    assert answer.status == 403 and "stranger" in answer.detail()
    assert answer.sent < 16 << 20, answer.sent
    assert answer.headers.get("connection") == "close" and reads == []


def test_an_entitled_upload_is_capped_by_its_handler_and_by_the_ceiling(url):
    reads.clear()
    ok = upload(url, "PUT", "/raw/tenant", RAW_CAP)
    assert (ok.status, json.loads(ok.body)) == (200, {"bytes": RAW_CAP})
    over = upload(url, "PUT", "/raw/tenant", 100 << 20)
    assert over.status == 413 and "upload is larger than" in over.detail()
    assert over.sent < RAW_CAP + (16 << 20), over.sent
    declared = upload(url, "PUT", "/raw/tenant", 0, {"Content-Length": str(RAW_CEILING + 1)},
                      chunked=False)
    assert declared.status == 413 and reads == [RAW_CAP]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_anywhere_in_json_are_refused_with_400(url, token):
    for text in (f'{{"n": 1, "x": {token}}}', f'{{"n": {token}}}',
                 f'{{"n": 1, "deep": [{{"a": [{token}]}}]}}', f"[{token}]"):
        reply = httpx.post(f"{url}/items/1", content=text,
                           headers={"content-type": "application/json"}, timeout=10)
        assert reply.status_code == 400, (text, reply.text)
        assert token in reply.json()["detail"] and "not a finite JSON number" in reply.text
    # a string holding the word is fine, and so is a finite float
    reply = httpx.post(f"{url}/items/1", json={"n": 2, "x": 1.5, "note": "NaN"}, timeout=10)
    assert reply.json() == {"id": 1, "n": 2, "x": 1.5}


def test_a_number_that_overflows_to_infinity_is_refused(url):
    reply = httpx.post(f"{url}/items/1", content='{"n": 1, "x": -1e999}',
                       headers={"content-type": "application/json"}, timeout=10)
    assert reply.status_code == 400 and "-1e999 (too large for a float)" in reply.text


def test_deep_nesting_is_refused_and_does_not_kill_the_server(url):
    """py_ecc (web3) sets the recursion limit to 100,000, so before this guard Python's C
    JSON parser recursed through a 200 kB `[[[[...` until the process segfaulted: one
    request by anyone killed the daemon. Both a closed and an unclosed nest are refused."""
    import sys

    import tessera.chain.client  # noqa: F401  (what a daemon imports; it raises the limit)
    assert sys.getrecursionlimit() >= 100_000
    for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 40_000, "[NaN," + "[" * 100_000):
        reply = httpx.post(f"{url}/items/1", content=text,
                           headers={"content-type": "application/json"}, timeout=10)
        assert reply.status_code == 400 and "recursion limit" in reply.text, reply.text[:200]
    assert httpx.post(f"{url}/items/3", json={"n": 1}, timeout=10).json()["id"] == 3


def test_json_nobody_can_parse_is_a_4xx_not_a_500(url):
    for text in ('{"n": ' + "9" * 5000 + "}", "{not json", b'{"n": "\xff"}', "[1, 2"):
        reply = httpx.post(f"{url}/items/1", content=text,
                           headers={"content-type": "application/json"}, timeout=10)
        assert reply.status_code == 400 and "not JSON" in reply.text, (str(text)[:40], reply.text)


def test_path_numbers_past_int64_are_refused(url):
    for bad in (2**63, 2**256, 2**256 + 1, -1):
        reply = httpx.post(f"{url}/items/{bad}", json={"n": 1}, timeout=10)
        assert reply.status_code == 422 and "item_id" in reply.text, (bad, reply.text)
    reply = httpx.post(f"{url}/items/{MAX_PATH_INT}", json={"n": 1}, timeout=10)
    assert reply.status_code == 200 and reply.json()["id"] == MAX_PATH_INT


def test_the_validation_handler_encodes_any_input():
    """FastAPI's own handler fails (500) on a NaN input; this one spells it as a string."""
    exc = RequestValidationError([{"type": "int_type", "loc": ("body", "n"),
                                   "msg": "Input should be a valid integer",
                                   "input": {"n": float("nan"), "m": [float("-inf")]}}])
    response = asyncio.run(validation_error(None, exc))
    detail = json.loads(response.body)["detail"]
    assert response.status_code == 422 and detail[0]["input"] == {"n": "nan", "m": ["-inf"]}


def test_json_body_problem_names_the_constant():
    assert json_body_problem(b'{"a": 1.5, "b": "NaN", "c": "[[[["}') is None
    assert json_body_problem(b"[" * 150 + b"]" * 150) is None     # deep, but parseable
    assert "Infinity" in json_body_problem(b'{"a": [1, Infinity]}')
    assert "NaN" in json_body_problem(b'[{"a": {"b": [NaN]}}]')
    assert "not JSON" in json_body_problem(b"not json")
