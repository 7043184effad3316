"""A dishonest provider (or model server) against the parties that read from it (review 15): it
controls every byte of its answers and the endpoint it registered. Each test runs the real client
against a real local HTTP server serving what such a provider would; the honest provider's code
cannot be made to serve it.

- JSON nested 200,000 deep killed the tenant, the validators and the agent with SIGSEGV (web3's
  py_ecc raises the recursion limit to 100,000 and Python's json recursed until the C stack
  overflowed): every client now parses untrusted JSON with pydantic-core (`json_of`), bounded.
- An endpoint ending in `?x=` made the tenant's appended path a query, so the tenant signed a
  read grant for the lease the endpoint named (another worker's): such endpoints are refused
  (`matching.endpoint_problem`, in bid judging and `Tenant.endpoint`), and the grant signer
  refuses any query but `wait`.
- The hardware challenge and the agent's server description used per-operation timeouts only:
  a byte dripped every 0.4 s held them for as long as the server liked, and a gzip bomb inflated
  to a gigabyte: both now run under a whole-exchange deadline, unencoded and capped.
- A NaN held-out loss passed the recompute check (compared with `>`), and odd answer shapes gave
  tracebacks: refused in words now.
"""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from eth_account import Account
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from tests.support.tcp_server import ScriptedTcpServer
from tests.support.uvicorn_server import serve

from tessera.agent.buyer import InferenceBuyer
from tessera.chain.read_grant import ReadGrantAuth
from tessera.errors import PaymentError, TenantError
from tessera.http_deadline import DeadlineClient
from tessera.protocol import read_grant
from tessera.protocol.matching import OrderRequirements, ProviderOffer, endpoint_problem, judge_bid
from tessera.protocol.wire import BidMessage
from tessera.protocol.workload import TrainingWorkload
from tessera.tenant.artifacts import check_listing, read_metrics, size_limit
from tessera.tenant.client import Tenant
from tessera.validator.config import HardwareSection
from tessera.validator.hardware import challenge_provider

ROOT = Path(__file__).resolve().parents[1]


