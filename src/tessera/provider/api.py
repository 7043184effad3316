"""The provider's HTTP API: bids, manifests, inputs, progress, artifacts, health and metrics."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from prometheus_client import generate_latest

from tessera.errors import Refused
from tessera.protocol.hardware_challenge import HardwareChallengeAnswer, HardwareChallengeRequest
from tessera.protocol.probes import ProbeReceipt, ProbeRequest
from tessera.protocol.wire import BidMessage, LeaseStatus, SignedManifest
from tessera.provider.node import ProviderNode

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_BLOB_BYTES = 1 << 30


def create_app(node: ProviderNode) -> FastAPI:
    app = FastAPI(title="Tessera provider", version="1")

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
    def bid(order_id: int) -> BidMessage:
        return node.bid_for(order_id)

    @app.post("/leases/{lease_id}/manifest")
    def manifest(lease_id: int, signed: SignedManifest) -> dict:
        if signed.manifest.lease_id != lease_id:
            raise Refused(400, f"manifest names lease {signed.manifest.lease_id}, not {lease_id}")
        return node.accept_manifest(signed)

    @app.get("/leases/{lease_id}/manifest")
    def accepted_manifest(lease_id: int) -> SignedManifest:
        return node.signed_manifest(lease_id)

    @app.put("/leases/{lease_id}/blobs/{sha256}")
    async def blob(lease_id: int, sha256: str, request: Request) -> dict:
        if not SHA256.match(sha256):
            raise Refused(400, "blob name must be a lowercase hex sha256")
        length = int(request.headers.get("content-length") or 0)
        if length > MAX_BLOB_BYTES:
            raise Refused(413, f"blob is larger than {MAX_BLOB_BYTES} bytes")
        return await run_in_threadpool(node.accept_blob, lease_id, sha256, await request.body())

    @app.put("/leases/{lease_id}/rounds/{round_index}")
    async def submit_round(lease_id: int, round_index: int, request: Request) -> dict:
        try:
            nonce = int(request.headers["x-tessera-nonce"])
            expiry = int(request.headers["x-tessera-expiry"])
            signature = request.headers["x-tessera-signature"]
        except (KeyError, ValueError):
            raise Refused(400, "a round needs X-Tessera-Nonce, X-Tessera-Expiry and "
                               "X-Tessera-Signature headers") from None
        length = int(request.headers.get("content-length") or 0)
        if length > MAX_BLOB_BYTES:
            raise Refused(413, f"parameters are larger than {MAX_BLOB_BYTES} bytes")
        body = await request.body()
        return await run_in_threadpool(node.accept_round, lease_id, round_index, body, nonce,
                                       expiry, signature)

    @app.get("/leases/{lease_id}/rounds/{round_index}")
    def round_result(lease_id: int, round_index: int):
        result = node.round_result(lease_id, round_index)
        if result is None:
            return JSONResponse(status_code=202, content={"status": "running"})
        return result

    @app.get("/leases/{lease_id}/rounds/{round_index}/pseudo-gradient")
    def round_payload(lease_id: int, round_index: int) -> FileResponse:
        return FileResponse(node.round_payload(lease_id, round_index),
                            media_type="application/octet-stream")

    @app.get("/leases/{lease_id}/rounds/{round_index}/checkpoints/{index}")
    def round_checkpoint(lease_id: int, round_index: int, index: int) -> FileResponse:
        return FileResponse(node.round_checkpoint(lease_id, round_index, index),
                            media_type="application/octet-stream")

    @app.get("/leases/{lease_id}")
    def status(lease_id: int) -> LeaseStatus:
        return node.lease_status(lease_id)

    @app.get("/leases/{lease_id}/logs")
    def logs(lease_id: int, since: int = 0) -> list[dict]:
        return node.lease_logs(lease_id, since)

    @app.get("/leases/{lease_id}/artifacts")
    def artifacts(lease_id: int) -> dict:
        return node.lease_artifacts(lease_id)

    @app.get("/artifacts/{sha256}")
    def artifact(sha256: str) -> FileResponse:
        if not SHA256.match(sha256):
            raise Refused(400, "artifact name must be a lowercase hex sha256")
        return FileResponse(node.artifact_path(sha256), media_type="application/octet-stream")

    return app
