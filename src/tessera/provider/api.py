"""The provider's HTTP API: bids, manifests, inputs, progress, artifacts, health and metrics.

Every request passes `http_limits.RequestGuard` first (bodies capped while they stream, JSON
with NaN or Infinity refused, numbers in paths bounded). The two routes that take a raw
upload, a lease's dataset (blobs) and a DiLoCo round's parameters, check who is sending
before they read a byte of it, then read at most what that sender may send. A round's
pseudo-gradient and checkpoint states are served only against a read grant (X-Tessera-Reader,
X-Tessera-Expiry, X-Tessera-Signature; provider/read_access.py)."""

from __future__ import annotations

import hashlib
import re

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from prometheus_client import generate_latest

from tessera.errors import Refused
from tessera.http_limits import PathInt, QueryInt, RequestGuard, read_body, validation_error
from tessera.protocol.hardware_challenge import HardwareChallengeAnswer, HardwareChallengeRequest
from tessera.protocol.probes import ProbeReceipt, ProbeRequest
from tessera.protocol.wire import BidMessage, LeaseStatus, SignedManifest
from tessera.provider.long_poll import RETRY_AFTER_S, Waiters, parse_wait, wait_for
from tessera.provider.node import ProviderNode
from tessera.provider.read_access import authorize_read
from tessera.provider.superseded_answers import parse_root

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_BLOB_BYTES = 1 << 30       # a manifest's dataset_size is at most this (protocol/wire.py)
MAX_ROUND_BYTES = 1 << 30      # a DiLoCo round's global parameters
UINT256 = 2**256 - 1
# The routes that read a raw upload themselves, and the most any request to them may send.
STREAMED = ((re.compile(r"^/leases/[0-9]+/blobs/[^/]+$"), MAX_BLOB_BYTES),
            (re.compile(r"^/leases/[0-9]+/rounds/[0-9]+$"), MAX_ROUND_BYTES))


def expected_blob_size(node: ProviderNode, lease_id: int, sha256: str) -> int:
    """How many bytes the blob `sha256` of `lease_id` may have, checked before any is read:
    only the dataset its tenant's accepted manifest names, while the lease is open, and at
    most the `dataset_size` that manifest gives. Refused otherwise.

    The upload itself is not signed (the content is checked against its name), so a stranger
    who read the manifest (GET /leases/{id}/manifest is public) can still make the node read
    `dataset_size` bytes before the hash refuses them; no more, and only for a lease whose
    tenant has accepted that size."""
    record = node.state.lease(lease_id)
    if record is None or record.manifest is None:
        raise Refused(409, f"send the signed manifest for lease {lease_id} first")
    if record.manifest["dataset_sha256"] != sha256:
        raise Refused(403, f"blob {sha256} is not named by lease {lease_id}'s manifest")
    node.ctx.my_open_lease(lease_id)
    return int(record.manifest.get("dataset_size", MAX_BLOB_BYTES))


def round_headers(request: Request) -> tuple[int, int, str, str]:
    """(nonce, expiry, signature, params sha256) from a round's headers; Refused if any is
    missing or malformed."""
    try:
        nonce = int(request.headers["x-tessera-nonce"])
        expiry = int(request.headers["x-tessera-expiry"])
        signature = request.headers["x-tessera-signature"]
        params_sha256 = request.headers["x-tessera-params-sha256"]
    except (KeyError, ValueError):
        raise Refused(400, "a round needs X-Tessera-Nonce, X-Tessera-Expiry, X-Tessera-Signature "
                           "and X-Tessera-Params-Sha256 headers") from None
    if not (0 <= nonce <= UINT256 and 0 <= expiry <= UINT256):
        raise Refused(400, "X-Tessera-Nonce and X-Tessera-Expiry must be in 0 .. 2**256-1")
    if not SHA256.match(params_sha256):
        raise Refused(400, "X-Tessera-Params-Sha256 must be a lowercase hex sha256")
    return nonce, expiry, signature, params_sha256


