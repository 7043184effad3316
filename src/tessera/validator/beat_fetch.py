"""Asking other validators for a provider's beat over HTTP, for the liveness watch
(validator/liveness_watch.py; docs/validators.md, "Watching other validators' reports").

Everything here is shaped by what a lying validator controls: its on-chain endpoint (any
string), its server's replies (any bytes, at any pace) and its name server (any answer, at
any pace).

- An endpoint is checked once (`endpoint_problem`): an http(s) URL that httpx parses, with a
  host; off the devnet's own chains, not a loopback, private, link-local or otherwise
  non-public address (the watcher must not be a blind proxy into its own network: by literal
  IP, by the name "localhost", and by the addresses the name resolves to). A bad one is as
  good as no endpoint: the validator serves no beat.
- A name is resolved here, never by httpx (`_Resolver`): each lookup on a daemon thread of
  its own, at most one in flight per name and MAX_LOOKUPS in all (no queue: a name that
  finds no slot, or whose lookup is still running when its GET's time is up, is `silent`
  for that pass only); answers are kept DNS_FRESH_S, and then used while a new lookup runs
  for up to DNS_STALE_S. The GET goes to the address that was checked (the Host header and,
  for https, the SNI name and certificate check stay the name's): no second lookup a name
  server could answer differently (DNS rebinding), and nothing a batch must wait for.
- `fetch_all` bounds a whole batch in time: a request starts only within `timeout_s` of the
  batch's start (later ones come back `unasked`, to be asked in the next pass) and then has
  `timeout_s` to finish, lookup, headers and body: a batch never takes more than
  2 x `timeout_s`, whatever the number of URLs, however slowly a server drips bytes or a
  name server answers (its event loop is closed without waiting for any thread).
- A body is read raw (`Accept-Encoding: identity`; any `Content-Encoding` refused) up to
  MAX_BEAT_BYTES: no decompression bomb, no unbounded buffer.
- Every failure is an answer, never an exception out of the batch: a connection or lookup
  that fails or stays quiet is `silent` (maybe down for a moment: asked again), anything
  else `absent`."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from concurrent.futures import Future

import httpx
from pydantic import ValidationError

from tessera.protocol import liveness, matching

FETCH_CONCURRENCY = 16         # GETs in flight at once
MAX_BEAT_BYTES = 4 << 10       # a served beat is ~200 bytes of JSON
MAX_LOOKUPS = 32               # name lookups in flight at once, across passes
DNS_FRESH_S = 60.0             # a name's answer is used this long without a new lookup
DNS_STALE_S = 3_600.0          # and then, while a new lookup runs, this long

OK, ABSENT, SILENT, UNASKED = "ok", "absent", "silent", "unasked"


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def endpoint_problem(endpoint: str, public_only: bool) -> str | None:
    """Why `endpoint` (a validator's on-chain endpoint) cannot be asked (None: it can)."""
    problem = matching.endpoint_problem(endpoint)   # the shape every client asks of an endpoint
    if problem:
        return problem
    try:
        url = httpx.URL(endpoint)
    except Exception as exc:   # httpx.InvalidURL, or anything its parser raises
        return f"endpoint is not a URL: {type(exc).__name__}"
    if public_only:
        host = url.host.rstrip(".").lower()
        if host == "localhost" or host.endswith(".localhost"):
            return "endpoint is this machine (localhost)"
        if _literal(host) and _private(host):
            return f"endpoint {host} is not a public address"
    return None   # a name: its addresses are checked before each GET (`_address`)


def beat_url(endpoint: str, epoch: int, provider: str) -> str:
    return f"{endpoint.rstrip('/')}/liveness/{epoch}/beats/{provider}"


class _Resolver:
    """Name lookups that nobody waits on past their GET's time (module docstring): a thread
    each (never a pool a stalled lookup could hold up), one in flight per name, MAX_LOOKUPS
    in all, answers kept for DNS_FRESH_S, then used while a new lookup runs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, list[str]]] = {}   # name -> (when, addresses)
        self._running: dict[str, Future] = {}

    def answer(self, host: str) -> tuple[list[str] | None, Future | None]:
        """(the addresses to use now, if any; the lookup to wait for, if none)."""
        now = time.monotonic()
        with self._lock:
            when, addresses = self._answers.get(host, (-DNS_STALE_S - 1.0, []))
            if now - when < DNS_FRESH_S:
                return addresses, None
            future = self._running.get(host)
            if future is None and len(self._running) < MAX_LOOKUPS:
                future = self._running[host] = Future()
                future.set_running_or_notify_cancel()   # from now on, cancel() is a no-op
                threading.Thread(target=self._look_up, args=(host, future), daemon=True,
                                 name="beat-fetch-dns").start()
            return (addresses if now - when < DNS_STALE_S else None), future

    def _look_up(self, host: str, future: Future) -> None:
        try:
            infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
            if not addresses:
                raise OSError(f"{host} has no address")
            with self._lock:
                self._answers[host] = (time.monotonic(), addresses)
            future.set_result(addresses)
        except BaseException as exc:
            future.set_exception(exc)
        finally:
            with self._lock:
                if self._running.get(host) is future:
                    del self._running[host]

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()


_RESOLVER = _Resolver()


async def _address(host: str, public_only: bool) -> tuple[str | None, str | None]:
    """(the address to connect to for `host`, None) or (None, why it may not be asked);
    raises OSError when no lookup answered (silent). Waits only as long as its caller."""
    if _literal(host):
        return host, None
    addresses, lookup = _RESOLVER.answer(host)
    if addresses is None:
        if lookup is None:
            raise OSError(f"no free name lookup for {host} ({MAX_LOOKUPS} in flight)")
        addresses = await asyncio.wrap_future(lookup)
    if public_only and (bad := sorted(a for a in addresses if _private(a))):
        return None, f"{host} resolves to a non-public address ({bad[0]})"
    ipv4 = [a for a in addresses if ":" not in a]
    return (ipv4 or addresses)[0].split("%")[0], None


async def _get(client: httpx.AsyncClient, url: str, timeout_s: float,
               public_only: bool) -> tuple[str, bytes | str]:
    """(OK, body) for a 200 with a small identity body, (ABSENT, why) for an answer that is
    no beat, (SILENT, why) for no answer in time, a failed connection or lookup, a 429 or a
    5xx."""
    try:
        async with asyncio.timeout(timeout_s):
            target = httpx.URL(url)
            headers, extensions = {"Accept-Encoding": "identity"}, {}
            address, why = await _address(target.host, public_only)
            if why:
                return ABSENT, why
            if address != target.host:   # to the address checked, named as the endpoint
                headers["Host"] = target.netloc.decode("ascii")
                if target.scheme == "https":
                    extensions["sni_hostname"] = target.host
                target = target.copy_with(host=address)
            async with client.stream("GET", target, headers=headers,
                                     extensions=extensions) as reply:
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
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            async def one(key, url):
                try:
                    async with asyncio.timeout(timeout_s):
                        await gate.acquire()
                except TimeoutError:
                    return key, (UNASKED, "no free slot in this pass")
                try:
                    return key, await _get(client, url, timeout_s, public_only)
                finally:
                    gate.release()
            return dict(await asyncio.gather(*(one(k, u) for k, u in urls.items())))
    if not urls:
        return {}
    # Not asyncio.run: it waits for the loop's default executor at the end, and nothing a
    # batch started may hold it up (closing the loop shuts its executor down without waiting).
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def served_problem(body: bytes, chain_id: int, uptime: str, provider: str, epoch: int,
                   seed: bytes) -> str | None:
    """Why a 200 body is not `provider`'s beat of `epoch` (None: it is)."""
    try:
        served = liveness.SignedBeat.model_validate_json(body)
    except ValidationError as exc:
        return f"not a SignedBeat: {exc.errors()[0]['msg']}"
    return liveness.beat_problem(chain_id, uptime, provider, epoch, seed, served)
