"""One DiLoCo worker, one round, over HTTP: send the round's parameters signed by the tenant,
wait for the worker's signed answer, download its pseudo-gradient and check everything that can
be checked without replaying (hash, signature, size, commitment, payload).

The answer is long-polled: each `GET .../rounds/{r}?wait=W` is held by the provider until the
answer exists or W seconds have passed (provider/long_poll.py), so a round costs one request per
LONG_POLL_S instead of one per POLL_S. A provider that answers 202 at once (one from before
`wait`) is asked every POLL_S for the rest of the round; one that has no slot for another
waiter (429) is asked every POLL_S until its Retry-After has passed.

A worker whose round cannot be used raises `WorkerFault`; the coordinator (tenant/coordinator.py)
drops it from the job."""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from tessera.compute.checkpoints import RoundCommitment
from tessera.errors import WorkerFault
from tessera.http_deadline import json_of, raw_chunks, read_at_most, within
from tessera.protocol import messages
from tessera.protocol.wire import MAX_ROUND_RESULT_BYTES, RoundResult
from tessera.tenant.client import Tenant

ROUND_SIGNATURE_VALIDITY_S = 600
MAX_DETAIL_BYTES = 64 << 10     # the most of a non-200 answer read (its error detail)
POLL_S = 0.02           # how often a provider that does not hold requests is asked for the answer
LONG_POLL_S = 10.0      # how long one request asks to be held (provider/long_poll.py: <= 30)
LONG_POLL_MARGIN_S = 5.0    # the read timeout of a held request beyond its wait
MIN_WAIT_S = 0.05       # a shorter wait (the deadline is that close) is not asked for

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

    pseudo_gradient: object   # what the round's intake kept of it (tenant/round_intake.py)
    size: int
    compute_s: float
    result: RoundResult
    commitment: RoundCommitment | None = None   # with verification on


# (worker, round, its answer) -> its checked commitment; raises WorkerFault("bad-commitment")
CommitmentCheck = Callable[[WorkerLease, int, RoundResult], RoundCommitment]


