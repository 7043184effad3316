"""A round's answers folded into the aggregate as they arrive: the tenant's side of streaming.

With the mean (the default), each accepted pseudo-gradient is added to the round's exact sum
(`compute/exact_sum.py`) the moment it is decoded, and only its payload bytes are kept, on disk,
to take it back out if the worker is caught by the round's checks afterwards (subtracting is
exact: the aggregate is bitwise as if it had never been added). The coordinator's memory stays
at the sum's 16-24 bytes per parameter (at most 80) plus one decoded answer, however many workers there are,
and the work of aggregating overlaps the wait for the slowest worker. The median and the trimmed
mean need every value at once: their decoded answers are held, 4 bytes per parameter per worker.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from tessera.compute.diloco import Coordinator, OuterUpdate, State


class RoundIntake:
    """One round's accepted answers, for the outer step."""

    def __init__(self, coordinator: Coordinator, spool: Path):
        self.coordinator, self.spool = coordinator, Path(spool)
        self.stream = coordinator.stream()
        self.lock = threading.Lock()
        self.taken: list[Path] = []
        self.in_sum: set[Path] = set()    # the taken answers the sum holds now
        shutil.rmtree(self.spool, ignore_errors=True)   # a crashed round's leftovers

    def take(self, payload: bytes) -> State | Path:
        """Decode and validate a worker's payload (ValueError if refused) and fold it in; the
        result is what the round keeps for that answer. Called from the workers' threads: one
        payload is decoded at a time, so one decoded answer is in memory at a time."""
        with self.lock:
            pseudo_gradient = self.coordinator.decode(payload)
            if self.stream is None:
                return pseudo_gradient
            self.spool.mkdir(parents=True, exist_ok=True)
            path = self.spool / f"answer-{len(self.taken)}.bin"
            path.write_bytes(payload)
            self.stream.add(pseudo_gradient)
            self.taken.append(path)
            self.in_sum.add(path)
            return path

    def apply(self, kept: list[State | Path], keep: bool = False) -> OuterUpdate:
        """The outer step from the answers that survived the round's checks (a subset of what
        `take` returned); the others are taken back out of the sum first. `keep`: the answers
        stay (on disk) for another `apply` with fewer of them, after the coordinator's state is
        put back (the coordinator's step taken again without a worker caught meanwhile);
        `close` then."""
        if self.stream is None:
            update = self.coordinator.apply(kept)
        else:
            with self.lock:
                for path in self.in_sum - set(kept):
                    self.stream.subtract(self.coordinator.decode(path.read_bytes()))
                    self.in_sum.discard(path)
                update = self.coordinator.apply_stream(self.stream)
        if not keep:
            self.close()
        return update

    def close(self) -> None:
        shutil.rmtree(self.spool, ignore_errors=True)