def create_app(node: ProviderNode) -> FastAPI:
    app = FastAPI(title="Tessera provider", version="1")
    app.add_middleware(RequestGuard, streamed=STREAMED)
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.exception_handler(Refused)
    async def _refused(_request: Request, exc: Refused):
        return JSONResponse(status_code=exc.status, content={"detail": str(exc)})

    @app.get("/healthz")
    def healthz() -> dict:
        return node.health()

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(node.metrics).decode())

    @app.post("/probe")
    def probe(request: ProbeRequest) -> ProbeReceipt:
        return node.answer_probe(request)

    @app.post("/hardware-challenge")
    def hardware_challenge(request: HardwareChallengeRequest) -> HardwareChallengeAnswer:
        return node.answer_hardware_challenge(request)

    @app.get("/orders/{order_id}/bid")
    def bid(order_id: PathInt) -> BidMessage:
        return node.bid_for(order_id)

    @app.post("/leases/{lease_id}/manifest")
    def manifest(lease_id: PathInt, signed: SignedManifest) -> dict:
        if signed.manifest.lease_id != lease_id:
            raise Refused(400, f"manifest names lease {signed.manifest.lease_id}, not {lease_id}")
        return node.accept_manifest(signed)

    @app.get("/leases/{lease_id}/manifest")
    def accepted_manifest(lease_id: PathInt) -> SignedManifest:
        return node.signed_manifest(lease_id)

    @app.put("/leases/{lease_id}/blobs/{sha256}")
    async def blob(lease_id: PathInt, sha256: str, request: Request) -> dict:
        if not SHA256.match(sha256):
            raise Refused(400, "blob name must be a lowercase hex sha256")
        size = await run_in_threadpool(expected_blob_size, node, lease_id, sha256)
        body = await read_body(request, size, f"blob {sha256} (the manifest's dataset_size)")
        return await run_in_threadpool(node.accept_blob, lease_id, sha256, body)

    @app.put("/leases/{lease_id}/rounds/{round_index}")
    async def submit_round(lease_id: PathInt, round_index: PathInt, request: Request) -> dict:
        """The tenant's signature (over the parameters' hash, sent as a header) is checked
        before the parameters are read; the body must then hash to what was signed. Someone
        who captured a tenant's headers can resend them until they expire and make the node
        read up to MAX_ROUND_BYTES of other bytes, which the hash then refuses."""
        nonce, expiry, signature, params_sha256 = round_headers(request)
        await run_in_threadpool(node.rounds.authorize, lease_id, round_index, params_sha256,
                                nonce, expiry, signature)
        most = await run_in_threadpool(node.rounds.round_bytes, lease_id)
        body = await read_body(request, min(most, MAX_ROUND_BYTES), "the round's parameters "
                                                                    "(the model's full state)")
        if hashlib.sha256(body).hexdigest() != params_sha256:
            raise Refused(400, "the round's parameters do not hash to X-Tessera-Params-Sha256")
        return await run_in_threadpool(node.accept_round, lease_id, round_index, body, nonce,
                                       expiry, signature)

    waiters = Waiters()

    async def held(lookup, lease_id: int, wait_s: float, request: Request):
        """(`await lookup()` every WAIT_CHECK_S until it gives something, `wait_s` passed or the
        client left, None) in one of the lease's waiting slots (provider/long_poll.py); (None,
        a 429 answer) when no slot is free."""
        async def stop() -> bool:
            return node.stop_event.is_set() or await request.is_disconnected()

        busy = waiters.enter(lease_id)
        if busy is not None:
            return None, JSONResponse(status_code=429, headers={"Retry-After": str(RETRY_AFTER_S)},
                                      content={"detail": busy + ": ask without wait, or again "
                                                                "later"})
        try:
            return await wait_for(lookup, wait_s, stop), None
        finally:
            waiters.leave(lease_id)

    @app.get("/leases/{lease_id}/rounds/{round_index}")
    async def round_result(lease_id: PathInt, round_index: PathInt, request: Request,
                           wait: str | None = None, root: str | None = None):
        """The worker's signed answer, or 202 while it works; with `?wait=S` the request is
        held until the answer exists or S seconds have passed (provider/long_poll.py), for the
        holder of a read grant (401/403 otherwise; an answer already there needs none). With
        `?root=0x…`, the answer committed to that checkpoint root, also one a re-send of the
        round set aside (provider/superseded_answers.py; 404 when none is kept)."""
        wait_s = parse_wait(wait)
        checkpoint_root = None if root is None else parse_root(root)

        async def lookup():
            return await run_in_threadpool(node.round_result, lease_id, round_index,
                                           checkpoint_root)

        result = await lookup()     # refuses a lease with no rounds here before a slot is taken
        if result is None and wait_s > 0:
            # holding a request takes a slot and a look-up every WAIT_CHECK_S: the lease's
            # tenant (or a validator deciding its case) may, a stranger may only ask (review 9)
            await run_in_threadpool(authorize_read, node.ctx, lease_id, round_index,
                                    request.headers)
            result, busy = await held(lookup, lease_id, wait_s, request)
            if busy is not None:
                return busy
        if result is None:
            return JSONResponse(status_code=202, content={"status": "running"})
        return result

    # A worker's result and states: only for the holder of a read grant that may read them
    # (provider/read_access.py); the lease and the file are looked up first (404/409).
    @app.get("/leases/{lease_id}/rounds/{round_index}/pseudo-gradient")
    async def round_payload(lease_id: PathInt, round_index: PathInt, request: Request,
                            wait: str | None = None) -> FileResponse:
        """The worker's pseudo-gradient (404 while it works). With `?wait=S`, held like the
        answer's own route, so that the tenant asks for both at once and has the payload one
        round trip sooner (issue 16); the read grant is checked before a slot is taken."""
        wait_s = parse_wait(wait)

        async def lookup():
            return await run_in_threadpool(node.round_payload, lease_id, round_index)

        path = await lookup()
        await run_in_threadpool(authorize_read, node.ctx, lease_id, round_index, request.headers)
        if path is None and wait_s > 0:
            path, busy = await held(lookup, lease_id, wait_s, request)
            if busy is not None:
                return busy
        if path is None:
            raise Refused(404, f"round {round_index} of lease {lease_id} has no result yet")
        return FileResponse(path, media_type="application/octet-stream")

    @app.get("/leases/{lease_id}/rounds/{round_index}/checkpoints/{index}")
    def round_checkpoint(lease_id: PathInt, round_index: PathInt, index: PathInt,
                         request: Request, root: str | None = None) -> FileResponse:
        """A checkpoint's full state; with `?root=0x…`, of the answer committed to that root."""
        path = node.round_checkpoint(lease_id, round_index, index,
                                     None if root is None else parse_root(root))
        authorize_read(node.ctx, lease_id, round_index, request.headers)
        return FileResponse(path, media_type="application/octet-stream")

    @app.get("/leases/{lease_id}")
    def status(lease_id: PathInt) -> LeaseStatus:
        return node.lease_status(lease_id)

    @app.get("/leases/{lease_id}/logs")
    def logs(lease_id: PathInt, since: QueryInt = 0) -> list[dict]:
        return node.lease_logs(lease_id, since)

    @app.get("/leases/{lease_id}/artifacts")
    def artifacts(lease_id: PathInt) -> dict:
        return node.lease_artifacts(lease_id)

    @app.get("/artifacts/{sha256}")
    def artifact(sha256: str) -> FileResponse:
        if not SHA256.match(sha256):
            raise Refused(400, "artifact name must be a lowercase hex sha256")
        return FileResponse(node.artifact_path(sha256), media_type="application/octet-stream")

    return app
