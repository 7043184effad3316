"""The numerics profile (compute/numerics.py): an honest worker's round replays bitwise on a host
whose CPU would pick other kernels, once both processes pin the profile.

Other hosts are emulated on this one: the ATen capability and oneDNN's ISA a CPU would pick on
its own ("default": a CPU without AVX2, whose ATen runs its scalar kernels and oneDNN SSE4.1;
"avx2": what an AVX2 CPU picks). Every run is a fresh process (ATen reads its capability once per
process, at its first op); all start from the same parameters, written once (the model's
initialisation itself depends on the capability).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from tests.support.compute import TINY

from tessera.compute import numerics

HOSTS = {"default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
         "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}

# One DiLoCo round of the tiny model in a fresh process: pin first (argv[1] == "pin") or not,
# then report the profile it ran and a hash of its state after each of its rounds (the worker's
# parameters and AdamW state: what a checkpoint commits to). `diloco.Worker.run_round`, which
# `replay.CommittingWorker` is tested bitwise against, keeps the child's imports light. An
# unpinned run pins at the end, after its first op, to show that this is too late.
CHILD = """
import hashlib, json, sys
if sys.argv[1] == "pin":
    from tessera.compute import numerics
    numerics.pin()
import torch
from tessera.compute import numerics
from tessera.compute.corpus import build_stdlib_corpus
from tessera.compute.diloco import DilocoConfig, Worker
from tessera.compute.train import configure_determinism, split
from tessera.protocol.workload import TrainingWorkload
args = json.loads(sys.argv[2])
w = TrainingWorkload.model_validate(args["workload"])
configure_determinism(w)
train, _ = split(build_stdlib_corpus(args["corpus_bytes"]), w)
cfg = DilocoConfig(workload=w, workers=2, inner_steps=args["h"], compression="none")
worker, state, hashes = Worker(cfg, 0, train, "cpu"), torch.load(args["start"]), []
for r in range(args["rounds"]):
    worker.run_round(state, r)
    h = hashlib.sha256()
    for name, p in worker.model.named_parameters():
        h.update(name.encode() + p.detach().numpy().tobytes())
        for key, t in sorted(worker.optimizer.state[p].items()):
            h.update(key.encode() + t.numpy().tobytes())
    hashes.append(h.hexdigest())
    state = {n: p.detach().clone() for n, p in worker.model.named_parameters()}
numerics.pin()
print(json.dumps({"profile": numerics.active_profile("cpu"), "hashes": hashes}))
"""

needs_avx2 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64")
    or not torch.cpu.get_capabilities().get("avx2", False),
    reason="the profile's kernels need an x86-64 CPU with AVX2")


def child_env(host: str) -> dict[str, str]:
    """This process's environment without any profile setting, as `host` would pick."""
    env = {k: v for k, v in os.environ.items()
           if k not in numerics.PROFILE_ENV and k != "MKL_ENABLE_INSTRUCTIONS"}
    return {**env, **HOSTS[host]}


@needs_avx2
def test_pinned_rounds_are_bitwise_equal_whatever_the_host_would_pick(tmp_path):
    start = tmp_path / "start.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        from tessera.compute.diloco import new_model, parameter_state
        torch.save(parameter_state(new_model(TINY)), start)
    args = json.dumps({"workload": TINY.model_dump(), "corpus_bytes": 64 * 1024, "h": 5,
                       "rounds": 2, "start": str(start)})
    runs = {(host, mode): subprocess.Popen([sys.executable, "-c", CHILD, mode, args],
                                           env=child_env(host), stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
            for host in HOSTS for mode in ("pin", "unpinned")}
    out = {}
    for key, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{key}: {stderr[-2000:]}"
        out[key] = json.loads(stdout.strip().splitlines()[-1])

    # the problem is real: unpinned, the two hosts' states differ after every round
    default, avx2 = out["default", "unpinned"], out["avx2", "unpinned"]
    assert all(a != b for a, b in zip(default["hashes"], avx2["hashes"], strict=True))
    # and pinning after the first op changes nothing: the process says it is unpinned
    assert default["profile"].startswith("unpinned: capability=DEFAULT")
    # pinned first: one trajectory, bitwise, and the process says it ran the profile
    assert out["default", "pin"]["hashes"] == out["avx2", "pin"]["hashes"]
    assert out["default", "pin"]["profile"] == out["avx2", "pin"]["profile"] == numerics.PROFILE


def test_pin_sets_the_profile_environment(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "AVX512")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    for name in numerics.PROFILE_ENV:
        monkeypatch.delenv(name, raising=False)    # restored after the test
    numerics.pin()
    assert {name: os.environ[name] for name in numerics.PROFILE_ENV} == numerics.PROFILE_ENV
    assert numerics.PROFILE_ENV["ATEN_CPU_CAPABILITY"] == "avx2"
    assert numerics.PROFILE_ENV["MKL_CBWR"] == "COMPATIBLE"


def test_active_profile_describes_what_runs_instead(monkeypatch):
    for name in numerics.PROFILE_ENV:
        monkeypatch.delenv(name, raising=False)
    unpinned = numerics.active_profile("cpu")
    capability = torch.backends.cpu.get_cpu_capability()
    assert unpinned.startswith(f"unpinned: capability={capability}, ")
    assert "MKL_CBWR=unset" in unpinned and unpinned.endswith("device=cpu")
    numerics.pin()
    cuda = numerics.active_profile("cuda")
    assert cuda != numerics.PROFILE and cuda.endswith("device=cuda")
    assert not numerics.can_replay(numerics.PROFILE, "cuda")
    assert not numerics.can_replay(unpinned)
    assert not numerics.can_replay("cpu-avx2-v0")


def test_entry_points_pin_before_any_command(monkeypatch, tmp_path):
    """`tessera ...` (every command) and the test-only cheating provider pin at their start."""
    from typer.testing import CliRunner

    from tessera.cli import app
    from tessera.testing import cheating_provider

    for name in numerics.PROFILE_ENV:
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["job", "resume", str(tmp_path / "nope")])
    assert result.exit_code == 1        # the command ran (and refused the folder) after the pin
    assert {name: os.environ.get(name) for name in numerics.PROFILE_ENV} == numerics.PROFILE_ENV
    for name in numerics.PROFILE_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        cheating_provider.main(["--cheat", "not-a-cheat", "--config", str(tmp_path / "p.toml")])
    assert {name: os.environ.get(name) for name in numerics.PROFILE_ENV} == numerics.PROFILE_ENV
