"""The provider node's logic: register, watch the chain, bid, accept manifests, run and settle leases.

HTTP handlers (api.py) and the chain watcher thread both call into one ProviderNode; its durable
state lives in SQLite (state.py), so a restarted node picks up every lease where it was.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from pathlib import Path

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge
from web3 import Web3

from tessera.chain.accounts import resolve_account
from tessera.chain.client import Chain, ChainError, RpcUnavailable, retry
from tessera.chain.devnet import Devnet
from tessera.chain.market import Market, tx_hash
from tessera.chain.network import load_network
from tessera.chain.verification import Verification
from tessera.compute.diloco_worker import checkpoint_path
from tessera.files import write_atomic
from tessera.logs import EventLog
from tessera.protocol import commitment as cm
from tessera.protocol import hardware_challenge as hc
from tessera.protocol import messages
from tessera.protocol.matching import OrderRequirements, ProviderOffer
from tessera.protocol.probes import ProbeReceipt, ProbeRequest, receipt_typed_data
from tessera.protocol.wire import (
    BidMessage,
    CheckpointHashes,
    LeaseStatus,
    RoundResult,
    SignedManifest,
)
from tessera.provider.config import ProviderConfig
from tessera.provider.hardware import Hardware, detect_hardware
from tessera.provider.pricing import decide_bid
from tessera.provider.runner import JobSupervisor
from tessera.provider.state import ACTIVE_STATUSES, ProviderState


def _listing(offer: ProviderOffer) -> tuple:
    """The parts of an offer that matter to tenants (the benchmark varies run to run)."""
    return (offer.gpu_model, offer.gpu_count, offer.gpu_memory_mb, offer.endpoint,
            offer.price_floor)


ROUND_REQUEST_SIGNED = "tenant_request.json"
ROUND_COMMITMENT = "commitment.json"       # the provider's signed Commitment for the round
TESTING_FILE = "testing.json"              # TEST ONLY: the cheat a test asked for (config.testing)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class Refused(Exception):
    """A request the node will not serve; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ProviderNode:
    def __init__(self, config: ProviderConfig, log: EventLog | None = None):
        self.config = config
        self.log = log or EventLog("provider")
        self.account = resolve_account(config.provider.account)
        network_file = config.provider.network or Devnet.default().network_file
        self.chain = Chain(load_network(network_file), self.account)
        self.market = Market(self.chain)
        self.state_dir = Path(config.provider.state_dir)
        self.state = ProviderState(self.state_dir / "provider.db")
        self.jobs = JobSupervisor(self.state_dir, threads=config.limits.threads,
                                  memory_limit_mb=config.limits.memory_limit_mb,
                                  timeout_s=config.limits.max_job_seconds)
        self.hardware: Hardware | None = None
        self.stop_event = threading.Event()
        self._lock = threading.RLock()
        # Verified leases' pay is held until their rounds are final, also after they close:
        # swept every config.payouts.sweep_every until released and withdrawn (docs/verification.md).
        self._next_sweep = 0.0
        self._settled: set[int] = set()
        self.metrics = CollectorRegistry()
        self.m_bids = Counter("tessera_provider_bids", "bids signed", registry=self.metrics)
        self.m_leases = Counter("tessera_provider_leases", "leases won", registry=self.metrics)
        self.m_refused = Counter("tessera_provider_requests_refused", "requests refused",
                                 ["reason"], registry=self.metrics)
        self.m_jobs = Counter("tessera_provider_jobs_finished", "jobs finished", ["outcome"],
                              registry=self.metrics)
        self.m_withdrawn = Counter("tessera_provider_withdrawn_base_units",
                                   "payment token withdrawn (base units)", registry=self.metrics)
        self.m_block = Gauge("tessera_provider_last_block", "last block processed",
                             registry=self.metrics)
        self.m_active = Gauge("tessera_provider_active_leases", "active leases",
                              registry=self.metrics)
        self.m_heartbeats = Counter("tessera_provider_heartbeats", "uptime heartbeats sent",
                                    ["outcome"], registry=self.metrics)
        self.m_heartbeat_epoch = Gauge("tessera_provider_heartbeat_epoch",
                                       "last uptime epoch with a heartbeat", registry=self.metrics)
        self.m_probes = Counter("tessera_provider_probes", "validator probes", ["outcome"],
                                registry=self.metrics)
        self.m_jailed_until = Gauge("tessera_provider_jailed_until",
                                    "end of the provider's jail (unix s; 0 = not jailed)",
                                    registry=self.metrics)
        self.m_registry_active = Gauge("tessera_provider_registry_active",
                                       "1 while the registry lets tenants lease this provider",
                                       registry=self.metrics)
        self.m_hw_challenges = Counter("tessera_provider_hardware_challenges",
                                       "validator hardware challenges", ["outcome"],
                                       registry=self.metrics)
        self._hw_lock = threading.Lock()
        self._hw_seen: dict[str, int] = {}  # challenge seeds answered -> their deadline (ms)
        self._standing: tuple[bool, int] | None = None  # (registry is_active, jailed until)
        self._verification: Verification | None = None
        if config.testing.cheat:
            self.log("testing-cheat", "warning", cheat=config.testing.cheat,
                     note="TEST ONLY: this node's DiLoCo workers cheat; it will be slashed")
        self._beat_epoch: int | None = None   # last epoch known to hold our heartbeat
        self._beat_retry_at = 0.0             # monotonic time before which a refused beat waits

    @property
    def address(self) -> str:
        return self.account.address

    # -- start-up ------------------------------------------------------------------------
    def prepare(self) -> None:
        """Connect (retrying), detect hardware, and register or refresh the on-chain offer."""
        retry(self.chain.check_connected, attempts=20,
              on_retry=lambda exc, delay: self.log("rpc-retry", "warning", error=str(exc), delay=delay))
        self.hardware, note = detect_hardware(self.config.limits.threads,
                                              self.config.hardware.gpu_count)
        if note:
            self.log("hardware-note", "warning", note=note)
        hw, cfg = self.hardware, self.config
        self.log("hardware", gpu_model=hw.gpu_model, gpu_count=hw.gpu_count,
                 memory_mb=hw.gpu_memory_mb, benchmark_mflops=hw.benchmark_score)
        wanted = ProviderOffer(self.address, True, hw.gpu_model, hw.gpu_count, hw.gpu_memory_mb,
                               hw.benchmark_score, cfg.provider.endpoint,
                               cfg.pricing.price_per_gpu_hour)
        offer_args = (wanted.gpu_model, wanted.gpu_count, wanted.gpu_memory_mb,
                      wanted.benchmark_score, wanted.endpoint, wanted.price_floor)
        current = self.market.provider_offer(self.address)
        if current is None:
            receipt = self.market.register_provider(cfg.provider.stake_base_units, *offer_args)
            self.log("registered", tx=tx_hash(receipt), stake=cfg.provider.stake_base_units)
        elif _listing(current) != _listing(wanted):
            receipt = self.market.update_offer(*offer_args)
            self.log("offer-updated", tx=tx_hash(receipt))
        if self.state.get("last_block") is None:
            self.state.put("last_block", str(self.chain.network.deploy_block - 1))
        self.jobs.recover(self.state.leases(("running",)))

    def offer(self) -> ProviderOffer:
        offer = self.market.provider_offer(self.address)
        if offer is None:
            raise ChainError("this provider is not registered")
        return offer

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
        with self._lock:
            start = int(self.state.get("last_block")) + 1
            head = self.chain.block_number()
            if head >= start:
                for log in self.chain.events("Market", "OrderCreated", start, head):
                    self._on_order(log["args"])
                for log in self.chain.events("Market", "LeaseCreated", start, head,
                                             argument_filters={"provider": self.address}):
                    self._on_lease(log["args"])
                for log in self.chain.events("Market", "LeaseClosed", start, head):
                    self._on_lease_closed(log["args"]["lease_id"])
                self.state.put("last_block", str(head))
                self.m_block.set(head)
                self.check_standing()
            self._advance_jobs()
            self._collect_verified_pay()
            self.m_active.set(len(self.state.leases(ACTIVE_STATUSES)))
        self.heartbeat()

    def heartbeat(self) -> int | None:
        """Prove liveness for the current uptime epoch once (docs/uptime.md); the epoch or None.

        A refused heartbeat (epoch turned, hash too old, not registered) is logged and retried
        after a pause; it never stops the watcher. RpcUnavailable propagates to `watch`."""
        if time.monotonic() < self._beat_retry_at:
            return None
        uptime = self.chain.uptime
        epoch = self.chain.call(uptime.functions.current_epoch())
        if epoch == self._beat_epoch:
            return None
        if self.chain.call(uptime.functions.beats(self.address, epoch)):
            self._beat_epoch = epoch
            return None
        try:
            latest = self.chain.rpc(lambda: self.chain.w3.eth.get_block("latest"), what="get block")
            # Name the latest block's parent: some nodes (anvil) estimate gas in the latest
            # block's own context, where BLOCKHASH(latest) is not yet known.
            number, block_hash = latest["number"] - 1, bytes(latest["parentHash"])
            receipt = self.chain.send(uptime.functions.heartbeat(epoch, number, block_hash))
        except RpcUnavailable:
            raise
        except ChainError as exc:
            self.m_heartbeats.labels("refused").inc()
            self._beat_retry_at = time.monotonic() + 2.0
            self.log("heartbeat-refused", "warning", epoch=epoch, error=str(exc))
            return None
        self._beat_epoch = epoch
        self.m_heartbeats.labels("sent").inc()
        self.m_heartbeat_epoch.set(epoch)
        self.log("heartbeat", epoch=epoch, block=number, tx=tx_hash(receipt),
                 gas=receipt["gasUsed"])
        return epoch

    def check_standing(self) -> tuple[bool, int]:
        """(registry is_active, jailed until or 0): logged and exported when it changes.

        A jail comes from `Uptime.report_outage` (or the owner); stake below the minimum (for
        example after downtime slashes) also makes the provider inactive. Either way tenants
        cannot lease it, so the node does not bid (docs/uptime.md)."""
        record = self.market.provider_record(self.address)
        now = self.chain.block_timestamp()
        until = record["jailed_until"] if record["jailed_until"] > now else 0
        active = bool(self.chain.call(self.chain.registry.functions.is_active(self.address)))
        self.m_jailed_until.set(until)
        self.m_registry_active.set(1 if active else 0)
        standing, before = (active, until), self._standing
        self._standing = standing
        if standing != (before if before is not None else (True, 0)):
            if until:
                self.log("jailed", "warning", until=until, seconds_left=until - now)
            elif not active:
                self.log("inactive", "warning", stake=record["stake"],
                         reason="stake below the registry's minimum")
            else:
                self.log("active-again")
        return standing

    def _on_order(self, args) -> None:
        order_id = args["order_id"]
        if self.state.bid(order_id) is not None:
            return
        _, jailed_until = self.check_standing()
        if jailed_until:
            self.log("no-bid", order_id=order_id, reason=f"jailed until {jailed_until}")
            return
        order = self.market.order(order_id)
        if not order.open:
            return
        requirements = OrderRequirements(order_id, order.gpu_model, order.min_gpus,
                                         order.min_gpu_memory_mb, order.max_price_per_gpu_hour)
        decision = decide_bid(requirements, self.offer(), len(self.state.leases(ACTIVE_STATUSES)),
                              self.config.pricing.max_concurrent_leases)
        if decision.price_per_gpu_hour is None:
            self.log("no-bid", order_id=order_id, reason=decision.reason)
            return
        nonce = secrets.randbits(64)
        expiry = int(time.time()) + self.config.pricing.bid_validity
        typed = messages.bid_typed_data(self.chain.network.chain_id, self.market.market.address,
                                        order_id, self.address, decision.price_per_gpu_hour,
                                        nonce, expiry)
        bid = BidMessage(order_id=order_id, provider=self.address,
                         price_per_gpu_hour=decision.price_per_gpu_hour, nonce=nonce,
                         expiry=expiry, signature=messages.sign(self.account, typed))
        self.state.save_bid(order_id, bid.model_dump())
        self.m_bids.inc()
        self.log("bid", order_id=order_id, price_per_gpu_hour=bid.price_per_gpu_hour,
                 reason=decision.reason)

    def _on_lease(self, args) -> None:
        if self.state.add_lease(args["lease_id"], args["order_id"], args["tenant"]):
            self.m_leases.inc()
            self.log("lease-won", lease_id=args["lease_id"], order_id=args["order_id"],
                     tenant=args["tenant"])

    def _on_lease_closed(self, lease_id: int) -> None:
        record = self.state.lease(lease_id)
        if record is None or record.status == "closed":
            return
        if record.status == "running":
            self.jobs.stop(lease_id)
        self.state.update_lease(lease_id, status="closed",
                                detail=f"closed on chain while {record.status}")
        self.log("lease-closed", lease_id=lease_id, was=record.status)

    def _advance_jobs(self) -> None:
        for record in self.state.leases(("running",)):
            outcome = self.jobs.outcome(record.lease_id)
            if outcome is None:
                continue
            lease_open = self.market.lease(record.lease_id).is_open
            if outcome.succeeded:
                detail = "finished after the lease closed; result not committed"
                if lease_open:
                    receipt = self.market.commit_result(record.lease_id,
                                                        bytes.fromhex(outcome.result_hash))
                    detail = f"result committed in {tx_hash(receipt)}"
                self.state.update_lease(record.lease_id, status="succeeded",
                                        result_hash=outcome.result_hash, detail=detail)
                self.m_jobs.labels("succeeded").inc()
                self.log("job-succeeded", lease_id=record.lease_id, result_hash=outcome.result_hash)
                if lease_open:
                    self.withdraw(record.lease_id)
            else:
                self.state.update_lease(record.lease_id, status="failed", detail=outcome.detail)
                self.m_jobs.labels("failed").inc()
                self.log("job-failed", "error", lease_id=record.lease_id, detail=outcome.detail)
                if lease_open:  # stop charging for work that will not come: the tenant is refunded
                    receipt = self.market.close_lease(record.lease_id)
                    self.log("lease-closed-after-failure", lease_id=record.lease_id,
                             tx=tx_hash(receipt))

    def _collect_verified_pay(self) -> None:
        """Release and withdraw verified leases' pay as their rounds become final; a lease is
        settled once closed, released up to its close and withdrawn."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + self.config.payouts.sweep_every
        for record in self.state.leases():
            if record.lease_id in self._settled:
                continue
            lease = self.market.lease(record.lease_id)
            if not self.market.is_verified(lease.order_id):
                self._settled.add(record.lease_id)
                continue
            self.withdraw(record.lease_id)
            released_to = max(self.market.releases(record.lease_id).until, lease.start)
            if not lease.is_open and released_to >= lease.closed_at and \
                    self.market.withdrawable(record.lease_id) == 0:
                self._settled.add(record.lease_id)

    def withdraw(self, lease_id: int) -> int:
        """Take the lease's pay. A verified lease's pay is released first (its final rounds;
        it stays in escrow until then, also after the lease closed)."""
        lease = self.market.lease(lease_id)
        if self.market.is_verified(lease.order_id):
            released = self.market.release_ready(lease_id)
            if released is not None:
                self.log("released", lease_id=lease_id, amount=released.amount,
                         withheld=released.withheld, to_round=released.to_round, tx=released.tx)
        elif not lease.is_open:
            return 0
        if self.market.withdrawable(lease_id) == 0:
            return 0
        receipt = self.market.withdraw(lease_id)
        amount = self.market.withdrawn_event(receipt).get("amount_to_provider", 0)
        self.m_withdrawn.inc(amount)
        self.log("withdrew", lease_id=lease_id, amount=amount,
                 tx=tx_hash(receipt))
        return amount

    # -- requests from tenants -------------------------------------------------------------
    def bid_for(self, order_id: int) -> BidMessage:
        body = self.state.bid(order_id)
        if body is None:
            raise Refused(404, f"no bid for order {order_id} (not seen yet, or it does not fit)")
        return BidMessage.model_validate(body)

    def _my_open_lease(self, lease_id: int):
        try:
            lease = self.market.lease(lease_id)
        except ChainError as exc:
            raise Refused(404, str(exc)) from None
        if lease.provider.lower() != self.address.lower():
            raise Refused(404, f"lease {lease_id} belongs to another provider")
        if not lease.is_open:
            raise Refused(409, f"lease {lease_id} is closed")
        return lease

    def accept_manifest(self, signed: SignedManifest) -> dict:
        manifest = signed.manifest
        lease_id = manifest.lease_id
        with self._lock:
            lease = self._my_open_lease(lease_id)
            typed = messages.manifest_typed_data(
                self.chain.network.chain_id, self.market.market.address, lease_id,
                manifest.digest(), signed.nonce, signed.expiry)
            try:
                signer = messages.recover(typed, signed.signature)
            except Exception:
                signer = None
            if signer is None or signer.lower() != lease.tenant.lower():
                self.m_refused.labels("manifest-signer").inc()
                self.log("manifest-refused", "warning", lease_id=lease_id, signer=signer,
                         tenant=lease.tenant)
                raise Refused(403, f"manifest for lease {lease_id} is not signed by its tenant "
                                   f"{lease.tenant}")
            if signed.expiry < time.time():
                raise Refused(400, "manifest signature has expired")
            if self.state.lease(lease_id) is None:  # the watcher has not seen the event yet
                self.state.add_lease(lease_id, lease.order_id, lease.tenant)
            record = self.state.lease(lease_id)
            if record.manifest is not None:
                if record.manifest == manifest.model_dump(mode="json"):
                    return {"lease_id": lease_id, "status": record.status,
                            "needs": self._missing_inputs(manifest.dataset_sha256)}
                raise Refused(409, f"lease {lease_id} already has a different manifest")
            kept = self._signed_manifest_path(lease_id)   # served to validators on a challenge
            kept.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(kept, signed.model_dump_json())
            self.state.update_lease(lease_id, manifest=manifest.model_dump(mode="json"),
                                    manifest_nonce=str(signed.nonce), status="awaiting-inputs")
            self.log("manifest-accepted", lease_id=lease_id, dataset=manifest.dataset_sha256)
            self._start_if_ready(lease_id)
            record = self.state.lease(lease_id)
            return {"lease_id": lease_id, "status": record.status,
                    "needs": self._missing_inputs(manifest.dataset_sha256)}

    def _signed_manifest_path(self, lease_id: int) -> Path:
        return self.state_dir / "manifests" / f"{lease_id}.json"

    def signed_manifest(self, lease_id: int) -> SignedManifest:
        """The tenant-signed manifest this node accepted for the lease. Public: it is what the
        lease's work must be replayed against, and a second, different one signed by the same
        tenant proves the tenant equivocated (validators then abstain on its challenge)."""
        path = self._signed_manifest_path(lease_id)
        if not path.is_file():
            raise Refused(404, f"no manifest accepted for lease {lease_id}")
        return SignedManifest.model_validate_json(path.read_text())

    def _blob_path(self, sha256: str) -> Path:
        return self.state_dir / "blobs" / sha256

    def _missing_inputs(self, sha256: str) -> list[str]:
        return [] if self._blob_path(sha256).exists() else [sha256]

    def accept_blob(self, lease_id: int, sha256: str, body: bytes) -> dict:
        with self._lock:
            self._my_open_lease(lease_id)
            record = self.state.lease(lease_id)
            if record is None or record.manifest is None:
                raise Refused(409, f"send the signed manifest for lease {lease_id} first")
            if record.manifest["dataset_sha256"] != sha256:
                raise Refused(403, f"blob {sha256} is not named by lease {lease_id}'s manifest")
            if hashlib.sha256(body).hexdigest() != sha256:
                raise Refused(400, "blob content does not hash to its name")
            path = self._blob_path(sha256)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, body)
            self._start_if_ready(lease_id)
            return {"lease_id": lease_id, "status": self.state.lease(lease_id).status}

    def _start_if_ready(self, lease_id: int) -> None:
        record = self.state.lease(lease_id)
        if record.status != "awaiting-inputs":
            return
        dataset = self._blob_path(record.manifest["dataset_sha256"])
        if not dataset.exists():
            return
        if self.config.testing.cheat:  # TEST ONLY, see ProviderConfig.testing
            folder = self.jobs.folder(lease_id)
            folder.mkdir(parents=True, exist_ok=True)
            testing = {"cheat": self.config.testing.cheat}
            if testing["cheat"] == "copy-worker":
                testing["siblings"] = self._sibling_workers(lease_id)
            (folder / TESTING_FILE).write_text(json.dumps(testing))
        self.jobs.start(lease_id, record.manifest, dataset)
        self.state.update_lease(lease_id, status="running", detail="")
        self.log("job-started", lease_id=lease_id)

    def _sibling_workers(self, lease_id: int) -> list[dict]:
        """TEST ONLY (the copy-worker cheat): the other leases of this lease's Market order and
        their providers' endpoints, all public on chain, for the worker to copy from."""
        order_id = self.market.lease(lease_id).order_id
        created = self.chain.events("Market", "LeaseCreated", self.chain.network.deploy_block)
        siblings = []
        for log in created:
            args = log["args"]
            if args["order_id"] != order_id or args["lease_id"] == lease_id:
                continue
            offer = self.market.provider_offer(args["provider"])
            if offer is not None:
                siblings.append({"lease_id": args["lease_id"], "endpoint": offer.endpoint})
        self.log("testing-cheat-siblings", "warning", lease_id=lease_id, siblings=siblings)
        return siblings

    # -- DiLoCo rounds -----------------------------------------------------------------------
    def accept_round(self, lease_id: int, round_index: int, params: bytes, nonce: int,
                     expiry: int, signature: str) -> dict:
        """Queue a round whose global parameters the lease's tenant signed."""
        with self._lock:
            lease = self._my_open_lease(lease_id)
            record = self.state.lease(lease_id)
            if record is None or record.manifest is None or \
                    record.manifest["workload"]["kind"] != "diloco-worker":
                raise Refused(409, f"lease {lease_id} is not running a DiLoCo worker")
            if record.status != "running":
                raise Refused(409, f"lease {lease_id}'s worker is {record.status}: {record.detail}")
            params_sha256 = hashlib.sha256(params).hexdigest()
            typed = messages.round_typed_data(self.chain.network.chain_id,
                                              self.market.market.address, lease_id, round_index,
                                              bytes.fromhex(params_sha256), nonce, expiry)
            try:
                signer = messages.recover(typed, signature)
            except Exception:
                signer = None
            if signer is None or signer.lower() != lease.tenant.lower():
                self.m_refused.labels("round-signer").inc()
                raise Refused(403, f"round {round_index} of lease {lease_id} is not signed by its "
                                   f"tenant {lease.tenant}")
            if expiry < time.time():
                raise Refused(400, "round signature has expired")
            folder = self.jobs.round_folder(lease_id, round_index)
            queued = _read_json(folder / ROUND_REQUEST_SIGNED) or {}
            if not self.jobs.submit_round(lease_id, round_index, params, params_sha256):
                # The tenant re-sent the round with other parameters (its coordinator restarted):
                # the newer signed request wins and the worker runs the round again from it.
                if expiry <= queued.get("expiry", 0):
                    raise Refused(409, f"round {round_index} of lease {lease_id} already runs from "
                                       "other parameters signed later")
                (folder / "request.json").unlink(missing_ok=True)
                self.jobs.submit_round(lease_id, round_index, params, params_sha256)
                self.log("round-restarted", lease_id=lease_id, round=round_index,
                         params_sha256=params_sha256)
            if expiry > queued.get("expiry", 0):  # evidence of what the tenant asked for
                write_atomic(folder / ROUND_REQUEST_SIGNED,
                             json.dumps({"params_sha256": params_sha256, "nonce": nonce,
                                         "expiry": expiry, "signature": signature}))
            return {"lease_id": lease_id, "round": round_index, "params_sha256": params_sha256}

    def _current_round_result(self, lease_id: int, round_index: int) -> dict | None:
        """The worker's answer for the parameters now queued for the round (None while it works,
        or while an answer to parameters the tenant has since replaced is all there is)."""
        result = self.jobs.round_result(lease_id, round_index)
        request = _read_json(self.jobs.round_folder(lease_id, round_index) / "request.json")
        if result is None or request is None or \
                result.get("params_sha256") != request.get("params_sha256"):
            return None
        return result

    def round_result(self, lease_id: int, round_index: int) -> RoundResult | None:
        """The signed answer for a round, or None while the worker is still on it."""
        if self.state.lease(lease_id) is None:
            raise Refused(404, f"lease {lease_id} is unknown to this provider")
        result = self._current_round_result(lease_id, round_index)
        if result is None:
            return None
        if "error" in result:
            raise Refused(422, result["error"])
        typed = messages.round_result_typed_data(
            self.chain.network.chain_id, self.market.market.address, lease_id, round_index,
            bytes.fromhex(result["params_sha256"]), bytes.fromhex(result["sha256"]))
        answer = RoundResult(lease_id=lease_id, round=round_index,
                             params_sha256=result["params_sha256"], sha256=result["sha256"],
                             size=result["size"], inner_loss=result["inner_loss"],
                             compute_s=result["compute_s"],
                             signature=messages.sign(self.account, typed))
        if "checkpoint_root" in result:  # verification on: the signed commitment goes with it
            answer.commitment = self._round_commitment(lease_id, round_index, result)
            answer.checkpoints = [CheckpointHashes(**c) for c in result["checkpoints"]]
            answer.threads = result["threads"]
        return answer

    def _round_commitment(self, lease_id: int, round_index: int,
                          result: dict) -> cm.SignedCommitment:
        """The EIP-712 Commitment to the worker's answer (docs/verification.md), signed once and
        kept so that its expiry does not move; signed again only if the answer changed (a round
        re-run from other parameters)."""
        path = self.jobs.round_folder(lease_id, round_index) / ROUND_COMMITMENT
        result_hash, root = "0x" + result["sha256"], "0x" + result["checkpoint_root"]
        with self._lock:
            saved = _read_json(path)
            if saved is not None:
                signed = cm.SignedCommitment.model_validate(saved)
                if (signed.commitment.result_hash, signed.commitment.checkpoint_root) == \
                        (result_hash, root):
                    return signed
            if self._verification is None:
                self._verification = Verification(self.chain)
            lease = self.market.lease(lease_id)
            commitment = cm.Commitment(
                job=lease.order_id, round=round_index, lease_id=lease_id, provider=self.address,
                result_hash=result_hash, checkpoint_root=root,
                checkpoints=len(result["checkpoints"]),
                expiry=self.chain.block_timestamp() + cm.VALIDITY_S)
            signed = self._verification.sign_commitment(self.account, commitment)
            write_atomic(path, signed.model_dump_json())
            self.log("round-committed", lease_id=lease_id, round=round_index, job=lease.order_id,
                     checkpoint_root=root, checkpoints=commitment.checkpoints)
            return signed

    def round_checkpoint(self, lease_id: int, round_index: int, index: int) -> Path:
        """The full state (parameters + AdamW) behind checkpoint `index` of a committed round,
        served to whoever verifies it (the tenant, validators) while it is kept; the verifier
        checks it against the signed commitment, so it needs no authentication."""
        if self.state.lease(lease_id) is None:
            raise Refused(404, f"lease {lease_id} is unknown to this provider")
        folder = self.jobs.round_folder(lease_id, round_index)
        if not (folder / ROUND_COMMITMENT).exists():
            raise Refused(404, f"round {round_index} of lease {lease_id} has no commitment")
        path = checkpoint_path(folder, index)
        if index < 0 or not path.is_file():
            raise Refused(404, f"checkpoint {index} of round {round_index} of lease {lease_id} "
                               "is not kept (no such checkpoint, or past its retention)")
        return path

    def round_payload(self, lease_id: int, round_index: int) -> Path:
        if self._current_round_result(lease_id, round_index) is None:
            raise Refused(404, f"round {round_index} of lease {lease_id} has no result yet")
        return self.jobs.round_payload(lease_id, round_index)

    def lease_status(self, lease_id: int) -> LeaseStatus:
        record = self.state.lease(lease_id)
        if record is None:
            raise Refused(404, f"lease {lease_id} is unknown to this provider")
        status = LeaseStatus(lease_id=lease_id, status=record.status, detail=record.detail,
                             result_hash=record.result_hash)
        progress = self.jobs.progress(lease_id)
        last = next((p for p in reversed(progress) if "step" in p), None)
        if last:
            status.step = last.get("step", 0)
            status.steps = last.get("steps", 0)
            status.train_loss = last.get("train_loss")
            status.val_loss = last.get("val_loss")
            status.tokens_per_s = last.get("tokens_per_s")
        return status

    def lease_logs(self, lease_id: int, since: int = 0) -> list[dict]:
        if self.state.lease(lease_id) is None:
            raise Refused(404, f"lease {lease_id} is unknown to this provider")
        return self.jobs.progress(lease_id)[since:]

    def lease_artifacts(self, lease_id: int) -> dict:
        record = self.state.lease(lease_id)
        if record is None:
            raise Refused(404, f"lease {lease_id} is unknown to this provider")
        if record.result_hash is None:
            raise Refused(409, f"lease {lease_id} has no results (status {record.status})")
        return {"lease_id": lease_id, "result_hash": record.result_hash,
                "artifacts": self.jobs.artifacts(lease_id)}

    def artifact_path(self, sha256: str) -> Path:
        path = self.jobs.find_artifact(sha256)
        if path is None:
            raise Refused(404, f"no artifact with sha256 {sha256}")
        return path

    # -- liveness probes from validators (docs/validators.md) -------------------------------
    def answer_probe(self, request: ProbeRequest) -> ProbeReceipt:
        """Sign a ProbeReceipt for a registered validator's probe of the current epoch whose
        deadline (unix seconds) has not passed; refuse anything else without signing."""
        probes = self.chain.probes
        if request.deadline <= time.time():
            self.m_probes.labels("late").inc()
            raise Refused(400, f"probe deadline {request.deadline} has passed")
        validator = Web3.to_checksum_address(request.validator)
        try:
            epoch = self.chain.call(probes.functions.current_epoch())
            is_validator = self.chain.call(self.chain.validators.functions.is_validator(validator))
        except ChainError as exc:
            raise Refused(503, f"cannot check the probe against the chain: {exc}") from None
        if request.epoch != epoch:
            self.m_probes.labels("wrong-epoch").inc()
            raise Refused(409, f"probe names epoch {request.epoch}; the current epoch is {epoch}")
        if not is_validator:
            self.m_probes.labels("not-validator").inc()
            raise Refused(403, f"{validator} is not a registered validator")
        typed = receipt_typed_data(self.chain.network.chain_id, probes.address, self.address,
                                   validator, request.epoch, request.challenge, request.deadline)
        self.m_probes.labels("answered").inc()
        return ProbeReceipt(provider=self.address, validator=validator, epoch=request.epoch,
                            challenge=request.challenge, deadline=request.deadline,
                            signature=messages.sign(self.account, typed))

    # -- hardware challenges from validators (docs/hardware.md) -----------------------------
    def answer_hardware_challenge(self, request: hc.HardwareChallengeRequest
                                  ) -> hc.HardwareChallengeAnswer:
        """Compute a registered validator's matrix product on this node's device and sign the
        row fingerprints, unless the deadline (unix ms) passes first: then refuse, unsigned.
        Only challenges signed by a registered validator, naming this provider, each seed once;
        one at a time (a second is refused with 429), with the benchmark's thread count; none
        while a lease's job runs (423 naming the lease, which the validator checks on chain)."""
        if request.deadline_ms <= time.time() * 1000:
            self.m_hw_challenges.labels("late").inc()
            raise Refused(400, f"challenge deadline {request.deadline_ms} ms has passed")
        if request.provider.lower() != self.address.lower():
            raise Refused(400, f"challenge names provider {request.provider}, not {self.address}")
        validator = Web3.to_checksum_address(request.validator)
        probes = self.chain.probes.address
        signer = hc.request_signer(request, self.chain.network.chain_id, probes)
        if signer is None or signer.lower() != validator.lower():
            self.m_hw_challenges.labels("bad-signature").inc()
            raise Refused(403, f"challenge is signed by {signer}, not by {validator}")
        try:
            is_validator = self.chain.call(self.chain.validators.functions.is_validator(validator))
        except ChainError as exc:
            raise Refused(503, f"cannot check the challenge against the chain: {exc}") from None
        if not is_validator:
            self.m_hw_challenges.labels("not-validator").inc()
            raise Refused(403, f"{validator} is not a registered validator")
        if 3 * 4 * request.size**2 > self.hardware.gpu_memory_mb * 2**20 // 2:
            raise Refused(413, f"size {request.size} needs more than half this device's memory")
        running = self.state.leases(("running",))
        if running:   # the device is the tenant's now: a timed product would be late, and slow it
            self.m_hw_challenges.labels("leased").inc()
            raise Refused(423, f"serving lease {running[0].lease_id}")
        if not self._hw_lock.acquire(blocking=False):
            self.m_hw_challenges.labels("busy").inc()
            raise Refused(429, "busy with another hardware challenge")
        try:
            now_ms = time.time() * 1000
            self._hw_seen = {s: d for s, d in self._hw_seen.items() if d > now_ms}
            if request.seed in self._hw_seen:
                raise Refused(409, "this challenge seed was already answered")
            self._hw_seen[request.seed] = request.deadline_ms
            return self._run_hardware_challenge(request, validator, probes)
        finally:
            self._hw_lock.release()

    def _run_hardware_challenge(self, request: hc.HardwareChallengeRequest, validator: str,
                                probes: str) -> hc.HardwareChallengeAnswer:
        device = "cuda" if self.hardware.is_gpu else "cpu"
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.limits.threads)
        start = time.perf_counter()
        try:
            values = hc.compute_fingerprints(
                request.seed, request.size, device,
                give_up_at=lambda: time.time() * 1000 > request.deadline_ms)
        except hc.DeadlinePassed as exc:
            self.m_hw_challenges.labels("gave-up").inc()
            self.log("hardware-challenge-late", "warning", size=request.size, detail=str(exc))
            raise Refused(408, f"deadline passed before the product was done ({exc})") from None
        finally:
            torch.set_num_threads(threads)
        compute_ms = round((time.perf_counter() - start) * 1000, 1)
        fingerprints = hc.pack_fingerprints(values)
        typed = hc.answer_typed_data(self.chain.network.chain_id, probes, self.address, validator,
                                     request.seed, request.size, request.deadline_ms, fingerprints)
        self.m_hw_challenges.labels("answered").inc()
        self.log("hardware-challenge", size=request.size, device=device, compute_ms=compute_ms)
        return hc.HardwareChallengeAnswer(
            provider=self.address, validator=validator, seed=request.seed, size=request.size,
            deadline_ms=request.deadline_ms, fingerprints=fingerprints, device=device,
            compute_ms=compute_ms, signature=messages.sign(self.account, typed))

    def health(self) -> dict:
        return {"status": "ok", "provider": self.address,
                "chain_id": self.chain.network.chain_id,
                "last_block": int(self.state.get("last_block") or 0),
                "active_leases": len(self.state.leases(ACTIVE_STATUSES)),
                "hardware": self.hardware.__dict__ if self.hardware else None}

    def shutdown(self) -> None:
        self.stop_event.set()
        self.jobs.stop_all()


