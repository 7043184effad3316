"""Answers a provider signed a commitment to, kept when the tenant re-sends their round.

A tenant may re-send one of a lease's last two rounds with other parameters (its coordinator
restarted, `provider/diloco_rounds.py`), and the worker runs the round again. Review 30,
finding 1: a tenant that held the first answer's signed commitment re-sent the round, posted
the old commitment in its root anyway and challenged it; the re-run had replaced the states
behind it, the provider could not open it, and the validators voted the honest provider guilty
once the grace ran out. Now the answer behind a commitment that was handed out is set aside,
under its checkpoint root, before the re-run starts, and served by root (`?root=` on the
round's answer and checkpoint routes) to whoever verifies it: the validators ask for the
challenged root, the tenant's spot checks for the root it drew from.

Disk: a round keeps at most MAX_SUPERSEDED_ANSWERS answers set aside (one per root: a resumed
tenant that re-sends the same start gets the same root and takes no new place); a re-send past
that is refused (409) and changes nothing (the count stays after their states are pruned: a
round re-sent from four different starts takes no more). Their checkpoint states are pruned
like the round's own (`compute.diloco_worker.prune_checkpoints`: RETAIN_S after the answer and
RETAIN_AFTER_EXPIRY_S after the latest commitment to it expired).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from tessera.compute.diloco_worker import CHECKPOINT_DIR, SUPERSEDED_DIR, read_json
from tessera.errors import Refused
from tessera.files import write_atomic
from tessera.protocol.commitment import SignedCommitment

ROUND_COMMITMENT = "commitment.json"   # the provider's signed Commitment for the round
RESULT = "result.json"                 # the worker's answer (compute/diloco_worker.py)
# distinct commitments of one round kept after re-sends; a tenant restarts seldom, and each
# keeps a round's checkpoint states until they are pruned
MAX_SUPERSEDED_ANSWERS = 3
ROOT = re.compile(r"(0x)?([0-9a-fA-F]{64})")


def parse_root(root: str) -> str:
    """A checkpoint root from a query: 64 hex digits (an 0x prefix is optional), returned in
    lowercase without the prefix; Refused (400) for anything else."""
    match = ROOT.fullmatch(root)
    if match is None:
        raise Refused(400, "root must be a checkpoint root: 0x and 64 hex digits")
    return match.group(2).lower()


def committed_root(folder: Path) -> str | None:
    """The root of the commitment the round's folder holds for its answer now, when the
    commitment was signed for that answer (None: no answer, or none handed out for it)."""
    commitment = read_json(folder / ROUND_COMMITMENT)
    result = read_json(folder / RESULT)
    if commitment is None or result is None:
        return None
    root = commitment["commitment"]["checkpoint_root"].removeprefix("0x").lower()
    return root if result.get("checkpoint_root") == root else None


def set_aside(folder: Path) -> None:
    """Before a round is run again from other parameters: keep the answer whose commitment
    was handed out (its result, signed commitment and checkpoint states) under its root.
    Refused (409, nothing moved) when the round already keeps MAX_SUPERSEDED_ANSWERS."""
    root = committed_root(folder)
    if root is None:
        return
    kept = folder / SUPERSEDED_DIR
    target = kept / root
    if target.exists():      # a resumed tenant's re-send of the same start (the same root):
        # the latest commitment to it and its answer's time go with the states, which are
        # kept by them (`compute.diloco_worker.prune_checkpoints`; review 31, finding 3)
        for name in (ROUND_COMMITMENT, RESULT):
            copy_atomic(folder / name, target / name)
    else:
        if kept.is_dir() and sum(not p.name.startswith(".") for p in kept.iterdir()) \
                >= MAX_SUPERSEDED_ANSWERS:
            raise Refused(409, f"round {folder.name} keeps {MAX_SUPERSEDED_ANSWERS} answers "
                               "its provider committed to and was re-sent again: it runs no "
                               "more re-sends")
        partial = kept / f".{root}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in (ROUND_COMMITMENT, RESULT):
            shutil.copy2(folder / name, partial / name)
        partial.rename(target)
    # the states last, by one rename: a crash before it leaves them in the round's folder,
    # where the next re-send finds and moves them
    if not (target / CHECKPOINT_DIR).exists() and (folder / CHECKPOINT_DIR).is_dir():
        (folder / CHECKPOINT_DIR).rename(target / CHECKPOINT_DIR)


def copy_atomic(source: Path, target: Path) -> None:
    """`source` over `target`, whole or not at all, with `source`'s modification time."""
    write_atomic(target, source.read_bytes())
    stat = source.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def answer_folder(folder: Path, root: str) -> Path | None:
    """Where the answer committed to `root` (parsed) is kept: the round's own folder while its
    answer is that one, else the folder it was set aside in; None when neither holds it."""
    result = read_json(folder / RESULT)
    if result is not None and result.get("checkpoint_root") == root:
        return folder
    kept = folder / SUPERSEDED_DIR / root
    return kept if (kept / RESULT).is_file() else None


def kept_answer(folder: Path, root: str) -> tuple[dict, SignedCommitment] | None:
    """The answer committed to `root` (parsed) that a re-send set aside, and the commitment
    signed for it; None when none was."""
    kept = answer_folder(folder, root)
    if kept is None or kept == folder:
        return None
    return read_json(kept / RESULT), SignedCommitment.model_validate(
        read_json(kept / ROUND_COMMITMENT))
