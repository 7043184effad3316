"""The tenant's verification of a DiLoCo round (docs/verification.md): check each answer's
signed commitment field by field, post ONE root per order over the accepted commitments, draw
the spot checks from the root's block hash, replay the drawn segments, and drop and challenge
on chain whoever fails, pushing the case to the validators.

Everything it writes (the round's commitments, replay reports) goes under the job's folder in
`verification/`, durably, before the chain hears of it."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from eth_utils import keccak

from tessera.chain.client import tx_hash
from tessera.chain.verification import Verification
from tessera.compute.checkpoints import RoundCommitment, tensor_hash
from tessera.compute.diloco import DilocoConfig
from tessera.compute.segment_check import SpotCheck, spot_check
from tessera.errors import ChainError, CommitmentError, CommitmentExpiresEarly, WorkerFault
from tessera.files import write_atomic
from tessera.logs import EventLog
from tessera.protocol import commitment as cm
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.wire import ChallengeCase, RoundResult, SignedManifest
from tessera.tenant.client import Tenant
from tessera.tenant.verify import (
    FRESH,
    RoundLink,
    VerifyTerms,
    check_commitment,
    draw_spot_check,
    publish_case,
    spot_check_seed,
)
from tessera.tenant.worker_rounds import Answer, WorkerLease

VERIFICATION_DIR = "verification"
LINKS_FILE = "links.json"       # each lease's round links (RoundVerifier.links)
LINK_ROUNDS = 3
MANIFESTS_DIR = "manifests"     # the signed manifest of every lease, as sent (Tenant.send_manifest)


def record_path(state_dir: Path, job: int, order_id: int, round_index: int) -> Path:
    """Where a round's root record (its commitments, the root, its transaction) is kept: the
    job's own order's, or a replacement's one-node order's."""
    name = f"round-{round_index}.json" if order_id == job else \
        f"round-{round_index}-order-{order_id}.json"
    return state_dir / VERIFICATION_DIR / name


def write_record(path: Path, order_id: int, round_index: int, tree: cm.RoundTree | None,
                 tx: str, signed: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"job": order_id, "round": round_index, "root_tx": tx,
              "root": "0x" + tree.root.hex() if tree else None,
              "n_leaves": tree.n_leaves if tree else 0,
              "commitments": [s.model_dump() for s in signed]}
    write_atomic(path, json.dumps(record, indent=1).encode(), durable=True)


def save_links(path: Path, links: dict[int, dict[int, RoundLink]]) -> None:
    """Each lease's round links (`RoundVerifier.links`), durably, for `tessera job resume`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {str(lease): {str(r): link.to_json() for r, link in rounds.items()}
           for lease, rounds in links.items()}
    write_atomic(path, json.dumps(doc, indent=1).encode(), durable=True)


@dataclass
class RoundChecks:
    """A round's verification under way (on the verifier's thread when `work` is set): its
    roots' trees, the report's fields, and each worker's last check made."""

    round_index: int
    trees: dict = field(default_factory=dict)
    fields: dict = field(default_factory=lambda: {"root": "", "root_tx": "", "spot_checks": [],
                                                  "challenges": [], "replacement_roots": []})
    last: list = field(default_factory=list)      # (worker, its last SpotCheck)
    work: Future | None = None


