"""TEST ONLY: a DiLoCo worker process that cheats as its lease's job folder says.

    python -m tessera.testing.cheating_worker <the arguments of tessera.compute.diloco_worker>

Run by a cheating provider (cheating_provider.py) in place of `tessera.compute.diloco_worker`:
the same worker, with the cheat that the provider wrote into `--out`/testing.json plugged in as
its round (cheats.Cheat); without that file it plays honestly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tessera.compute import diloco_worker
from tessera.testing.cheats import Cheat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--out", type=Path, required=True)
    known, _ = parser.parse_known_args(argv)
    return diloco_worker.main(argv, play_round=Cheat.from_folder(known.out))


if __name__ == "__main__":
    sys.exit(main())
