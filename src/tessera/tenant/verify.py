"""The tenant's checks of a worker's round when verification is on (docs/verification.md).

1. `check_commitment`: the answer carries the provider's signed EIP-712 `Commitment` naming this
   job (the Market order), round, lease and provider, the payload's sha256 as its result hash,
   and a checkpoint root that the listed checkpoint hashes rebuild; the round starts from the
   parameters the coordinator published, and from the AdamW state and int8 residual the lease's
   previous accepted round ended with (`RoundLink`), or, in a lease's first round (round 0, a
   replacement's first), from a fresh AdamW state and no residual: a residual made up in a first
   round would let the payload decode to any update the worker likes while every segment and the
   payload check pass (review 23). No replay: this is cheap and runs on every answer.
2. The payload check, on every answer after the round's root is on chain
   (`compute.segment_check.spot_check` on the payload segment): what the worker sent must be
   what its committed last state and residual give; a poisoned or copied update fails it.
3. `draw_spot_check`: after the round's root is on chain, a block hash the worker could not know
   when it signed (the block that holds the root) decides, per worker, whether the tenant
   replays one of its segments (probability p) and which one (uniform).
4. `spot_check` (`tessera.compute.segment_check`, shared with the validator's challenge votes):
   download the committed start state of that segment from the provider, replay the segment on
   this machine (`compute.replay.verify_segment`, with the worker's thread count) and compare
   with the committed end checkpoint.
5. `publish_case`: after a failed check becomes an on-chain challenge, push what a replay
   needs (the spec and the lease's signed manifest) to every active validator.

The data a replay needs is not downloaded: the tenant holds the dataset, the worker's shard
follows from its index, and its batches from (job seed, round, worker).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
from eth_utils import keccak

from tessera.chain.client import Chain
from tessera.chain.validators import Validators
from tessera.compute import numerics
from tessera.compute.checkpoints import RoundCommitment, commitment_from_answer, n_leaves_for, tensor_hash
from tessera.errors import CommitmentError, CommitmentExpiresEarly
from tessera.http_deadline import json_of, text_of

# The download-and-replay step is shared with the validator's challenge votes.
from tessera.protocol import commitment as cm
from tessera.protocol import sampling
from tessera.protocol.wire import ChallengeCase, RoundResult

SPOT_CHECK_DOMAIN = b"tessera/spot-check/v1"


@dataclass(frozen=True)
class VerifyTerms:
    """A job's verification settings as the coordinator uses them (from JobSpec.verification)."""

    job: int                          # the Market order whose rounds get roots on chain
    checkpoint_every: int             # k
    spot_check_probability: float     # p
    replay_tolerance: float = 0.0
    challenge: bool = True


EMPTY = tensor_hash({})   # a fresh AdamW state's hash (no step taken yet), and no residual's


@dataclass(frozen=True)
class RoundLink:
    """What a lease's next round must start from: the AdamW state and int8 residual its last
    accepted round (`round`) ended with; FRESH (round -1) before its first."""

    round: int
    optimizer_hash: bytes
    residual_hash: bytes

    @classmethod
    def after(cls, c: RoundCommitment) -> RoundLink:
        return cls(c.round, c.checkpoints[-1].optimizer_hash, c.payload.residual_out_hash)

    def to_json(self) -> dict:
        return {"round": self.round, "optimizer_hash": self.optimizer_hash.hex(),
                "residual_hash": self.residual_hash.hex()}

    @classmethod
    def from_json(cls, doc: dict) -> RoundLink:
        return cls(int(doc["round"]), bytes.fromhex(doc["optimizer_hash"]),
                   bytes.fromhex(doc["residual_hash"]))


FRESH = RoundLink(-1, EMPTY, EMPTY)