class RoundVerifier:
    """One job's verification state: its terms, the Verification contract, and each lease's
    last accepted commitment (the next one must link to it)."""

    def __init__(self, tenant: Tenant, config: DilocoConfig, verify: VerifyTerms, state_dir: Path,
                 job: dict, http: httpx.Client, log: EventLog, train_tokens, max_state: int,
                 round_timeout_s: float = 600):
        self.tenant, self.config, self.verify = tenant, config, verify
        self.round_timeout_s = round_timeout_s
        self.state_dir, self.job, self.http, self.log = state_dir, job, http, log
        self.train_tokens, self.max_state = train_tokens, max_state
        self.verification = Verification(tenant.chain)
        # lease -> {round: what its next round must start from}, the last LINK_ROUNDS accepted
        # rounds (a round run again after a restart links to the one before it); kept in
        # verification/links.json so that `tessera job resume` checks the links too. None: a job
        # folder from before links were kept (resumed unchecked, with a warning).
        self.links: dict[int, dict[int, RoundLink]] | None = self._load_links()
        self._published: dict = {}                        # the round's start parameters
        self._start_hash, self._min_expiry = b"", 0       # the round's, for check_commitment
        # (order, round) -> the commitments of a root posted before a restart (None: none)
        self._posted_records: dict[tuple[int, int], list[dict] | None] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replays")

    def _load_links(self) -> dict[int, dict[int, RoundLink]] | None:
        path = self.state_dir / VERIFICATION_DIR / LINKS_FILE
        if path.exists():
            doc = json.loads(path.read_text())
            return {int(lease): {int(r): RoundLink.from_json(link) for r, link in rounds.items()}
                    for lease, rounds in doc.items()}
        if any((self.state_dir / VERIFICATION_DIR).glob("round-*.json")):
            self.log("round-links-unknown", "warning",
                     reason="this job folder keeps no round links (an older version wrote it): "
                            "the AdamW state and residual each worker starts from are not checked")
            return None
        # written before round 0's root: a folder of this version always has it, so a tenant
        # stopped during round 0's checks is not taken for an older one on resume (review 24)
        self._save_links({})
        return {}

    def link_for(self, lease_id: int, round_index: int) -> RoundLink | None:
        """What the lease's round `round_index` must start from (FRESH: its first round); None
        where links are unknown (an older job folder)."""
        if self.links is None:
            return None
        rounds = self.links.get(lease_id)
        if not rounds:
            return FRESH
        # no accepted round before it: refused by name in check_commitment
        return rounds.get(round_index - 1, RoundLink(max(rounds), b"", b""))

    def _keep_links(self, round_index: int, accepted: list[WorkerLease],
                    answers: dict[int, Answer]) -> None:
        if self.links is None:
            return
        for worker in accepted:
            if worker.active and worker.lease_id in answers:
                rounds = self.links.setdefault(worker.lease_id, {})
                rounds[round_index] = RoundLink.after(answers[worker.lease_id].commitment)
                for old in sorted(rounds)[:-LINK_ROUNDS]:
                    del rounds[old]
        self._save_links(self.links)

    def _save_links(self, links: dict[int, dict[int, RoundLink]]) -> None:
        save_links(self.state_dir / VERIFICATION_DIR / LINKS_FILE, links)

    def begin_round(self, published: dict) -> None:
        """Every worker starts the round from the published parameters."""
        self._published = published
        self._start_hash = tensor_hash(published)
        self._posted_records = {}
        # every answer comes before start + round timeout, and the root right after the last:
        # a commitment that expired before then could never be challenged (review 23)
        self._min_expiry = (self.tenant.chain.block_timestamp() + int(self.round_timeout_s)
                            + cm.MIN_COMMITMENT_LIFE_S)

    def check_commitment(self, worker: WorkerLease, round_index: int,
                         result: RoundResult) -> RoundCommitment:
        chain = self.tenant.chain
        fields = dict(chain_id=chain.network.chain_id, verification=self.verification.address,
                      job=worker.order_id, round_index=round_index, lease_id=worker.lease_id,
                      provider=worker.provider, worker=worker.index,
                      inner_steps=self.config.inner_steps, k=self.verify.checkpoint_every,
                      threads=self.config.workload.threads, start_params_hash=self._start_hash,
                      link=self.link_for(worker.lease_id, round_index))
        try:
            try:
                commitment = check_commitment(result, min_expiry=self._min_expiry, **fields)
            except CommitmentExpiresEarly as early:
                # a round whose root this tenant posted before a restart: its leaf must stay
                # the one posted (the provider serves it again), and it only had to be valid
                # when the root was posted
                posted_at = self._posted_at(worker.order_id, round_index)
                if not posted_at or early.expiry < posted_at:
                    raise
                commitment = check_commitment(result, min_expiry=posted_at, **fields)
        except CommitmentError as exc:
            raise WorkerFault("bad-commitment", str(exc)) from None
        posted = self._posted_commitments(worker.order_id, round_index)
        if posted is not None and result.commitment.model_dump() not in posted:
            # review 30: its spot checks are drawn from the block of the posted root, public:
            # a new commitment would know the drawn segment and fake every other one
            raise WorkerFault("bad-commitment", "this round's root was posted before this "
                                                "tenant restarted, without this commitment: "
                                                "only the commitment it holds is accepted")
        return commitment

    def _posted_commitments(self, order_id: int, round_index: int) -> list[dict] | None:
        """The commitments of the order's root of the round that this tenant posted before a
        restart (its record, when the chain holds the root); None otherwise. Read once."""
        key = (order_id, round_index)
        if key not in self._posted_records:
            path, posted = record_path(self.state_dir, self.verify.job, order_id, round_index), None
            if path.exists() and self._posted_at(order_id, round_index):
                posted = json.loads(path.read_text())["commitments"]
            self._posted_records[key] = posted
        return self._posted_records[key]

    def _posted_at(self, order_id: int, round_index: int) -> int:
        """When the order's root of the round was posted (0: not posted, or unreadable)."""
        try:
            return self.verification.round(order_id, round_index).posted_at
        except ChainError:
            return 0

    def verify_round(self, round_index: int, accepted: list[WorkerLease],
                     answers: dict[int, Answer], background: bool = False) -> RoundChecks:
        """Start the round's checks: ONE root per order over the accepted commitments, every
        payload checked (what a worker sent derives from its committed last state), one
        training segment per worker drawn (probability p) from the block that holds its
        order's root and replayed. Run here, or with `background` on the verifier's own
        thread, so that the caller can take the outer step and send the next round meanwhile
        (and takes the step again if `settle` then drops a worker it counted). Nobody is
        dropped or challenged before `settle`."""
        checks = RoundChecks(round_index)
        if background:
            checks.work = self._pool.submit(self._run_checks, round_index, accepted, answers,
                                            checks)
        else:
            self._run_checks(round_index, accepted, answers, checks)
        return checks

    def _run_checks(self, round_index: int, accepted: list[WorkerLease],
                    answers: dict[int, Answer], checks: RoundChecks) -> None:
        orders = sorted({w.order_id for w in accepted}, key=lambda o: (o != self.verify.job, o))
        txs, blocks = {}, {}
        for order_id in orders:
            checks.trees[order_id], txs[order_id], posted_in = self._post_root(
                round_index, order_id, [w for w in accepted if w.order_id == order_id], answers)
            blocks[order_id] = posted_in or self._root_block(order_id, round_index)
        trees = checks.trees
        job_tree = trees.get(self.verify.job)
        checks.fields.update({
            "root": "0x" + job_tree.root.hex() if job_tree else "",
            "root_tx": txs.get(self.verify.job, ""),
            "replacement_roots": [{"order_id": o, "root": "0x" + trees[o].root.hex(),
                                   "tx": txs[o]} for o in orders
                                  if o != self.verify.job and trees[o]]})
        for worker in accepted:
            c = answers[worker.lease_id].commitment
            check = self._check(round_index, worker, c, c.payload_segment, checks.fields)
            segment = self._draw(round_index, worker, c, blocks[worker.order_id])
            if check.ok is True and segment is not None:
                check = self._check(round_index, worker, c, segment, checks.fields)
            checks.last.append((worker, check))

    def settle(self, checks: RoundChecks, accepted: list[WorkerLease],
               answers: dict[int, Answer],
               drop: Callable[[WorkerLease, int, WorkerFault], str]) -> tuple[dict, list[str]]:
        """The round's checks, finished: whoever's payload or segment did not check out is
        dropped and challenged, and its answer taken out of `answers`; every other accepted
        worker's commitment is the one its next must link to. Returns the report's
        verification fields and the drop lines."""
        if checks.work is not None:
            checks.work.result()
        r, dropped = checks.round_index, []
        for worker, check in checks.last:
            if check.ok is not False:
                continue
            what = "payload" if check.kind == "payload" else f"segment {check.segment}"
            dropped.append(drop(worker, r, WorkerFault(
                "spot-check", f"{what} did not check out: {check.reason}")))
            checks.fields["challenges"].append(self._challenge(
                r, worker, answers[worker.lease_id], checks.trees[worker.order_id], check))
        self._keep_links(r, accepted, answers)
        for worker in accepted:
            if not worker.active:
                answers.pop(worker.lease_id, None)
        return checks.fields, dropped

    def _draw(self, round_index: int, worker: WorkerLease, c: RoundCommitment,
              block_hash: bytes) -> int | None:
        """The training segment drawn for this worker's round (probability p) from `block_hash`,
        the block that holds the order's root; None when none is (b"": no root on chain)."""
        if not block_hash:
            return None
        seed = spot_check_seed(block_hash, worker.order_id, round_index, worker.lease_id)
        return draw_spot_check(seed, self.verify.spot_check_probability, c.n_segments)

    def _check(self, round_index: int, worker: WorkerLease, c: RoundCommitment, segment: int,
               fields: dict) -> SpotCheck:
        """One check of a worker's round (its payload segment, or a training segment replayed),
        logged and added to `fields["spot_checks"]`."""
        check = spot_check(self.http, worker.endpoint, worker.lease_id, self.config,
                           worker.index, c, segment, self.train_tokens, self.max_state,
                           self.verify.replay_tolerance, start_params=self._published)
        fields["spot_checks"].append(asdict(check))
        self.log("spot-check" if check.kind == "replay" else "payload-check",
                 "info" if check.ok else "warning", round=round_index, provider=worker.provider,
                 worker=worker.index, **asdict(check))
        return check

    def _root_block(self, order_id: int, round_index: int) -> bytes:
        """The block that holds a root posted before a restart: the same randomness as the run
        that posted it drew from (the latest block would let a restarted tenant redraw).
        b"" when no root of this order's round is on chain (no training segment is drawn)."""
        try:
            return self.verification.root_block_hash(order_id, round_index)
        except ChainError as exc:
            self.log("spot-check-not-drawn", "warning", round=round_index, job=order_id,
                     reason=str(exc))
            return b""

    def _post_root(self, round_index: int, order_id: int, workers: list[WorkerLease],
                   answers: dict[int, Answer]) -> tuple[cm.RoundTree | None, str, bytes]:
        """ONE transaction per order per round: the root over the accepted commitments of the
        order's leases. The job's own order holds every original worker; a replacement's lease
        sits in its own one-node order (the contract binds a leaf to its lease's order), which
        gets its own root. Returns the tree as on chain (None: none is), the transaction hash
        and the hash of the block that holds it ("" and b"" when not sent by this call)."""
        signed = [answers[w.lease_id].result.commitment for w in workers]
        tree = self.verification.round_tree(signed)
        tx, block_hash, posted_before = "", b"", False
        path = record_path(self.state_dir, self.verify.job, order_id, round_index)
        try:
            posted_before = self.verification.rounds_posted(order_id) > round_index
            if posted_before:   # by this tenant, before a restart: its record is kept as is
                if self.verification.round(order_id, round_index).tree != tree.tree_hash:
                    self.log("root-differs", "warning", round=round_index, job=order_id,
                             reason="this round's root was posted before with other commitments")
                    tree = None
            else:
                # before the chain hears of it: what a restart takes (`_posted_commitments`)
                write_record(path, order_id, round_index, tree, "", signed)
                receipt = self.verification.post_root(order_id, round_index, tree)
                tx, block_hash = tx_hash(receipt), bytes(receipt["blockHash"])
                self.log("root-posted", round=round_index, job=order_id,
                         root="0x" + tree.root.hex(), leaves=tree.n_leaves, tx=tx,
                         gas=receipt["gasUsed"])
        except ChainError as exc:
            self.log("root-not-posted", "warning", round=round_index, job=order_id, error=str(exc))
            tree = None
        if not posted_before or not path.exists():
            write_record(path, order_id, round_index, tree, tx, signed)
        return tree, tx, block_hash

    def _challenge(self, round_index: int, worker: WorkerLease, answer: Answer,
                   tree: cm.RoundTree | None, check: SpotCheck) -> dict:
        """Open an on-chain challenge against the worker's leaf; the evidence is the hash of the
        replay report written beside the round's commitments."""
        entry = {"lease_id": worker.lease_id, "provider": worker.provider,
                 "segment": check.segment, "kind": check.kind}
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
