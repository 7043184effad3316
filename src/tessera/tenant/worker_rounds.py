"""One DiLoCo worker, one round, over HTTP: send the round's parameters signed by the tenant,
poll for the worker's signed answer, download its pseudo-gradient and check everything that can
be checked without replaying (hash, signature, size, commitment, payload).

A worker whose round cannot be used raises `WorkerFault`; the coordinator (tenant/coordinator.py)
drops it from the job."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from tessera.compute.checkpoints import RoundCommitment
from tessera.errors import WorkerFault
from tessera.protocol import messages
from tessera.protocol.wire import RoundResult
from tessera.tenant.client import Tenant

ROUND_SIGNATURE_VALIDITY_S = 600
POLL_S = 0.02                   # how often a worker is asked for its answer

# Faults found in an answer that arrived: the worker or its provider is broken or lying.
RESULT_FAULTS = frozenset({"bad-answer", "bad-signature", "hash-mismatch", "bad-payload",
                           "bad-commitment", "spot-check"})


@dataclass
class WorkerLease:
    lease_id: int
    provider: str
    endpoint: str
    index: int = 0              # the data shard it trains (its manifest's worker index)
    order_id: int = 0
    synced: bool = False        # holds the coordinator's published state (gets deltas)
    active: bool = True
    fault: str = ""             # WorkerFault.kind once dropped
    reason: str = ""
    replaced: bool = False      # a replacement was leased for it, or tried and failed


@dataclass
class Answer:
    """A worker's round that passed every check."""

    pseudo_gradient: dict
    size: int
    compute_s: float
    result: RoundResult
    commitment: RoundCommitment | None = None   # with verification on


# (worker, round, its answer) -> its checked commitment; raises WorkerFault("bad-commitment")
CommitmentCheck = Callable[[WorkerLease, int, RoundResult], RoundCommitment]


class WorkerChannel:
    """The tenant's HTTP side of a round with each worker."""

    def __init__(self, tenant: Tenant, http: httpx.Client, decode: Callable[[bytes], dict],
                 max_payload: int, round_timeout_s: float,
                 check_commitment: CommitmentCheck | None = None):
        self.tenant, self.http, self.decode = tenant, http, decode
        self.max_payload, self.round_timeout_s = max_payload, round_timeout_s
        self.check_commitment = check_commitment

    def send(self, worker: WorkerLease, round_index: int, body: bytes) -> None:
        chain = self.tenant.chain
        nonce, expiry = secrets.randbits(63), int(time.time()) + ROUND_SIGNATURE_VALIDITY_S
        typed = messages.round_typed_data(chain.network.chain_id, self.tenant.market.address,
                                          worker.lease_id, round_index,
                                          hashlib.sha256(body).digest(), nonce, expiry)
        try:
            response = self.http.put(
                f"{worker.endpoint}/leases/{worker.lease_id}/rounds/{round_index}", content=body,
                headers={"x-tessera-nonce": str(nonce), "x-tessera-expiry": str(expiry),
                         "x-tessera-signature": messages.sign(chain.account, typed),
                         "x-tessera-params-sha256": hashlib.sha256(body).hexdigest()})
        except httpx.HTTPError as exc:
            raise WorkerFault("unreachable", f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise WorkerFault("refused", f"provider refused round {round_index}: "
                                         f"{_detail(response)}")

    def collect(self, worker: WorkerLease, round_index: int, body: bytes,
                deadline: float) -> Answer:
        url = f"{worker.endpoint}/leases/{worker.lease_id}/rounds/{round_index}"
        while True:
            try:
                response = self.http.get(url)
            except httpx.HTTPError as exc:
                raise WorkerFault("unreachable", f"{type(exc).__name__}: {exc}") from None
            if response.status_code == 200:
                break
            if response.status_code != 202:
                raise WorkerFault("worker-error", f"worker answered {response.status_code}: "
                                                  f"{_detail(response)}")
            if time.monotonic() > deadline:
                raise WorkerFault("late", f"no answer within {self.round_timeout_s:.0f} s")
            time.sleep(POLL_S)
        try:
            result = RoundResult.model_validate(response.json())
        except ValueError as exc:
            raise WorkerFault("bad-answer", f"answer is not a RoundResult: {str(exc)[:300]}") from None
        if result.params_sha256 != hashlib.sha256(body).hexdigest():
            raise WorkerFault("bad-answer", "answer names other parameters than the ones sent")
        typed = messages.round_result_typed_data(
            self.tenant.chain.network.chain_id, self.tenant.market.address, worker.lease_id,
            round_index, bytes.fromhex(result.params_sha256), bytes.fromhex(result.sha256))
        try:
            signer = messages.recover(typed, result.signature)
        except Exception:
            signer = None
        if signer is None or signer.lower() != worker.provider.lower():
            raise WorkerFault("bad-signature", f"answer is signed by {signer}, not by the lease's "
                                               f"provider {worker.provider}")
        payload = self.download(f"{url}/pseudo-gradient")
        if hashlib.sha256(payload).hexdigest() != result.sha256:
            raise WorkerFault("hash-mismatch", "pseudo-gradient does not match its signed hash "
                                               f"{result.sha256}")
        commitment = (self.check_commitment(worker, round_index, result)
                      if self.check_commitment else None)
        try:
            pg = self.decode(payload)
        except ValueError as exc:
            raise WorkerFault("bad-payload", f"pseudo-gradient refused: {exc}") from None
        return Answer(pg, len(payload), result.compute_s, result, commitment)

    def download(self, url: str) -> bytes:
        """The body at `url`, refusing more than the largest pseudo-gradient this job can have."""
        chunks, size = [], 0
        try:
            with self.http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise WorkerFault("worker-error", f"pseudo-gradient download answered "
                                                      f"{response.status_code}")
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_payload:
                        raise WorkerFault("bad-payload", f"pseudo-gradient is larger than "
                                                         f"{self.max_payload} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise WorkerFault("unreachable", f"{type(exc).__name__}: {exc}") from None
        return b"".join(chunks)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))[:300]
    except (ValueError, AttributeError):
        return response.text[:300]
