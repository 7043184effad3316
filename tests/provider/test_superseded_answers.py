"""provider/superseded_answers.py on a round's folder as the worker and the node write it (no
chain, no worker: the end-to-end attack is tests/e2e/test_review8_resume_window.py
`test_a_resent_round_leaves_the_commitment_the_tenant_holds_openable`).

Adversary strategies, and what stops them:
- the tenant re-sends a committed round to have the states behind the commitment it holds
  replaced (review 30, finding 1): the answer is set aside under its root and served by it;
- the tenant re-sends the round again and again, each time from other parameters, to fill the
  provider's disk with answers set aside: MAX_SUPERSEDED_ANSWERS per round, then 409 and
  nothing moved;
- a resumed tenant re-sends the same start (the same root): no new place taken;
- the node dies half-way through setting an answer aside: the states stay where the next
  re-send finds and moves them (never deleted).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tessera.compute.diloco_worker import CHECKPOINT_DIR, SUPERSEDED_DIR, prune_checkpoints
from tessera.errors import Refused
from tessera.provider.superseded_answers import (
    MAX_SUPERSEDED_ANSWERS,
    ROUND_COMMITMENT,
    answer_folder,
    parse_root,
    set_aside,
)


def answered(folder, root: str, states: bytes = b"state") -> None:
    """The worker's answer committed to `root` and the node's commitment to it, as written."""
    (folder / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (folder / CHECKPOINT_DIR / f"{i}.bin").write_bytes(states + bytes([i]))
    (folder / "result.json").write_text(json.dumps({"params_sha256": "aa" * 32,
                                                    "checkpoint_root": root}))
    (folder / ROUND_COMMITMENT).write_text(json.dumps(
        {"commitment": {"checkpoint_root": "0x" + root}, "signature": "0x00"}))


def resent(folder) -> None:
    """What the node does after set_aside on a re-send: the old answer goes."""
    (folder / "result.json").unlink(missing_ok=True)


def test_a_committed_answer_is_set_aside_under_its_root_and_found_by_it(tmp_path):
    folder = tmp_path / "rounds" / "4"
    answered(folder, "a1" * 32, b"first")
    assert answer_folder(folder, "a1" * 32) == folder
    set_aside(folder)
    resent(folder)
    kept = folder / SUPERSEDED_DIR / ("a1" * 32)
    assert answer_folder(folder, "a1" * 32) == kept
    assert (kept / CHECKPOINT_DIR / "1.bin").read_bytes() == b"first\x01"
    assert json.loads((kept / ROUND_COMMITMENT).read_text())["commitment"]["checkpoint_root"] \
        == "0x" + "a1" * 32
    assert not (folder / CHECKPOINT_DIR).exists()     # the re-run writes its own
    answered(folder, "b2" * 32, b"second")
    assert answer_folder(folder, "b2" * 32) == folder
    assert answer_folder(folder, "a1" * 32) == kept
    assert answer_folder(folder, "c3" * 32) is None


def test_an_answer_no_commitment_was_signed_for_is_not_kept(tmp_path):
    folder = tmp_path / "rounds" / "0"
    answered(folder, "a1" * 32)
    (folder / ROUND_COMMITMENT).unlink()                 # never asked for: nothing handed out
    set_aside(folder)
    assert not (folder / SUPERSEDED_DIR).exists()
    # a commitment left from an earlier answer (its root another) keeps nothing either
    answered(folder, "a1" * 32)
    (folder / "result.json").write_text(json.dumps({"checkpoint_root": "b2" * 32}))
    set_aside(folder)
    assert not (folder / SUPERSEDED_DIR).exists()


def test_resends_past_the_cap_are_refused_and_move_nothing(tmp_path):
    folder = tmp_path / "rounds" / "2"
    roots = [f"{i:02x}" * 32 for i in range(MAX_SUPERSEDED_ANSWERS + 1)]
    for root in roots[:-1]:
        answered(folder, root)
        set_aside(folder)
        resent(folder)
    answered(folder, roots[-1])
    before = sorted(p.name for p in folder.rglob("*"))
    with pytest.raises(Refused, match=f"keeps {MAX_SUPERSEDED_ANSWERS} answers") as refused:
        set_aside(folder)
    assert refused.value.status == 409
    assert sorted(p.name for p in folder.rglob("*")) == before
    # the same start again (a resumed tenant: the same root) takes no new place
    answered(folder, roots[0])
    set_aside(folder)
    assert len(list((folder / SUPERSEDED_DIR).iterdir())) == MAX_SUPERSEDED_ANSWERS


def test_states_left_behind_by_a_crash_are_moved_by_the_next_resend(tmp_path):
    folder = tmp_path / "rounds" / "1"
    answered(folder, "a1" * 32, b"kept")
    set_aside(folder)
    kept = folder / SUPERSEDED_DIR / ("a1" * 32)
    (kept / CHECKPOINT_DIR).rename(folder / CHECKPOINT_DIR)  # as if the node died before it
    set_aside(folder)
    assert (kept / CHECKPOINT_DIR / "0.bin").read_bytes() == b"kept\x00"


def test_answers_set_aside_are_pruned_with_the_rounds_own(tmp_path):
    out = tmp_path
    folder = out / "rounds" / "3"
    answered(folder, "a1" * 32)
    set_aside(folder)
    resent(folder)
    answered(folder, "b2" * 32)
    kept = folder / SUPERSEDED_DIR / ("a1" * 32)
    old = time.time() - 100
    os.utime(kept / "result.json", (old, old))           # the first answer: 100 s ago
    prune_checkpoints(out, retain_s=50)
    assert not (kept / CHECKPOINT_DIR).exists() and (kept / "result.json").exists()
    assert (folder / CHECKPOINT_DIR).is_dir()              # the current answer's: kept


@pytest.mark.parametrize("junk", ["", "0x", "ab" * 31, "0x" + "zz" * 32, "ab" * 33,
                                  "/leases/5/rounds/3/checkpoints/0"])
def test_a_root_that_is_not_one_is_a_400(junk):
    with pytest.raises(Refused, match="root must be") as refused:
        parse_root(junk)
    assert refused.value.status == 400


def test_a_root_is_read_with_or_without_its_prefix():
    assert parse_root("0x" + "AB" * 32) == parse_root("ab" * 32) == "ab" * 32
