"""The part of a validator's challenge duty that needs PyTorch: the size of the job's model,
and the replay of the challenged segment from the provider's served answer
(validator/challenges.py). A module of its own, imported when a case is judged: a validator
that never judges one never loads PyTorch (1.5 s and some 300 MB in each
`tessera validator run`, and the test suite starts dozens)."""

from __future__ import annotations

from tessera.compute.checkpoints import commitment_from_answer, n_leaves_for
from tessera.compute.diloco_worker import config_of
from tessera.compute.model import parameter_count
from tessera.compute.segment_check import OPEN_FAILURE, max_state_bytes, spot_check
from tessera.compute.train import configure_determinism, split
from tessera.errors import CaseError
from tessera.protocol.wire import RoundResult

__all__ = ["n_leaves_for", "replay_challenged", "replayable_size"]


def replayable_size(workload, max_params: int) -> int:
    """The job's parameter count; CaseError (abstain, for good) above `max_params`: its state
    alone is 12 bytes a parameter, and a tenant could name a model that exhausts every
    validator's memory (review 25)."""
    n_params = parameter_count(workload.model)
    if n_params > max_params:
        raise CaseError(f"the job's model has {n_params:,} parameters, more than this validator "
                        f"replays ([challenges] max_params = {max_params:,})")
    return n_params


def replay_challenged(http, endpoint: str, ev: dict, workload, data: bytes, n_params: int,
                      result: RoundResult, tolerance: float) -> tuple[bool | None, str, dict]:
    """`ChallengeVoter._judge`'s replay of the challenged segment from the provider's served
    answer: (guilty, why, figures), None for guilty while the provider has not opened it."""
    try:
        commitment = commitment_from_answer(result, ev["round_index"], workload.worker,
                                            workload.inner_steps, workload.checkpoint_every)
    except ValueError as exc:
        return None, f"the served answer does not fit the job: {exc}", {}
    if commitment.root != bytes(ev["checkpoint_root"]):
        return None, "the served checkpoint hashes do not rebuild the challenged root", {}
    config = config_of(workload)
    configure_determinism(workload.model)
    train_tokens, _ = split(data, workload.model)
    check = spot_check(http, endpoint, ev["lease_id"], config, workload.worker, commitment,
                       ev["segment"], train_tokens, max_state_bytes(n_params), tolerance)
    detail = {"segment": check.segment, "replay_s": round(check.seconds, 4),
              "bytes": check.bytes}
    if check.ok is None:   # another numerics profile: this machine abstains, for good
        raise CaseError(check.reason)
    if not check.ok and check.reason.startswith(OPEN_FAILURE):
        return None, check.reason, detail
    return (not check.ok), check.reason, detail
