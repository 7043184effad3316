"""A wall-clock limit on a whole HTTP exchange with a node we do not trust: connecting, sending
the request, the response's headers and its body.

Why: httpx's timeouts are per socket operation. A provider that sends one byte just inside
every read timeout holds a request for as long as it likes, in the body and in the headers
alike (httpcore accepts ~100 KiB of headers), and a checked deadline between body chunks does
not help while the headers are still coming. A request made inside `within(deadline)` (a
context variable, so per thread) has every socket operation wait at most until `deadline`;
once it has passed, the next one fails with httpx's timeout error and httpcore drops the
connection, so nothing stays stuck holding it.

How: an httpcore network backend whose streams shrink each operation's timeout to the time left
(`DeadlineBackend`), installed in the connection pool of the transport httpx builds
(`DeadlineClient`). A write goes out in sends each held to the deadline (one `write` call
otherwise loops on partial sends for as long as a slow reader keeps taking bytes).
`DeadlineClient(total_s=...)` also gives every request that is not streamed, and was not made
inside `within`, a limit of its own: `send` reads the whole body before it returns.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import ssl
import time
import typing
from collections.abc import Iterator

import httpcore
import httpx
import pydantic_core

HTTP_TOTAL_S = 120.0   # the longest a request to a node takes when nothing sets a deadline
MAX_BODY_BYTES = 64 << 20   # the largest body a request that is not streamed reads
WRITE_PIECE = 1 << 16       # a write through a stream that is not a plain socket, per call
# The slowest transfer with a node that is not a fault: 2 Mbit/s, a fiftieth of the 100 Mbit/s
# link DiLoCo is measured on, after a grace for set-up (`transfer_time_s`).
MIN_TRANSFER_BYTES_PER_S = 256 * 1024
TRANSFER_GRACE_S = 30.0

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("http_deadline",
                                                                        default=None)
# host -> the addresses it was resolved to before a timed exchange (`connecting_to`)
_RESOLVED: contextvars.ContextVar[dict[str, list[str]] | None] = contextvars.ContextVar(
    "http_resolved", default=None)


def resolve(host: str, port: int, limit_s: float) -> list[str]:
    """The addresses of `host`, looked up within `limit_s` (OSError otherwise: no name, or a
    resolver too slow). The look-up runs in a thread of its own, which a hung resolver keeps
    until it gives up; nothing waits for it past `limit_s`."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        found = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        infos = found.result(timeout=limit_s)
    except concurrent.futures.TimeoutError:
        raise OSError(f"{host} not resolved within {limit_s:.1f} s") from None
    finally:
        pool.shutdown(wait=False)
    return list(dict.fromkeys(info[4][0] for info in infos))


def text_of(response: httpx.Response, limit: int = 200) -> str:
    """The start of an untrusted answer's body as text for a message: UTF-8 whatever its
    charset says (httpx's `.text` decodes by the declared charset, and `charset=hex` or
    `base64` names a bytes codec that raises: review 20), at most `limit` characters."""
    return response.content[:4 * limit].decode("utf-8", "replace")[:limit]


