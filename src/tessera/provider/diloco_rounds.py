"""DiLoCo rounds of a lease's worker: queue the global parameters the tenant signed, answer
with the worker's signed pseudo-gradient and, with verification on, the signed commitment to
its checkpoints, whose full states are served to whoever verifies them (docs/diloco.md,
docs/verification.md)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

from tessera.chain.verification import Verification
from tessera.compute.diloco_worker import (
    checkpoint_path,
    current_answer,
    read_json,
    round_answered,
    states_kept_until,
)
from tessera.compute.model import parameter_count
from tessera.compute.segment_check import max_state_bytes
from tessera.errors import Refused
from tessera.files import write_atomic
from tessera.protocol import commitment as cm
from tessera.protocol import messages
from tessera.protocol.wire import CheckpointHashes, PayloadHashes, RoundResult
from tessera.protocol.workload import TrainingWorkload
from tessera.provider.context import NodeContext
from tessera.provider.superseded_answers import ROUND_COMMITMENT, answer_folder, kept_answer, set_aside

ROUND_REQUEST_SIGNED = "tenant_request.json"
QUEUED_TIMES_KEPT = 3                      # chain times of queued rounds kept per lease
# a commitment signed before is served again as is while it has this long left (or once a
# posted root holds it); else signed again with a fresh expiry (a round re-sent hours later):
# what a tenant asks of a round's commitments at the longest round timeout, and 5 minutes
REUSE_MIN_LIFE_S = cm.MAX_VERIFIED_ROUND_TIMEOUT_S + cm.MIN_COMMITMENT_LIFE_S + 300
# rounds of one lease queued and not yet answered: the one running and, with overlap, the next.
# With the rule that a new round is the next after the last queued one (`_check_round`) and
# the parameters of answered rounds deleted, a tenant's round uploads take at most this many
# times one round's parameters on the provider's disk (review 27: 12 rounds of 16 MiB at any
# indices were all kept, and one may be 1 GiB)
MAX_OPEN_ROUNDS = 2
# a commitment is signed only to states kept at least this much longer (the worker prunes
# without the node's lock: a commitment signed as it prunes would protect nothing)
SIGN_MARGIN_S = 600


class Rounds:
    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self._verification: Verification | None = None
        # (lease, round) -> the chain's time when the round was queued, for its commitment's
        # expiry (`_commitment`), read beside the worker's steps instead of on the answer's path
        self._queued_at: dict[tuple[int, int], int] = {}
        self._round_bytes: dict[int, int] = {}     # lease -> the most its round's PUT may hold
        # lease -> rounds seen answered whose parameters are deleted: each round PUT looks at
        # the others' files only until then, so its cost does not grow with the job's length
        # (a round re-sent with other parameters leaves the set: `accept`)
        self._settled: dict[int, set[int]] = {}

    def _diloco_record(self, lease_id: int):
        """This node's record of a DiLoCo worker's lease; Refused for an unknown lease (404) or
        one with no manifest yet or another kind of job (409: it has no rounds)."""
        record = self.ctx.state.lease(lease_id)
        if record is None:
            raise Refused(404, f"lease {lease_id} is unknown to this provider")
        if record.manifest is None:
            raise Refused(409, f"lease {lease_id} has no manifest yet, so no rounds")
        kind = record.manifest["workload"]["kind"]
        if kind != "diloco-worker":
            raise Refused(409, f"lease {lease_id} runs a {kind} job, not a DiLoCo worker: "
                               "it has no rounds")
        return record

    def authorize(self, lease_id: int, round_index: int, params_sha256: str, nonce: int,
                  expiry: int, signature: str) -> str:
        """The lease's tenant, if it signed this round (`_authorized`); else Refused."""
        return self._authorized(lease_id, round_index, params_sha256, nonce, expiry,
                                signature).tenant

    def _authorized(self, lease_id: int, round_index: int, params_sha256: str, nonce: int,
                    expiry: int, signature: str):
        """The lease's record, if its tenant signed this round's parameters (by their sha256),
        the signature has not expired and the lease's DiLoCo worker is running; else Refused.
        The API calls it before reading the parameters.

        No chain read: the tenant is this node's record of the lease (from its LeaseCreated
        event, or from the chain when the manifest came first: manifests.py), and that the
        lease is still open is the record's `running`, until the LeaseClosed event is followed
        (node.py). Every round used to read the lease from the chain twice, two round trips to
        the RPC endpoint on each round's critical path (issue 16). What a tenant gains from
        the record's lag: a round sent after its own close, before this node follows the event
        (the next head), starts, and the worker is stopped when the event is followed."""
        ctx = self.ctx
        record = self._diloco_record(lease_id)
        if record.status != "running":
            raise Refused(409, f"lease {lease_id}'s worker is {record.status}: {record.detail}")
        if expiry < time.time():
            raise Refused(400, "round signature has expired")
        typed = messages.round_typed_data(ctx.chain.network.chain_id, ctx.market.address,
                                          lease_id, round_index, bytes.fromhex(params_sha256),
                                          nonce, expiry)
        signer = messages.signer_or_none(typed, signature)
        if signer is None or signer.lower() != record.tenant.lower():
            ctx.metrics.refused.labels("round-signer").inc()
            raise Refused(403, f"round {round_index} of lease {lease_id} is not signed by its "
                               f"tenant {record.tenant}")
        self._check_round(lease_id, round_index, params_sha256)
        return record

    def round_bytes(self, lease_id: int) -> int:
        """The most a round's parameters may take for this lease's model: its full state in
        fp32 (`segment_check.max_state_bytes`), far above what a round sends."""
        if lease_id not in self._round_bytes:
            model = self._diloco_record(lease_id).manifest["workload"]["model"]
            self._round_bytes[lease_id] = max_state_bytes(
                parameter_count(TrainingWorkload.model_validate(model)))
        return self._round_bytes[lease_id]

    def _queued_rounds(self, lease_id: int) -> list[int]:
        folder = self.ctx.jobs.round_folder(lease_id, 0).parent
        if not folder.exists():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdecimal())

    def _answered(self, lease_id: int, round_index: int) -> bool:
        return round_index in self._settled.get(lease_id, ()) or \
            round_answered(self.ctx.jobs.round_folder(lease_id, round_index)) is True

    def _check_round(self, lease_id: int, round_index: int, params_sha256: str) -> None:
        """A round not queued before must be the lease's first or the one after the last
        queued, and at most MAX_OPEN_ROUNDS may wait for their answers (Refused 409 / 429).
        One queued before may be sent again with other parameters only if it is one of the
        last two (the worker runs nothing older again: review 28, whose re-sent old rounds
        were never run, never answered and never deleted), and, if it was answered, only while
        fewer than MAX_OPEN_ROUNDS wait (review 30)."""
        queued = self._queued_rounds(lease_id)
        if not queued:
            return
        if round_index in queued:
            folder = self.ctx.jobs.round_folder(lease_id, round_index)
            request = read_json(folder / "request.json") or {}
            if request.get("params_sha256") == params_sha256:
                return          # the same round again: nothing changes
            if round_index < queued[-1] - 1:
                raise Refused(409, f"round {round_index} of lease {lease_id} is too old to run "
                                   f"again with other parameters (the last queued is "
                                   f"{queued[-1]})")
            if not self._answered(lease_id, round_index):
                return          # waiting already: counted
        elif round_index != queued[-1] + 1:
            raise Refused(409, f"round {round_index} of lease {lease_id} is not the next one: "
                               f"the last round queued is {queued[-1]}")
        # a new round, or an answered one sent again to be run again (review 30: re-opening
        # answered rounds uncounted kept three rounds' parameters waiting)
        waiting = [r for r in queued if not self._answered(lease_id, r)]
        if len(waiting) >= MAX_OPEN_ROUNDS:
            raise Refused(429, f"lease {lease_id} has {len(waiting)} rounds not yet answered "
                               f"({', '.join(map(str, waiting))}); send round {round_index} later")

    def _drop_answered_params(self, lease_id: int) -> None:
        """Delete the parameters of the lease's answered rounds: the worker read them, and a
        round re-sent with other parameters writes its own."""
        settled = self._settled.setdefault(lease_id, set())
        for r in self._queued_rounds(lease_id):
            if r not in settled and self._answered(lease_id, r):
                (self.ctx.jobs.round_folder(lease_id, r) / "params.bin").unlink(missing_ok=True)
                settled.add(r)

    def _forget_stopped_leases(self) -> None:
        """Drop what is kept in memory for leases whose worker no longer runs (called with the
        node's lock held)."""
        for lease in {lease for lease, _ in self._queued_at} | set(self._round_bytes) \
                | set(self._settled):
            record = self.ctx.state.lease(lease)
            if record is None or record.status != "running":
                for key in [key for key in self._queued_at if key[0] == lease]:
                    del self._queued_at[key]
                self._round_bytes.pop(lease, None)
                self._settled.pop(lease, None)

    def accept(self, lease_id: int, round_index: int, params: bytes, nonce: int,
               expiry: int, signature: str) -> dict:
        """Queue a round whose global parameters the lease's tenant signed."""
        ctx, jobs = self.ctx, self.ctx.jobs
        with ctx.lock:
            params_sha256 = hashlib.sha256(params).hexdigest()
            record = self._authorized(lease_id, round_index, params_sha256, nonce, expiry,
                                      signature)
            self._forget_stopped_leases()
            self._drop_answered_params(lease_id)
            folder = jobs.round_folder(lease_id, round_index)
            queued = read_json(folder / ROUND_REQUEST_SIGNED) or {}
            if not jobs.submit_round(lease_id, round_index, params, params_sha256):
                # The tenant re-sent the round with other parameters (its coordinator restarted):
                # the newer signed request wins and the worker runs the round again from it.
                if expiry <= queued.get("expiry", 0):
                    raise Refused(409, f"round {round_index} of lease {lease_id} already runs from "
                                       "other parameters signed later")
                set_aside(folder)    # a commitment handed out stays openable (review 30)
                (folder / "request.json").unlink(missing_ok=True)
                # and the answer to the old parameters goes: sent again later (A, B, then A),
                # it would count as the answer to A while the worker, its B run superseded,
                # had gone back to the state before the round (review 30)
                (folder / "result.json").unlink(missing_ok=True)
                self._settled.get(lease_id, set()).discard(round_index)
                jobs.submit_round(lease_id, round_index, params, params_sha256)
                ctx.log("round-restarted", lease_id=lease_id, round=round_index,
                        params_sha256=params_sha256)
            if expiry > queued.get("expiry", 0):  # evidence of what the tenant asked for
                write_atomic(folder / ROUND_REQUEST_SIGNED,
                             json.dumps({"params_sha256": params_sha256, "nonce": nonce,
                                         "expiry": expiry, "signature": signature}))
            # the time read when the round was first queued is stale now: a commitment signed
            # before this send's own read lands reads the chain itself (review 9, finding 2)
            self._queued_at.pop((lease_id, round_index), None)
            if record.manifest["workload"].get("checkpoint_every"):
                threading.Thread(target=self._note_chain_time, args=(lease_id, round_index),
                                 name="round-chain-time", daemon=True).start()
            return {"lease_id": lease_id, "round": round_index, "params_sha256": params_sha256}

    def _note_chain_time(self, lease_id: int, round_index: int) -> None:
        """The chain's time now, kept for the commitment of a round just queued. Read after the
        tenant's own read at the round's start (tenant/round_checks.py), so an expiry counted
        from it meets the tenant's minimum; a failed read leaves the commitment to read it."""
        try:
            now = self.ctx.chain.block_timestamp()
        except Exception:
            return
        with self.ctx.lock:
            self._queued_at[(lease_id, round_index)] = now
            # a lease keeps the times of its QUEUED_TIMES_KEPT highest rounds (rounds go up; a
            # tenant queuing them downwards cannot grow this: a dropped round's commitment
            # reads the chain's time when it is signed, as after a restart), and a lease whose
            # worker no longer runs keeps none
            rounds = sorted(r for lease, r in self._queued_at if lease == lease_id)
            for r in rounds[:-QUEUED_TIMES_KEPT]:
                del self._queued_at[(lease_id, r)]
            self._forget_stopped_leases()

    def result(self, lease_id: int, round_index: int, root: str | None = None) \
            -> RoundResult | None:
        """The signed answer for a round, or None while the worker is still on it; with `root`,
        the answer committed to that checkpoint root, also when set aside by a re-send
        (provider/superseded_answers.py; Refused 404 when none is kept)."""
        ctx = self.ctx
        record = self._diloco_record(lease_id)
        folder = ctx.jobs.round_folder(lease_id, round_index)
        result = current_answer(folder)
        if root is not None and (result is None or result.get("checkpoint_root") != root):
            kept = kept_answer(folder, root)
            if kept is not None:
                return signed_answer(ctx, lease_id, round_index, *kept)
            if result is not None:
                raise Refused(404, f"round {round_index} of lease {lease_id} keeps no answer "
                                   f"committed to root 0x{root}")
        if result is None:
            return None
        if "error" in result:
            raise Refused(422, result["error"])
        signed = None
        if "checkpoint_root" in result:
            signed = self._commitment(lease_id, record.order_id, round_index, result)
            if signed is None:    # re-sent meanwhile: the worker runs it again
                return None
        return signed_answer(ctx, lease_id, round_index, result, signed)

    def _commitment(self, lease_id: int, order_id: int, round_index: int,
                    result: dict) -> cm.SignedCommitment | None:
        """The EIP-712 Commitment to the worker's answer (docs/verification.md), signed once and
        kept, so that the leaf a posted root holds stays the one served; signed again if the
        answer changed (a round re-run from other parameters), or if it is short of
        REUSE_MIN_LIFE_S, no root holds it yet and the round is one of the last two (a round
        re-sent hours later by a resumed tenant, which refuses a commitment that expires too
        soon after its round starts). None when the round was re-sent since `result` was read:
        a commitment signed then would be to an answer nothing keeps (review 31, finding 1: a
        GET racing the re-send); Refused (410) when its states are past their retention."""
        ctx = self.ctx
        folder = ctx.jobs.round_folder(lease_id, round_index)
        result_hash, root = "0x" + result["sha256"], "0x" + result["checkpoint_root"]
        with ctx.lock:    # (a re-send replaces the answer under it: `accept`)
            if current_answer(folder) != result:
                return None
            check_states_kept(folder, result)
            if self._verification is None:
                self._verification = Verification(ctx.chain)
            saved = read_json(folder / ROUND_COMMITMENT)
            if saved is not None:
                signed = cm.SignedCommitment.model_validate(saved)
                # only the last two rounds (a resumed tenant's) are signed again: a tenant asking
                # for every old round would keep all their states (review 31, finding 2's fix)
                if (signed.commitment.result_hash, signed.commitment.checkpoint_root) == \
                        (result_hash, root) and (round_index < self._queued_rounds(lease_id)[-1] - 1
                                                 or still_usable(self._verification,
                                                                 signed.commitment)):
                    return signed
            # no chain read on the answer's path (issue 16): the order is this node's record of
            # the lease, and the chain's time was read when the round was queued
            chain_time = self._queued_at.pop((lease_id, round_index), None)
            if chain_time is None:     # the read failed, or this node restarted since
                chain_time = ctx.chain.block_timestamp()
            # signed when the answer is first asked for: a round sent a whole round ahead
            # (overlap) is answered after its round starts, and the tenant asks its commitment to
            # outlive that start by the round timeout and 10 min (review 24)
            chain_time = max(chain_time, int(time.time()))
            commitment = cm.Commitment(
                job=order_id, round=round_index, lease_id=lease_id, provider=ctx.address,
                result_hash=result_hash, checkpoint_root=root,
                checkpoints=len(result["checkpoints"]) + 1,   # and the payload leaf
                expiry=chain_time + cm.VALIDITY_S)
            signed = self._verification.sign_commitment(ctx.account, commitment)
            write_atomic(folder / ROUND_COMMITMENT, signed.model_dump_json())
            ctx.log("round-committed", lease_id=lease_id, round=round_index, job=order_id,
                    checkpoint_root=root, checkpoints=commitment.checkpoints)
            return signed

    def checkpoint(self, lease_id: int, round_index: int, index: int,
                   root: str | None = None) -> Path:
        """The full state (parameters + AdamW) behind checkpoint `index` of a committed round
        (of its answer committed to `root` when given, also one set aside), served to whoever
        verifies it (the tenant, validators) while it is kept, against a read grant
        (provider/read_access.py); the verifier checks it against the signed commitment."""
        self._diloco_record(lease_id)
        folder = self.ctx.jobs.round_folder(lease_id, round_index)
        if not (folder / ROUND_COMMITMENT).exists():
            raise Refused(404, f"round {round_index} of lease {lease_id} has no commitment")
        if root is not None:
            folder = answer_folder(folder, root)
            if folder is None:
                raise Refused(404, f"round {round_index} of lease {lease_id} keeps no answer "
                                   f"committed to root 0x{root}")
        path = checkpoint_path(folder, index)
        if index < 0 or not path.is_file():
            raise Refused(404, f"checkpoint {index} of round {round_index} of lease {lease_id} "
                               "is not kept (no such checkpoint, or past its retention)")
        return path

    def payload(self, lease_id: int, round_index: int) -> Path | None:
        """The worker's pseudo-gradient for the round's current parameters; None while it
        works; Refused (422) when the worker refused the parameters."""
        self._diloco_record(lease_id)
        result = current_answer(self.ctx.jobs.round_folder(lease_id, round_index))
        if result is None:
            return None
        if "error" in result:
            raise Refused(422, result["error"])
        return self.ctx.jobs.round_payload(lease_id, round_index)


