"""The relayer asks committee members' endpoints for signatures: a member (or whoever answers on
its plain-HTTP endpoint) can answer anything. Each hostile answer found by a red-team run must
cost the relayer one bounded request, never its process: a 200 kB `[[[[...` (Python's JSON
parser segfaults on it once py_ecc has raised the recursion limit), a body larger than any
attestation, and a reply trickled one byte at a time.

These servers are fakes on purpose: a real validator never answers this way."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tessera.logs import EventLog
from tessera.protocol import bridge
from tessera.relayer import relay

MESSAGE = bridge.Message(source_chain=31338, source_outbox="0x" + "11" * 20,
                         sender="0x" + "22" * 20, nonce=0, destination_chain=31337,
                         recipient="0x" + "33" * 20, kind=1, amount=5,
                         payload_hash=bridge.payload_hash(b""))


def _answer(kind: str):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            if kind == "bomb":
                self.wfile.write(b"[" * 200_000 + b"]" * 200_000)
            elif kind == "huge":
                self.wfile.write(b'{"pad": "' + b"x" * (10 << 20) + b'"}')
            elif kind == "drip":
                try:
                    for byte in b'{"message_id": "0x00", "epoch": 0, "signature": "0x"}':
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.5)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            else:
                self.wfile.write(b'{"message_id": "0x00", "epoch": 0, "signature": "0x"}')
    return Handler


@pytest.mark.parametrize("kind", ["bomb", "huge", "drip"])
def test_a_hostile_endpoint_costs_one_bounded_request(kind):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _answer(kind))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    collector = relay.Collector({}, None, EventLog("relayer-test"))
    member = "0x" + "44" * 20
    collector._endpoints[member] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        started = time.monotonic()
        assert collector._fetch(member, MESSAGE, 0) is None
        assert time.monotonic() - started < relay.ATTESTATION_DEADLINE_S + 2.5
        # refused unread or cut off, and not asked again this poll
        assert collector._endpoints[member] in collector._unreachable
    finally:
        collector.close()
        server.shutdown()
