"""The validator decides Verification challenges by itself (docs/verification.md, "Validators
decide challenges").

1. **Watch** `ChallengeOpened` on chain; track every challenge until it is resolved and, where
   this validator voted with the verdict, its reward is claimed.
2. **Case.** What a replay needs beyond the chain is pushed to each validator's
   `POST /challenges/{id}/case` (anyone may push it; nothing in it is trusted): the job spec,
   which must hash to the order's on-chain `spec_hash`, and the manifest of the challenged lease,
   which must carry its tenant's EIP-712 signature and agree with the spec (model, H, k,
   compression, at most `order.nodes` workers). The dataset is rebuilt from the spec (the
   built-in corpus) or read from `datasets_dir/<sha256>`, and must hash to the manifest's.
3. **Replay.** From the provider's endpoints: its signed round answer (checkpoint hashes and
   payload leaf: threads, numerics profile), which must rebuild the challenged
   `checkpoint_root`, then (with a read grant: a provider serves states to a validator only while
   a challenge on that round is open) the challenged segment's start state, replayed on this
   machine, or
   for the payload segment the last state and residual, from which the payload is recomputed
   (`tessera.compute.segment_check.spot_check`, the tenant's own check). A validator whose
   machine does not run the signed numerics profile abstains.
4. **Vote** guilty when the replay misses the committed end checkpoint, or when the provider
   still has not opened its commitment `open_grace_s` after the challenge opened; innocent when
   the replay reproduces it. Never on a challenge where this validator is a party (challenger,
   provider, tenant) or was listed after it opened; never without a case, nor with two
   conflicting tenant-signed manifests for one lease (the tenant equivocated: abstain), whether
   both were pushed or one is the manifest the provider serves as the one it accepted
   (`GET /leases/{id}/manifest`).
5. **Resolve** once `verdict` is decided (quorum reached, or the deadline passed), and **claim**
   the voter's share when this validator voted with the verdict.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from fastapi import APIRouter, HTTPException
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError

from tessera.chain.client import Chain, tx_hash
from tessera.chain.market import Market
from tessera.chain.read_grant import ReadGrantAuth
from tessera.chain.tokens import StakeToken
from tessera.chain.verification import Outcome, Verification
from tessera.compute.corpus import build_stdlib_corpus
from tessera.errors import CaseError, ChainError, TxRefused
from tessera.files import write_atomic
from tessera.http_deadline import HTTP_TOTAL_S, DeadlineClient, read_at_most, within
from tessera.http_limits import PathInt
from tessera.logs import EventLog
from tessera.protocol import messages
from tessera.protocol.jobspec import BUILTIN_CORPUS, JobSpec
from tessera.protocol.matching import endpoint_problem
from tessera.protocol.wire import MAX_ROUND_RESULT_BYTES, ChallengeCase, RoundResult, SignedManifest
from tessera.protocol.workload import DilocoWorkerWorkload

NOT_VOTED, GUILTY, INNOCENT, CLAIMED = 0, 1, 2, 3   # Verification.votes(id, voter)
HTTP_TIMEOUT_S = 30.0
OPEN_RETRY_S = 5.0   # wall seconds between attempts to fetch an unopened commitment


@dataclass
class Tracked:
    """One challenge as this validator follows it (the chain holds the rest)."""

    challenge_id: int
    event: dict                      # the ChallengeOpened arguments
    case: ChallengeCase | None = None
    conflict: str = ""               # set when two different valid manifests arrived
    skip: str = ""                   # why this validator does not vote on it
    retry_at: float = 0.0            # time.monotonic() of the next attempt to open
    decision: dict = field(default_factory=dict)
    logged: set[str] = field(default_factory=set)


def why_not_vote(me: str, record, weight: int) -> str:
    """Why validator `me`, whose vote would weigh `weight` (its stake at the challenge's
    snapshot block, or now if less), must not vote on a challenge ("" when it may): parties
    never vote, nor validators without stake when it opened (registered later, or unbonded)."""
    if me.lower() in {record.challenger.lower(), record.provider.lower(), record.tenant.lower()}:
        return "party: this validator is the challenger, the provider or the tenant"
    if weight <= 0:
        return "late: no stake when the challenge opened (registered later, or unbonded)"
    return ""


def load_dataset_for(spec: JobSpec, sha256: str, datasets_dir: Path | None) -> bytes:
    """The job's dataset: the built-in corpus rebuilt from the spec, or a file named by its
    sha256 in `datasets_dir`; raises CaseError when it is neither or does not hash right."""
    if spec.dataset.source == BUILTIN_CORPUS:
        data = build_stdlib_corpus(spec.dataset.max_bytes)
    elif datasets_dir is not None and (datasets_dir / sha256).is_file():
        data = (datasets_dir / sha256).read_bytes()
    else:
        raise CaseError(f"dataset {sha256} is not the built-in corpus and not in this "
                        "validator's datasets_dir")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CaseError(f"the dataset this validator builds from the spec hashes to "
                        f"{hashlib.sha256(data).hexdigest()}, not the manifest's {sha256}")
    return data


def manifest_signer(chain: Chain, market: Market, signed: SignedManifest) -> str:
    """Who signed a manifest (EIP-712, the Market's domain); raises CaseError when malformed."""
    m = signed.manifest
    typed = messages.manifest_typed_data(chain.network.chain_id, market.address,
                                         m.lease_id, m.digest(), signed.nonce, signed.expiry)
    try:
        return messages.recover(typed, signed.signature)
    except Exception as exc:  # malformed signature: eth_account raises several types
        raise CaseError(f"manifest signature is malformed: {exc}") from None


def check_case(chain: Chain, market: Market, lease_id: int, job: int,
               case: ChallengeCase) -> DilocoWorkerWorkload:
    """The challenged lease's workload once the case is bound to the chain: the spec hashes to
    the order's `spec_hash`, the manifest is the lease tenant's and fits the spec."""
    signed, spec = case.manifest, case.spec
    manifest = signed.manifest
    if manifest.lease_id != lease_id:
        raise CaseError(f"manifest names lease {manifest.lease_id}, the challenge lease {lease_id}")
    order = market.order(job)
    if spec.spec_hash() != bytes(order.spec_hash):
        raise CaseError(f"spec does not hash to order {job}'s spec_hash")
    lease = market.lease(lease_id)
    signer = manifest_signer(chain, market, signed)
    if signer.lower() != lease.tenant.lower():
        raise CaseError(f"manifest is signed by {signer}, not by lease {lease_id}'s tenant "
                        f"{lease.tenant}")
    w = manifest.workload
    if not isinstance(w, DilocoWorkerWorkload):
        raise CaseError("manifest workload is not a DiLoCo worker's")
    expected = {"model": (w.model, spec.workload),
                "inner_steps": (w.inner_steps, spec.diloco.inner_steps),
                "checkpoint_every": (w.checkpoint_every, spec.verification.checkpoint_every),
                "compression": (w.compression, spec.diloco.compression)}
    for name, (got, want) in expected.items():
        if got != want:
            raise CaseError(f"manifest workload.{name} is {got}, the spec says {want}")
    if w.workers > spec.order.nodes:
        raise CaseError(f"manifest names {w.workers} workers, the spec orders {spec.order.nodes}")
    if not spec.verification.enabled or w.checkpoint_every < 1:
        raise CaseError("the job has no checkpoint commitments to replay")
    return w


class ChallengeVoter:
    """The validator's challenge loop (`poll_once`) and its case intake (`submit_case`)."""

    def __init__(self, chain: Chain, log: EventLog, metrics: CollectorRegistry, state_dir: Path,
                 *, datasets_dir: Path | None = None, open_grace_s: int = 600,
                 max_params: int = 100_000_000):
        self.chain = chain
        self.max_params = max_params
        self.log = log
        self.verification = Verification(chain)
        self.market = Market(chain)
        self.folder = state_dir / "challenges"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.datasets_dir = datasets_dir
        self.open_grace_s = open_grace_s
        # a provider dripping an answer or a state holds no request past its limit
        self.http = DeadlineClient(timeout=HTTP_TIMEOUT_S, auth=ReadGrantAuth(chain),
                                   total_s=HTTP_TOTAL_S)
        self.tracked: dict[int, Tracked] = {}
        self.next_block = chain.network.deploy_block
        self._datasets: dict[str, bytes] = {}
        self._vote_period: int | None = None
        self.m_seen = Counter("tessera_validator_challenges_seen", "ChallengeOpened events seen",
                              registry=metrics)
        self.m_cases = Counter("tessera_validator_challenge_cases", "cases pushed to this "
                               "validator", ["outcome"], registry=metrics)
        self.m_votes = Counter("tessera_validator_challenge_votes", "votes cast", ["vote"],
                               registry=metrics)
        self.m_skipped = Counter("tessera_validator_challenge_skipped", "challenges this "
                                 "validator does not vote on", ["reason"], registry=metrics)
        self.m_resolved = Counter("tessera_validator_challenges_resolved", "resolve sent by this "
                                  "validator", ["outcome"], registry=metrics)
        self.m_claims = Counter("tessera_validator_challenge_claims", "voter rewards claimed",
                                registry=metrics)
        self.m_gas = Counter("tessera_validator_challenge_gas", "gas used by challenge "
                             "transactions", ["tx"], registry=metrics)
        self.m_replay = Histogram("tessera_validator_challenge_replay_seconds", "download + "
                                  "replay of one challenged segment", registry=metrics)

    # -- intake ----------------------------------------------------------------------------
    def _case_path(self, challenge_id: int) -> Path:
        return self.folder / f"case-{challenge_id}.json"

    def submit_case(self, challenge_id: int, case: ChallengeCase) -> dict:
        """Check a pushed case against the chain and keep it; raises CaseError (nothing kept)."""
        try:
            record = self.verification.challenge(challenge_id)
        except ChainError as exc:
            raise CaseError(str(exc)) from None
        check_case(self.chain, self.market, record.lease_id, record.job, case)
        kept = self._load_case(challenge_id)
        if kept is not None and kept.manifest.manifest.digest() != case.manifest.manifest.digest():
            tracked = self.tracked.get(challenge_id)
            if tracked is not None:
                tracked.conflict = "two different tenant-signed manifests for the lease"
            (self.folder / f"conflict-{challenge_id}.json").write_text(case.model_dump_json())
            self.m_cases.labels("conflict").inc()
            self.log("challenge-case-conflict", "warning", challenge_id=challenge_id)
            return {"challenge_id": challenge_id, "status": "conflict"}
        if kept is None:
            write_atomic(self._case_path(challenge_id), case.model_dump_json())
            self.m_cases.labels("accepted").inc()
            self.log("challenge-case", challenge_id=challenge_id, lease_id=record.lease_id)
        return {"challenge_id": challenge_id, "status": "accepted"}

    def _load_case(self, challenge_id: int) -> ChallengeCase | None:
        path = self._case_path(challenge_id)
        if not path.is_file():
            return None
        return ChallengeCase.model_validate_json(path.read_text())

    # -- the loop --------------------------------------------------------------------------
    def poll_once(self) -> None:
        head = self.chain.block_number()
        if head >= self.next_block:
            for log in self.chain.events("Verification", "ChallengeOpened", self.next_block, head):
                args = dict(log["args"])
                cid = args["challenge_id"]
                if cid not in self.tracked:
                    self.tracked[cid] = Tracked(cid, args)
                    self.m_seen.inc()
                    self.log("challenge-seen", challenge_id=cid, lease_id=args["lease_id"],
                             provider=args["provider"], segment=args["segment"])
            self.next_block = head + 1
        for cid in sorted(self.tracked):
            if self._step(self.tracked[cid]):
                del self.tracked[cid]

    def _once(self, t: Tracked, key: str, event: str, level: str = "info", **fields) -> None:
        if key not in t.logged:
            t.logged.add(key)
            self.log(event, level, challenge_id=t.challenge_id, **fields)

    def _step(self, t: Tracked) -> bool:
        """Advance one challenge; True when this validator has nothing left to do on it."""
        cid = t.challenge_id
        record = self.verification.challenge(cid)
        mine = self.verification.vote_of(cid, self.chain.address)
        if record.status != Outcome.OPEN:
            return self._claim_if_due(t, record.status, mine)
        if self.verification.verdict(cid) != Outcome.OPEN:
            self._resolve(t)
            return False
        if mine == NOT_VOTED and not t.skip:
            t.skip = self._why_not_vote(record)
            if t.skip:
                self.m_skipped.labels(t.skip.split(":")[0]).inc()
                self._once(t, "skip", "challenge-not-voted", reason=t.skip)
                return False
            self._decide(t, record)
        return False

    def _why_not_vote(self, record) -> str:
        return why_not_vote(self.chain.address, record,
                            self.verification.weight_at_snapshot(record, self.chain.address))

    def _decide(self, t: Tracked, record) -> None:
        if t.case is None:
            t.case = self._load_case(t.challenge_id)
        if (self.folder / f"conflict-{t.challenge_id}.json").is_file():
            t.conflict = "two different tenant-signed manifests for the lease"
        if t.conflict:
            self._once(t, "conflict", "challenge-abstained", "warning", reason=t.conflict)
            return
        if t.case is None:
            self._once(t, "no-case", "challenge-awaiting-case")
            return
        if time.monotonic() < t.retry_at:
            return
        try:
            guilty, reason, detail = self._judge(t)
        except CaseError as exc:   # the kept case does not fit this commitment: it never will
            t.skip = f"case: {exc}"
            self.m_skipped.labels("case").inc()
            self.log("challenge-abstained", "warning", challenge_id=t.challenge_id,
                     reason=str(exc))
            return
        if guilty is None:   # the provider has not opened yet: ask again later
            opened = record.deadline - self._period()
            if self.chain.block_timestamp() < opened + self.open_grace_s:
                t.retry_at = time.monotonic() + OPEN_RETRY_S
                self._once(t, "open-wait", "challenge-open-pending", "warning", reason=reason)
                return
            guilty, reason = True, f"provider did not open its commitment within " \
                                   f"{self.open_grace_s} s: {reason}"
        t.decision = {"guilty": guilty, "reason": reason, **detail}
        try:
            receipt = self.verification.vote(t.challenge_id, guilty)
        except TxRefused as exc:   # decided or closed between our read and our vote
            self._once(t, "vote-refused", "challenge-vote-refused", "warning", error=str(exc))
            t.skip = "refused: " + str(exc)
            return
        self.m_votes.labels("guilty" if guilty else "innocent").inc()
        self.m_gas.labels("vote").inc(receipt["gasUsed"])
        self.log("challenge-voted", "warning" if guilty else "info", challenge_id=t.challenge_id,
                 guilty=guilty, reason=reason, tx=tx_hash(receipt), gas=receipt["gasUsed"],
                 **detail)

    def _period(self) -> int:
        if self._vote_period is None:
            self._vote_period = self.verification.vote_period()
        return self._vote_period

    def _judge(self, t: Tracked) -> tuple[bool | None, str, dict]:
        """(guilty, why, figures): None for guilty while the provider has not opened its
        commitment (which becomes guilty after the grace period)."""
        ev, case = t.event, t.case
        workload = check_case(self.chain, self.market, ev["lease_id"], ev["job"], case)
        # PyTorch only now: a validator that never judges a case never loads it
        from tessera.validator import challenge_replay as replay

        n_params = replay.replayable_size(workload, self.max_params)   # before any download
        data = self._dataset(case)
        k, steps = workload.checkpoint_every, workload.inner_steps
        if replay.n_leaves_for(steps, k) != ev["checkpoints"]:
            raise CaseError(f"the job's H = {steps}, k = {k} give {replay.n_leaves_for(steps, k)} "
                            f"leaves, the commitment {ev['checkpoints']}")
        offer = self.market.registry.provider_offer(ev["provider"])
        if offer is None or endpoint_problem(offer.endpoint):
            return None, (f"the provider's endpoint cannot be called: "
                          f"{endpoint_problem(offer.endpoint) if offer else 'not registered'}"), {}
        self._check_provider_manifest(offer.endpoint, ev["lease_id"], case)
        result, why = self._round_result(offer.endpoint, ev)
        if result is None:
            return None, why, {}
        guilty, reason, detail = replay.replay_challenged(self.http, offer.endpoint, ev, workload, data,
                                                   n_params, result,
                                                   case.spec.verification.replay_tolerance)
        if "replay_s" in detail:
            self.m_replay.observe(detail["replay_s"])
        return guilty, reason, detail

    def _check_provider_manifest(self, endpoint: str, lease_id: int, case: ChallengeCase) -> None:
        """Raise CaseError (abstain) when the provider serves a tenant-signed manifest for the
        lease that differs from the case's: the tenant signed two, and a tenant could otherwise
        push the one that makes an honest replay fail (e.g. another worker index). A provider
        that serves nothing, or a manifest its tenant did not sign, changes nothing."""
        url = f"{endpoint}/leases/{lease_id}/manifest"
        try:
            response = self.http.get(url)
            served = SignedManifest.model_validate_json(response.content) \
                if response.status_code == 200 else None
        except (httpx.HTTPError, httpx.InvalidURL, ValidationError, ValueError):
            served = None
        if served is None or served.manifest.digest() == case.manifest.manifest.digest():
            return
        try:
            signer = manifest_signer(self.chain, self.market, served)
        except CaseError:
            return
        if served.manifest.lease_id == lease_id and \
                signer.lower() == self.market.lease(lease_id).tenant.lower():
            raise CaseError(f"tenant equivocated: the provider runs another manifest for lease "
                            f"{lease_id} signed by the tenant ({served.manifest.digest().hex()[:16]}"
                            f"…), not the case's ({case.manifest.manifest.digest().hex()[:16]}…)")

    def _round_result(self, endpoint: str, ev: dict) -> tuple[RoundResult | None, str]:
        root = "0x" + bytes(ev["checkpoint_root"]).hex()  # also one set aside (review 30, F1)
        url = f"{endpoint}/leases/{ev['lease_id']}/rounds/{ev['round_index']}?root={root}"
        try:
            with within(time.monotonic() + HTTP_TOTAL_S), \
                    self.http.stream("GET", url) as response:
                body = read_at_most(response, MAX_ROUND_RESULT_BYTES)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return None, f"{url}: {type(exc).__name__}"
        except ValueError as exc:
            return None, f"{url}: {exc}"
        if response.status_code != 200:
            return None, f"{url} answered {response.status_code}"
        try:
            result = RoundResult.model_validate_json(body)
        except (ValidationError, ValueError) as exc:
            return None, f"{url} is not a round answer: {str(exc)[:200]}"
        c = result.commitment.commitment if result.commitment else None
        if c is None or result.checkpoints is None or result.payload is None:
            return None, f"{url} carries no commitment"
        served = (c.lease_id, c.round, c.checkpoint_root.lower(), c.result_hash.lower(),
                  c.checkpoints, c.provider.lower())
        challenged = (ev["lease_id"], ev["round_index"], root, "0x" + bytes(ev["result_hash"]).hex(),
                      ev["checkpoints"], ev["provider"].lower())
        if served != challenged:
            return None, f"{url} serves another commitment than the challenged one"
        return result, ""

    def _dataset(self, case: ChallengeCase) -> bytes:
        sha = case.manifest.manifest.dataset_sha256
        if sha not in self._datasets:
            self._datasets[sha] = load_dataset_for(case.spec, sha, self.datasets_dir)
        return self._datasets[sha]

    # -- resolve and claim -----------------------------------------------------------------
    def _resolve(self, t: Tracked) -> None:
        try:
            resolution = self.verification.resolve(t.challenge_id)
        except TxRefused as exc:   # another validator (or anyone) resolved it first
            self._once(t, "resolve-refused", "challenge-resolve-refused", error=str(exc))
            return
        receipt = resolution.receipt
        self.m_resolved.labels(resolution.outcome.name.lower()).inc()
        self.m_gas.labels("resolve").inc(receipt["gasUsed"])
        fields = {k: v for k, v in asdict(resolution).items() if k not in ("receipt", "outcome")}
        self.log("challenge-resolved", outcome=resolution.outcome.name, tx=tx_hash(receipt),
                 gas=receipt["gasUsed"], **fields)

    def _claim_if_due(self, t: Tracked, status: Outcome, mine: int) -> bool:
        winning = {Outcome.UPHELD: GUILTY, Outcome.REJECTED: INNOCENT}.get(status)
        if winning is None or mine != winning:
            self._once(t, "done", "challenge-done", outcome=status.name, my_vote=mine)
            return True
        stake_token = StakeToken(self.chain)
        before = stake_token.balance_of(self.chain.address)
        receipt = self.verification.claim_reward(t.challenge_id)
        after = stake_token.balance_of(self.chain.address)
        self.m_claims.inc()
        self.m_gas.labels("claim").inc(receipt["gasUsed"])
        self.log("challenge-reward-claimed", challenge_id=t.challenge_id, outcome=status.name,
                 amount=after - before, tx=tx_hash(receipt), gas=receipt["gasUsed"])
        return True

    def status(self) -> list[dict]:
        return [{"challenge_id": t.challenge_id, "lease_id": t.event["lease_id"],
                 "provider": t.event["provider"], "has_case": t.case is not None
                 or self._case_path(t.challenge_id).is_file(), "skip": t.skip,
                 "conflict": t.conflict, "decision": t.decision}
                for t in list(self.tracked.values())]

    def close(self) -> None:
        self.http.close()


def router(voter: ChallengeVoter) -> APIRouter:
    """`POST /challenges/{id}/case` (the material for a replay; checked, never trusted) and
    `GET /challenges` (what this validator is following)."""
    api = APIRouter()

    @api.post("/challenges/{challenge_id}/case")
    def submit(challenge_id: PathInt, case: ChallengeCase) -> dict:
        try:
            return voter.submit_case(challenge_id, case)
        except CaseError as exc:
            voter.m_cases.labels("refused").inc()
            raise HTTPException(400, str(exc)) from None

    @api.get("/challenges")
    def challenges() -> list[dict]:
        return voter.status()

    return api
