"""bench/verification_adversary.py's overhead measurement (`measure_overhead`) on a short round
of the default model: every part is timed and the honest round passes its own checks (the bench
raises if not). The served states come over an in-memory transport that must stream its bodies
as a real server does: `segment_check.download` reads them raw, and a pre-read body broke every
check of the bench unnoticed until this test (2026-12-07)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "bench")]
import verification_adversary as va  # noqa: E402
import verification_adversary_checks as vc  # noqa: E402


def test_the_overhead_of_a_short_honest_round_is_measured():
    spec = va.load_spec()
    spec = spec.model_copy(update={"diloco": spec.diloco.model_copy(update={"inner_steps": 10})})
    job = va.Job(spec)
    out = vc.measure_overhead(spec, spec.workload, job)
    parts = out["parts_fraction"]
    assert set(parts) == {"worker_commit", "worker_keep_states", "tenant_cheap_checks",
                          "tenant_payload_check", "tenant_spot_check_times_p"}
    assert all(v > 0 for v in parts.values()), parts
    assert abs(out["overhead_total"] - sum(parts.values())) < 1e-3   # the parts, each rounded
    assert out["download_bytes_per_worker_round"] > 0
