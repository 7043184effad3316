"""The provider node: one object that composes the parts of the provider daemon and is what the
HTTP handlers (api.py) and the chain watcher thread call into.

Each part has one job: registration.py (the offer on chain), standing.py (active or jailed),
heartbeats.py (uptime), bidding.py (signed bids), leases.py (the leases' lifecycle),
manifests.py (signed manifests and inputs; starts the jobs), diloco_rounds.py (DiLoCo rounds
and their commitments), payouts.py (release and withdraw pay), probes.py and
hardware_challenges.py (validators' checks). They share a NodeContext (context.py). The durable
state lives in SQLite (state.py), so a restarted node picks up every lease where it was.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from tessera.chain.accounts import resolve_account
from tessera.chain.client import Chain, retry
from tessera.chain.market import Market
from tessera.chain.network import load_network
from tessera.errors import Refused, RpcUnavailable
from tessera.logs import EventLog
from tessera.protocol import hardware_challenge as hc
from tessera.protocol.matching import ProviderOffer
from tessera.protocol.probes import ProbeReceipt, ProbeRequest
from tessera.protocol.wire import BidMessage, LeaseStatus, RoundResult, SignedManifest
from tessera.provider.bidding import Bidder
from tessera.provider.config import ProviderConfig
from tessera.provider.context import NodeContext
from tessera.provider.diloco_rounds import Rounds
from tessera.provider.hardware import Hardware, detect_hardware
from tessera.provider.hardware_challenges import HardwareChallenges
from tessera.provider.heartbeats import Heartbeats
from tessera.provider.leases import Leases
from tessera.provider.manifests import Manifests, PrepareJob
from tessera.provider.metrics import ProviderMetrics
from tessera.provider.payouts import Payouts
from tessera.provider.probes import answer_probe
from tessera.provider.registration import register_or_update_offer, registered_offer
from tessera.provider.runner import JobSupervisor
from tessera.provider.standing import Standing
from tessera.provider.state import ACTIVE_STATUSES, ProviderState

__all__ = ["ProviderNode", "Refused"]


class ProviderNode:
    """`job_modules` and `prepare_job` are the only ways to change what a lease's job runs:
    `job_modules` overrides the module a workload kind runs in (runner.JOB_MODULES) and
    `prepare_job(lease_id, folder)` is called just before a lease's job starts. `tessera
    provider run` sets neither; the test-only cheating provider (tessera.testing) sets both."""

    def __init__(self, config: ProviderConfig, log: EventLog | None = None, *,
                 job_modules: Mapping[str, str] | None = None,
                 prepare_job: PrepareJob | None = None):
        self.config = config
        self.log = log or EventLog("provider")
        self.account = resolve_account(config.provider.account)
        self.chain = Chain(load_network(config.provider.network), self.account)
        self.market = Market(self.chain)
        self.state_dir = Path(config.provider.state_dir)
        self.state = ProviderState(self.state_dir / "provider.db")
        self.jobs = JobSupervisor(self.state_dir, threads=config.limits.threads,
                                  memory_limit_mb=config.limits.memory_limit_mb,
                                  timeout_s=config.limits.max_job_seconds, modules=job_modules)
        self.stop_event = threading.Event()
        meters = ProviderMetrics()
        self.metrics = meters.registry   # what /metrics serves
        self.ctx = ctx = NodeContext(config, self.log, self.account, self.chain, self.market,
                                     self.state, self.jobs, meters)
        self.standing = Standing(ctx)
        self.heartbeats = Heartbeats(ctx)
        self.bidder = Bidder(ctx, self.standing)
        self.payouts = Payouts(ctx)
        self.leases = Leases(ctx, self.payouts)
        self.manifests = Manifests(ctx, prepare_job)
        self.rounds = Rounds(ctx)
        self.hardware_challenges = HardwareChallenges(ctx)

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def hardware(self) -> Hardware | None:
        return self.ctx.hardware

    # -- start-up ------------------------------------------------------------------------
    def prepare(self) -> None:
        """Connect (retrying), detect hardware, and register or refresh the on-chain offer."""
        retry(self.chain.check_connected, attempts=20,
              on_retry=lambda exc, delay: self.log("rpc-retry", "warning", error=str(exc), delay=delay))
        hw, note = detect_hardware(self.config.limits.threads, self.config.hardware.gpu_count)
        self.ctx.hardware = hw
        if note:
            self.log("hardware-note", "warning", note=note)
        self.log("hardware", gpu_model=hw.gpu_model, gpu_count=hw.gpu_count,
                 memory_mb=hw.gpu_memory_mb, benchmark_mflops=hw.benchmark_score)
        register_or_update_offer(self.ctx, hw)
        if self.state.get("last_block") is None:
            self.state.put("last_block", str(self.chain.network.deploy_block - 1))
        self.jobs.recover(self.state.leases(("running",)))

    def offer(self) -> ProviderOffer:
        return registered_offer(self.ctx)

    # -- the chain watcher -----------------------------------------------------------------
    def watch(self, interval: float = 0.25) -> None:
        delay = interval
        while not self.stop_event.is_set():
            try:
                self.poll_once()
                delay = interval
            except RpcUnavailable as exc:
                delay = min(delay * 2, 10.0)
                self.log("rpc-unavailable", "warning", error=str(exc), retry_in=delay)
            except Exception as exc:  # keep the daemon alive; the error is logged
                self.log("watch-error", "error", error=f"{type(exc).__name__}: {exc}")
                delay = min(delay * 2, 10.0)
            self.stop_event.wait(delay)

    def poll_once(self) -> None:
        """Apply the chain's new events, settle ended jobs, sweep held pay, then heartbeat."""
        meters = self.ctx.metrics
        with self.ctx.lock:
            start = int(self.state.get("last_block")) + 1
            head = self.chain.block_number()
            if head >= start:
                for log in self.chain.events("Market", "OrderCreated", start, head):
                    self.bidder.on_order(log["args"])
                for log in self.chain.events("Market", "LeaseCreated", start, head,
                                             argument_filters={"provider": self.address}):
                    self.leases.on_lease(log["args"])
                for log in self.chain.events("Market", "LeaseClosed", start, head):
                    self.leases.on_lease_closed(log["args"]["lease_id"])
                for log in self.chain.events("HardwareReports", "HardwareQuorumReached", start,
                                             head, argument_filters={"provider": self.address}):
                    self.hardware_challenges.on_quorum(log["args"])   # dispute it
                self.state.put("last_block", str(head))
                meters.block.set(head)
                self.standing.check()
            self.leases.advance_jobs()
            self.payouts.sweep()
            meters.active.set(len(self.state.leases(ACTIVE_STATUSES)))
        self.heartbeat()

    def heartbeat(self) -> int | None:
        return self.heartbeats.beat()

    def check_standing(self) -> tuple[bool, int]:
        return self.standing.check()

    def withdraw(self, lease_id: int) -> int:
        return self.payouts.withdraw(lease_id)

    # -- requests from tenants (api.py) ----------------------------------------------------
    def bid_for(self, order_id: int) -> BidMessage:
        return self.bidder.bid_for(order_id)

    def accept_manifest(self, signed: SignedManifest) -> dict:
        return self.manifests.accept(signed)

    def signed_manifest(self, lease_id: int) -> SignedManifest:
        return self.manifests.signed_manifest(lease_id)

    def accept_blob(self, lease_id: int, sha256: str, body: bytes) -> dict:
        return self.manifests.accept_blob(lease_id, sha256, body)

    def accept_round(self, lease_id: int, round_index: int, params: bytes, nonce: int,
                     expiry: int, signature: str) -> dict:
        return self.rounds.accept(lease_id, round_index, params, nonce, expiry, signature)

    def round_result(self, lease_id: int, round_index: int) -> RoundResult | None:
        return self.rounds.result(lease_id, round_index)

    def round_checkpoint(self, lease_id: int, round_index: int, index: int) -> Path:
        return self.rounds.checkpoint(lease_id, round_index, index)

    def round_payload(self, lease_id: int, round_index: int) -> Path:
        return self.rounds.payload(lease_id, round_index)

    def lease_status(self, lease_id: int) -> LeaseStatus:
        return self.leases.status(lease_id)

    def lease_logs(self, lease_id: int, since: int = 0) -> list[dict]:
        return self.leases.logs(lease_id, since)

    def lease_artifacts(self, lease_id: int) -> dict:
        return self.leases.artifacts(lease_id)

    def artifact_path(self, sha256: str) -> Path:
        return self.leases.artifact_path(sha256)

    # -- requests from validators (api.py) -------------------------------------------------
    def answer_probe(self, request: ProbeRequest) -> ProbeReceipt:
        return answer_probe(self.ctx, request)

    def answer_hardware_challenge(self, request: hc.HardwareChallengeRequest
                                  ) -> hc.HardwareChallengeAnswer:
        return self.hardware_challenges.answer(request)

    def health(self) -> dict:
        return {"status": "ok", "provider": self.address,
                "chain_id": self.chain.network.chain_id,
                "last_block": int(self.state.get("last_block") or 0),
                "active_leases": len(self.state.leases(ACTIVE_STATUSES)),
                "hardware": self.hardware.__dict__ if self.hardware else None}

    def shutdown(self) -> None:
        self.stop_event.set()
        self.jobs.stop_all()
