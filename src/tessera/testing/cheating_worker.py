"""TEST ONLY: a DiLoCo worker process that cheats as its lease's job folder says.

    python -m tessera.testing.cheating_worker <the arguments of tessera.compute.diloco_worker>

Run by a cheating provider (cheating_provider.py) in place of `tessera.compute.diloco_worker`:
the same worker, with the cheat that the provider wrote into `--out`/testing.json plugged in as
its round (`Cheat`, playing one of cheats.CHEATS); without that file it plays honestly.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tessera.compute import diloco_worker
from tessera.compute.diloco import State
from tessera.compute.diloco_worker import Emit, WorkerProcess
from tessera.compute.replay import CommittingWorker, RoundTrace
from tessera.testing.cheats import CHEATS, COPY_WAIT_S, TESTING_FILE, CheatContext


@dataclass
class Cheat:
    """One cheat, played as a worker process's committed rounds (diloco_worker's `PlayRound`).
    `siblings` (copy-worker): the other leases of the same order, their providers' endpoints
    and, when colluding, their job folders, as the cheating provider found them."""

    name: str
    siblings: list[dict] = field(default_factory=list)
    copy_wait_s: float = COPY_WAIT_S

    def __post_init__(self):
        if self.name not in CHEATS:
            raise ValueError(f"unknown test-only cheat {self.name!r}; known: {tuple(CHEATS)}")

    @classmethod
    def from_folder(cls, out: Path) -> Cheat | None:
        """The cheat the cheating provider wrote into a lease's job folder (None: honest)."""
        try:
            testing = json.loads((out / TESTING_FILE).read_text())
        except FileNotFoundError:
            return None
        return cls(testing["cheat"], testing.get("siblings", []),
                   testing.get("copy_wait_s", COPY_WAIT_S))

    def __call__(self, process: WorkerProcess, worker: CommittingWorker, start: State,
                 round_index: int, emit: Emit) -> RoundTrace:
        ctx = CheatContext(process.train_tokens, threads=process.workload.model.threads,
                           emit=emit, siblings=self.siblings, copy_wait_s=self.copy_wait_s)
        return CHEATS[self.name](worker, start, round_index, process.k, ctx)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--out", type=Path, required=True)
    known, _ = parser.parse_known_args(argv)
    return diloco_worker.main(argv, play_round=Cheat.from_folder(known.out))


if __name__ == "__main__":
    sys.exit(main())
