"""The leases this node holds: recorded when won on chain, closed when closed on chain, settled
when their job ends (result committed and pay withdrawn, or the lease closed after a failure),
and what the node tells anyone about each (status, progress, artifacts)."""

from __future__ import annotations

from pathlib import Path

from tessera.chain.client import tx_hash
from tessera.errors import Refused
from tessera.protocol.wire import LeaseStatus
from tessera.provider.context import NodeContext
from tessera.provider.payouts import Payouts


class Leases:
    def __init__(self, ctx: NodeContext, payouts: Payouts):
        self.ctx = ctx
        self.payouts = payouts

    # -- from the chain watcher ------------------------------------------------------------
    def on_lease(self, args) -> None:
        """A `LeaseCreated` event naming this provider."""
        ctx = self.ctx
        if ctx.state.add_lease(args["lease_id"], args["order_id"], args["tenant"]):
            ctx.metrics.leases.inc()
            ctx.log("lease-won", lease_id=args["lease_id"], order_id=args["order_id"],
                    tenant=args["tenant"])

    def on_lease_closed(self, lease_id: int) -> None:
        """A `LeaseClosed` event: stop the lease's job if it runs."""
        ctx = self.ctx
        record = ctx.state.lease(lease_id)
        if record is None or record.status == "closed":
            return
        if record.status == "running":
            ctx.jobs.stop(lease_id)
        ctx.state.update_lease(lease_id, status="closed",
                               detail=f"closed on chain while {record.status}")
        ctx.log("lease-closed", lease_id=lease_id, was=record.status)

    def advance_jobs(self) -> None:
        """Settle every lease whose job has ended since the last look."""
        ctx = self.ctx
        for record in ctx.state.leases(("running",)):
            outcome = ctx.jobs.outcome(record.lease_id)
            if outcome is None:
                continue
            lease_open = ctx.market.lease(record.lease_id).is_open
            if outcome.succeeded:
                detail = "finished after the lease closed; result not committed"
                if lease_open:
                    receipt = ctx.market.commit_result(record.lease_id,
                                                       bytes.fromhex(outcome.result_hash))
                    detail = f"result committed in {tx_hash(receipt)}"
                ctx.state.update_lease(record.lease_id, status="succeeded",
                                       result_hash=outcome.result_hash, detail=detail)
                ctx.metrics.jobs.labels("succeeded").inc()
                ctx.log("job-succeeded", lease_id=record.lease_id, result_hash=outcome.result_hash)
                if lease_open:
                    self.payouts.withdraw(record.lease_id)
            else:
                ctx.state.update_lease(record.lease_id, status="failed", detail=outcome.detail)
                ctx.metrics.jobs.labels("failed").inc()
                ctx.log("job-failed", "error", lease_id=record.lease_id, detail=outcome.detail)
                if lease_open:  # stop charging for work that will not come: the tenant is refunded
                    receipt = ctx.market.close_lease(record.lease_id)
                    ctx.log("lease-closed-after-failure", lease_id=record.lease_id,
                            tx=tx_hash(receipt))

    # -- what the node tells about a lease -------------------------------------------------
    def status(self, lease_id: int) -> LeaseStatus:
        record = self.ctx.state.lease(lease_id)
        if record is None:
            raise Refused(404, f"lease {lease_id} is unknown to this provider")
        status = LeaseStatus(lease_id=lease_id, status=record.status, detail=record.detail,
                             result_hash=record.result_hash)
        progress = self.ctx.jobs.progress(lease_id)
        last = next((p for p in reversed(progress) if "step" in p), None)
        if last:
            status.step = last.get("step", 0)
            status.steps = last.get("steps", 0)
            status.train_loss = last.get("train_loss")
            status.val_loss = last.get("val_loss")
            status.tokens_per_s = last.get("tokens_per_s")
        return status

    def logs(self, lease_id: int, since: int = 0) -> list[dict]:
        if self.ctx.state.lease(lease_id) is None:
            raise Refused(404, f"lease {lease_id} is unknown to this provider")
        return self.ctx.jobs.progress(lease_id)[since:]

    def artifacts(self, lease_id: int) -> dict:
        record = self.ctx.state.lease(lease_id)
        if record is None:
            raise Refused(404, f"lease {lease_id} is unknown to this provider")
        if record.result_hash is None:
            raise Refused(409, f"lease {lease_id} has no results (status {record.status})")
        return {"lease_id": lease_id, "result_hash": record.result_hash,
                "artifacts": self.ctx.jobs.artifacts(lease_id)}

    def artifact_path(self, sha256: str) -> Path:
        path = self.ctx.jobs.find_artifact(sha256)
        if path is None:
            raise Refused(404, f"no artifact with sha256 {sha256}")
        return path
