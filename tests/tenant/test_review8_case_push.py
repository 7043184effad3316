"""Review 8: one validator's odd answer to a challenge's case push throws out of the tenant's
coordinator.

Right after a challenge opens, the coordinator pushes its case to every active validator
(`tenant.verify.publish_case`, from `RoundVerifier.settle` -> `_challenge` -> `_publish_case`).
A validator is anyone with a validator's stake and an endpoint of its choosing. Its 200 answer
is read with `response.json().get(...)`, outside the `httpx.HTTPError` the push catches: a body
that is not JSON (ValueError), or JSON that is not an object (AttributeError), raises out of
`settle`. Since issue 16 `settle` runs AFTER the speculative outer step has been taken and
round r + 1's parameters sent, and before round r is committed: the tenant's process dies in
exactly the window that tests/e2e/test_review8_resume_window.py shows cannot be resumed
(every honest worker is then dropped as late). So a single staked validator that answers case
pushes with garbage ends every job that catches a cheater before its last round.
Fixed: the answer is recorded as what it is (`verify._status_of`), never raised.

The validator set is the one fake here: `validator_endpoints` (a chain read) is replaced by the
endpoint of a real HTTP server in this process, which answers as such a validator would.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tessera.tenant import verify


class _OddValidator(BaseHTTPRequestHandler):
    body = b"not json"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


class _Case:
    """Stands for a ChallengeCase: only its JSON is sent."""

    def model_dump_json(self) -> str:
        return '{"spec": {}, "manifest": {}}'


@pytest.fixture(params=[b"not json", b"[1, 2]"], ids=["not-json", "json-list"])
def odd_validator(request, monkeypatch):
    handler = type("Handler", (_OddValidator,), {"body": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(verify, "validator_endpoints", lambda chain: [url])
    yield url
    server.shutdown()
    server.server_close()


def test_a_validators_odd_answer_to_a_case_push_is_an_answer_not_a_crash(odd_validator):
    with httpx.Client(timeout=5) as http:
        answers = verify.publish_case(None, 1, _Case(), http)
    assert set(answers) == {odd_validator}
    assert answers[odd_validator] != "accepted"
