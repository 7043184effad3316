"""The provider node: one object that composes the parts of the provider daemon and is what the
HTTP handlers (api.py) and the chain watcher thread call into.

Each part has one job: registration.py (the offer on chain), standing.py (active or jailed),
heartbeats.py (liveness: beats to validators, on-chain heartbeat as the fallback), bidding.py
(signed bids), leases.py (the leases' lifecycle), manifests.py (signed manifests and inputs;
starts the jobs), diloco_rounds.py (DiLoCo rounds and their commitments), payouts.py (release
and withdraw pay), probes.py and hardware_challenges.py (validators' checks). They share a
NodeContext (context.py). The durable state lives in SQLite (state.py), so a restarted node
picks up every lease where it was.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from eth_utils import keccak
from web3 import Web3

from tessera.chain.accounts import resolve_account
from tessera.chain.client import Chain, retry
from tessera.chain.devnet import liveness_confirmations
from tessera.chain.events import EventReader
from tessera.chain.log_decode import EventShape
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
from tessera.provider.retention import StoppedLeaseStates
from tessera.provider.runner import JobSupervisor
from tessera.provider.standing import Standing
from tessera.provider.state import ACTIVE_STATUSES, ProviderState

__all__ = ["ProviderNode", "Refused"]

# How often the watcher reads the chain's head: one call, and one eth_getLogs more when new
# blocks may hold a watched event (their bloom says so, or more than one block is new), so at
# most 2 calls per 3 s however fast blocks come (issue 15: under 1 call a second when idle).
# Bids do not wait for it (a tenant's request judges an unseen order at once: bidding.py);
# heartbeats, closes and hardware quorums can wait seconds.
CHAIN_EVERY_S = 3.0
# With the node's websocket pushing new heads (HeadStream), a block costs no call to learn of
# and is applied within `interval`; the head is then read only when no push came for this long.
STREAM_QUIET_S = 15.0
WATCHED = (("Market", ("OrderCreated", "LeaseCreated", "LeaseClosed")),
           ("HardwareReports", ("HardwareQuorumReached",)),
           ("Uptime", ("EpochOpened", "InclusionsChallenged")),
           ("ProviderRegistry", ("ProviderRegistered", "OfferUpdated", "StakeAdded",
                                 "UnbondRequested", "StakeWithdrawn", "Slashed", "Jailed")))


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
        self.stopped_states = StoppedLeaseStates(ctx)
        self.hardware_challenges = HardwareChallenges(ctx)
        self.feed = LogFeed(self.chain, WATCHED)
        self.stream = HeadStream(self.chain.network.rpc_url, self.log)
        self.chain_every_s = CHAIN_EVERY_S
        self._next_chain_read = 0.0
        self._head_number = -1             # the newest head applied
        # Reorgs: the blocks a reorg may still change are read again (see _apply)
        self.confirmations = liveness_confirmations(self.chain.network,
                                                    config.liveness.confirmations)
        self._applied: tuple[int, bytes] | None = None   # (number, hash) of the last head applied
        self._handled: dict[tuple[bytes, int], int] = {}  # (block hash, log index) -> block

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
        """Local work (ended jobs) every `interval`; the chain as its new heads are pushed
        (HeadStream), or every `chain_every_s` without them."""
        self.stream.start(self.stop_event)
        self.heartbeats.start(self.stop_event)
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
        """Settle ended jobs, sweep held pay and stopped leases' states; on a new head
        (pushed, or read every `chain_every_s`), apply the events of the blocks since the last
        one handled, then hand the head to the liveness thread (heartbeats.py)."""
        meters = self.ctx.metrics
        head = self.stream.take()
        if head is not None and head["number"] < self._head_number:
            head = None   # pushed before a head read since: nothing new in it
        try:
            with self.ctx.lock:
                now = time.monotonic()
                if head is None and now >= self._next_chain_read:
                    head = self.feed.head()
                if head is not None:
                    quiet = STREAM_QUIET_S if self.stream.connected else self.chain_every_s
                    self._next_chain_read = now + quiet
                    self._head_number = max(self._head_number, int(head["number"]))
                    self._apply(head)
                self.leases.advance_jobs()
                self.payouts.sweep()
                meters.active.set(len(self.state.leases(ACTIVE_STATUSES)))
            self.stopped_states.sweep()     # outside the lock: it deletes files
        finally:   # an event that cannot be applied must not cost an epoch's liveness
            if head is not None:
                self.heartbeats.on_head(head)

    def _apply(self, head) -> None:
        """The events of blocks last_block+1 .. head, in chain order: new orders, this node's
        leases, closes, hardware quorums against it, epochs opened (their seed is what a beat
        signs), challenges of its inclusion in a liveness report (kept before last_block moves
        past them), and registry events naming it (its standing is then read again). One
        eth_getLogs, skipped when the only new block's bloom filter rules every watched event
        out.

        Reorgs: a reorg can put an event (a challenge to answer in time) in a block the cursor
        has passed. So, with `[liveness] confirmations` > 0, the read starts that many blocks
        before the cursor, unless the head is the one block after the last head applied, and
        its child (then nothing before it changed). A log already handled (same block hash
        and index) is not handled again, but for a challenge (its answer may be what a reorg
        took away); one that a reorg moved to another block is, and every handler takes a
        repeat: bids, leases and closes are kept by id, a seed is replaced, a challenge is
        checked on chain before it is answered (inclusion_answers.py), and a second dispute
        is refused by its gas estimate before anything is sent."""
        last, number = int(self.state.get("last_block")), int(head["number"])
        start = last + 1
        self.standing.on_head(int(head["timestamp"]))
        if number < start:
            return
        me = self.address.lower()
        child = self._applied is not None and self._applied[0] == last and \
            bytes(head.get("parentHash") or b"") == self._applied[1]
        first = start if child or not self.confirmations else \
            max(start - self.confirmations, self.chain.network.deploy_block)
        if first < start or number > start or self.feed.may_hold(head):
            for key, block, contract, event, args in self.feed.entries(first, number):
                if key in self._handled and event != "InclusionsChallenged":
                    continue   # a challenge's answer may have been reorged away: checked again
                if event == "OrderCreated":
                    self.bidder.on_order(args)
                elif event == "LeaseCreated" and args["provider"].lower() == me:
                    self.leases.on_lease(args)
                elif event == "LeaseClosed":
                    self.leases.on_lease_closed(args["lease_id"])
                elif event == "HardwareQuorumReached" and args["provider"].lower() == me:
                    self.hardware_challenges.on_quorum(args)   # dispute it
                elif event == "EpochOpened":
                    self.heartbeats.on_opened(args["epoch"], bytes(args["seed"]))   # sign a beat
                elif event == "InclusionsChallenged":   # kept if its `named` bitmap holds us
                    self.heartbeats.on_challenged(args)   # answer it with the beat's signature
                elif contract == "ProviderRegistry" and args.get("provider", "").lower() == me:
                    self.standing.mark_stale()
                if self.confirmations:   # handled (an error above leaves it to the next read)
                    self._handled[key] = block
        for key in [k for k, block in self._handled.items()
                    if block <= number - self.confirmations]:
            del self._handled[key]   # out of reach of a reorg that confirmations allow for
        self.state.put("last_block", str(number))
        self._applied = (number, bytes(head["hash"])) if head.get("hash") else None
        self.ctx.metrics.block.set(number)
        self.standing.check()

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

    def round_result(self, lease_id: int, round_index: int,
                     root: str | None = None) -> RoundResult | None:
        return self.rounds.result(lease_id, round_index, root)

    def round_checkpoint(self, lease_id: int, round_index: int, index: int,
                         root: str | None = None) -> Path:
        return self.rounds.checkpoint(lease_id, round_index, index, root)

    def round_payload(self, lease_id: int, round_index: int) -> Path | None:
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
                "liveness": self.heartbeats.status(),
                "hardware": self.hardware.__dict__ if self.hardware else None}

    def shutdown(self) -> None:
        self.stop_event.set()
        self.jobs.stop_all()
        self.heartbeats.close()


def in_bloom(bloom: bytes, item: bytes) -> bool:
    """Whether a block's 2048-bit logs bloom may hold `item` (an address or a topic): the three
    bits the yellow paper's M3:2048 sets for it are all set."""
    digest = keccak(item)
    for i in (0, 2, 4):
        bit = ((digest[i] << 8) | digest[i + 1]) & 2047
        if not bloom[255 - bit // 8] & (1 << (bit % 8)):
            return False
    return True


class LogFeed:
    """The watcher's view of the chain at a few calls a minute: the head block (number, time,
    parent hash and logs bloom in one call), and the logs of the watched events over a block
    range in one eth_getLogs (all contracts and events together, 5,000 blocks a query),
    decoded with chain/log_decode.py's lenient codec (a junk string in an order cannot stop it)."""

    CHUNK = 5_000

    def __init__(self, chain: Chain, watched: tuple[tuple[str, tuple[str, ...]], ...]):
        self.chain = chain
        reader = EventReader(chain, contracts=tuple(name for name, _ in watched))
        self.events: dict[tuple[str, bytes], tuple[str, EventShape]] = {}
        for name, events in watched:
            address = Web3.to_checksum_address(chain.contract(name).address)
            for event in events:
                topic = reader.topics[(name, event)]
                self.events[(address.lower(), topic)] = reader.by_topic[(address.lower(), topic)]
        self.addresses = sorted({Web3.to_checksum_address(a) for a, _ in self.events})
        self.topics = sorted({"0x" + t.hex() for _, t in self.events})

    def head(self):
        chain = self.chain
        return chain.rpc(lambda: chain.w3.eth.get_block("latest"), what="get block")

    def may_hold(self, block) -> bool:
        """Whether `block`'s bloom filter leaves room for a watched event in it."""
        bloom = bytes(block["logsBloom"])
        return any(in_bloom(bloom, bytes.fromhex(address[2:])) and in_bloom(bloom, topic)
                   for address, topic in self.events)

    def logs(self, start: int, stop: int) -> Iterator[tuple[str, str, dict]]:
        """(contract, event, args) of every watched event in blocks start..stop, in chain order."""
        for _, _, contract, event, args in self.entries(start, stop):
            yield contract, event, args

    def entries(self, start: int, stop: int
                ) -> Iterator[tuple[tuple[bytes, int], int, str, str, dict]]:
        """`logs`, each with its identity (block hash, log index) and block number first."""
        w3 = self.chain.w3
        while start <= stop:
            end = min(start + self.CHUNK - 1, stop)
            query = {"address": self.addresses, "topics": [self.topics],
                     "fromBlock": start, "toBlock": end}
            found = self.chain.rpc(lambda q=query: w3.eth.get_logs(q), what="get logs")
            for log in sorted(found, key=lambda g: (int(g["blockNumber"]), int(g["logIndex"]))):
                key = (log["address"].lower(), bytes(log["topics"][0])) if log["topics"] else None
                if key in self.events:
                    contract, shape = self.events[key]
                    yield ((bytes(log["blockHash"]), int(log["logIndex"])),
                           int(log["blockNumber"]), contract, shape.name,
                           shape.decode_args(log["topics"], log["data"]))
            start = end + 1


def ws_url(rpc_url: str) -> str | None:
    """The websocket URL a node usually serves beside its HTTP one (same host, port and path:
    anvil, geth's --ws on the HTTP port, most providers' wss:// twins), or None."""
    for http, ws in (("http://", "ws://"), ("https://", "wss://")):
        if rpc_url.startswith(http):
            return ws + rpc_url[len(http):]
    return None


class HeadStream:
    """New block headers pushed by the node (`eth_subscribe newHeads` over its websocket), so
    the watcher learns of each block at once without a call (issue 15: follow new blocks rather
    than poll). Reconnects after a drop; given up after GIVE_UP_AFTER failed connections in a
    row (an RPC that serves no websocket there), leaving the watcher to poll."""

    GIVE_UP_AFTER = 3

    def __init__(self, rpc_url: str, log: EventLog):
        self.url, self.log = ws_url(rpc_url), log
        self.connected = False
        self._latest: dict | None = None
        self._lock = threading.Lock()

    def start(self, stop: threading.Event) -> None:
        if self.url is not None:
            threading.Thread(target=self._run, args=(stop,), name="head-stream", daemon=True).start()

    def take(self) -> dict | None:
        """The newest header pushed since the last take, or None."""
        with self._lock:
            head, self._latest = self._latest, None
        return head

    def _run(self, stop: threading.Event) -> None:
        failures, error = 0, ""
        while not stop.is_set() and failures < self.GIVE_UP_AFTER:
            try:
                self._follow(stop)
                failures = 0
            except Exception as exc:   # no websocket there, or it dropped: the watcher polls
                failures += 1
                error = f"{type(exc).__name__}: {exc}"[:200]
            finally:
                self.connected = False
            if not stop.is_set():
                stop.wait(5.0 * failures)
        if failures >= self.GIVE_UP_AFTER:
            self.log("head-stream-off", url=self.url, error=error,
                     note=f"polling the head every {CHAIN_EVERY_S} s instead")

    def _follow(self, stop: threading.Event) -> None:
        from websockets.sync.client import connect

        with connect(self.url, open_timeout=5, close_timeout=1, max_size=1 << 20) as ws:
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                "params": ["newHeads"]}))
            if "result" not in json.loads(ws.recv(timeout=5)):
                raise ValueError("eth_subscribe newHeads refused")
            self.connected = True
            while not stop.is_set():
                try:
                    message = json.loads(ws.recv(timeout=1))
                except TimeoutError:
                    continue
                header = message["params"]["result"]
                head = {"number": int(header["number"], 16),
                        "hash": bytes.fromhex(header["hash"][2:]) if header.get("hash") else None,
                        "timestamp": int(header["timestamp"], 16),
                        "parentHash": bytes.fromhex(header["parentHash"][2:]),
                        "logsBloom": bytes.fromhex(header["logsBloom"][2:])}
                with self._lock:
                    if self._latest is None or head["number"] >= self._latest["number"]:
                        self._latest = head
