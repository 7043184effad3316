"""bench/diloco_example.py reads the job it tunes from examples/diloco.toml (never a copy of
its numbers), and bench/diloco.py trains a run named on another model with that model."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import diloco  # noqa: E402
import diloco_example  # noqa: E402

from tessera.protocol.jobspec import JobSpec  # noqa: E402
from tessera.tenant.multinode import diloco_config  # noqa: E402


def test_the_job_and_its_shipped_settings_are_the_example_files():
    spec = JobSpec.model_validate(tomllib.loads((ROOT / "examples" / "diloco.toml").read_text()))
    job, shipped = diloco_example.example_job()
    assert (job["H"], job["compression"], job["workers"]) == (
        spec.diloco.inner_steps, spec.diloco.compression, spec.order.nodes)
    assert job["steps"] == spec.diloco.inner_steps * spec.diloco.rounds
    effective = diloco_config(spec, spec.order.nodes)   # what a job of the file runs with
    assert shipped == {"lr": spec.workload.learning_rate, "schedule": spec.workload.lr_schedule,
                       "outer_lr": effective.outer_lr,
                       "outer_momentum": effective.outer_momentum}
    assert None not in shipped.values()
    # a run of the sweep trains the example's model, with the run's rate and schedule
    w = diloco.workload_of({**job, "lr": 1e-2, "schedule": "linear", "seed": 1000})
    assert (w.n_layer, w.n_embd, w.batch_size) == (spec.workload.n_layer, spec.workload.n_embd,
                                                  spec.workload.batch_size)
    assert (w.learning_rate, w.lr_schedule, w.steps, w.seed) == (1e-2, "linear", job["steps"], 1000)
    assert w.warmup_steps == job["steps"] // 20 and w.final_lr_ratio == 0.1
    assert diloco.workload_of({"lr": 5e-3, "schedule": "linear", "seed": 1, "steps": 2400}) \
        .n_embd == diloco.BASE_WORKLOAD.n_embd
