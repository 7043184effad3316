"""The numerics profile: which CPU kernels a verified job trains and replays with.

Why. A verifier replays a committed segment and compares hashes bitwise
(docs/verification.md), so the replay must take exactly the floating-point path the training
took. The thread count is part of the job; the kernel path is chosen by the *host*, three
times over (torch 2.13.0 CPU wheel; measured on one AMD EPYC, results in
bench/results/verification_heterogeneous.json):

- ATen dispatches its vectorised kernels (softmax, layer norm, attention, AdamW's elementwise
  ops, ...) on the CPU's features: DEFAULT (scalar), AVX2 or AVX512. The same DiLoCo round
  trained with DEFAULT and replayed with AVX2 fails every one of its 10 segment replays
  (max |Δ| 3e-6 after 2 steps).
  ATen believes ATEN_CPU_CAPABILITY blindly: asked for avx512 on a CPU without it, the
  training process dies of SIGILL (so would a pinned process on a CPU without AVX2).
- oneDNN runs the model's GELU (jit:avx2 here); with only its ISA capped to SSE4.1 the
  round's checkpoints differ too (measured aside).
- MKL (the BLAS) picks its GEMM kernels by CPU. Its conditional numerical reproducibility
  (MKL_CBWR) pins them, but only the COMPATIBLE branch (SSE2 without the approximate
  rcpps/rsqrtps) exists on every x86 CPU: the AVX2/AVX512 branches are for Intel processors
  only, and elsewhere MKL silently falls back to AUTO, i.e. to its own per-CPU dispatch
  (Intel's oneMKL guide, "Specifying Code Branches"; MKL_VERBOSE on this AMD host reports
  `CNR:AUTO` for MKL_CBWR=AVX2 and `CNR:COMPATIBLE` for COMPATIBLE). So the profile takes
  COMPATIBLE: slower GEMMs for the same GEMM code on Intel and AMD (measured at 1 thread:
  0.49x the unpinned tokens/s on the default workload, 0.80x on the bench model; with MKL's
  AVX2 branch, i.e. AUTO on this AMD host, 1.0x). STRICT is not set: it only makes GEMM
  independent of the thread count (documented for the AVX2/AVX-512 branches; measured: no bit
  changes at 1 or 2 threads), and the thread count is fixed by the job anyway (ATen's own
  reductions depend on it).

What the profile is. `PROFILE_ENV` pins ATen and oneDNN to AVX2, MKL to its COMPATIBLE branch
and MKL/OpenMP to the thread count asked for (no dynamic adjustment: Intel's reproducibility
conditions; measured aside: with OMP_DYNAMIC=TRUE a 2-thread job on this loaded host was given
fewer threads by libgomp and took other bits). `pin()` writes it into this process's
environment; the settings are read lazily (ATen at its first dispatched op, MKL and oneDNN at
their first call), so **call `pin()` before the first torch op of the process**: importing
torch is fine, creating a tensor is not.
Child processes inherit the environment.

What it guarantees: with the same torch build (torch==2.13.0, pyproject; the same ATen, MKL and
oneDNN), the same thread count and deterministic algorithms on
(`train.configure_determinism`), a run under the profile takes the same kernels on any x86-64
CPU with AVX2 and FMA, whatever the CPU would pick on its own. Measured on one AMD EPYC (AVX2,
no AVX-512) by emulating other hosts' choices (ATen DEFAULT/AVX2, oneDNN SSE4.1/AVX2): pinned
runs are bitwise equal whichever host was emulated; and on a second, real AMD EPYC with
AVX-512, and under MKL's Intel dispatch (forced on AMD: bench/verification_vendors.py), the
same bits again, where MKL's AVX2 and AVX512 branches give Intel other bits than AMD. Not
measured: an Intel CPU itself.
What it does not cover: another torch build, a CPU without AVX2 (the AVX2 kernels cannot run
there; `active_profile` reports it), ARM, and GPUs (no GPU was available to measure a CUDA
profile; a CPU replay of CUDA training is not bitwise, so verified jobs train on the CPU:
protocol/jobspec.py).

Importing this module does not import torch (the `tessera` CLI pins at its start).
"""

from __future__ import annotations

import os

PROFILE: str = "cpu-avx2-v1"

PROFILE_ENV: dict[str, str] = {
    # ATen's vectorised kernels: its AVX2 build (read at the first dispatched op)
    "ATEN_CPU_CAPABILITY": "avx2",
    # oneDNN (mkldnn; runs GELU here): JIT code for at most AVX2
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # MKL's one code branch that runs the same on Intel and AMD (see the module docstring)
    "MKL_CBWR": "COMPATIBLE",
    # the thread count is the job's: MKL and OpenMP must not lower it on their own
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
}

# The build the profile was measured on (pyproject pins torch==2.13.0); the local part of the
# version (+cpu, +cu126) is not compared: not measured either way.
TORCH_VERSION = "2.13.0"
_CAPABILITY = "AVX2"     # what torch.backends.cpu.get_cpu_capability() reports under the profile


def pin() -> None:
    """Set PROFILE_ENV in os.environ (overriding what is there).

    Call before the first torch op of the process: after it, ATen, MKL and oneDNN have already
    chosen their kernels and the process stays unpinned (`active_profile` says so)."""
    os.environ.update(PROFILE_ENV)


def _host_lacks() -> list[str]:
    """CPU features the profile's kernels need that this host does not have."""
    import torch

    caps = torch.cpu.get_capabilities()
    return [name for name in ("avx2", "fma3") if not caps.get(name, False)]


def active_profile(device: str = "cpu") -> str:
    """PROFILE when this process really runs it: device cpu, torch TORCH_VERSION, ATen
    dispatching AVX2 on a CPU that has AVX2 and FMA, and every PROFILE_ENV value in the
    environment. Otherwise what runs instead, e.g.
    "unpinned: capability=DEFAULT, MKL_CBWR=unset, device=cuda".

    Reading the capability fixes ATen's choice for the rest of the process."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    wrong = [name for name, value in PROFILE_ENV.items() if os.environ.get(name) != value]
    version = torch.__version__.split("+")[0]
    lacks = _host_lacks()
    if (device == "cpu" and capability == _CAPABILITY and not wrong and not lacks
            and version == TORCH_VERSION):
        return PROFILE
    shown = [f"capability={capability}"]
    shown += [f"{name}={os.environ.get(name, 'unset')}" for name in (wrong or ["MKL_CBWR"])]
    if lacks:
        shown.append(f"host lacks {'+'.join(lacks)}")
    if version != TORCH_VERSION:
        shown.append(f"torch={torch.__version__}")
    shown.append(f"device={device}")
    return "unpinned: " + ", ".join(shown)


def can_replay(signed_profile: str, device: str = "cpu") -> bool:
    """Whether this process can replay, bitwise, work signed as trained under `signed_profile`:
    only when both are PROFILE, the one profile verified jobs accept."""
    return signed_profile == PROFILE and active_profile(device) == PROFILE
