"""Workers that lie: each fault is refused, logged, shown in the round's report, its lease is
closed, and the round goes on with the honest worker.

A real provider cannot be made to lie, so the dishonest workers are a FAKE: a small HTTP server
in this process that speaks the provider's round API (PUT/GET /leases/{id}/rounds/{r} and
.../pseudo-gradient) and answers every round with one fault. Everything around it is real: the
fake's provider account is registered and staked on the devnet, each of its leases comes from a
real order and a real accepted bid, the coordinator signs real requests over real HTTP, closes
real leases; the honest worker is a real provider process (the session's `provider` fixture).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from eth_account import Account

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import DEPLOYER
from tessera.chain.registry import ProviderRegistry
from tessera.compute.compress import serialize
from tessera.compute.diloco import (
    Coordinator,
    DilocoConfig,
    encode_tensors,
    layout_id,
    new_model,
    parameter_state,
    zero_pseudo_gradient,
)
from tessera.logs import EventLog
from tessera.protocol import messages
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.money import STAKE_DECIMALS
from tessera.protocol.wire import BidMessage
from tessera.tenant.client import Tenant
from tessera.tenant.coordinator import DilocoCoordinator, WorkerLease
from tessera.tenant.flow import load_dataset
from tessera.tenant.multinode import diloco_config, wait_started, worker_workload

pytestmark = pytest.mark.e2e

TENANT = 6
JOB = {
    "name": "diloco-faults", "mode": "diloco",
    "order": {"max_price_per_gpu_hour": "3.00", "duration": "10m", "bid_window": "2s"},
    "dataset": {"source": "builtin:stdlib", "max_bytes": 65536},
    "workload": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
                 "eval_batches": 2},
    "diloco": {"inner_steps": 10, "rounds": 2, "compression": "int8", "round_timeout": "60s"},
}
# fault -> (the coordinator's fault kind, words its reason must contain)
FAULTS = {
    "wrong-shape": ("bad-payload", "expected float32 of shape"),
    "wrong-dtype": ("bad-payload", "expected int8, got torch.float32"),
    "nan": ("bad-payload", "must be finite"),
    "inf": ("bad-payload", "must be finite"),
    "hash-mismatch": ("hash-mismatch", "does not match its signed hash"),
    "foreign-signer": ("bad-signature", "not by the lease's provider"),
}
WORKERS = 1 + len(FAULTS)


def faulty_payload(fault: str, config: DilocoConfig, round_index: int, worker: int) -> bytes:
    """A pseudo-gradient that is well formed except for `fault` (the rest is caught by the
    hash and signature checks, so those faults send an honest-looking zero update)."""
    reference = parameter_state(new_model(config.workload))
    meta = {"kind": "pseudo_gradient", "round": round_index, "worker": worker,
            "compression": "int8", "chunk": config.chunk, "layout": layout_id(reference)}
    n = sum(t.numel() for t in reference.values())
    scales = math.ceil(n / config.chunk)
    if fault == "wrong-shape":
        return serialize({"flat": torch.ones(n + 7, dtype=torch.int8),
                          "flat::scale": torch.full((math.ceil((n + 7) / config.chunk),), 1e-3)},
                         meta)
    if fault == "wrong-dtype":
        return serialize({"flat": torch.zeros(n)}, meta)
    if fault in ("nan", "inf"):
        return serialize({"flat": torch.ones(n, dtype=torch.int8),
                          "flat::scale": torch.full((scales,), float(fault))}, meta)
    return encode_tensors(zero_pseudo_gradient(reference), "int8", config.chunk,
                          {"kind": "pseudo_gradient", "round": round_index, "worker": worker})


class DishonestWorkers(ThreadingHTTPServer):
    """The fake provider's round API: lease id -> (fault, worker index)."""

    def __init__(self, account, chain_id: int, market: str, config: DilocoConfig):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.account, self.chain_id, self.market, self.config = account, chain_id, market, config
        self.leases: dict[int, tuple[str, int]] = {}
        self.params: dict[tuple[int, int], str] = {}   # (lease, round) -> params sha256 received
        self.stranger = Account.create()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, lease_id: int, round_index: int) -> tuple[dict, bytes]:
        fault, worker = self.leases[lease_id]
        payload = faulty_payload(fault, self.config, round_index, worker)
        signed_sha = hashlib.sha256(payload).hexdigest()
        if fault == "hash-mismatch":
            payload = payload[:-1] + bytes([payload[-1] ^ 1])
        params = self.params[(lease_id, round_index)]
        typed = messages.round_result_typed_data(self.chain_id, self.market, lease_id, round_index,
                                                 bytes.fromhex(params), bytes.fromhex(signed_sha))
        signer = self.stranger if fault == "foreign-signer" else self.account
        return ({"lease_id": lease_id, "round": round_index, "params_sha256": params,
                 "sha256": signed_sha, "size": len(payload), "inner_loss": 1.0, "compute_s": 0.1,
                 "signature": messages.sign(signer, typed)}, payload)


class _Handler(BaseHTTPRequestHandler):
    server: DishonestWorkers
    ROUND = re.compile(r"^/leases/(\d+)/rounds/(\d+)(/pseudo-gradient)?$")

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _match(self):
        m = self.ROUND.match(self.path.partition("?")[0])   # routed on the path, as a real server
        if not m or int(m.group(1)) not in self.server.leases:
            self._reply(404, b'{"detail": "unknown"}')
            return None
        return int(m.group(1)), int(m.group(2)), bool(m.group(3))

    def do_PUT(self) -> None:
        if (m := self._match()) is None:
            return
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.params[(m[0], m[1])] = hashlib.sha256(body).hexdigest()
        self._reply(200, json.dumps({"lease_id": m[0], "round": m[1]}).encode())

    def do_GET(self) -> None:
        if (m := self._match()) is None:
            return
        result, payload = self.server.answer(m[0], m[1])
        if m[2]:
            self._reply(200, payload, "application/octet-stream")
        else:
            self._reply(200, json.dumps(result).encode())