class WorkerChannel:
    """The tenant's HTTP side of a round with each worker."""

    def __init__(self, tenant: Tenant, http: httpx.Client, decode: Callable[[bytes], object],
                 max_payload: int, round_timeout_s: float,
                 check_commitment: CommitmentCheck | None = None):
        self.tenant, self.http, self.decode = tenant, http, decode
        self.max_payload, self.round_timeout_s = max_payload, round_timeout_s
        self.check_commitment = check_commitment
        self._expiry: dict[tuple[int, int], int] = {}   # (lease, round) -> last signed expiry

    def send(self, worker: WorkerLease, round_index: int, body: bytes, deadline: float) -> None:
        """PUT the round's parameters, signed; the whole exchange done by `deadline` (the
        `http` client is a tessera.http_deadline.DeadlineClient)."""
        chain = self.tenant.chain
        # a round sent again (other parameters) must be signed to expire later than before:
        # the provider keeps the later-expiring request (provider/diloco_rounds.py). This
        # process remembers its own; a resumed one may meet a request it signed in the same
        # second before it stopped, which the provider refuses as "signed later": once more,
        # a second later
        key = (worker.lease_id, round_index)
        expiry = max(int(time.time()) + ROUND_SIGNATURE_VALIDITY_S, self._expiry.get(key, 0) + 1)
        for attempt in range(2):
            self._expiry[key] = expiry
            nonce = secrets.randbits(63)
            typed = messages.round_typed_data(chain.network.chain_id, self.tenant.market.address,
                                              worker.lease_id, round_index,
                                              hashlib.sha256(body).digest(), nonce, expiry)
            headers = {"x-tessera-nonce": str(nonce), "x-tessera-expiry": str(expiry),
                       "x-tessera-signature": messages.sign(chain.account, typed),
                       "x-tessera-params-sha256": hashlib.sha256(body).hexdigest()}
            try:
                with within(deadline), self.http.stream(
                        "PUT", f"{worker.endpoint}/leases/{worker.lease_id}/rounds/{round_index}",
                        content=body, headers=headers) as response:
                    answer = read_at_most(response, MAX_DETAIL_BYTES)
            except httpx.HTTPError as exc:
                raise _unreachable_or_late(exc, deadline, "parameters not sent") from None
            except ValueError as exc:
                raise WorkerFault("refused", f"round {round_index}: {exc}") from None
            if response.status_code == 409 and b"signed later" in answer and not attempt:
                expiry += 1
                continue
            break
        if response.status_code != 200:
            raise WorkerFault("refused", f"provider refused round {round_index}: "
                                         f"{_detail_of(answer)}")

    def exchange(self, workers: list[WorkerLease], round_index: int, bodies: dict[int, bytes],
                 sent_ahead: set[int], ahead: dict[int, bytes], deadline: float
                 ) -> tuple[dict[int, Answer], dict[int, WorkerFault], set[int]]:
        """One round with every worker at once: send its parameters (unless they were sent
        ahead), the next round's with them (`ahead`, overlap), and collect its answer by
        `deadline`. Returns the answers and the faults by lease, and the leases the next
        round's parameters reached."""
        results: dict[int, Answer] = {}
        faults: dict[int, WorkerFault] = {}
        sent_next: set[int] = set()

        def one(worker: WorkerLease) -> None:
            lease = worker.lease_id
            try:
                if lease not in sent_ahead:
                    self.send(worker, round_index, bodies[lease], deadline)
                    worker.synced = True
                if lease in ahead:
                    self.send(worker, round_index + 1, ahead[lease], deadline)
                    sent_next.add(lease)
                results[lease] = self.collect(worker, round_index, bodies[lease], deadline)
            except WorkerFault as fault:
                faults[lease] = fault
            except Exception as exc:  # anything else is this worker's problem, not the job's
                faults[lease] = WorkerFault("worker-error", f"{type(exc).__name__}: {exc}")

        with ThreadPoolExecutor(max_workers=max(1, len(workers))) as pool:
            list(pool.map(one, workers))
        return results, faults, sent_next

    def send_many(self, workers: list[WorkerLease], round_index: int,
                  body: bytes) -> dict[int, str]:
        """`body` as round `round_index` to every worker at once; the leases it did not
        reach, with why."""
        failed: dict[int, str] = {}
        deadline = time.monotonic() + self.round_timeout_s

        def one(worker: WorkerLease) -> None:
            try:
                self.send(worker, round_index, body, deadline)
            except Exception as exc:
                failed[worker.lease_id] = f"{type(exc).__name__}: {exc}"

        if workers:
            with ThreadPoolExecutor(max_workers=len(workers)) as pool:
                list(pool.map(one, workers))
        return failed

    def collect(self, worker: WorkerLease, round_index: int, body: bytes,
                deadline: float) -> Answer:
        url = f"{worker.endpoint}/leases/{worker.lease_id}/rounds/{round_index}"
        early = EarlyPayload(self, f"{url}/pseudo-gradient", deadline)
        try:
            answer = self.answer(url, deadline)
        finally:
            early.done.set()    # its request now is its last
        try:
            result = RoundResult.model_validate_json(answer)
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
        payload = early.take(result.sha256)
        if payload is None:    # not fetched beside the answer, or other bytes: fetch it now
            payload = self.download(f"{url}/pseudo-gradient", deadline)
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

    def answer(self, url: str, deadline: float) -> bytes:
        """The body of the provider's 200 for the round's answer at `url` (at most
        MAX_ROUND_RESULT_BYTES), asked for until `deadline` (then WorkerFault "late"): long
        polls of at most LONG_POLL_S that never wait past the deadline, or polls every POLL_S
        while the provider does not hold requests. Every request, headers and body, ends by
        the deadline however slowly the provider sends (tessera.http_deadline)."""
        long_poll_from = 0.0        # monotonic time from which requests ask to be held
        while True:
            asked = time.monotonic()
            wait_s = min(LONG_POLL_S, deadline - asked) if asked >= long_poll_from else 0.0
            held = {}
            if wait_s >= MIN_WAIT_S:
                held = {"params": {"wait": f"{wait_s:.3f}"}, "timeout": self._held(wait_s)}
            else:
                wait_s = 0.0
            try:
                with within(deadline), self.http.stream("GET", url, **held) as response:
                    body = read_at_most(response, MAX_ROUND_RESULT_BYTES
                                        if response.status_code == 200 else MAX_DETAIL_BYTES)
            except httpx.HTTPError as exc:
                raise _unreachable_or_late(exc, deadline, "no answer") from None
            except ValueError as exc:
                raise WorkerFault("bad-answer", f"answer refused: {exc}") from None
            answered = time.monotonic()
            if response.status_code == 200:
                return body
            if response.status_code == 429 and wait_s:     # no slot to wait in: poll a while
                long_poll_from = answered + _retry_after(response)
            elif response.status_code != 202:
                raise WorkerFault("worker-error", f"worker answered {response.status_code}: "
                                                  f"{_detail_of(body)}")
            elif wait_s and answered - asked < wait_s / 2:  # not held: a provider from before
                long_poll_from = math.inf
            if answered > deadline:
                raise WorkerFault("late", f"no answer within {self.round_timeout_s:.0f} s")
            if not wait_s or answered < long_poll_from:
                time.sleep(POLL_S)

    def _held(self, wait_s: float) -> httpx.Timeout:
        """The client's timeouts, with a read timeout that outlasts a `wait_s` long poll."""
        base = self.http.timeout
        read = None if base.read is None else max(base.read, wait_s + LONG_POLL_MARGIN_S)
        return httpx.Timeout(base.connect, connect=base.connect, read=read, write=base.write,
                             pool=base.pool)

    def download(self, url: str, deadline: float) -> bytes:
        """The body at `url`, refusing more than the largest pseudo-gradient this job can have
        and, like the answer, anything not in by the round's `deadline`."""
        status, body = self.fetch(url, deadline)
        if body is None:
            raise WorkerFault("worker-error", f"pseudo-gradient download answered {status}")
        return body

    def fetch(self, url: str, deadline: float, wait_s: float = 0.0) -> tuple[int, bytes | None]:
        """(status, the body when 200) of a GET of `url`, held up to `wait_s` when it is not 0;
        WorkerFault for more bytes than the largest pseudo-gradient this job can have, for a
        body still arriving at `deadline` (a provider sending a byte just inside every read
        timeout held the whole round: checked as bytes arrive), or when the provider cannot be
        reached."""
        chunks, size = [], 0
        held = {"params": {"wait": f"{wait_s:.3f}"}, "timeout": self._held(wait_s)} if wait_s else {}
        try:
            with within(deadline), self.http.stream("GET", url, **held) as response:
                if response.status_code != 200:
                    return response.status_code, None
                for chunk in raw_chunks(response):
                    if time.monotonic() > deadline:
                        raise WorkerFault("late", f"pseudo-gradient not downloaded within "
                                                  f"{self.round_timeout_s:.0f} s")
                    size += len(chunk)
                    if size > self.max_payload:
                        raise WorkerFault("bad-payload", f"pseudo-gradient is larger than "
                                                         f"{self.max_payload} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise _unreachable_or_late(exc, deadline, "pseudo-gradient not downloaded") from None
        except ValueError as exc:    # an encoded body (raw_chunks)
            raise WorkerFault("bad-payload", f"pseudo-gradient refused: {exc}") from None
        return 200, b"".join(chunks)


class EarlyPayload:
    """A round's pseudo-gradient asked for beside its answer, in long polls of its own
    (`?wait=`), so that it arrives with the answer instead of one round trip after it
    (issue 16). Only a help: `take` gives None whenever it did not work (a provider from before
    `wait` answers 404 at once, no slot to wait in, a fault), and the caller then downloads the
    payload after the answer as before; bytes that are not the signed answer's are never used
    (a round re-run from other parameters while it waited)."""

    def __init__(self, channel: WorkerChannel, url: str, deadline: float):
        self.channel, self.url, self.deadline = channel, url, deadline
        self.done = threading.Event()       # set: no new request (the answer came, or failed)
        self._body: bytes | None = None
        self._thread = threading.Thread(target=self._run, name="early-payload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            asked = time.monotonic()
            wait_s = min(LONG_POLL_S, self.deadline - asked)
            if wait_s < MIN_WAIT_S:
                return
            try:
                status, body = self.channel.fetch(self.url, self.deadline, wait_s)
            except Exception:   # WorkerFault or worse: the download after the answer says
                return
            if body is not None:
                self._body = body
                return
            held = time.monotonic() - asked >= wait_s / 2
            if status != 404 or not held or self.done.is_set():
                return      # refused, or not held (a provider from before `wait`)

    def take(self, sha256: str) -> bytes | None:
        """The payload fetched beside the answer, if it hashes to `sha256` (waited for until
        the round's deadline at most)."""
        self._thread.join(timeout=max(0.0, self.deadline - time.monotonic()))
        body = self._body
        return body if body is not None and hashlib.sha256(body).hexdigest() == sha256 else None


def _unreachable_or_late(exc: httpx.HTTPError, deadline: float, what: str) -> WorkerFault:
    """A request that failed: "late" when the round's deadline cut it off, else "unreachable"."""
    if time.monotonic() >= deadline:
        return WorkerFault("late", f"{what} by the round's deadline ({type(exc).__name__})")
    return WorkerFault("unreachable", f"{type(exc).__name__}: {exc}")


def _retry_after(response: httpx.Response) -> float:
    """A 429's Retry-After in seconds, kept within POLL_S .. LONG_POLL_S."""
    try:
        seconds = float(response.headers.get("retry-after", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, POLL_S), LONG_POLL_S) if math.isfinite(seconds) else 1.0


def _detail_of(body: bytes) -> str:
    """An error answer's `detail` (FastAPI's), or its first 300 characters."""
    try:
        return str(json_of(body).get("detail"))[:300]
    except (ValueError, AttributeError):
        return body[:300].decode("utf-8", "replace")
