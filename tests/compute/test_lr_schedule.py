"""The linear learning-rate schedule: one rule (TrainingWorkload.learning_rate_at) that every
training loop follows, a verifier's replay included, so an honest scheduled worker replays
bitwise and a worker that ignores the schedule is caught."""

import hashlib
import json

import pytest
import torch
from tests.support.compute import TINY, committed_rounds

from tessera.compute.diloco import (
    OVERLAP_OUTER_LR,
    OVERLAP_OUTER_MOMENTUM,
    DilocoConfig,
    Worker,
)
from tessera.compute.replay import CommittingWorker, open_segment, verify_segment
from tessera.errors import SpecError
from tessera.protocol.jobspec import parse_job_spec
from tessera.protocol.workload import TrainingWorkload
from tessera.tenant.multinode import diloco_config
from tessera.testing.cheats import honest_step, played_round

H, K, WORKER, ROUNDS = 8, 4, 0, 2
SCHEDULED = TINY.model_copy(update={"lr_schedule": "linear", "warmup_steps": 3,
                                    "steps": ROUNDS * H, "final_lr_ratio": 0.1})
CFG = DilocoConfig(workload=SCHEDULED, workers=2, inner_steps=H, rounds=ROUNDS)


def test_the_rule_warms_up_then_decays_to_the_final_ratio():
    w = SCHEDULED
    lrs = [w.learning_rate_at(s) for s in range(w.steps + 1)]
    assert lrs[:3] == [w.learning_rate * i / 3 for i in (1, 2, 3)]
    assert lrs[3] == w.learning_rate                       # the peak right after warm-up
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:], strict=False))
    assert lrs[w.steps] == pytest.approx(0.1 * w.learning_rate)
    assert w.learning_rate_at(10 * w.steps) == pytest.approx(0.1 * w.learning_rate)
    # the default is the constant rate the project always had, bit for bit
    assert {TINY.learning_rate_at(s) for s in (0, 1, 99, 10**6)} == {TINY.learning_rate}


def test_a_warmup_that_leaves_no_decay_is_refused():
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainingWorkload.model_validate({**TINY.model_dump(), "lr_schedule": "linear",
                                         "warmup_steps": TINY.steps})


@pytest.fixture(scope="module")
def rounds(corpus):
    return committed_rounds(corpus, CFG, WORKER, K, ROUNDS)


def test_a_scheduled_round_commits_what_the_plain_worker_computes_and_replays(rounds):
    tokens, start, traces = rounds
    plain = Worker(CFG, WORKER, tokens)
    for r, trace in enumerate(traces):
        pg = plain.run_round(start, r)
        assert all(torch.equal(pg.tensors[n], trace.pseudo_gradient.tensors[n]) for n in pg.tensors)
        for s in range(trace.commitment.n_segments):
            verdict = verify_segment(CFG, WORKER, r, trace.commitment.root, trace.commitment.n_leaves,
                                     K, open_segment(trace, s), tokens)
            assert verdict.ok, verdict.reason
    # the schedule moved the weights: the same round at the constant rate ends elsewhere
    constant = Worker(CFG.model_copy(update={"workload": TINY}), WORKER, tokens)
    other = constant.run_round(start, 0)
    assert not all(torch.equal(other.tensors[n], traces[0].pseudo_gradient.tensors[n])
                   for n in other.tensors)


def test_a_worker_that_ignores_the_schedule_fails_its_replays(rounds):
    tokens, start, _ = rounds
    worker = CommittingWorker(CFG, WORKER, tokens)
    peak = SCHEDULED.learning_rate

    def flat(w, gen, lr):   # the honest step, at the peak rate whatever the schedule says
        return honest_step(w, gen, peak)
    trace = played_round(worker, start, 0, K, step=flat)
    verdicts = [verify_segment(CFG, WORKER, 0, trace.commitment.root, trace.commitment.n_leaves, K,
                               open_segment(trace, s), tokens) for s in range(trace.commitment.n_segments)]
    assert not verdicts[0].ok                    # warm-up steps at the peak rate
    assert not verdicts[1].ok                    # decaying steps at the peak rate


JOB = """
name = "t"
mode = "diloco"
[order]
max_price_per_gpu_hour = "3.00"
duration = "10m"
nodes = 2
[workload]
kind = "train-charlm"
lr_schedule = "linear"
warmup_steps = 20
{steps}
[diloco]
inner_steps = 25
rounds = 8
"""


def test_a_diloco_job_spec_sets_the_schedule_horizon_to_its_inner_steps():
    spec = parse_job_spec(JOB.format(steps=""), "job.toml")
    assert spec.workload.steps == 25 * 8
    assert parse_job_spec(JOB.format(steps="steps = 200"), "job.toml").spec_hash() == spec.spec_hash()
    with pytest.raises(SpecError, match=r"rounds x diloco.inner_steps \(200\)"):
        parse_job_spec(JOB.format(steps="steps = 300"), "job.toml")


def test_the_outer_optimizer_is_set_from_the_job_spec_or_left_to_its_defaults():
    spec = parse_job_spec(JOB.format(steps="") + "outer_lr = 1.0\nouter_momentum = 0.5\n", "job.toml")
    cfg = diloco_config(spec, 2)
    assert (cfg.outer_lr, cfg.outer_momentum) == (1.0, 0.5)
    assert cfg.workload.learning_rate_at(199) < cfg.workload.learning_rate
    plain = diloco_config(parse_job_spec(JOB.format(steps=""), "job.toml"), 2)
    fields = DilocoConfig.model_fields       # the one home of the in-step defaults
    assert (plain.outer_lr, plain.outer_momentum) == (fields["outer_lr"].default,
                                                      fields["outer_momentum"].default)
    overlap = diloco_config(parse_job_spec(JOB.format(steps="") + "overlap = true\n", "job.toml"), 2)
    assert (overlap.outer_lr, overlap.outer_momentum) == (OVERLAP_OUTER_LR, OVERLAP_OUTER_MOMENTUM)
    with pytest.raises(SpecError, match="outer_momentum"):
        parse_job_spec(JOB.format(steps="") + "outer_momentum = 1.0\n", "job.toml")


def test_a_spec_that_does_not_use_the_new_fields_hashes_as_before():
    """The order commits to spec_hash on chain; a spec without a schedule or outer settings must
    hash as it did before those fields existed (what a party on the earlier version computes)."""
    text = JOB.format(steps="").replace('lr_schedule = "linear"\nwarmup_steps = 20\n', "")
    spec = parse_job_spec(text, "job.toml")
    before = spec.model_dump(mode="json", exclude={"escrow"})
    for name in ("lr_schedule", "warmup_steps", "final_lr_ratio"):
        del before["workload"][name]
    for name in ("outer_lr", "outer_momentum"):
        del before["diloco"][name]
    canonical = json.dumps(before, sort_keys=True, separators=(",", ":")).encode()
    assert spec.spec_hash() == hashlib.sha256(canonical).digest()
    # using any of them changes the hash
    for old, new in (('kind = "train-charlm"\n', 'kind = "train-charlm"\nwarmup_steps = 5\n'),
                     ("[diloco]\n", "[diloco]\nouter_lr = 1.0\n")):
        assert parse_job_spec(text.replace(old, new), "job.toml").spec_hash() != spec.spec_hash()
