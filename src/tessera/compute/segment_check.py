"""Replay one committed segment of a worker's round from the state its provider serves
(`GET /leases/{id}/rounds/{r}/checkpoints/{i}`), on this machine: what the tenant's spot check
and a validator's challenge vote both do (docs/verification.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import torch

from tessera.compute.checkpoints import RoundCommitment, decode_state
from tessera.compute.diloco import DilocoConfig
from tessera.compute.replay import SegmentOpening, parameter_names, verify_segment

DOWNLOAD_ATTEMPTS = 3
STATE_SLACK_BYTES = 1 << 20   # the wire format's header (names, shapes) on top of 3 copies of θ
OPEN_FAILURE = "could not open segment"   # how a failed check that never reached replay begins


@dataclass
class SpotCheck:
    lease_id: int
    segment: int
    ok: bool
    reason: str          # "bitwise", "within tolerance", or why it failed
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


def download_state(http: httpx.Client, url: str, limit: int,
                   names: list[str]) -> tuple[dict, dict, int]:
    """(parameters, AdamW state_dict, bytes) of a served checkpoint (`checkpoints.encode_state`);
    raises ValueError."""
    last: Exception | None = None
    for _ in range(DOWNLOAD_ATTEMPTS):
        try:
            chunks, size = [], 0
            with http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ValueError(f"{url} answered {response.status_code}")
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ValueError(f"{url} is larger than {limit} bytes")
                    chunks.append(chunk)
            break
        except httpx.HTTPError as exc:
            last = exc
    else:
        raise ValueError(f"{url}: {type(last).__name__}: {last}")
    try:
        params, optimizer = decode_state(b"".join(chunks), names)
    except ValueError as exc:
        raise ValueError(f"{url} is not a checkpoint state: {exc}") from None
    return params, optimizer, size


def spot_check(http: httpx.Client, endpoint: str, lease_id: int, config: DilocoConfig,
               worker: int, commitment: RoundCommitment, segment: int, threads: int,
               train_tokens: torch.Tensor, limit: int, tolerance: float = 0.0) -> SpotCheck:
    """Replay `segment` of a worker's committed round from its served start state. A state
    that cannot be fetched, does not parse, or is not the committed one fails the check, like
    a replay that misses the committed end: the provider promised to open any segment."""
    started = time.perf_counter()
    base = f"{endpoint}/leases/{lease_id}/rounds/{commitment.round}/checkpoints"
    moved, names = 0, parameter_names(config)
    try:
        params, optimizer, size = download_state(http, f"{base}/{segment}", limit, names)
        moved += size
        end_params = None
        if tolerance > 0:
            end_params, _, size = download_state(http, f"{base}/{segment + 1}", limit, names)
            moved += size
        opening = SegmentOpening(segment, params, optimizer, commitment.proof(segment),
                                 commitment.checkpoints[segment + 1],
                                 commitment.proof(segment + 1), end_params)
        with torch_threads(threads):
            verdict = verify_segment(config, worker, commitment.round, commitment.root,
                                     commitment.n_leaves, commitment.k, opening, train_tokens,
                                     tolerance)
        ok, reason = verdict.ok, verdict.reason
    except Exception as exc:  # a malformed opening is the provider's failure to open
        ok, reason = False, f"{OPEN_FAILURE} {segment}: {exc}"[:500]
    return SpotCheck(lease_id, segment, ok, reason, time.perf_counter() - started, moved)


def max_state_bytes(n_params: int) -> int:
    """The most a served checkpoint may take: parameters and two AdamW moments in fp32."""
    return 3 * 4 * n_params + STATE_SLACK_BYTES