def register_fake_provider(network, endpoint_port_holder: DishonestWorkers):
    """A fresh account, funded and staked by the devnet's deployer, registered as a provider."""
    account = Account.create()
    deployer = Chain(network, devnet_account(DEPLOYER))
    deployer.rpc(lambda: deployer.w3.provider.make_request(
        "anvil_setBalance", [account.address, hex(10**20)]), what="fund the fake provider")
    stake = 100 * 10**STAKE_DECIMALS
    deployer.send(deployer.stake_token.functions.transfer(account.address, stake))
    ProviderRegistry(Chain(network, account)).register(
        stake, "fake-cpu", 1, 0, 1000, endpoint_port_holder.url, 1)
    return account


def lease_from(tenant: Tenant, spec: JobSpec, account) -> tuple[int, int]:
    """A real lease with the fake provider: a one-node order and a bid signed by its key."""
    o = spec.order
    order_id, _ = tenant.market.create_order(spec.spec_hash(), "", 1, 0, o.max_price_per_gpu_hour,
                                             o.duration, 1, o.escrow // o.nodes)
    nonce, expiry = secrets.randbits(64), int(time.time()) + 600
    price = o.max_price_per_gpu_hour
    typed = messages.bid_typed_data(tenant.chain.network.chain_id, tenant.market.address,
                                    order_id, account.address, price, nonce, expiry)
    lease_id, _ = tenant.market.accept_bid(BidMessage(
        order_id=order_id, provider=account.address, price_per_gpu_hour=price, nonce=nonce,
        expiry=expiry, signature=messages.sign(account, typed)))
    return order_id, lease_id


@pytest.fixture(scope="module")
def faulty_job(network, provider, tmp_path_factory):
    """One DiLoCo job: the real provider's honest worker and one fake worker per fault."""
    spec = JobSpec.model_validate({**JOB, "order": {**JOB["order"], "nodes": 1}})
    config = diloco_config(spec, WORKERS)
    dataset = load_dataset(spec.dataset)
    tenant = Tenant(Chain(network, devnet_account(TENANT)))
    fake = DishonestWorkers(None, network.chain_id, tenant.market.address, config)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        fake.account = register_fake_provider(network, fake)
        order_id, _ = tenant.post_order(spec)
        honest = next(v for v in tenant.collect_bids(order_id, spec.order.bid_window)
                      if v.bid.provider == provider.address)
        lease_id, _ = tenant.accept(honest)
        tenant.send_manifest(lease_id, worker_workload(spec, 0, WORKERS), dataset)
        assert wait_started(tenant, [lease_id])[lease_id].status == "running"
        workers = [WorkerLease(lease_id, provider.address, provider.url, index=0,
                               order_id=order_id)]
        for index, fault in enumerate(FAULTS, start=1):
            fault_order, fault_lease = lease_from(tenant, spec, fake.account)
            fake.leases[fault_lease] = (fault, index)
            workers.append(WorkerLease(fault_lease, fake.account.address, fake.url, index=index,
                                       order_id=fault_order))
        log = io.StringIO()
        published = []
        coordinator = DilocoCoordinator.start(
            tenant, config, dataset, workers, tmp_path_factory.mktemp("faults"),
            round_timeout_s=60, log=EventLog("coordinator", stream=log),
            on_round=lambda report: published.append(coordinator.coordinator.global_state()))
        reports = coordinator.run()
        honest_round0 = tenant.http.get(
            f"{provider.url}/leases/{lease_id}/rounds/0/pseudo-gradient").content
        tenant.close(lease_id)
        yield {"tenant": tenant, "config": config, "workers": workers, "reports": reports,
               "log": [json.loads(line) for line in log.getvalue().splitlines()],
               "published": published, "honest_round0": honest_round0}
    finally:
        fake.shutdown()
        fake.server_close()


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_refused_logged_reported_and_its_lease_closed(faulty_job, fault):
    kind, words = FAULTS[fault]
    worker = faulty_job["workers"][1 + list(FAULTS).index(fault)]
    assert not worker.active and worker.fault == kind
    assert words in worker.reason
    [line] = [e for e in faulty_job["log"] if e.get("lease_id") == worker.lease_id]
    assert line["event"] == "result-refused" and line["level"] == "warning"
    assert line["kind"] == kind and line["round"] == 0 and words in line["reason"]
    assert line["provider"] == worker.provider and line["lease_closed"] is True
    first = faulty_job["reports"][0]
    assert any(d.startswith(f"lease {worker.lease_id} ({kind}):") for d in first.dropped)
    assert not faulty_job["tenant"].market.lease(worker.lease_id).is_open


def test_the_rounds_go_on_with_the_honest_worker_alone(faulty_job):
    r0, r1 = faulty_job["reports"]
    assert (r0.workers, r0.contributors, len(r0.dropped)) == (WORKERS, 1, len(FAULTS))
    assert (r1.workers, r1.contributors, r1.dropped) == (1, 1, [])
    assert math.isfinite(r0.val_loss) and r1.val_loss < r0.val_loss
    # the refused answers changed nothing: round 0's outer step is the honest one's alone
    alone = Coordinator(faulty_job["config"])
    alone.apply([alone.decode(faulty_job["honest_round0"])])
    after_round0 = faulty_job["published"][0]
    assert all(torch.equal(alone.published[k], after_round0[k]) for k in after_round0)