def look_up(url: str, limit_s: float) -> dict[str, list[str]]:
    """{`url`'s host: its addresses}, resolved within `limit_s` (OSError otherwise;
    httpx.InvalidURL for no URL): for `connecting_to`, so that a timed exchange started after
    it does not count the resolver's time (a hardware challenge times the provider, not the
    challenger's DNS: review 17, L2)."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    # the ASCII name httpx connects to (IDNA 2008), never its Unicode form, which the socket
    # module would encode again by IDNA 2003: another name for some labels (review 19)
    host = parsed.raw_host.decode("ascii").strip("[]")
    return {host: resolve(host, port, limit_s)}


@contextlib.contextmanager
def connecting_to(addresses: dict[str, list[str]]) -> Iterator[None]:
    """Requests made inside connect each host named in `addresses` (`look_up`) to those
    addresses, one after another, without resolving it again; TLS still names the host."""
    token = _RESOLVED.set({**(_RESOLVED.get() or {}), **addresses})
    try:
        yield
    finally:
        _RESOLVED.reset(token)


@contextlib.contextmanager
def within(deadline: float) -> Iterator[None]:
    """Requests made inside end by `deadline` (time.monotonic()); an enclosing earlier one wins."""
    outer = _DEADLINE.get()
    token = _DEADLINE.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def transfer_time_s(nbytes: int, grace_s: float = TRANSFER_GRACE_S,
                    bytes_per_s: float = MIN_TRANSFER_BYTES_PER_S) -> float:
    """How long moving `nbytes` to or from a node may take before it is given up."""
    return grace_s + nbytes / bytes_per_s


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` shrunk to the time left before the deadline; `error` once none is left."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        sock = self._inner.get_extra_info("socket")
        if _DEADLINE.get() is None or not isinstance(sock, socket.socket):
            self._inner.write(buffer, timeout)
            return
        if type(self._inner).__name__ != "SyncStream":
            # TLS inside TLS (an https proxy): the socket is the proxy's; write through the
            # stream, a piece at a time, each held to the time left
            for start in range(0, len(buffer), WRITE_PIECE):
                self._inner.write(buffer[start:start + WRITE_PIECE],
                                  _left(timeout, httpcore.WriteTimeout))
            return
        view = memoryview(buffer)
        while view:
            sock.settimeout(_left(timeout, httpcore.WriteTimeout))
            try:
                sent = sock.send(view)
            except TimeoutError as exc:
                raise httpcore.WriteTimeout(str(exc)) from exc
            except (OSError, ssl.SSLError) as exc:
                raise httpcore.WriteError(str(exc)) from exc
            view = view[sent:]

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname,
                                             _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own backend, every operation held to the calling request's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None):
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:
        """Every address the name resolves to, one after another, each with the time left (a
        name with many unreachable addresses took their number times the deadline)."""
        known = (_RESOLVED.get() or {}).get(host)
        if _DEADLINE.get() is None and known is None:
            return _Stream(self._inner.connect_tcp(host, port, timeout, local_address,
                                                   socket_options))
        try:
            addresses = known if known is not None else list(dict.fromkeys(
                a[4][0] for a in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        last: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                return _Stream(self._inner.connect_tcp(
                    address, port, _left(timeout, httpcore.ConnectTimeout), local_address,
                    socket_options))
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineClient(httpx.Client):
    """An httpx.Client whose requests obey `within`; `total_s`: the limit of a request that is
    not streamed and not made inside `within` (None: only per-operation timeouts); a body that
    is not streamed is read up to `max_body` bytes (more: httpx.DecodingError). Bodies are
    asked for and accepted unencoded only (`read_at_most`)."""

    def __init__(self, *args, total_s: float | None = None, max_body: int = MAX_BODY_BYTES,
                 **kwargs):
        if "transport" in kwargs:
            raise TypeError("DeadlineClient builds its own transport")
        super().__init__(*args, **kwargs)
        for transport in [self._transport, *self._mounts.values()]:
            if transport is None:
                continue
            pool = getattr(transport, "_pool", None)
            if not isinstance(pool, httpcore.ConnectionPool):   # pragma: no cover - httpx changed
                raise RuntimeError("httpx's transport no longer holds an httpcore pool in _pool: "
                                   "tessera.http_deadline needs updating")
            pool._network_backend = DeadlineBackend(pool._network_backend)
        self.total_s, self.max_body = total_s, max_body
        self.headers["Accept-Encoding"] = "identity"   # no compressed body: no bomb to inflate

    def send(self, request: httpx.Request, *, stream: bool = False, **kwargs) -> httpx.Response:
        with contextlib.ExitStack() as scope:
            if not stream and self.total_s is not None and _DEADLINE.get() is None:
                scope.enter_context(within(time.monotonic() + self.total_s))
            deadline = _DEADLINE.get()
            if deadline is not None:   # waiting for a pooled connection counts too
                timeout = dict(request.extensions.get("timeout", {}))
                left = max(0.001, deadline - time.monotonic())
                timeout["pool"] = left if timeout.get("pool") is None else min(timeout["pool"], left)
                request.extensions["timeout"] = timeout
            response = super().send(request, stream=True, **kwargs)
            if stream:
                return response
            try:
                body = read_at_most(response, self.max_body)
            except ValueError as exc:
                raise httpx.DecodingError(str(exc), request=request) from None
            finally:
                response.close()
            return httpx.Response(response.status_code, headers=response.headers, content=body,
                                  request=request, extensions=response.extensions)


def raw_chunks(response: httpx.Response) -> typing.Iterator[bytes]:
    """A streamed response's body as it arrives, refused (ValueError) if it is encoded: httpx
    inflates each compressed piece whole before a caller can count it (825 bytes of stacked
    gzip made 400 MB), so the clients ask for identity and take nothing else."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ValueError(f"the response is {encoding[:40]}-encoded; identity was asked for")
    yield from response.iter_raw()


def read_at_most(response: httpx.Response, cap: int) -> bytes:
    """A streamed response's body, refused (ValueError) as soon as it passes `cap` bytes."""
    chunks, size = [], 0
    for chunk in raw_chunks(response):
        size += len(chunk)
        if size > cap:
            raise ValueError(f"the response is larger than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_of(body: bytes | str) -> object:
    """`body` (an answer from a node we do not trust) parsed as JSON; ValueError if it is not
    JSON, nests deeper than about 200 levels, or holds NaN or an infinity. pydantic-core's parser
    stops at a fixed depth; Python's `json` recurses once per level, and with the recursion limit
    web3's py_ecc sets (100,000) a few hundred kB of `[[[[` overflowed the C stack and killed the
    tenant, validator or agent that parsed it (review 15)."""
    return pydantic_core.from_json(body, allow_inf_nan=False)
