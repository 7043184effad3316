"""A provider that serves a committed state a few bytes at a time (issue 11/16 hardening).

Adversary strategy: the round's checks download the states a worker committed to; a provider
that sends one byte just inside every read timeout never trips it, and the tenant's `settle`
(and so the whole job, every honest worker idle while the tenant pays their leases) waited for
as long as it liked. Now a file must arrive within `download_time_limit_s` (a grace plus its
largest size at MIN_SERVE_BYTES_PER_S, 2 Mbit/s) over all tries, and after the grace its bytes
must keep coming at that rate on average (review 23: a small file may not take the largest's
time), or it fails to open, which a check counts as the provider's failure
(docs/verification.md).

A real HTTP exchange over a socket: the trickling server is a plain thread writing bytes."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from tests.support.tcp_server import ScriptedTcpServer

from tessera.compute import segment_check


class Trickle(ScriptedTcpServer):
    """Answers every GET with a 200 of `size` bytes, `chunk` bytes every `every_s` seconds."""

    def __init__(self, size: int, chunk: int, every_s: float):
        self.size, self.chunk, self.every_s = size, chunk, every_s
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {self.size}\r\n"
                         "Content-Type: application/octet-stream\r\n\r\n".encode())
            sent = 0
            try:
                while sent < self.size and not self.stop.is_set():
                    part = min(self.chunk, self.size - sent)
                    conn.sendall(b"\0" * part)
                    sent += part
                    time.sleep(self.every_s)
            except OSError:
                return   # the client gave up


@pytest.fixture
def quick_limit(monkeypatch):
    """A 1 s grace and 64 kB/s: a 64 kB file may take 2 s."""
    monkeypatch.setattr(segment_check, "DOWNLOAD_GRACE_S", 1.0)
    monkeypatch.setattr(segment_check, "MIN_SERVE_BYTES_PER_S", 64 * 1024)


def test_a_trickled_state_fails_to_open_once_the_grace_is_past(quick_limit):
    """64 kB at 100 bytes per 50 ms would take 33 s, every read well inside the client's 5 s
    read timeout: refused by the pace (1 s grace, then the rate with 64 kB of slack: 2 s here,
    the file's whole limit), naming the rate."""
    server = Trickle(64 * 1024, 100, 0.05)
    try:
        started = time.monotonic()
        with pytest.raises(ValueError, match=r"(slower than|not served within 2 s .*) 65536 bytes/s"):
            segment_check.download(httpx.Client(timeout=5), server.url, 64 * 1024)
        took = time.monotonic() - started
    finally:
        server.close()
    assert 1.0 <= took < 3.0, took


def test_a_small_file_cannot_take_the_largest_files_time(quick_limit):
    """Review 23: every file had the time of the largest it may be (a state's), so a provider
    serving a residual of a few bytes at a byte a second held the round's checks for minutes.
    A 1 kB file in a 640 kB limit (11 s by the limit) trickled at 20 bytes/s: refused after the
    grace, at about 1 s."""
    server = Trickle(1024, 10, 0.5)
    try:
        started = time.monotonic()
        with pytest.raises(ValueError, match="slower than"):
            segment_check.download(httpx.Client(timeout=5), server.url, 640 * 1024)
        took = time.monotonic() - started
    finally:
        server.close()
    assert segment_check.download_time_limit_s(640 * 1024) == pytest.approx(11.0)
    assert took < 2.5, took


def test_a_state_served_at_the_minimum_rate_opens(quick_limit):
    """The same file at about twice the minimum rate (16 kB every 0.125 s) arrives whole."""
    server = Trickle(64 * 1024, 16 * 1024, 0.125)
    try:
        data = segment_check.download(httpx.Client(timeout=5), server.url, 64 * 1024)
    finally:
        server.close()
    assert data == b"\0" * (64 * 1024)


def test_the_default_limit_is_the_documented_rate():
    """Defaults: the default model's largest state (3 fp32 copies of 120,576 parameters + 1 MiB)
    in 30 s + its size at 256 KiB/s; a 10.8 M-parameter model's in about 9 minutes."""
    small = segment_check.max_state_bytes(120_576)
    assert segment_check.download_time_limit_s(small) == pytest.approx(30 + small / 262_144)
    big = segment_check.download_time_limit_s(segment_check.max_state_bytes(10_770_432))
    assert 480 < big < 540, big


class HeaderTrickle(ScriptedTcpServer):
    """Answers with headers that never end, a byte every `every_s` seconds."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nX-Pad: ")
            try:
                while not self.stop.is_set():
                    conn.sendall(b"a")
                    time.sleep(self.every_s)
            except OSError:
                return


class BurstThenSilence(ScriptedTcpServer):
    """Headers and one byte of a 1 kB body, then silence just under the client's read timeout."""

    def __init__(self, silent_s: float):
        self.silent_s = silent_s
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\nx")
            self.stop.wait(self.silent_s)


@pytest.mark.parametrize("server_of,read_timeout", [(lambda: HeaderTrickle(0.5), 5),
                                                    (lambda: BurstThenSilence(2.9), 3)])
def test_headers_and_silence_are_held_to_the_pace(quick_limit, server_of, read_timeout):
    """Review 24: the pace was checked only as body bytes came, so headers sent a byte at a time,
    or silence just inside the read timeout (then a reset and a fresh try), held a 1 kB file in a
    640 kB limit for the limit's whole 11 s. With the coordinator's DeadlineClient each read now
    ends at the pace: refused within the tries' paces, far under the limit."""
    from tessera.http_deadline import DeadlineClient

    server = server_of()
    try:
        started = time.monotonic()
        with pytest.raises(ValueError, match="slower than|ReadTimeout|not served"):
            segment_check.download(DeadlineClient(timeout=read_timeout), server.url, 640 * 1024)
        took = time.monotonic() - started
    finally:
        server.close()
    assert took < 5.0, took            # the limit: 11 s
