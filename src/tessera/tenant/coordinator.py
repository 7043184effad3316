"""The DiLoCo coordinator, run by the tenant: one model trained on several leased providers.

Why the tenant runs it: the coordinator holds the global model and decides what counts; putting
it on a provider would make that provider a trusted party. It needs no GPU (one outer step per
round) and moves little data (int8 pseudo-gradients every H steps).

Each round, for every worker lease: PUT the round's parameters (the full global state the first
time a worker is seen, afterwards the outer-step broadcast), signed by the tenant; poll for the
worker's signed answer until the round's deadline; download the pseudo-gradient, check its hash
and the provider's signature, decode and validate it. Whoever answered in time and passed the
checks is aggregated; the outer step is taken; the round is committed (below). A worker that
misses the deadline, cannot be reached, or sends something refused is dropped from the job, its
lease is closed so it stops costing money, the drop is logged as a structured line, and the job
goes on with the others; a `replace` callback (the tenant's flow) may lease a replacement that
trains the dropped worker's shard from the next round on.

Verification (a `VerifyTerms`, docs/verification.md): every answer must carry the provider's
signed commitment to its checkpoints, checked field by field (`tenant.verify`); after the
answers are in, ONE transaction posts the Merkle root over the accepted commitments of the job's
own leases (`Verification.post_root`), plus one per replacement worker's one-node order; the
hash of the block holding the last root decides, per worker, whether the tenant replays one
committed segment (probability p); a worker whose segment does not replay is dropped before the
outer step (its pseudo-gradient never counts), its lease closed, and an on-chain challenge with
a bond opened against its leaf. The round's root transactions, spot checks and challenges are
in its `RoundReport`; the signed commitments of each round in `verification/round-{r}.json`
(a replacement order's in `round-{r}-order-{o}.json`), the replay reports (whose hash is the challenge's
evidence) beside them. Right after a challenge opens, its case (the job spec and the lease's
signed manifest, kept in `manifests/` when it was sent) is pushed to every active validator,
which replays the segment itself and votes (`validator.challenges`).

Commit: the outer optimizer's state goes to `coordinator-{round}.pt`, then `job.json` (workers,
reports, the checkpoint's name) replaces the previous one atomically; a round is finished when
its `job.json` is. `DilocoCoordinator.resume` reloads the last commit, and every worker gets the
full global state again (what it holds is unknown after a crash).
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import torch
from eth_utils import keccak

from tessera.chain.client import ChainError
from tessera.chain.market import tx_hash
from tessera.chain.verification import Verification
from tessera.compute.diloco import Coordinator, DilocoConfig, encode_tensors
from tessera.compute.diloco_worker import GLOBAL_STATE_KIND
from tessera.compute.replay import RoundCommitment, tensor_hash
from tessera.compute.train import configure_determinism, held_out_loss, split
from tessera.files import write_atomic
from tessera.logs import EventLog
from tessera.protocol import commitment as cm
from tessera.protocol import messages
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.wire import ChallengeCase, RoundResult, SignedManifest
from tessera.tenant.client import Tenant, TenantError
from tessera.tenant.verify import (
    CommitmentError,
    SpotCheck,
    VerifyTerms,
    check_commitment,
    draw_spot_check,
    max_state_bytes,
    publish_case,
    spot_check,
    spot_check_seed,
)

ROUND_SIGNATURE_VALIDITY_S = 600
STATE_FILE = "job.json"
STATE_VERSION = 1
POLL_S = 0.02                   # how often a worker is asked for its answer
PAYLOAD_SLACK_BYTES = 1 << 16   # headers and int8 scales on top of an fp32 pseudo-gradient
MIN_COMMITMENT_LIFE_S = 600     # a commitment must stay postable this long after a round starts
VERIFICATION_DIR = "verification"
MANIFESTS_DIR = "manifests"     # the signed manifest of every lease, as sent (Tenant.send_manifest)
# Faults found in an answer that arrived: the worker or its provider is broken or lying.
RESULT_FAULTS = frozenset({"bad-answer", "bad-signature", "hash-mismatch", "bad-payload",
                           "bad-commitment", "spot-check"})


class WorkerFault(Exception):
    """Why a worker's round was not used. `kind`: unreachable, refused (the provider refused the
    round), late, worker-error (the worker reported an error), or one of RESULT_FAULTS
    (bad-commitment: its signed commitment is missing or wrong; spot-check: a committed segment
    did not replay)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class WorkerLease:
    lease_id: int
    provider: str
    endpoint: str
    index: int = 0              # the data shard it trains (its manifest's worker index)
    order_id: int = 0
    synced: bool = False        # holds the coordinator's published state (gets deltas)
    active: bool = True
    fault: str = ""             # WorkerFault.kind once dropped
    reason: str = ""
    replaced: bool = False      # a replacement was leased for it, or tried and failed


