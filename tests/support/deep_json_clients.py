"""A child process for tests/test_hostile_provider.py: each client that parses a provider's (or a
model server's) JSON, against a real uvicorn server answering `[[[[...` 200,000 deep. Before
review 15 each of these died of SIGSEGV (Python's json recursing under the 100,000 recursion
limit web3's py_ecc sets); now each must print one `ok <mode>: <what it said>` line."""

from __future__ import annotations

import base64
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from eth_account import Account
from fastapi import FastAPI, Request
from fastapi.responses import Response
from tests.support.uvicorn_server import serve

import tessera.tenant.client  # noqa: F401  (web3, py_ecc: the recursion limit a client runs with)

DEEP = b"[" * 200_000


def app(body: bytes, status: int = 200, headers: dict | None = None) -> FastAPI:
    served = FastAPI()

    @served.api_route("/{path:path}", methods=["GET", "POST", "PUT"])
    async def anything(path: str, request: Request) -> Response:
        return Response(body, status_code=status, media_type="application/json",
                        headers=headers or {})
    return served


def outcome(call) -> str:
    try:
        return f"returned {str(call())[:120]}"
    except Exception as exc:   # what a caller sees: a clear error, not a dead process
        return f"raised {type(exc).__name__}: {str(exc)[:120]}"


def main() -> None:
    from tessera.agent.buyer import InferenceBuyer
    from tessera.http_deadline import HTTP_TOTAL_S, DeadlineClient
    from tessera.tenant.client import Tenant
    from tessera.tenant.worker_rounds import MAX_DETAIL_BYTES, WorkerChannel
    from tessera.validator.challenges import ChallengeVoter
    from tessera.validator.config import HardwareSection
    from tessera.validator.hardware import challenge_provider

    assert sys.getrecursionlimit() >= 100_000, "web3 no longer raises the limit: retire this test"
    with serve(app(DEEP)) as url:
        tenant = Tenant.__new__(Tenant)
        tenant.http = DeadlineClient(timeout=30, total_s=HTTP_TOTAL_S)
        tenant._endpoints = {1: url}
        print("ok tenant-status:", outcome(lambda: tenant.status(1)), flush=True)
        voter = ChallengeVoter.__new__(ChallengeVoter)
        voter.http = DeadlineClient(timeout=30, total_s=HTTP_TOTAL_S)
        print("ok validator-manifest:",
              outcome(lambda: voter._check_provider_manifest(url, 1, None)), flush=True)
        hardware = challenge_provider(DeadlineClient(), url, Account.create().address,
                                      Account.create(), 1000, HardwareSection(), 31337,
                                      "0x" + "11" * 20, random.Random(0))
        print("ok validator-hardware:", hardware.outcome, hardware.reason, flush=True)
        buyer = InferenceBuyer.__new__(InferenceBuyer)
        buyer.url, buyer._terms = url, None
        print("ok agent-describe:", outcome(buyer.describe), flush=True)
    with serve(app(b"[" * MAX_DETAIL_BYTES, status=400)) as url:
        channel = WorkerChannel.__new__(WorkerChannel)
        channel.http, channel.round_timeout_s = DeadlineClient(timeout=30), 30
        with ThreadPoolExecutor(1) as pool:   # where the coordinator reads it
            said = pool.submit(outcome, lambda: channel.answer(f"{url}/leases/1/rounds/0",
                                                               time.monotonic() + 20)).result()
        print("ok worker-round-detail:", said, flush=True)
    # the agent's paid request: x402's transport parses a 402's body and header itself
    from x402 import x402Client

    from tessera.agent.buyer import CountingSigner

    for mode, answer in (("agent-buy-402-body", app(DEEP, status=402)),
                         ("agent-buy-402-header", app(b"{}", status=402, headers={
                             "PAYMENT-REQUIRED": base64.b64encode(b"[" * 60_000).decode()}))):
        with serve(answer) as url:
            buyer = InferenceBuyer.__new__(InferenceBuyer)
            buyer.url, buyer.timeout, buyer._terms = url, 30, {"pay_to": "0x"}
            buyer.signer, buyer.client = CountingSigner(Account.create()), x402Client()
            print(f"ok {mode}:", outcome(lambda b=buyer: b.buy("hello", 8)), flush=True)


if __name__ == "__main__":
    main()
