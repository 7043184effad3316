"""The tiny DiLoCo workload that the compute tests share (its corpus fixture: tests/compute/conftest.py)."""

from __future__ import annotations

from tessera.protocol.workload import TrainingWorkload

# One layer, 16-wide: a DiLoCo round or a segment replay takes milliseconds on a CPU.
TINY = TrainingWorkload(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
                        eval_batches=4, device="cpu", learning_rate=3e-3, threads=1)
CORPUS_BYTES = 64 * 1024   # of the standard library's own source: nothing is downloaded


def committed_rounds(corpus: bytes, config, worker: int, k: int, rounds: int):
    """(training tokens, the job's initial parameters, `rounds` committed rounds of `worker`
    every k steps, each from those parameters): what the replay and payload tests check."""
    from tessera.compute.diloco import new_model, parameter_state
    from tessera.compute.replay import CommittingWorker
    from tessera.compute.train import configure_determinism, split

    configure_determinism(config.workload)
    tokens, _ = split(corpus, config.workload)
    start = parameter_state(new_model(config.workload))
    committing = CommittingWorker(config, worker, tokens)
    return tokens, start, [committing.run_round_committed(start, r, k) for r in range(rounds)]