def check_states_kept(folder: Path, result: dict) -> None:
    """Refused (410) when the states behind the folder's answer are gone, or may go within
    SIGN_MARGIN_S: a commitment signed to them could never be opened, and a tenant could post
    and challenge it (review 32: a round first asked for, or asked again, after the worker
    pruned its states). A commitment signed now keeps them past its own expiry."""
    states = [checkpoint_path(folder, i) for i in range(len(result["checkpoints"]) + 1)]
    try:
        until = states_kept_until(folder)
    except FileNotFoundError:
        until = 0
    if until < time.time() + SIGN_MARGIN_S or not all(p.is_file() for p in states):
        raise Refused(410, f"round {folder.name}'s checkpoint states are past their retention "
                           "(RETAIN_S after the answer): its answer can no longer be committed to")


def still_usable(verification: Verification, c: cm.Commitment) -> bool:
    """Whether a commitment signed before is served again (`Rounds._commitment`): one chain
    read, only on this path (an answer asked for again)."""
    try:
        if c.expiry >= verification.chain.block_timestamp() + REUSE_MIN_LIFE_S:
            return True
        return verification.round(c.job, c.round).posted_at != 0
    except Exception:   # the chain cannot be read now: serve what was signed, as before
        return True


def signed_answer(ctx: NodeContext, lease_id: int, round_index: int, result: dict,
                  signed: cm.SignedCommitment | None) -> RoundResult:
    """The worker's `result` as the node's signed answer, with the commitment to it
    (verification on)."""
    typed = messages.round_result_typed_data(
        ctx.chain.network.chain_id, ctx.market.address, lease_id, round_index,
        bytes.fromhex(result["params_sha256"]), bytes.fromhex(result["sha256"]))
    answer = RoundResult(lease_id=lease_id, round=round_index,
                         params_sha256=result["params_sha256"], sha256=result["sha256"],
                         size=result["size"], inner_loss=result["inner_loss"],
                         compute_s=result["compute_s"], signature=messages.sign(ctx.account, typed))
    if signed is not None:  # verification on: the signed commitment goes with it
        answer.commitment = signed
        answer.checkpoints = [CheckpointHashes(**c) for c in result["checkpoints"]]
        answer.payload = PayloadHashes(**result["payload"])
    return answer
