"""The tiny DiLoCo workload that the compute tests share (its corpus fixture: tests/compute/conftest.py)."""

from __future__ import annotations

from tessera.protocol.workload import TrainingWorkload

# One layer, 16-wide: a DiLoCo round or a segment replay takes milliseconds on a CPU.
TINY = TrainingWorkload(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
                        eval_batches=4, device="cpu", learning_rate=3e-3, threads=1)
CORPUS_BYTES = 64 * 1024   # of the standard library's own source: nothing is downloaded
