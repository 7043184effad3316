"""The indexer reads logs through RPCs that cap `eth_getLogs` ranges, as public RPCs do.

Anvil answers any range, so a small JSON-RPC proxy in front of it refuses a log query wider than
`CAP` blocks with the error public nodes give ("query exceeds max block range"); everything else
is forwarded unchanged over real HTTP. The proxy is the one fake here: it stands in for a public
RPC's limit that anvil cannot be told to have."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tessera.chain.client import Chain
from tessera.chain.events import EventReader

CAP = 8


class _CappingProxy(BaseHTTPRequestHandler):
    upstream = ""
    widest = 0

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = json.loads(body)
        if isinstance(request, dict) and request.get("method") == "eth_getLogs":
            query = request["params"][0]
            width = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
            if width > CAP:
                return self._send({"jsonrpc": "2.0", "id": request["id"], "error": {
                    "code": -32005, "message": f"query exceeds max block range {CAP}"}})
            type(self).widest = max(type(self).widest, width)
        answer = requests.post(self.upstream, data=body,
                               headers={"Content-Type": "application/json"}, timeout=30)
        self._send(answer.json())

    def _send(self, payload):
        raw = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def capped_chain(chain):
    handler = type("Proxy", (_CappingProxy,), {"upstream": chain.network.rpc_url, "widest": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    network = chain.network.model_copy(update={"rpc_url": f"http://127.0.0.1:{server.server_port}"})
    try:
        yield Chain(network), handler
    finally:
        server.shutdown()


def test_log_queries_shrink_to_the_rpc_cap_and_read_the_same_events(chain, capped_chain):
    capped, proxy = capped_chain
    head = chain.block_number()
    direct = EventReader(chain).events(chain.network.deploy_block, head)
    assert head - chain.network.deploy_block > 4 * CAP       # the cap really bites
    reader = EventReader(capped, chunk=10_000)
    through_cap = reader.events(chain.network.deploy_block, head)
    assert through_cap == direct and len(direct) > 100
    assert reader.chunk <= CAP and 0 < proxy.widest <= CAP
