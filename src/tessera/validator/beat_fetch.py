"""Asking other validators for a provider's beat over HTTP, for the liveness watch
(validator/liveness_watch.py; docs/validators.md, "Watching other validators' reports").

Everything here is shaped by what a lying validator controls: its on-chain endpoint (any
string) and its server's replies (any bytes, at any pace).

- An endpoint is checked once (`endpoint_problem`): an http(s) URL that httpx parses, with a
  host; off the devnet's own chains, not a loopback, private, link-local or otherwise
  non-public address (the watcher must not be a blind proxy into its own network: by literal
  IP, by the name "localhost", and by resolving the name just before the GET). A bad one is
  as good as no endpoint: the validator serves no beat.
- `fetch_all` bounds a whole batch in time: a request starts only within `timeout_s` of the
  batch's start (later ones come back `unasked`, to be asked in the next pass) and then has
  `timeout_s` to finish, headers and body: a batch never takes more than 2 x `timeout_s`,
  whatever the number of URLs or however slowly a server drips bytes.
- A body is read raw (`Accept-Encoding: identity`; any `Content-Encoding` refused) up to
  MAX_BEAT_BYTES: no decompression bomb, no unbounded buffer.
- Every failure is an answer, never an exception out of the batch: a connection that fails or
  stays quiet is `silent` (maybe down for a moment: asked again), anything else `absent`."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
from pydantic import ValidationError

from tessera.protocol import liveness

FETCH_CONCURRENCY = 16         # GETs in flight at once
MAX_BEAT_BYTES = 4 << 10       # a served beat is ~200 bytes of JSON
MAX_ENDPOINT_CHARS = 512

OK, ABSENT, SILENT, UNASKED = "ok", "absent", "silent", "unasked"
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="beat-fetch-dns")


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def endpoint_problem(endpoint: str, public_only: bool) -> str | None:
    """Why `endpoint` (a validator's on-chain endpoint) cannot be asked (None: it can)."""
    if not endpoint:
        return "no endpoint published"
    if len(endpoint) > MAX_ENDPOINT_CHARS:
        return f"endpoint longer than {MAX_ENDPOINT_CHARS} characters"
    try:
        url = httpx.URL(endpoint)
    except Exception as exc:   # httpx.InvalidURL, or anything its parser raises
        return f"endpoint is not a URL: {type(exc).__name__}"
    if url.scheme not in ("http", "https") or not url.host:
        return "endpoint is not an http(s) URL with a host"
    if url.query or url.fragment or url.userinfo:
        return "endpoint has a query, fragment or user info"
    if public_only:
        host = url.host.rstrip(".").lower()
        if host == "localhost" or host.endswith(".localhost"):
            return "endpoint is this machine (localhost)"
        try:
            if _private(host):
                return f"endpoint {host} is not a public address"
        except ValueError:
            pass   # a name: resolved before each GET (`_resolves_private`)
    return None


def beat_url(endpoint: str, epoch: int, provider: str) -> str:
    return f"{endpoint.rstrip('/')}/liveness/{epoch}/beats/{provider}"


async def _resolves_private(host: str) -> str | None:
    """Why the host name `host` may not be asked (it resolves to a non-public address)."""
    try:
        ipaddress.ip_address(host)
        return None    # a literal: checked by endpoint_problem
    except ValueError:
        pass
    # Not the loop's default executor: asyncio.run waits for that one at the end of a batch,
    # and a slow name server must not stretch the batch past its bound.
    infos = await asyncio.get_running_loop().run_in_executor(
        _RESOLVER, socket.getaddrinfo, host, None, 0, socket.SOCK_STREAM)
    bad = sorted({info[4][0] for info in infos if _private(info[4][0])})
    return f"{host} resolves to a non-public address ({bad[0]})" if bad else None


async def _get(client: httpx.AsyncClient, url: str, timeout_s: float,
               resolved: dict | None) -> tuple[str, bytes | str]:
    """(OK, body) for a 200 with a small identity body, (ABSENT, why) for an answer that is
    no beat, (SILENT, why) for no answer in time, a failed connection, a 429 or a 5xx."""
    try:
        async with asyncio.timeout(timeout_s):
            if resolved is not None:   # public only: one resolution per host and batch
                host = httpx.URL(url).host
                if host not in resolved:
                    resolved[host] = asyncio.ensure_future(_resolves_private(host))
                if why := await asyncio.shield(resolved[host]):
                    return ABSENT, why
            async with client.stream("GET", url,
                                     headers={"Accept-Encoding": "identity"}) as reply:
                if reply.status_code != 200:
                    silent = reply.status_code == 429 or reply.status_code >= 500
                    return (SILENT if silent else ABSENT), f"HTTP {reply.status_code}"
                encoding = reply.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    return ABSENT, f"Content-Encoding {encoding[:40]} refused"
                body = bytearray()
                async for chunk in reply.aiter_raw():
                    body += chunk
                    if len(body) > MAX_BEAT_BYTES:
                        return ABSENT, f"more than {MAX_BEAT_BYTES} bytes"
                return OK, bytes(body)
    except TimeoutError:
        return SILENT, f"no answer within {timeout_s} s"
    except (httpx.TransportError, OSError) as exc:
        return SILENT, f"{type(exc).__name__}: {exc}"[:200]
    except Exception as exc:   # a URL httpx refuses, a protocol it cannot parse: no beat
        return ABSENT, f"{type(exc).__name__}: {exc}"[:200]


def fetch_all(urls: dict, timeout_s: float, public_only: bool = False) -> dict:
    """GET every url of `urls` (key -> url), FETCH_CONCURRENCY at once; key -> what `_get`
    says, or (UNASKED, why) for one that found no free slot within `timeout_s` of the start.
    The whole batch takes at most 2 x `timeout_s`."""
    async def run() -> dict:
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)
        resolved: dict | None = {} if public_only else None
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            async def one(key, url):
                try:
                    async with asyncio.timeout(timeout_s):
                        await gate.acquire()
                except TimeoutError:
                    return key, (UNASKED, "no free slot in this pass")
                try:
                    return key, await _get(client, url, timeout_s, resolved)
                finally:
                    gate.release()
            return dict(await asyncio.gather(*(one(k, u) for k, u in urls.items())))
    return asyncio.run(run()) if urls else {}


def served_problem(body: bytes, chain_id: int, uptime: str, provider: str, epoch: int,
                   seed: bytes) -> str | None:
    """Why a 200 body is not `provider`'s beat of `epoch` (None: it is)."""
    try:
        served = liveness.SignedBeat.model_validate_json(body)
    except ValidationError as exc:
        return f"not a SignedBeat: {exc.errors()[0]['msg']}"
    return liveness.beat_problem(chain_id, uptime, provider, epoch, seed, served)