def check_commitment(result: RoundResult, *, chain_id: int, verification: str, job: int,
                     round_index: int, lease_id: int, provider: str, worker: int,
                     inner_steps: int, k: int, threads: int, start_params_hash: bytes,
                     min_expiry: int, link: RoundLink | None = FRESH) -> RoundCommitment:
    """The worker's checkpoint commitment, once every field of its signed `Commitment` checks
    out; raises CommitmentError naming the first that does not. Also checks the payload leaf's
    signed facts: the thread count is the job's, the numerics profile the one verified jobs
    train under, and the AdamW state and residual the round starts from are `link`'s: the ones
    the lease's previous accepted round left (FRESH in its first round; None: not checked, a job
    folder from before links were kept)."""
    signed = result.commitment
    if signed is None or result.checkpoints is None or result.payload is None:
        raise CommitmentError("answer carries no commitment (verification is on for this job)")
    try:
        who = cm.signer(chain_id, verification, signed)
    except Exception as exc:  # malformed signature: eth_account raises several types
        raise CommitmentError(f"commitment signature is malformed: {exc}") from None
    c = signed.commitment
    expected = {"signer": (who.lower(), provider.lower()), "job": (c.job, job),
                "round": (c.round, round_index), "lease_id": (c.lease_id, lease_id),
                "provider": (c.provider.lower(), provider.lower()),
                "result_hash": (c.result_hash, "0x" + result.sha256),
                "checkpoints": (c.checkpoints, n_leaves_for(inner_steps, k)),
                "threads": (result.payload.threads, threads),
                "numerics profile": (result.payload.profile, numerics.PROFILE)}
    for name, (got, want) in expected.items():
        if got != want:
            raise CommitmentError(f"commitment {name} is {got}, expected {want}")
    if c.expiry < min_expiry:
        raise CommitmentExpiresEarly(f"commitment expires at {c.expiry}, before {min_expiry} "
                                     "(too soon to post and challenge it)", c.expiry)
    if len(result.checkpoints) + 1 != c.checkpoints:
        raise CommitmentError(f"answer lists {len(result.checkpoints)} checkpoints and a payload "
                              f"leaf, its commitment {c.checkpoints} leaves")
    try:
        commitment = commitment_from_answer(result, round_index, worker, inner_steps, k)
    except ValueError as exc:
        raise CommitmentError(f"checkpoints: {exc}") from None
    if "0x" + commitment.root.hex() != c.checkpoint_root:
        raise CommitmentError("the listed checkpoints do not rebuild the committed checkpoint root")
    if commitment.checkpoints[0].params_hash != start_params_hash:
        raise CommitmentError("round does not start from the published global parameters")
    if link is not None:
        first = link.round < 0
        if not first and link.round + 1 != round_index:
            raise CommitmentError(f"round {round_index} does not follow the lease's last accepted "
                                  f"round {link.round}")
        if commitment.checkpoints[0].optimizer_hash != link.optimizer_hash:
            raise CommitmentError("AdamW state at round start is not " + (
                "a fresh one (the lease's first round)" if first else
                "the one its previous round ended with"))
        if commitment.payload.residual_in_hash != link.residual_hash:
            raise CommitmentError("residual at round start is not " + (
                "empty (the lease's first round)" if first else
                "the one its previous round carried on"))
    return commitment


def spot_check_seed(block_hash: bytes, job: int, round_index: int, lease_id: int) -> bytes:
    """`sampling.challenge_seed` for one lease's round (job as a uint256)."""
    return sampling.challenge_seed(block_hash, job.to_bytes(32, "big"), round_index, lease_id)


def draw_spot_check(seed: bytes, probability: float, n_segments: int) -> int | None:
    """The segment to replay, or None: checked with `probability` (keccak of the seed against
    p·2²⁵⁶), the segment uniform (`sampling.select_segments`)."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    draw = int.from_bytes(keccak(SPOT_CHECK_DOMAIN + seed), "big")
    if draw >= int(probability * 2.0**256):
        return None
    return sampling.select_segments(seed, n_segments, 1)[0]


def validator_endpoints(chain: Chain) -> list[str]:
    """The published endpoints of the active validators (where a case is pushed)."""
    return Validators(chain).active_endpoints()


def publish_case(chain: Chain, challenge_id: int, case: ChallengeCase,
                 http: httpx.Client) -> dict[str, str]:
    """Push a case to every active validator; returns endpoint -> "accepted", "conflict" or
    why it failed (the challenger's step after `open_challenge`)."""
    body = json.loads(case.model_dump_json())
    answers = {}
    for endpoint in validator_endpoints(chain):
        try:
            response = http.post(f"{endpoint}/challenges/{challenge_id}/case", json=body)
        except httpx.HTTPError as exc:
            answers[endpoint] = f"unreachable: {type(exc).__name__}"
            continue
        answers[endpoint] = (_status_of(response) if response.status_code == 200
                             else f"{response.status_code}: {text_of(response, 300)}")
    return answers


def _status_of(response: httpx.Response) -> str:
    """A validator's 200 answer to a case push: its `status`, or what it sent instead (a
    validator is anyone staked: its answer is data, never a reason for the tenant to stop)."""
    try:
        answer = json_of(response.content)
    except ValueError:
        return f"200 but not JSON: {text_of(response, 300)!r}"
    if not isinstance(answer, dict):
        return f"200 but not a JSON object: {text_of(response, 300)!r}"
    return str(answer.get("status", "?"))