@dataclass
class RoundReport:
    round: int
    workers: int
    contributors: int
    val_loss: float
    bytes_up: int
    bytes_down: int
    seconds: float
    dropped: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)   # replacements that joined this round
    worker_compute_s: float = 0.0   # the contributors' own report of their compute time, summed
    root: str = ""                  # the round's Merkle root over the commitments, when posted
    root_tx: str = ""               # the post_root transaction ("" if not posted by this run)
    spot_checks: list[dict] = field(default_factory=list)   # tenant.verify.SpotCheck fields
    challenges: list[dict] = field(default_factory=list)    # lease, segment, challenge id, tx
    replacement_roots: list[dict] = field(default_factory=list)  # order, root, tx: one per
    #                                 replacement order (its lease is not in the job's order)


@dataclass
class Answer:
    """A worker's round that passed every check."""

    pseudo_gradient: dict
    size: int
    compute_s: float
    result: RoundResult
    commitment: RoundCommitment | None = None   # with verification on


# (dropped worker, every worker of the job so far) -> a running replacement for its shard
Replacer = Callable[[WorkerLease, list[WorkerLease]], WorkerLease]


def read_job_state(state_dir: Path) -> dict:
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        raise TenantError(f"{state_dir}: no {STATE_FILE} here; give the folder that "
                          "`tessera job submit` printed for the job")
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TenantError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(saved, dict) or saved.get("version") != STATE_VERSION:
        raise TenantError(f"{path}: not a version {STATE_VERSION} DiLoCo job state")
    return saved