def test_deeply_nested_json_is_refused_by_every_client_not_fatal():
    run = subprocess.run([sys.executable, "-m", "tests.support.deep_json_clients"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.returncode, run.stdout[-2000:], run.stderr[-2000:])
    said = {line.split(":", 1)[0].removeprefix("ok "): line for line in run.stdout.splitlines()
            if line.startswith("ok ")}
    assert set(said) == {"tenant-status", "validator-manifest", "validator-hardware",
                         "agent-describe", "worker-round-detail", "agent-buy-402-body",
                         "agent-buy-402-header"}
    assert "PaymentError" in said["agent-buy-402-body"] and "not bounded JSON" in \
        said["agent-buy-402-header"]
    assert "not JSON" in said["tenant-status"] and "no-answer" in said["validator-hardware"]
    assert "not a Tessera model server" in said["agent-describe"]
    assert "WorkerFault" in said["worker-round-detail"]


@pytest.mark.parametrize("endpoint, ok", [
    ("http://provider.example:8000", True), ("https://10.0.0.7/tessera/v1", True),
    ("http://[::1]:9000", True), ("http://a.b/leases/7/rounds/0/pseudo-gradient?x=", False),
    ("http://tessera_provider_1:7001", True), ("http://h:7001\n", False),
    ("http://[:::::]:1", False), ("http://h:0", False), ("http://h:65536", False),
    ("http://a..b", False),
    ("http://a.b/#", False), ("http://user@a.b", False), ("http://a.b/%3F", False),
    ("http://a.b\\@c", False), ("ftp://a.b", False), ("http://a.b/ x", False), ("", False),
    ("http://" + "a" * 600, False)])
def test_an_endpoint_clients_append_paths_to_is_plain(endpoint, ok):
    assert (endpoint_problem(endpoint) is None) == ok


def test_a_bid_from_a_provider_with_such_an_endpoint_is_not_valid():
    order = OrderRequirements(1, "", 1, 0, 10)
    bid = BidMessage(order_id=1, provider="0x" + "11" * 20, price_per_gpu_hour=5, nonce=1,
                     expiry=2**40, signature="0x" + "00" * 65)
    offer = ProviderOffer("0x" + "11" * 20, True, "", 1, 1024, 100,
                          "http://a.b/leases/7/rounds/0/pseudo-gradient?x=", 1)
    verdict = judge_bid(order, bid, offer, "0x" + "11" * 20, 0)
    assert not verdict.valid and any("plain http(s)" in p for p in verdict.problems)


def test_no_grant_is_signed_for_a_path_that_became_a_query():
    tenant = Account.create()
    chain = SimpleNamespace(account=tenant, network=SimpleNamespace(chain_id=31337),
                            market=SimpleNamespace(address="0x" + "22" * 20))
    seen = []
    app = FastAPI()

    @app.get("/{path:path}")
    async def anything(path: str, request: Request) -> Response:
        seen.append(dict(request.headers))
        return Response(b"payload")

    with serve(app) as url, DeadlineClient(timeout=5, auth=ReadGrantAuth(chain)) as http:
        http.get(f"{url}/leases/7/rounds/0/pseudo-gradient?x=/leases/5/rounds/3/pseudo-gradient")
        http.get(f"{url}/leases/5/rounds/3/pseudo-gradient?wait=1")   # ours: signed, lease 5
    assert read_grant.HEADER_SIGNATURE.lower() not in seen[0]
    assert seen[1][read_grant.HEADER_READER.lower()] == tenant.address


class Dripper(ScriptedTcpServer):
    def answer(self, conn):
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n")
            self.drip(conn, b" " * 100_000, 0.4)   # a byte every 0.4 s, inside every timeout
        except OSError:
            pass
        finally:
            conn.close()


def _timed(call) -> tuple[float, object]:
    box: dict = {}

    def run():
        started = time.monotonic()
        try:
            box["out"] = call()
        except Exception as exc:
            box["out"] = exc
        box["s"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "still held after 20 s"
    return box["s"], box["out"]


def test_a_dripping_provider_holds_a_hardware_challenge_no_longer_than_its_deadline():
    server = Dripper()
    cfg = HardwareSection(target_s=0.1, slack=1.0, allowance_s=0.5)
    try:
        seconds, out = _timed(lambda: challenge_provider(
            DeadlineClient(), server.url, Account.create().address, Account.create(), 1000, cfg,
            31337, "0x" + "11" * 20, random.Random(0)))
    finally:
        server.close()
    assert out.outcome == "late" and seconds < out.plan.deadline_s + 3


def test_a_dripping_model_server_holds_the_agent_no_longer_than_its_timeout():
    server = Dripper()
    buyer = InferenceBuyer.__new__(InferenceBuyer)
    buyer.url, buyer._terms = server.url, None
    try:
        seconds, out = _timed(lambda: buyer.describe(timeout=1))
    finally:
        server.close()
    assert isinstance(out, PaymentError) and "unreachable" in str(out) and seconds < 4


@pytest.fixture(scope="module")
def bomb():
    """A server answering with 400 MB of zeros gzip-compressed (~400 kB), encoding declared."""
    body = gzip.compress(b"0" * (400 << 20), compresslevel=9)
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def anything(path: str) -> Response:
        return Response(body, media_type="application/json", headers={"Content-Encoding": "gzip"})

    with serve(app) as url:
        yield url


def test_a_compressed_answer_is_refused_not_inflated(bomb):
    out = challenge_provider(DeadlineClient(), bomb, Account.create().address, Account.create(),
                             1000, HardwareSection(), 31337, "0x" + "11" * 20, random.Random(0))
    assert out.outcome == "no-answer" and "encoded" in out.reason
    buyer = InferenceBuyer.__new__(InferenceBuyer)
    buyer.url, buyer._terms = bomb, None
    with pytest.raises(PaymentError, match="unreachable"):
        buyer.describe(timeout=5)


@pytest.mark.parametrize("loss", ["NaN", '"nan"', "1e999", "[2.0]", "true"])
def test_a_held_out_loss_that_is_not_a_finite_number_is_refused(tmp_path, loss):
    (tmp_path / "metrics.json").write_text('{"final_val_loss": ' + loss + "}")
    (tmp_path / "loss_history.json").write_text("[]")
    with pytest.raises(TenantError, match="not a finite number|does not read"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text('{"final_val_loss": 2.5}')
    assert read_metrics(tmp_path)[2] == 2.5


def test_an_artifact_larger_than_the_job_can_make_is_refused_before_any_byte():
    from tessera.compute.train import ARTIFACT_NAMES, result_hash_of

    w = TrainingWorkload()
    assert 16 * 120_576 < size_limit(w, "model.pt") < 64 << 20   # a few MB, not 2**40
    assert size_limit(w, "metrics.json") < 2 << 20               # JSON: by the steps only
    for name, size in (("metrics.json", 2**40), ("loss_history.json", 16 << 20),
                       ("checkpoint.pt", 2**33)):
        artifacts = {n: {"sha256": "ab" * 32, "size": 10} for n in ARTIFACT_NAMES}
        artifacts[name]["size"] = size
        committed = result_hash_of(artifacts)
        with pytest.raises(TenantError, match="more than this job's model can make"):
            check_listing({"result_hash": committed, "artifacts": artifacts}, committed,
                          ARTIFACT_NAMES, lambda n: size_limit(w, n))


def app_answering(answer) -> FastAPI:
    app = FastAPI()

    @app.api_route("/{p:path}", methods=["GET", "POST", "PUT"])
    def anything(p: str):
        return JSONResponse(answer)
    return app


def tenant_at(url: str) -> Tenant:
    """A tenant client speaking to `url` for lease 1 (no chain: the calls below need none)."""
    account = Account.create()
    tenant = Tenant.__new__(Tenant)
    tenant.http = DeadlineClient(timeout=10, total_s=30)
    tenant._endpoints = {1: url}
    tenant.emit = lambda *_: None
    tenant.chain = SimpleNamespace(account=account, address=account.address,
                                   network=SimpleNamespace(chain_id=31337))
    tenant.market = SimpleNamespace(address="0x" + "22" * 20, lease=lambda _i: SimpleNamespace(
        tenant=account.address, is_open=True, provider="0x" + "33" * 20))
    return tenant


def test_a_manifest_answer_whose_needs_is_not_a_list_is_a_clear_refusal():
    with serve(app_answering({"needs": 5})) as url:
        with pytest.raises(TenantError, match="not a list of dataset hashes"):
            tenant_at(url).send_manifest(1, TrainingWorkload(), b"x" * 100)


@pytest.mark.parametrize("answer", [[], "ok", 5, [1, "start"]])
def test_an_answer_of_another_shape_is_a_clear_refusal(answer):
    with serve(app_answering(answer)) as url:
        tenant = tenant_at(url)
        with pytest.raises(TenantError, match="not a JSON object"):
            tenant.send_manifest(1, TrainingWorkload(), b"x" * 100)
        if answer == []:
            assert tenant.logs(1) == []           # no progress yet: a list of no objects
        else:
            with pytest.raises(TenantError, match="not a JSON list of objects"):
                tenant.logs(1)


def test_the_ordered_workload_comes_from_a_manifest_this_tenant_signed():
    """`tessera job results` on a machine without the job's record: the workload that bounds
    the artifacts and recomputes the loss is read from the manifest the provider keeps, and only
    one this tenant signed for this lease counts (review 16)."""
    from tessera.protocol import messages
    from tessera.protocol.wire import Manifest, SignedManifest
    from tessera.tenant.client import ordered_workload

    def signed_by(account, lease_id: int, workload: TrainingWorkload) -> dict:
        m = Manifest(lease_id=lease_id, workload=workload, dataset_sha256="ab" * 32,
                     dataset_size=10)
        typed = messages.manifest_typed_data(31337, "0x" + "22" * 20, lease_id, m.digest(), 1,
                                             2**40)
        return SignedManifest(manifest=m, nonce=1, expiry=2**40,
                              signature=messages.sign(account, typed)).model_dump(mode="json")

    big = TrainingWorkload(n_layer=4, n_embd=256, n_head=4)
    with serve(app_answering(None)) as url:
        tenant = tenant_at(url)
    ours, stranger = tenant.chain.account, Account.create()
    for manifest, ok in ((signed_by(ours, 1, big), True), (signed_by(stranger, 1, big), False),
                         (signed_by(ours, 2, big), False)):
        with serve(app_answering(manifest)) as url:
            tenant._endpoints = {1: url}
            if ok:
                assert ordered_workload(tenant, 1, url) == big
            else:
                with pytest.raises(TenantError, match="not a training manifest this account"):
                    ordered_workload(tenant, 1, url)
