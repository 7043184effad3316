"""The liveness watch's parts that need no chain: the HTTP fetching and URL checks
(validator/beat_fetch.py) and the last-call timing rule (validator/liveness_watch.py). Real
HTTP servers on 127.0.0.1, no mocks of httpx.

Adversary strategies, and where each is tested:
- Publish an endpoint httpx cannot parse ('http://[::1', tabs, NULs) so that every fetch of a
  pass raises and no challenge goes out (review finding r1): refused up front as "no
  endpoint", and any exception inside one fetch is that fetch's answer only
  (test_bad_endpoints_are_refused_up_front, test_one_bad_url_never_breaks_the_batch).
- Point the endpoint into the watcher's own network (127.0.0.1, 10/8, 169.254.169.254,
  localhost, a name resolving there) to use it as a blind proxy: refused off the devnet
  (test_private_addresses_are_refused_off_the_devnet).
- Serve a gzip bomb, or an endless body (review finding r4): read raw, any Content-Encoding
  refused, at most MAX_BEAT_BYTES kept (test_bombs_and_floods_are_cut_short).
- Stay silent so that the watcher's passes grow with the queue and the last call comes too
  late (review finding r3): a batch never takes more than 2 x timeout_s, however many URLs
  queue behind one slot (test_a_batch_is_bounded_whatever_the_queue), and the last call is
  decided from the time left against two bounded passes (test_the_last_call_leaves_time).
(Answering challenges to take the bonds, review finding r2: the daily budget, in
test_liveness_watch.py; the per-validator back-off is gone with the set challenges.)"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tessera.validator import beat_fetch
from tessera.validator.beat_fetch import (
    ABSENT,
    MAX_BEAT_BYTES,
    OK,
    SILENT,
    UNASKED,
    endpoint_problem,
    fetch_all,
)
from tessera.validator.liveness_watch import MARGIN_S, RETRY_EVERY_S, is_last_call


@pytest.fixture(scope="module")
def server():
    """GET /<mode>: 'ok' a small body, 'slow' 2 s of nothing, 'gzip' a bomb (64 MiB of zeros,
    ~64 KiB on the wire), 'flood' 1 MiB of identity body, 'redirect' a 302 to /ok."""
    seen: list[dict] = []
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(dict(self.headers))
            mode = self.path.strip("/")
            headers, body, status = {}, b'{"ok": true}', 200
            if mode == "slow":
                time.sleep(2.0)
            elif mode == "gzip":
                headers, body = {"Content-Encoding": "gzip"}, bomb
            elif mode == "flood":
                body = b"x" * (1 << 20)
            elif mode == "redirect":
                status, headers, body = 302, {"Location": "/ok"}, b""
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass   # the watcher hung up first

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


def test_bad_endpoints_are_refused_up_front():
    for bad in ("", "http://[::1", "http://a\tb", "http://a\x00b", "ftp://host", "http://",
                "host:8000", "http://u:p@host", "http://host/?q=1", "http://" + "a" * 600):
        assert endpoint_problem(bad, public_only=False), bad
    assert endpoint_problem("http://127.0.0.1:8000", public_only=False) is None
    assert endpoint_problem("https://validator.example.com/base/", public_only=True) is None


def test_private_addresses_are_refused_off_the_devnet(monkeypatch, server):
    for bad in ("http://127.0.0.1:8000", "http://localhost:80", "http://api.localhost",
                "http://10.1.2.3", "http://192.168.0.1", "http://172.16.0.1", "http://[::1]:80",
                "http://169.254.169.254/latest", "http://[::ffff:127.0.0.1]", "http://0.0.0.0",
                "http://100.64.0.1", "http://[fe80::1]", "http://[fd00::1]"):
        assert endpoint_problem(bad, public_only=True), bad
    assert endpoint_problem("http://8.8.8.8", public_only=True) is None
    # A public-looking name that resolves into the watcher's network: refused at the GET.
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host == "validator.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 0))]
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    [(kind, why)] = fetch_all({1: "http://validator.example/x"}, 1.0, public_only=True).values()
    assert kind == ABSENT and "non-public" in why


def test_bombs_and_floods_are_cut_short(server):
    url, seen = server
    answers = fetch_all({"ok": f"{url}/ok", "gzip": f"{url}/gzip", "flood": f"{url}/flood",
                         "redirect": f"{url}/redirect"}, 5.0)
    assert answers["ok"] == (OK, b'{"ok": true}')
    assert answers["gzip"][0] == ABSENT and "Content-Encoding gzip" in answers["gzip"][1]
    assert answers["flood"] == (ABSENT, f"more than {MAX_BEAT_BYTES} bytes")
    assert answers["redirect"] == (ABSENT, "HTTP 302")
    assert all(h.get("Accept-Encoding") == "identity" for h in seen)


def test_one_bad_url_never_breaks_the_batch(server):
    url, _ = server
    answers = fetch_all({"bad": "http://[::1/liveness", "nul": "http://a\x00b/x",
                         "ok": f"{url}/ok", "refused": "http://127.0.0.1:9/x"}, 2.0)
    assert answers["bad"][0] == ABSENT and answers["nul"][0] == ABSENT
    assert answers["ok"][0] == OK and answers["refused"][0] == SILENT


def test_a_batch_is_bounded_whatever_the_queue(monkeypatch, server):
    """Twenty GETs to a server that never answers in time, one slot: the first is silent
    after timeout_s, the ones that found no slot within timeout_s come back unasked (the
    next pass asks them), and the batch ends within 2 x timeout_s."""
    url, _ = server
    monkeypatch.setattr(beat_fetch, "FETCH_CONCURRENCY", 1)
    started = time.monotonic()
    answers = fetch_all({i: f"{url}/slow" for i in range(20)}, 0.3)
    assert time.monotonic() - started < 0.9
    kinds = [kind for kind, _ in answers.values()]
    assert 1 <= kinds.count(SILENT) <= 2 and kinds.count(UNASKED) >= 18


def test_the_last_call_leaves_time():
    """Whenever a pass is not the last call, one more bounded pass (GETs at most
    2 x timeout_s, then the challenges) fits after it and the retry wait, with the margin
    to spare: a silent liar cannot make the watcher miss the window. On the devnet's 60 s
    windows, at the default 3 s timeout and a challenge or two, the first 30 s or so are for
    asking again."""
    for timeout_s in (0.3, 3.0, 10.0):
        for sends in (0, 1, 8):
            for send_s in (0.5, 4.0, 12.0):
                one_pass = 2 * timeout_s + sends * send_s
                for remaining in range(0, 600):
                    if not is_last_call(remaining, timeout_s, sends, send_s):
                        after = remaining - one_pass - RETRY_EVERY_S
                        assert after - one_pass >= MARGIN_S
    assert not is_last_call(60, 3.0, 1, 4.0) and is_last_call(30, 3.0, 1, 4.0)


def test_name_lookups_never_stall_a_batch_nor_queue(monkeypatch, server):
    """Review 2, findings 2 and 3: a liar's name server that never answers. A batch still
    ends within 2 x timeout_s (the lookup runs on a thread nobody waits for) and its name is
    silent for that pass only; the next pass starts no second lookup of it while the first
    still runs (no queue of stalled lookups), and once MAX_LOOKUPS are stalled a new name is
    silent rather than queued, while a name answered before is still served from the cache.
    A name is looked up once and the GET goes to that address, named by the Host header:
    a name server that answers the next lookup differently (DNS rebinding) is not asked.
    Still open: MAX_LOOKUPS liar identities whose names all stall keep a new honest name
    silent until one times out in the system resolver (cached names are unaffected)."""
    url, seen = server
    port = url.rsplit(":", 1)[1]
    monkeypatch.setattr(beat_fetch, "_RESOLVER", beat_fetch._Resolver())
    monkeypatch.setattr(beat_fetch, "MAX_LOOKUPS", 2)
    calls: list[str] = []
    release = threading.Event()

    def resolve(host, *args, **kwargs):
        calls.append(host)
        if host.startswith("stall"):
            release.wait(10)
        address = "127.0.0.1" if calls.count(host) == 1 else "10.9.9.9"   # then rebinds
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0))]
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    try:
        answers = fetch_all({"honest": f"http://honest.example:{port}/ok"}, 1.0)
        assert answers["honest"] == (OK, b'{"ok": true}')
        assert seen[-1]["Host"] == f"honest.example:{port}"
        for _ in range(2):
            started = time.monotonic()
            answers = fetch_all({"stall": f"http://stall1.example:{port}/ok",
                                 "honest": f"http://honest.example:{port}/ok"}, 0.3)
            assert time.monotonic() - started < 0.9
            assert answers["stall"][0] == SILENT and answers["honest"][0] == OK
        assert calls.count("stall1.example") == 1 and calls.count("honest.example") == 1
        answers = fetch_all({"stall": f"http://stall2.example:{port}/ok",
                             "new": f"http://new.example:{port}/ok"}, 0.3)
        assert answers["stall"][0] == SILENT
        assert answers["new"][0] == SILENT and "no free name lookup" in answers["new"][1]
    finally:
        release.set()
