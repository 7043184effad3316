"""The DiLoCo coordinator, run by the tenant: one model trained on several leased providers.

Why the tenant runs it: the coordinator holds the global model and decides what counts; putting
it on a provider would make that provider a trusted party. It needs no GPU (one outer step per
round) and moves little data (int8 pseudo-gradients every H steps).

Each round, for every worker lease: PUT the round's parameters (the full global state the first
time a worker is seen, afterwards the outer-step broadcast), signed by the tenant; poll for the
worker's signed answer until the round's deadline; download the pseudo-gradient, check its hash
and the provider's signature, decode and validate it. Whoever answered in time and passed the
checks is aggregated; the outer step is taken; the coordinator checkpoints. A worker that misses
the deadline or sends something refused is dropped from the job and its lease is closed, so it
stops costing money; the job goes on with the others.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from tessera.compute.diloco import Coordinator, DilocoConfig, encode_tensors
from tessera.compute.diloco_worker import GLOBAL_STATE_KIND
from tessera.compute.train import configure_determinism, held_out_loss, split
from tessera.protocol import messages
from tessera.protocol.wire import RoundResult
from tessera.tenant.client import Tenant

ROUND_SIGNATURE_VALIDITY_S = 600


@dataclass
class WorkerLease:
    lease_id: int
    provider: str
    endpoint: str
    synced: bool = False       # holds the coordinator's published state (gets deltas)
    active: bool = True
    reason: str = ""


@dataclass
class RoundReport:
    round: int
    workers: int
    contributors: int
    val_loss: float
    bytes_up: int
    bytes_down: int
    seconds: float
    dropped: list[str] = field(default_factory=list)


class DilocoCoordinator:
    def __init__(self, tenant: Tenant, config: DilocoConfig, data: bytes, workers: list[WorkerLease],
                 checkpoint: Path, round_timeout_s: float = 600,
                 on_round: Callable[[RoundReport], None] | None = None):
        self.tenant, self.config, self.workers = tenant, config, workers
        self.checkpoint, self.round_timeout_s = checkpoint, round_timeout_s
        self.on_round = on_round or (lambda report: None)
        self.device = configure_determinism(config.workload)
        self.coordinator = Coordinator(config, self.device)
        _, self.val_tokens = split(data, config.workload)
        self.http = httpx.Client(timeout=60)
        self.broadcast: bytes | None = None
        self.reports: list[RoundReport] = []
        if checkpoint.exists():  # a restarted coordinator resumes from its last finished round
            saved = torch.load(checkpoint, weights_only=False)
            self.coordinator.load_state_dict(saved["coordinator"])
            self.reports = [RoundReport(**r) for r in saved["reports"]]

    # -- one worker, one round -----------------------------------------------------------
    def _body_for(self, worker: WorkerLease) -> bytes:
        if worker.synced and self.broadcast is not None:
            return self.broadcast
        return encode_tensors(self.coordinator.global_state(), "none", self.config.chunk,
                              {"kind": GLOBAL_STATE_KIND, "round": self.coordinator.round})

    def _send(self, worker: WorkerLease, round_index: int, body: bytes) -> None:
        chain = self.tenant.chain
        nonce, expiry = secrets.randbits(63), int(time.time()) + ROUND_SIGNATURE_VALIDITY_S
        typed = messages.round_typed_data(chain.network.chain_id, self.tenant.market.market.address,
                                          worker.lease_id, round_index,
                                          hashlib.sha256(body).digest(), nonce, expiry)
        response = self.http.put(
            f"{worker.endpoint}/leases/{worker.lease_id}/rounds/{round_index}", content=body,
            headers={"x-tessera-nonce": str(nonce), "x-tessera-expiry": str(expiry),
                     "x-tessera-signature": messages.sign(chain.account, typed)})
        if response.status_code != 200:
            raise RuntimeError(f"round refused: {response.json().get('detail')}")

    def _collect(self, worker: WorkerLease, round_index: int, body: bytes,
                 deadline: float) -> tuple[dict, int]:
        url = f"{worker.endpoint}/leases/{worker.lease_id}/rounds/{round_index}"
        while True:
            response = self.http.get(url)
            if response.status_code == 200:
                break
            if response.status_code != 202:
                raise RuntimeError(f"worker answered {response.status_code}: {response.text[:200]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer within {self.round_timeout_s:.0f} s")
            time.sleep(0.05)
        result = RoundResult.model_validate(response.json())
        if result.params_sha256 != hashlib.sha256(body).hexdigest():
            raise RuntimeError("answer names other parameters than the ones sent")
        typed = messages.round_result_typed_data(
            self.tenant.chain.network.chain_id, self.tenant.market.market.address, worker.lease_id,
            round_index, bytes.fromhex(result.params_sha256), bytes.fromhex(result.sha256))
        if messages.recover(typed, result.signature).lower() != worker.provider.lower():
            raise RuntimeError("answer is not signed by the lease's provider")
        payload = self.http.get(f"{url}/pseudo-gradient").content
        if hashlib.sha256(payload).hexdigest() != result.sha256:
            raise RuntimeError("pseudo-gradient does not match its signed hash")
        return self.coordinator.decode(payload), len(payload)  # ValueError if malformed

    def _drop(self, worker: WorkerLease, reason: str) -> None:
        worker.active, worker.reason = False, reason
        try:
            self.tenant.close(worker.lease_id)
        except Exception as exc:  # already closed (e.g. by the provider): nothing left to refund
            worker.reason += f" (close: {exc})"

    # -- the job ---------------------------------------------------------------------------
    def run(self) -> list[RoundReport]:
        while self.coordinator.round < self.config.rounds:
            self.step()
        return self.reports

    def step(self) -> RoundReport:
        round_index = self.coordinator.round
        started = time.monotonic()
        active = [w for w in self.workers if w.active]
        if not active:
            raise RuntimeError("no worker left in the job")
        bodies = {w.lease_id: self._body_for(w) for w in active}
        deadline = time.monotonic() + self.round_timeout_s
        results: dict[int, tuple[dict, int]] = {}
        errors: dict[int, str] = {}

        def one(worker: WorkerLease) -> None:
            try:
                self._send(worker, round_index, bodies[worker.lease_id])
                worker.synced = True
                results[worker.lease_id] = self._collect(worker, round_index,
                                                         bodies[worker.lease_id], deadline)
            except Exception as exc:
                errors[worker.lease_id] = f"{type(exc).__name__}: {exc}"

        with ThreadPoolExecutor(max_workers=len(active)) as pool:
            list(pool.map(one, active))
        dropped = []
        for worker in active:
            if worker.lease_id in errors:
                self._drop(worker, errors[worker.lease_id])
                dropped.append(f"lease {worker.lease_id}: {worker.reason}")
        pseudo_grads = [results[w.lease_id][0] for w in active if w.lease_id in results]
        if not pseudo_grads:
            raise RuntimeError(f"round {round_index}: no worker answered: {errors}")
        update = self.coordinator.apply(pseudo_grads)
        self.broadcast = update.broadcast
        val = held_out_loss(self.coordinator.eval_model(), self.val_tokens, self.config.workload,
                            self.device)
        report = RoundReport(round_index, len(active), len(pseudo_grads), val,
                             sum(size for _, size in results.values()),
                             sum(len(b) for b in bodies.values()), time.monotonic() - started,
                             dropped)
        self.reports.append(report)
        self._save()
        self.on_round(report)
        return report

    def _save(self) -> None:
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        torch.save({"coordinator": self.coordinator.state_dict(),
                    "reports": [r.__dict__ for r in self.reports]}, tmp)
        tmp.replace(self.checkpoint)

    def save_model(self, path: Path) -> None:
        torch.save({"model": self.coordinator.eval_model().state_dict(),
                    "workload": self.config.workload.model_dump()}, path)
