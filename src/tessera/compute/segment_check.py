"""Check one committed segment of a worker's round from the states its provider serves
(`GET /leases/{id}/rounds/{r}/checkpoints/{i}`), on this machine: what the tenant's checks and a
validator's challenge vote both do (docs/verification.md). A training segment is replayed; the
payload segment (the last) is recomputed from the last state and the residual.

A check is only judged where this machine runs the numerics profile the worker signed
(`compute.numerics`); elsewhere it answers `ok = None` (cannot judge here), never "failed":
an honest worker on other hardware is never failed by a replayer that differs from it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import httpx
import torch

from tessera.compute import numerics
from tessera.compute.checkpoints import RoundCommitment, decode_residual, decode_state
from tessera.compute.diloco import DilocoConfig, State
from tessera.compute.replay import (
    PayloadOpening,
    SegmentOpening,
    parameter_names,
    verify_payload,
    verify_segment,
)
from tessera.http_deadline import (
    MIN_TRANSFER_BYTES_PER_S,
    TRANSFER_GRACE_S,
    raw_chunks,
    transfer_time_s,
    within,
)

DOWNLOAD_ATTEMPTS = 4
DOWNLOAD_BACKOFF_S = (0.5, 1.0, 2.0)   # between attempts: a slow or briefly unreachable honest
                                      # provider is not failed for one dropped connection
STATE_SLACK_BYTES = 1 << 20   # the wire format's header (names, shapes) on top of 3 copies of θ
# The slowest a provider may serve what it committed to, and the grace for set-up: the bounds
# of any transfer with a node (tessera/http_deadline.py). Without an overall bound a provider
# sending a byte just inside every read timeout held the round's checks (and so the job, every
# honest worker idle) for as long as it liked; now the file fails to open.
MIN_SERVE_BYTES_PER_S = MIN_TRANSFER_BYTES_PER_S
DOWNLOAD_GRACE_S = TRANSFER_GRACE_S
RATE_SLACK_BYTES = 64 * 1024   # how far ahead of the pace a read may be waited for
OPEN_FAILURE = "could not open segment"   # how a failed check that never reached replay begins
CANNOT_JUDGE = "cannot judge here"        # how a check this machine cannot make begins


@dataclass
class SpotCheck:
    lease_id: int
    segment: int
    kind: str            # "payload" (recomputed from the last state) or "replay"
    ok: bool | None      # None: this machine cannot judge it (another numerics profile)
    reason: str          # "bitwise", "within tolerance", "payload derives ...", or why not
    seconds: float       # download + replay + hashes
    bytes: int           # state downloaded


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Replay with the thread count the worker trained with (a bitwise replay needs it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def download_time_limit_s(limit: int) -> float:
    """How long a file of at most `limit` bytes may take, every attempt together."""
    return transfer_time_s(limit, DOWNLOAD_GRACE_S, MIN_SERVE_BYTES_PER_S)


def download(http: httpx.Client, url: str, limit: int) -> bytes:
    """A served file of at most `limit` bytes (`DOWNLOAD_ATTEMPTS` tries with backoff on
    connection errors; an HTTP error status or an oversized file fails at once), within
    `download_time_limit_s(limit)` for all tries, headers included when `http` is a
    tessera.http_deadline.DeadlineClient (else checked as body bytes arrive); raises
    ValueError. The time limit is the largest file's, so the pace is held too (review 23, 24):
    in each try the headers must come within DOWNLOAD_GRACE_S and every next piece of the body
    by DOWNLOAD_GRACE_S + (bytes so far + RATE_SLACK_BYTES) / MIN_SERVE_BYTES_PER_S, so that a
    small file (a residual), trickled or silent just inside a read timeout, cannot hold the
    round's checks for as long as the largest state may take: at most DOWNLOAD_ATTEMPTS paces
    of it (each try starts its pace afresh: an honest provider whose connection was reset is
    not failed for it)."""
    last: Exception | None = None
    allowed = download_time_limit_s(limit)
    begun = time.monotonic()
    deadline = begun + allowed

    def paced(size: int) -> float:
        return min(deadline, begun + DOWNLOAD_GRACE_S + (size + RATE_SLACK_BYTES) / MIN_SERVE_BYTES_PER_S)

    def too_slow(size: int) -> ValueError:
        return ValueError(f"{url} was served at {size} bytes in {time.monotonic() - begun:.0f} s: "
                          f"slower than {MIN_SERVE_BYTES_PER_S} bytes/s after "
                          f"{DOWNLOAD_GRACE_S:.0f} s")

    for attempt in range(DOWNLOAD_ATTEMPTS):
        if attempt:
            time.sleep(DOWNLOAD_BACKOFF_S[min(attempt, len(DOWNLOAD_BACKOFF_S)) - 1])
        chunks, size, begun = [], 0, time.monotonic()
        try:
            with within(deadline), ExitStack() as stack:
                with within(paced(0)):
                    response = stack.enter_context(http.stream("GET", url))
                if response.status_code != 200:
                    raise ValueError(f"{url} answered {response.status_code}")
                pieces = iter(raw_chunks(response))   # ValueError if encoded: a failure
                while True:
                    with within(paced(size)):
                        chunk = next(pieces, None)
                    if chunk is None:
                        return b"".join(chunks)
                    size += len(chunk)
                    if size > limit:
                        raise ValueError(f"{url} is larger than {limit} bytes")
                    now = time.monotonic()
                    if now > deadline:
                        break
                    if now > paced(size):   # a client without deadlines: checked as bytes come
                        raise too_slow(size)
                    chunks.append(chunk)
        except httpx.TimeoutException as exc:
            if time.monotonic() >= paced(size) and time.monotonic() < deadline:
                raise too_slow(size) from None
            last = exc
        except httpx.HTTPError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise ValueError(f"{url} was not served within {allowed:.0f} s (a provider serves "
                             f"what it committed to at {MIN_SERVE_BYTES_PER_S} bytes/s or faster "
                             f"for files of up to {limit} bytes)")
    raise ValueError(f"{url}: {type(last).__name__}: {last}")


def download_state(http: httpx.Client, url: str, limit: int,
                   names: list[str]) -> tuple[dict, dict, int]:
    """(parameters, AdamW state_dict, bytes) of a served checkpoint (`checkpoints.encode_state`);
    raises ValueError."""
    data = download(http, url, limit)
    try:
        params, optimizer = decode_state(data, names)
    except ValueError as exc:
        raise ValueError(f"{url} is not a checkpoint state: {exc}") from None
    return params, optimizer, len(data)


def spot_check(http: httpx.Client, endpoint: str, lease_id: int, config: DilocoConfig,
               worker: int, commitment: RoundCommitment, segment: int,
               train_tokens: torch.Tensor, limit: int, tolerance: float = 0.0,
               start_params: State | None = None) -> SpotCheck:
    """Check `segment` of a worker's committed round from its served states: replay a training
    segment with the thread count the worker signed, or recompute the payload segment
    (`start_params`: the round's published parameters when the caller has them, else
    checkpoint 0 is downloaded). A state that cannot be fetched, does not parse, or is not the
    committed one fails the check, like a replay that misses the committed end: the provider
    promised to open any segment. Judged only where this machine runs the signed profile."""
    started = time.perf_counter()
    signed = commitment.payload.profile
    kind = "payload" if segment == commitment.payload_segment else "replay"
    if not numerics.can_replay(signed):
        return SpotCheck(lease_id, segment, kind, None,
                         f"{CANNOT_JUDGE}: the worker signed numerics profile {signed!r}, this "
                         f"machine runs {numerics.active_profile()!r}", 0.0, 0)
    base = f"{endpoint}/leases/{lease_id}/rounds/{commitment.round}/checkpoints"
    # the states of the answer committed to this root, also after the tenant re-sent the round
    # (provider/superseded_answers.py)
    of_root = f"?root=0x{commitment.root.hex()}"
    moved, names = 0, parameter_names(config)
    try:
        if kind == "payload":
            if start_params is None:
                start_params, _, size = download_state(http, f"{base}/0{of_root}", limit, names)
                moved += size
            params, optimizer, size = download_state(http, f"{base}/{segment}{of_root}", limit, names)
            residual_bytes = download(http, f"{base}/{segment + 1}{of_root}", limit)
            moved += size + len(residual_bytes)
            try:
                residual = decode_residual(residual_bytes)
            except ValueError as exc:
                raise ValueError(f"{base}/{segment + 1} is not a residual: {exc}") from None
            opening = PayloadOpening(commitment.checkpoints[0], commitment.proof(0), params,
                                     optimizer, commitment.proof(segment), commitment.payload,
                                     commitment.proof(segment + 1), residual)
            verdict = verify_payload(config, worker, commitment.round, commitment.root,
                                     commitment.n_leaves, commitment.k,
                                     commitment.payload.result_hash, start_params, opening)
        else:
            params, optimizer, size = download_state(http, f"{base}/{segment}{of_root}", limit, names)
            moved += size
            end_params = None
            if tolerance > 0:
                end_params, _, size = download_state(http, f"{base}/{segment + 1}{of_root}", limit, names)
                moved += size
            opening = SegmentOpening(segment, params, optimizer, commitment.proof(segment),
                                     commitment.checkpoints[segment + 1],
                                     commitment.proof(segment + 1), end_params)
            with torch_threads(commitment.payload.threads):
                verdict = verify_segment(config, worker, commitment.round, commitment.root,
                                         commitment.n_leaves, commitment.k, opening,
                                         train_tokens, tolerance)
        ok, reason = verdict.ok, verdict.reason
    except Exception as exc:  # a malformed opening is the provider's failure to open
        ok, reason = False, f"{OPEN_FAILURE} {segment}: {exc}"[:500]
    return SpotCheck(lease_id, segment, kind, ok, reason, time.perf_counter() - started, moved)


def max_state_bytes(n_params: int) -> int:
    """The most a served checkpoint may take: parameters and two AdamW moments in fp32."""
    return 3 * 4 * n_params + STATE_SLACK_BYTES
