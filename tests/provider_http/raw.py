"""Raw HTTP/1.1 over a socket, for what httpx will not do: stream a chunked upload while
watching for the server's answer, and count how much was sent before it came."""

from __future__ import annotations

import json
import select
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

CHUNK = 1 << 16


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int          # body bytes handed to the socket before the answer (or the reset) came

    def detail(self) -> str:
        try:
            return str(json.loads(self.body).get("detail"))
        except ValueError:
            return self.body.decode(errors="replace")


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    sock.settimeout(30)
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        more = sock.recv(65536)
        if not more:
            break
        body += more
    return status, headers, body


def upload(url: str, method: str, path: str, total: int, headers: dict[str, str] | None = None,
           chunked: bool = True, fill: bytes = b"x") -> Answer:
    """Send `total` body bytes to `path` in CHUNK pieces (chunked transfer coding unless
    `chunked` is False, when `headers` should carry a Content-Length), stopping as soon as the
    server answers or drops the connection. Raises if no answer ever comes."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    sock = socket.create_connection((host, port), timeout=10)
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if chunked:
        head.append("Transfer-Encoding: chunked")
    sent = 0
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        piece = fill * CHUNK
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            n = min(CHUNK, total - sent)
            frame = f"{n:x}\r\n".encode() + piece[:n] + b"\r\n" if chunked else piece[:n]
            _, writable, _ = select.select([], [sock], [], 10)
            if not writable:   # the server stopped reading: its answer must be on the way
                break
            sock.sendall(frame)
            sent += n
        else:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass   # the server answered and closed, or stopped reading: its answer is read below
    try:
        status, answer_headers, body = _read_answer(sock)
    finally:
        sock.close()
    assert status, f"no answer to {method} {path} after {sent} bytes"
    return Answer(status, answer_headers, body, sent)
