"""A provider that drips its answer's body, or the headers of any response, one byte inside
every read timeout (review 9's finding 1): the round's requests end at the round's deadline
(WorkerFault "late"), and a state download at its time limit, instead of being held for as long
as the provider likes. The clients are the ones the tenant and validators use
(tessera.http_deadline.DeadlineClient); real sockets, a scripted raw TCP server."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from tests.support.scripted_rounds import PARAMS, PROVIDER, signed_answer, tenant_side
from tests.support.tcp_server import ScriptedTcpServer

from tessera.chain.read_grant import ReadGrantAuth
from tessera.compute import segment_check
from tessera.errors import WorkerFault
from tessera.http_deadline import DeadlineClient
from tessera.tenant.worker_rounds import WorkerChannel, WorkerLease

DRIP_S = 0.1           # far inside the client's 1 s read timeout
DEADLINE_S = 1.5


class Dripping(ScriptedTcpServer):
    """"answer-body": the answer's headers at once, its body a byte at a time (a payload
    request gets a 404 at once: no early payload); "headers": a status line, then a header a
    byte at a time, for any request; "huge-answer": an answer far over the size cap, fast."""

    def __init__(self, mode: str):
        self.mode = mode
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = conn.recv(65536).decode("latin-1")
                if "/pseudo-gradient" in request.split("\r\n", 1)[0] and self.mode != "headers":
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    return
                if self.mode == "huge-answer":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
                    while not self.stop.is_set():
                        conn.sendall(b" " * 65536)
                    return
                if self.mode == "answer-body":
                    body = json.dumps(signed_answer(1, 0).model_dump()).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\n"
                                 + f"Content-Length: {len(body)}\r\n\r\n".encode())
                    self.drip(conn, body, DRIP_S)
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Pad: ")
                    self.drip(conn, b"a" * 100_000, DRIP_S)
            except OSError:
                return


@pytest.fixture
def server(request):
    s = Dripping(request.param)
    yield s
    s.close()


def channel() -> WorkerChannel:
    http = DeadlineClient(timeout=1.0, auth=ReadGrantAuth(tenant_side().chain))
    return WorkerChannel(tenant_side(), http, lambda b: b, max_payload=1 << 20,
                         round_timeout_s=DEADLINE_S)


def ended_within(fn, limit_s: float):
    """(seconds fn ran, what it raised) with fn on a thread; fails if it runs past limit_s."""
    out: dict = {}

    def run():
        started = time.monotonic()
        try:
            fn()
        except BaseException as exc:   # noqa: BLE001 - the test inspects it
            out["error"] = exc
        out["took"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert "took" in out, f"still running after {limit_s} s"
    return out["took"], out.get("error")


@pytest.mark.parametrize("server", ["answer-body", "headers"], indirect=True)
def test_a_dripped_answer_ends_the_workers_round_at_its_deadline(server):
    worker = WorkerLease(lease_id=1, provider=PROVIDER.address, endpoint=server.url)
    took, error = ended_within(
        lambda: channel().collect(worker, 0, PARAMS, time.monotonic() + DEADLINE_S), 6.0)
    assert isinstance(error, WorkerFault) and error.kind == "late", error
    assert took < DEADLINE_S + 1.5


@pytest.mark.parametrize("server", ["headers"], indirect=True)
def test_dripped_payload_headers_end_at_the_deadline(server):
    url = f"{server.url}/leases/1/rounds/0/pseudo-gradient"
    took, error = ended_within(
        lambda: channel().download(url, time.monotonic() + DEADLINE_S), 6.0)
    assert isinstance(error, WorkerFault) and error.kind == "late", error


@pytest.mark.parametrize("server", ["headers"], indirect=True)
def test_dripped_state_headers_end_at_the_download_limit(server, monkeypatch):
    monkeypatch.setattr(segment_check, "DOWNLOAD_GRACE_S", 1.0)
    monkeypatch.setattr(segment_check, "MIN_SERVE_BYTES_PER_S", 64 * 1024)   # 64 kB: 2 s
    took, error = ended_within(
        lambda: segment_check.download(DeadlineClient(timeout=1.0), server.url, 64 * 1024), 8.0)
    assert isinstance(error, ValueError) and "not served within" in str(error), error
    assert took < 4.0


@pytest.mark.parametrize("server", ["huge-answer"], indirect=True)
def test_an_answer_over_the_size_cap_is_refused_not_buffered(server, monkeypatch):
    monkeypatch.setattr("tessera.tenant.worker_rounds.MAX_ROUND_RESULT_BYTES", 1 << 20)
    worker = WorkerLease(lease_id=1, provider=PROVIDER.address, endpoint=server.url)
    took, error = ended_within(
        lambda: channel().collect(worker, 0, PARAMS, time.monotonic() + 30), 10.0)
    assert isinstance(error, WorkerFault) and error.kind == "bad-answer", error
    assert "larger than" in str(error)
