"""Hardware challenges from validators (docs/hardware.md): a timed matrix product on this node's
device, its row fingerprints signed, to show the advertised hardware is there.

Disputes: when a stake-weighted quorum of validators reports this provider (a
HardwareQuorumReached event naming it, seen by the chain watcher), the node disputes at once
(HardwareReports.dispute): the validators who did not report then time it afresh and vote, and
an honest node passes and is not slashed. While its dispute is being voted on, it answers
challenges even when a lease's job runs (a 423 "serving lease" would count as a failure)."""

from __future__ import annotations

import threading
import time

import torch
from web3 import Web3

from tessera.chain.client import tx_hash
from tessera.chain.hardware import HardwareReports
from tessera.compute.hardware_challenge import compute_fingerprints
from tessera.errors import ChainError, DeadlinePassed, Refused, TxRefused
from tessera.protocol import hardware_challenge as hc
from tessera.protocol import messages
from tessera.provider.context import NodeContext


class HardwareChallenges:
    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}  # challenge seeds answered -> their deadline (ms)
        self.disputed_until = 0          # chain time the latest dispute's vote ends

    def on_quorum(self, args: dict) -> None:
        """A quorum of validators reported this node for `args["epoch"]`: dispute it (an honest
        node passes the jury's fresh challenges). A refusal (too late, already disputed) or a
        chain error is logged, never raised: the watcher must go on."""
        epoch = args["epoch"]
        try:
            receipt, vote_deadline = HardwareReports(self.ctx.chain).dispute(epoch)
        except ChainError as exc:   # TxRefused included
            level = "warning" if isinstance(exc, TxRefused) else "error"
            self.ctx.log("hardware-dispute-failed", level, epoch=epoch, error=str(exc))
            return
        self.disputed_until = max(self.disputed_until, vote_deadline)
        self.ctx.log("hardware-disputed", "warning", epoch=epoch, reported=args["reported"],
                     quorum=args["quorum"], vote_deadline=vote_deadline, tx=tx_hash(receipt))

    def _in_dispute(self) -> bool:
        return self.disputed_until > 0 and \
            self.ctx.chain.block_timestamp() < self.disputed_until

    def answer(self, request: hc.HardwareChallengeRequest) -> hc.HardwareChallengeAnswer:
        """Compute a registered validator's matrix product on this node's device and sign the
        row fingerprints, unless the deadline (unix ms) passes first: then refuse, unsigned.
        Only challenges signed by a registered validator, naming this provider, each seed once;
        one at a time (a second is refused with 429), with the benchmark's thread count; none
        while a lease's job runs (423 naming the lease, which the validator checks on chain)."""
        ctx, metric = self.ctx, self.ctx.metrics.hw_challenges
        if request.deadline_ms <= time.time() * 1000:
            metric.labels("late").inc()
            raise Refused(400, f"challenge deadline {request.deadline_ms} ms has passed")
        if request.provider.lower() != ctx.address.lower():
            raise Refused(400, f"challenge names provider {request.provider}, not {ctx.address}")
        validator = Web3.to_checksum_address(request.validator)
        probes = ctx.probes.address
        signer = hc.request_signer(request, ctx.chain.network.chain_id, probes)
        if signer is None or signer.lower() != validator.lower():
            metric.labels("bad-signature").inc()
            raise Refused(403, f"challenge is signed by {signer}, not by {validator}")
        try:
            is_validator = ctx.validators.is_validator(validator)
        except ChainError as exc:
            raise Refused(503, f"cannot check the challenge against the chain: {exc}") from None
        if not is_validator:
            metric.labels("not-validator").inc()
            raise Refused(403, f"{validator} is not a registered validator")
        if 3 * 4 * request.size**2 > ctx.hardware.gpu_memory_mb * 2**20 // 2:
            raise Refused(413, f"size {request.size} needs more than half this device's memory")
        running = ctx.state.leases(("running",))
        # the device is the tenant's now: a timed product would be late, and slow it; but not
        # while a dispute is voted on: refusing would count as failing, and cost the stake
        if running and not self._in_dispute():
            metric.labels("leased").inc()
            raise Refused(423, f"serving lease {running[0].lease_id}")
        if not self._lock.acquire(blocking=False):
            metric.labels("busy").inc()
            raise Refused(429, "busy with another hardware challenge")
        try:
            now_ms = time.time() * 1000
            self._seen = {s: d for s, d in self._seen.items() if d > now_ms}
            if request.seed in self._seen:
                raise Refused(409, "this challenge seed was already answered")
            self._seen[request.seed] = request.deadline_ms
            return self._run(request, validator, probes)
        finally:
            self._lock.release()

    def _run(self, request: hc.HardwareChallengeRequest, validator: str,
             probes: str) -> hc.HardwareChallengeAnswer:
        ctx = self.ctx
        device = "cuda" if ctx.hardware.is_gpu else "cpu"
        threads = torch.get_num_threads()
        torch.set_num_threads(ctx.config.limits.threads)
        start = time.perf_counter()
        try:
            values = compute_fingerprints(
                request.seed, request.size, device,
                give_up_at=lambda: time.time() * 1000 > request.deadline_ms)
        except DeadlinePassed as exc:
            ctx.metrics.hw_challenges.labels("gave-up").inc()
            ctx.log("hardware-challenge-late", "warning", size=request.size, detail=str(exc))
            raise Refused(408, f"deadline passed before the product was done ({exc})") from None
        finally:
            torch.set_num_threads(threads)
        compute_ms = round((time.perf_counter() - start) * 1000, 1)
        fingerprints = hc.pack_fingerprints(values)
        typed = hc.answer_typed_data(ctx.chain.network.chain_id, probes, ctx.address, validator,
                                     request.seed, request.size, request.deadline_ms, fingerprints)
        ctx.metrics.hw_challenges.labels("answered").inc()
        ctx.log("hardware-challenge", size=request.size, device=device, compute_ms=compute_ms)
        return hc.HardwareChallengeAnswer(
            provider=ctx.address, validator=validator, seed=request.seed, size=request.size,
            deadline_ms=request.deadline_ms, fingerprints=fingerprints, device=device,
            compute_ms=compute_ms, signature=messages.sign(ctx.account, typed))
