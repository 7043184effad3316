"""Job manifests and their inputs: a lease's job is accepted only from a manifest its tenant
signed (EIP-712), and starts once the dataset the manifest names has arrived."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tessera.compute.model import training_memory_floor
from tessera.errors import Refused
from tessera.files import write_atomic
from tessera.protocol import messages
from tessera.protocol.wire import SignedManifest
from tessera.provider.context import NodeContext

# Called with (lease id, the lease's job folder) just before the lease's job starts; the
# production node sets none (see ProviderNode's `prepare_job`).
PrepareJob = Callable[[int, Path], None]


class Manifests:
    def __init__(self, ctx: NodeContext, prepare_job: PrepareJob | None = None):
        self.ctx = ctx
        self.prepare_job = prepare_job

    def accept(self, signed: SignedManifest) -> dict:
        ctx = self.ctx
        manifest = signed.manifest
        lease_id = manifest.lease_id
        with ctx.lock:
            lease = ctx.my_open_lease(lease_id)
            typed = messages.manifest_typed_data(
                ctx.chain.network.chain_id, ctx.market.address, lease_id,
                manifest.digest(), signed.nonce, signed.expiry)
            signer = messages.signer_or_none(typed, signed.signature)
            if signer is None or signer.lower() != lease.tenant.lower():
                ctx.metrics.refused.labels("manifest-signer").inc()
                ctx.log("manifest-refused", "warning", lease_id=lease_id, signer=signer,
                        tenant=lease.tenant)
                raise Refused(403, f"manifest for lease {lease_id} is not signed by its tenant "
                                   f"{lease.tenant}")
            if signed.expiry < time.time():
                raise Refused(400, "manifest signature has expired")
            workload, limit = manifest.workload, ctx.config.limits.threads
            self._check_runnable(manifest)
            if workload.kind == "diloco-worker" and workload.checkpoint_every and \
                    workload.model.threads > limit:
                raise Refused(409, f"lease {lease_id}'s verified job trains with "
                                   f"{workload.model.threads} threads (part of what its worker "
                                   f"signs and its replays use); this provider gives a job at "
                                   f"most {limit} ([limits] threads)")
            if ctx.state.lease(lease_id) is None:  # the watcher has not seen the event yet
                ctx.state.add_lease(lease_id, lease.order_id, lease.tenant)
            record = ctx.state.lease(lease_id)
            if record.manifest is None and (record.tenant.lower(), record.order_id) != (
                    lease.tenant.lower(), lease.order_id):
                # a reorg gave the lease id to another order since the watcher recorded it: the
                # chain's lease is the one the manifest is for, and the one whose tenant signs
                # its rounds (diloco_rounds.authorize reads the record; review 8)
                ctx.state.update_lease(lease_id, tenant=lease.tenant, order_id=lease.order_id)
                ctx.log("lease-record-corrected", "warning", lease_id=lease_id,
                        was=record.tenant, tenant=lease.tenant)
                record = ctx.state.lease(lease_id)
            if record.manifest is not None:
                if record.manifest == manifest.model_dump(mode="json"):
                    return {"lease_id": lease_id, "status": record.status,
                            "needs": self._missing_inputs(manifest.dataset_sha256)}
                raise Refused(409, f"lease {lease_id} already has a different manifest")
            kept = self._signed_manifest_path(lease_id)   # served to validators on a challenge
            kept.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(kept, signed.model_dump_json())
            ctx.state.update_lease(lease_id, manifest=manifest.model_dump(mode="json"),
                                   manifest_nonce=str(signed.nonce), status="awaiting-inputs")
            ctx.log("manifest-accepted", lease_id=lease_id, dataset=manifest.dataset_sha256)
            self._start_if_ready(lease_id)
            record = ctx.state.lease(lease_id)
            return {"lease_id": lease_id, "status": record.status,
                    "needs": self._missing_inputs(manifest.dataset_sha256)}

    def _check_runnable(self, manifest) -> None:
        """Refused (422) when the job cannot run here on its own terms, before anything starts:
        a job that failed on its tenant's input (a dataset too small for the model, a model
        over `[limits] memory_limit_mb`) was closed by this node and counted against its
        reliability, for a few seconds of the tenant's rent (review 27). Both checks are floors:
        a job that passes them may still fail (memory beyond the floor, time), and is then
        closed as failed like any other."""
        workload = manifest.workload
        if problem := workload.dataset_problem(manifest.dataset_size):
            raise Refused(422, f"lease {manifest.lease_id}'s job cannot run: {problem}")
        blob = self._blob_path(manifest.dataset_sha256)   # already here for another lease
        if blob.exists() and blob.stat().st_size != manifest.dataset_size:
            raise Refused(422, f"lease {manifest.lease_id}'s manifest gives dataset_size "
                               f"{manifest.dataset_size}, but its dataset has "
                               f"{blob.stat().st_size} bytes")
        model = workload.model if workload.kind == "diloco-worker" else workload
        if model.device == "cuda" and not torch.cuda.is_available():
            raise Refused(422, f"lease {manifest.lease_id}'s job asks for device cuda; this "
                               "provider has no CUDA device")
        need, limit_mb = training_memory_floor(model), self.ctx.config.limits.memory_limit_mb
        if need > limit_mb << 20:
            raise Refused(422, f"lease {manifest.lease_id}'s job needs at least {need >> 20} MB "
                               f"(parameters, gradients, AdamW moments and one batch's "
                               f"embeddings in fp32); this provider gives a job {limit_mb} MB "
                               f"([limits] memory_limit_mb)")

    def _signed_manifest_path(self, lease_id: int) -> Path:
        return self.ctx.state_dir / "manifests" / f"{lease_id}.json"

    def signed_manifest(self, lease_id: int) -> SignedManifest:
        """The tenant-signed manifest this node accepted for the lease. Public: it is what the
        lease's work must be replayed against, and a second, different one signed by the same
        tenant proves the tenant equivocated (validators then abstain on its challenge)."""
        path = self._signed_manifest_path(lease_id)
        if not path.is_file():
            raise Refused(404, f"no manifest accepted for lease {lease_id}")
        return SignedManifest.model_validate_json(path.read_text())

    def _blob_path(self, sha256: str) -> Path:
        return self.ctx.state_dir / "blobs" / sha256

    def _missing_inputs(self, sha256: str) -> list[str]:
        return [] if self._blob_path(sha256).exists() else [sha256]

    def accept_blob(self, lease_id: int, sha256: str, body: bytes) -> dict:
        ctx = self.ctx
        with ctx.lock:
            ctx.my_open_lease(lease_id)
            record = ctx.state.lease(lease_id)
            if record is None or record.manifest is None:
                raise Refused(409, f"send the signed manifest for lease {lease_id} first")
            if record.manifest["dataset_sha256"] != sha256:
                raise Refused(403, f"blob {sha256} is not named by lease {lease_id}'s manifest")
            if hashlib.sha256(body).hexdigest() != sha256:
                raise Refused(400, "blob content does not hash to its name")
            if len(body) != record.manifest["dataset_size"]:   # what _check_runnable judged
                raise Refused(400, f"blob has {len(body)} bytes; lease {lease_id}'s manifest "
                                   f"gives dataset_size {record.manifest['dataset_size']}")
            path = self._blob_path(sha256)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, body)
            self._start_if_ready(lease_id)
            return {"lease_id": lease_id, "status": ctx.state.lease(lease_id).status}

    def _start_if_ready(self, lease_id: int) -> None:
        ctx = self.ctx
        record = ctx.state.lease(lease_id)
        if record.status != "awaiting-inputs":
            return
        dataset = self._blob_path(record.manifest["dataset_sha256"])
        if not dataset.exists():
            return
        if self.prepare_job is not None:
            self.prepare_job(lease_id, ctx.jobs.folder(lease_id))
        ctx.jobs.start(lease_id, record.manifest, dataset)
        ctx.state.update_lease(lease_id, status="running", detail="")
        ctx.log("job-started", lease_id=lease_id)
