"""A counting JSON-RPC proxy: stands between daemons and anvil and counts every call by method
(each member of a batch counts once), so a test or a bench can say how many calls a second an
idle daemon puts on its RPC endpoint. Used by tests/provider_http/test_idle_rpc.py and
bench/scale_bids.py."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tessera.chain.network import load_network, save_network


class CountingProxy:
    """`with CountingProxy(upstream) as proxy:` serves on `proxy.url`; `proxy.window()` starts
    a counting window and `proxy.rates()` reads it ({method: calls per second})."""

    def __init__(self, upstream: str, websocket: bool = True):
        """`websocket`: tunnel websocket upgrades (GET) to the upstream, each counted as one
        `eth_subscribe (websocket)` (the provider's head stream sends exactly one per
        connection; what is pushed on it is not counted: pushes are not calls). False: answer
        them 501, as a node without a websocket would, so the provider polls."""
        self.upstream = upstream
        self.websocket = websocket
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.since = time.monotonic()
        self.client = httpx.Client(timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()   # no Nagle: headers and body go out at once, not 40 ms apart
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.count(body)
                try:
                    answer = proxy.client.post(proxy.upstream, content=body,
                                               headers={"Content-Type": "application/json"})
                    status, content = answer.status_code, answer.content
                except httpx.HTTPError:
                    status, content = 502, b'{"error": "upstream unreachable"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_GET(self):  # noqa: N802 (http.server's name)
                if not proxy.websocket or "websocket" not in self.headers.get("Upgrade", "").lower():
                    self.send_error(501)
                    return
                proxy.count(b'{"method": "eth_subscribe (websocket)"}')
                host, port = proxy.upstream.removeprefix("http://").split("/")[0].split(":")
                upstream = socket.create_connection((host, int(port)))
                head = f"{self.requestline}\r\n{self.headers}".replace("\n", "\r\n")
                upstream.sendall(head.replace("\r\r\n", "\r\n").encode())
                pipe = threading.Thread(target=_pipe, args=(upstream, self.connection), daemon=True)
                pipe.start()
                _pipe(self.connection, upstream)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def count(self, body: bytes) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            message = {"method": "<not json>"}
        calls = message if isinstance(message, list) else [message]
        with self.lock:
            for call in calls:
                self.counts[str(call.get("method")) if isinstance(call, dict) else "?"] += 1

    def window(self) -> None:
        """Forget what was counted so far; count from now."""
        with self.lock:
            self.counts.clear()
            self.since = time.monotonic()

    def snapshot(self) -> tuple[dict[str, int], float]:
        """({method: calls}, seconds) since the window started."""
        with self.lock:
            return dict(self.counts), time.monotonic() - self.since

    def rates(self) -> tuple[float, dict[str, float]]:
        """(calls per second in all, {method: calls per second}) since the window started."""
        counts, seconds = self.snapshot()
        per_method = {m: round(n / seconds, 3) for m, n in sorted(counts.items(), key=lambda x: -x[1])}
        return sum(counts.values()) / seconds, per_method

    def network_file(self, network_file: Path, into: Path) -> Path:
        """A copy of `network_file` whose RPC URL is this proxy."""
        network = load_network(network_file)
        save_network(network.model_copy(update={"rpc_url": self.url}), into)
        return into

    def __enter__(self) -> CountingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes from source to sink until either side closes."""
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
