"""What the provider can offer: detected devices and a measured benchmark."""

from __future__ import annotations

import platform
import shutil
import subprocess
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Hardware:
    gpu_model: str      # CUDA device name, or "cpu-<arch>" when there is no GPU
    gpu_count: int
    gpu_memory_mb: int
    benchmark_score: int  # measured matmul throughput, in MFLOP/s

    @property
    def is_gpu(self) -> bool:
        return not self.gpu_model.startswith("cpu-")


def _cpu_memory_mb() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def _nvidia_smi() -> list[tuple[str, int]]:
    if not shutil.which("nvidia-smi"):
        return []
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, timeout=10,
    )
    if out.returncode != 0:
        return []
    rows = [line.rsplit(",", 1) for line in out.stdout.strip().splitlines() if "," in line]
    return [(name.strip(), int(mem.strip())) for name, mem in rows]


def measure_matmul_mflops(device: str, threads: int, size: int = 512, seconds: float = 0.5) -> int:
    """Sustained float32 matmul throughput on `device` with `threads` CPU threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size, device=device)
        b = torch.randn(size, size, device=device)
        (a @ b).sum().item()
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            (a @ b).sum().item()
            runs += 1
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return int(2 * size**3 * runs / elapsed / 1e6)


def detect_hardware(threads: int, gpu_count_override: int | None = None) -> tuple[Hardware, str]:
    """Detected hardware and a note for the log (empty when there is nothing to say)."""
    note = ""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        hw = Hardware(props.name, torch.cuda.device_count(), props.total_memory // 2**20,
                      measure_matmul_mflops("cuda", threads, size=2048))
    else:
        gpus = _nvidia_smi()
        if gpus:
            note = (f"nvidia-smi sees {len(gpus)} GPU(s) ({gpus[0][0]}) but this PyTorch build "
                    "cannot use CUDA; offering the CPU only")
        hw = Hardware(f"cpu-{platform.machine()}", 1, _cpu_memory_mb(),
                      measure_matmul_mflops("cpu", threads))
    if gpu_count_override is not None:
        if gpu_count_override > hw.gpu_count:
            raise ValueError(f"hardware.gpu_count {gpu_count_override} exceeds the "
                             f"{hw.gpu_count} device(s) detected")
        hw = Hardware(hw.gpu_model, gpu_count_override, hw.gpu_memory_mb, hw.benchmark_score)
    return hw, note