class DilocoCoordinator:
    def __init__(self, tenant: Tenant, config: DilocoConfig, data: bytes,
                 workers: list[WorkerLease], state_dir: Path, *, job: dict | None = None,
                 round_timeout_s: float = 600,
                 on_round: Callable[[RoundReport], None] | None = None,
                 log: EventLog | None = None, replace: Replacer | None = None,
                 max_replacements: int = 0, verify: VerifyTerms | None = None):
        self.tenant, self.config, self.workers = tenant, config, workers
        self.state_dir, self.job = Path(state_dir), job or {}
        self.round_timeout_s = round_timeout_s
        self.on_round = on_round or (lambda report: None)
        self.log = log or EventLog("coordinator")
        self.replace, self.max_replacements = replace, max_replacements
        self.replacements = 0
        self.finished = False
        self.device = configure_determinism(config.workload)
        self.coordinator = Coordinator(config, self.device)
        self.dataset_sha256 = hashlib.sha256(data).hexdigest()
        self.train_tokens, self.val_tokens = split(data, config.workload)
        self.http = httpx.Client(timeout=60)
        self.broadcast: bytes | None = None
        self.reports: list[RoundReport] = []
        self.max_payload = len(encode_tensors(self.coordinator.published, "none",
                                              config.chunk, {})) + PAYLOAD_SLACK_BYTES
        self.verify = verify
        self.verification = Verification(tenant.chain) if verify else None
        self.max_state = max_state_bytes(sum(t.numel() for t in self.coordinator.published.values()))
        self.previous: dict[int, RoundCommitment] = {}   # lease -> its last accepted commitment
        self._start_hash, self._min_expiry = b"", 0       # the round's, for check_commitment

    @classmethod
    def start(cls, tenant: Tenant, config: DilocoConfig, data: bytes, workers: list[WorkerLease],
              state_dir: Path, **options) -> DilocoCoordinator:
        """A new job, committed at once so that it can be resumed from its very start.
        `job=` is whatever the tenant's flow needs to rebuild the job on resume (saved as is)."""
        if (Path(state_dir) / STATE_FILE).exists():
            raise TenantError(f"{state_dir} already holds a job; resume it with "
                              f"`tessera job resume {state_dir}`")
        self = cls(tenant, config, data, workers, state_dir, **options)
        self._save()
        return self

    @classmethod
    def resume(cls, tenant: Tenant, state_dir: Path, data: bytes, **options) -> DilocoCoordinator:
        """The job committed in `state_dir`, at its last finished round."""
        saved = read_job_state(state_dir)
        if saved["tenant"].lower() != tenant.chain.address.lower():
            raise TenantError(f"the job in {state_dir} belongs to tenant {saved['tenant']}, "
                              f"not {tenant.chain.address}")
        if hashlib.sha256(data).hexdigest() != saved["dataset_sha256"]:
            raise TenantError(f"the dataset does not match the job's ({saved['dataset_sha256']})")
        workers = [WorkerLease(**w) for w in saved["workers"]]
        self = cls(tenant, DilocoConfig.model_validate(saved["config"]), data, workers, state_dir,
                   job=saved["job"], **options)
        checkpoint = torch.load(self.state_dir / saved["checkpoint"], weights_only=True)
        self.coordinator.load_state_dict(checkpoint)
        self.reports = [RoundReport(**r) for r in saved["reports"]]
        self.replacements, self.finished = saved["replacements"], saved["finished"]
        for worker in self.workers:  # what they hold after the crash is unknown: full state
            worker.synced = False
        self.log("resumed", round=self.coordinator.round,
                 workers=[w.lease_id for w in self.workers if w.active])
        return self

    # -- one worker, one round -----------------------------------------------------------
    def _body_for(self, worker: WorkerLease) -> bytes:
        if worker.synced and self.broadcast is not None:
            return self.broadcast
        return encode_tensors(self.coordinator.global_state(), "none", self.config.chunk,
                              {"kind": GLOBAL_STATE_KIND, "round": self.coordinator.round})

    def _send(self, worker: WorkerLease, round_index: int, body: bytes) -> None:
        chain = self.tenant.chain
        nonce, expiry = secrets.randbits(63), int(time.time()) + ROUND_SIGNATURE_VALIDITY_S
        typed = messages.round_typed_data(chain.network.chain_id, self.tenant.market.market.address,
                                          worker.lease_id, round_index,
                                          hashlib.sha256(body).digest(), nonce, expiry)
        try:
            response = self.http.put(
                f"{worker.endpoint}/leases/{worker.lease_id}/rounds/{round_index}", content=body,
                headers={"x-tessera-nonce": str(nonce), "x-tessera-expiry": str(expiry),
                         "x-tessera-signature": messages.sign(chain.account, typed)})
        except httpx.HTTPError as exc:
            raise WorkerFault("unreachable", f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise WorkerFault("refused", f"provider refused round {round_index}: "
                                         f"{_detail(response)}")

    def _collect(self, worker: WorkerLease, round_index: int, body: bytes,
                 deadline: float) -> Answer:
        url = f"{worker.endpoint}/leases/{worker.lease_id}/rounds/{round_index}"
        while True:
            try:
                response = self.http.get(url)
            except httpx.HTTPError as exc:
                raise WorkerFault("unreachable", f"{type(exc).__name__}: {exc}") from None
            if response.status_code == 200:
                break
            if response.status_code != 202:
                raise WorkerFault("worker-error", f"worker answered {response.status_code}: "
                                                  f"{_detail(response)}")
            if time.monotonic() > deadline:
                raise WorkerFault("late", f"no answer within {self.round_timeout_s:.0f} s")
            time.sleep(POLL_S)
        try:
            result = RoundResult.model_validate(response.json())
        except ValueError as exc:
            raise WorkerFault("bad-answer", f"answer is not a RoundResult: {str(exc)[:300]}") from None
        if result.params_sha256 != hashlib.sha256(body).hexdigest():
            raise WorkerFault("bad-answer", "answer names other parameters than the ones sent")
        typed = messages.round_result_typed_data(
            self.tenant.chain.network.chain_id, self.tenant.market.market.address, worker.lease_id,
            round_index, bytes.fromhex(result.params_sha256), bytes.fromhex(result.sha256))
        try:
            signer = messages.recover(typed, result.signature)
        except Exception:
            signer = None
        if signer is None or signer.lower() != worker.provider.lower():
            raise WorkerFault("bad-signature", f"answer is signed by {signer}, not by the lease's "
                                               f"provider {worker.provider}")
        payload = self._download(f"{url}/pseudo-gradient")
        if hashlib.sha256(payload).hexdigest() != result.sha256:
            raise WorkerFault("hash-mismatch", "pseudo-gradient does not match its signed hash "
                                               f"{result.sha256}")
        commitment = self._check_commitment(worker, round_index, result) if self.verify else None
        try:
            pg = self.coordinator.decode(payload)
        except ValueError as exc:
            raise WorkerFault("bad-payload", f"pseudo-gradient refused: {exc}") from None
        return Answer(pg, len(payload), result.compute_s, result, commitment)

    def _check_commitment(self, worker: WorkerLease, round_index: int,
                          result: RoundResult) -> RoundCommitment:
        chain = self.tenant.chain
        try:
            return check_commitment(
                result, chain_id=chain.network.chain_id, verification=self.verification.address,
                job=worker.order_id, round_index=round_index, lease_id=worker.lease_id,
                provider=worker.provider, worker=worker.index,
                inner_steps=self.config.inner_steps, k=self.verify.checkpoint_every,
                start_params_hash=self._start_hash, min_expiry=self._min_expiry,
                previous=self.previous.get(worker.lease_id))
        except CommitmentError as exc:
            raise WorkerFault("bad-commitment", str(exc)) from None

    def _download(self, url: str) -> bytes:
        """The body at `url`, refusing more than the largest pseudo-gradient this job can have."""
        chunks, size = [], 0
        try:
            with self.http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise WorkerFault("worker-error", f"pseudo-gradient download answered "
                                                      f"{response.status_code}")
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_payload:
                        raise WorkerFault("bad-payload", f"pseudo-gradient is larger than "
                                                         f"{self.max_payload} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise WorkerFault("unreachable", f"{type(exc).__name__}: {exc}") from None
        return b"".join(chunks)

    def _drop(self, worker: WorkerLease, round_index: int, fault: WorkerFault) -> str:
        worker.active, worker.fault, worker.reason = False, fault.kind, str(fault)
        closed = True
        try:
            self.tenant.close(worker.lease_id)
        except Exception as exc:  # already closed (e.g. by the provider): nothing left to refund
            closed = False
            worker.reason += f" (close: {exc})"
        event = "result-refused" if fault.kind in RESULT_FAULTS else "worker-dropped"
        self.log(event, "warning", round=round_index, lease_id=worker.lease_id,
                 provider=worker.provider, worker=worker.index, kind=fault.kind,
                 reason=str(fault), lease_closed=closed)
        return f"lease {worker.lease_id} ({fault.kind}): {worker.reason}"

    def _replace_dropped(self) -> list[str]:
        """Lease a replacement for each worker dropped since the last round (up to the cap);
        each is committed at once, so a crash right after does not forget its lease."""
        lines = []
        for worker in [w for w in self.workers if not w.active and not w.replaced]:
            worker.replaced = True
            if self.replace is None:
                continue
            if self.replacements >= self.max_replacements:
                lines.append(f"lease {worker.lease_id} not replaced: the job's "
                             f"{self.max_replacements} replacement(s) are used up")
                self.log("replacement-skipped", lease_id=worker.lease_id, reason="cap reached")
                continue
            try:
                new = self.replace(worker, list(self.workers))
            except Exception as exc:
                lines.append(f"lease {worker.lease_id} not replaced: {exc}")
                self.log("replacement-failed", "warning", lease_id=worker.lease_id,
                         error=f"{type(exc).__name__}: {exc}")
                continue
            new.index, new.synced, new.active = worker.index, False, True
            self.workers.append(new)
            self.replacements += 1
            lines.append(f"lease {worker.lease_id} replaced by lease {new.lease_id} "
                         f"(provider {new.provider})")
            self.log("worker-replaced", lease_id=worker.lease_id, replacement=new.lease_id,
                     provider=new.provider, worker=new.index)
            self._save()
        return lines

    # -- the job ---------------------------------------------------------------------------
    def run(self) -> list[RoundReport]:
        while self.coordinator.round < self.config.rounds:
            self.step()
        return self.reports

    def step(self) -> RoundReport | None:
        """One round. None when no worker's answer could be used: nothing is applied, and the
        round runs again (with replacements for the dropped) on the next call."""
        round_index = self.coordinator.round
        started = time.monotonic()
        replaced = self._replace_dropped()
        active = [w for w in self.workers if w.active]
        if not active:
            self._save()
            raise TenantError(f"round {round_index}: no worker left in the job")
        bodies = {w.lease_id: self._body_for(w) for w in active}
        if self.verify:  # every worker starts from the published parameters
            self._start_hash = tensor_hash(self.coordinator.published)
            self._min_expiry = self.tenant.chain.block_timestamp() + MIN_COMMITMENT_LIFE_S
        deadline = time.monotonic() + self.round_timeout_s
        results: dict[int, Answer] = {}
        faults: dict[int, WorkerFault] = {}

        def one(worker: WorkerLease) -> None:
            try:
                self._send(worker, round_index, bodies[worker.lease_id])
                worker.synced = True
                results[worker.lease_id] = self._collect(worker, round_index,
                                                         bodies[worker.lease_id], deadline)
            except WorkerFault as fault:
                faults[worker.lease_id] = fault
            except Exception as exc:  # anything else is this worker's problem, not the job's
                faults[worker.lease_id] = WorkerFault("worker-error", f"{type(exc).__name__}: {exc}")

        with ThreadPoolExecutor(max_workers=len(active)) as pool:
            list(pool.map(one, active))
        dropped = [self._drop(w, round_index, faults[w.lease_id])
                   for w in active if w.lease_id in faults]
        checked: dict = {"root": "", "root_tx": "", "spot_checks": [], "challenges": [],
                         "replacement_roots": []}
        accepted = [w for w in active if w.lease_id in results]
        if self.verify and accepted:
            checked, caught = self._verify_round(round_index, accepted, results)
            dropped += caught
            for w in accepted:
                if w.active:
                    self.previous[w.lease_id] = results[w.lease_id].commitment
                else:
                    del results[w.lease_id]
        pseudo_grads = [results[w.lease_id].pseudo_gradient for w in active
                        if w.lease_id in results]
        if not pseudo_grads:
            self.log("round-empty", "warning", round=round_index, dropped=dropped)
            self._save()
            return None
        update = self.coordinator.apply(pseudo_grads)
        self.broadcast = update.broadcast
        val = held_out_loss(self.coordinator.eval_model(), self.val_tokens, self.config.workload,
                            self.device)
        report = RoundReport(round_index, len(active), len(pseudo_grads), val,
                             sum(a.size for a in results.values()),
                             sum(len(b) for b in bodies.values()), time.monotonic() - started,
                             dropped, replaced, sum(a.compute_s for a in results.values()),
                             **checked)
        self.reports.append(report)
        self._save()
        self.log("round", **asdict(report))
        self.on_round(report)
        return report

    # -- verification --------------------------------------------------------------------
    def _verify_round(self, round_index: int, accepted: list[WorkerLease],
                      answers: dict[int, Answer]) -> tuple[dict, list[str]]:
        """Post the round's roots, spot-check, drop and challenge whoever fails. Returns the
        report's verification fields and the drop lines."""
        orders = sorted({w.order_id for w in accepted}, key=lambda o: (o != self.verify.job, o))
        trees, txs, block_hash = {}, {}, b""
        for order_id in orders:
            trees[order_id], txs[order_id], posted_in = self._post_root(
                round_index, order_id, [w for w in accepted if w.order_id == order_id], answers)
            block_hash = posted_in or block_hash
        if not block_hash:  # every root is older than the latest block (posted before a restart)
            chain = self.tenant.chain
            block_hash = bytes(chain.rpc(lambda: chain.w3.eth.get_block("latest"),
                                         what="get block")["hash"])
        checks, challenges, dropped = [], [], []
        for worker in accepted:
            answer = answers[worker.lease_id]
            seed = spot_check_seed(block_hash, worker.order_id, round_index, worker.lease_id)
            segment = draw_spot_check(seed, self.verify.spot_check_probability,
                                      answer.commitment.n_segments)
            if segment is None:
                continue
            check = spot_check(self.http, worker.endpoint, worker.lease_id, self.config,
                               worker.index, answer.commitment, segment, answer.result.threads,
                               self.train_tokens, self.max_state, self.verify.replay_tolerance)
            checks.append(asdict(check))
            self.log("spot-check", "info" if check.ok else "warning", round=round_index,
                     provider=worker.provider, worker=worker.index, **asdict(check))
            if not check.ok:
                dropped.append(self._drop(worker, round_index, WorkerFault(
                    "spot-check", f"segment {segment} did not replay: {check.reason}")))
                challenges.append(self._challenge(round_index, worker, answer,
                                                  trees[worker.order_id], check))
        job_tree = trees.get(self.verify.job)
        return ({"root": "0x" + job_tree.root.hex() if job_tree else "",
                 "root_tx": txs.get(self.verify.job, ""), "spot_checks": checks,
                 "challenges": challenges,
                 "replacement_roots": [{"order_id": o, "root": "0x" + trees[o].root.hex(),
                                        "tx": txs[o]}
                                       for o in orders if o != self.verify.job and trees[o]]},
                dropped)

    def _post_root(self, round_index: int, order_id: int, workers: list[WorkerLease],
                   answers: dict[int, Answer]) -> tuple[cm.RoundTree | None, str, bytes]:
        """ONE transaction per order per round: the root over the accepted commitments of the
        order's leases. The job's own order holds every original worker; a replacement's lease
        sits in its own one-node order (the contract binds a leaf to its lease's order), which
        gets its own root. Returns the tree as on chain (None: none is), the transaction hash
        and the hash of the block that holds it ("" and b"" when not sent by this call)."""
        signed = [answers[w.lease_id].result.commitment for w in workers]
        tree = self.verification.round_tree(signed)
        tx, block_hash = "", b""
        try:
            if self.verification.rounds_posted(order_id) > round_index:  # before a restart
                if self.verification.round(order_id, round_index).tree != tree.tree_hash:
                    self.log("root-differs", "warning", round=round_index, job=order_id,
                             reason="this round's root was posted before with other commitments")
                    tree = None
            else:
                receipt = self.verification.post_root(order_id, round_index, tree)
                tx, block_hash = tx_hash(receipt), bytes(receipt["blockHash"])
                self.log("root-posted", round=round_index, job=order_id,
                         root="0x" + tree.root.hex(), leaves=tree.n_leaves, tx=tx,
                         gas=receipt["gasUsed"])
        except ChainError as exc:
            self.log("root-not-posted", "warning", round=round_index, job=order_id, error=str(exc))
            tree = None
        folder = self.state_dir / VERIFICATION_DIR
        folder.mkdir(parents=True, exist_ok=True)
        record = {"job": order_id, "round": round_index, "root_tx": tx,
                  "root": "0x" + tree.root.hex() if tree else None,
                  "n_leaves": tree.n_leaves if tree else 0,
                  "commitments": [s.model_dump() for s in signed]}
        name = f"round-{round_index}.json" if order_id == self.verify.job else \
            f"round-{round_index}-order-{order_id}.json"
        write_atomic(folder / name, json.dumps(record, indent=1).encode(), durable=True)
        return tree, tx, block_hash

    def _challenge(self, round_index: int, worker: WorkerLease, answer: Answer,
                   tree: cm.RoundTree | None, check: SpotCheck) -> dict:
        """Open an on-chain challenge against the worker's leaf; the evidence is the hash of the
        replay report written beside the round's commitments."""
        entry = {"lease_id": worker.lease_id, "provider": worker.provider,
                 "segment": check.segment}
        if not self.verify.challenge:
            entry["skipped"] = "challenges are off for this job"
        elif tree is None:
            entry["skipped"] = "its commitment is not in a root on chain"
        if "skipped" in entry:
            self.log("challenge-skipped", "warning", round=round_index, **entry)
            return entry
        report = json.dumps({"job": self.verify.job, "round": round_index,
                             "commitment": answer.result.commitment.model_dump(),
                             "spot_check": asdict(check)}, sort_keys=True).encode()
        write_atomic(self.state_dir / VERIFICATION_DIR /
                     f"replay-{round_index}-{worker.lease_id}.json", report, durable=True)
        try:
            challenge_id, receipts = self.verification.open_challenge(
                answer.result.commitment, tree, check.segment, keccak(report))
        except (ChainError, ValueError) as exc:
            entry["error"] = str(exc)
            self.log("challenge-failed", "warning", round=round_index, **entry)
            return entry
        entry.update(challenge_id=challenge_id, tx=tx_hash(receipts[-1]))
        self.log("challenge-opened", "warning", round=round_index, **entry)
        entry["case"] = self._publish_case(challenge_id, worker.lease_id)
        return entry

    def _publish_case(self, challenge_id: int, lease_id: int) -> dict[str, str]:
        """Push the challenge's case to the validators: endpoint -> "accepted" or why not.
        Without it validators abstain and the challenge ends without a verdict (bond back)."""
        path = self.state_dir / MANIFESTS_DIR / f"lease-{lease_id}.json"
        if "spec" not in self.job or not path.is_file():
            answers = {"": f"no case: the job keeps no spec or no signed manifest for lease "
                           f"{lease_id}"}
        else:
            case = ChallengeCase(spec=JobSpec.model_validate(self.job["spec"]),
                                 manifest=SignedManifest.model_validate_json(path.read_text()))
            answers = publish_case(self.tenant.chain, challenge_id, case, self.http)
        accepted = sum(answer == "accepted" for answer in answers.values())
        self.log("challenge-case-published", "info" if accepted else "warning",
                 challenge_id=challenge_id, accepted=accepted, answers=answers)
        return answers

    def finish(self) -> None:
        """Mark the job done (its leases are settled by the caller): resume will refuse it."""
        self.finished = True
        self._save()

    # -- persistence -------------------------------------------------------------------------
    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        name = f"coordinator-{self.coordinator.round}.pt"
        buffer = io.BytesIO()
        torch.save(self.coordinator.state_dict(), buffer)
        write_atomic(self.state_dir / name, buffer.getvalue(), durable=True)
        state = {"version": STATE_VERSION, "tenant": self.tenant.chain.address,
                 "dataset_sha256": self.dataset_sha256,
                 "config": self.config.model_dump(mode="json"), "job": self.job,
                 "round": self.coordinator.round, "checkpoint": name,
                 "workers": [asdict(w) for w in self.workers],
                 "reports": [asdict(r) for r in self.reports],
                 "replacements": self.replacements, "finished": self.finished}
        write_atomic(self.state_dir / STATE_FILE, json.dumps(state, indent=1).encode(),
                     durable=True)
        for old in self.state_dir.glob("coordinator-*.pt"):
            if old.name != name:
                old.unlink()

    def save_model(self, path: Path) -> None:
        torch.save({"model": self.coordinator.eval_model().state_dict(),
                    "workload": self.config.workload.model_dump()}, path)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))[:300]
    except (ValueError, AttributeError):
        return response.text[:300]
