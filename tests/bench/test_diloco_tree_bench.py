"""bench/diloco_tree.py (the "tree" rows of bench/diloco_scale.py) on a small model: every
field is measured, the root's link carries less than the flat coordinator's, honest
aggregators pass their parents' checks, and every lie is caught at about its predicted rate."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from tessera.compute.diloco import Coordinator, DilocoConfig, encode_tensors
from tessera.protocol.workload import TrainingWorkload

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from diloco_tree import LIES, detection_rows, root_round, tree_round  # noqa: E402

CONFIG = DilocoConfig(workload=TrainingWorkload(n_layer=1, n_embd=32, n_head=2, block_size=32,
                                                threads=1),
                      workers=9, compression="int8", chunk=256)


def payloads(n: int) -> list[bytes]:
    reference = Coordinator(CONFIG).published
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        pg = {k: torch.randn(v.shape, generator=g) * 1e-3 for k, v in reference.items()}
        out.append(encode_tensors(pg, "int8", CONFIG.chunk, {"kind": "pseudo_gradient", "worker": i}))
    return out


def test_a_two_level_tree_round_measures_every_field():
    row = tree_round(CONFIG, payloads(27), 3, 4, flat_round_s=None)
    assert [level["aggregators"] for level in row["levels"]] == [9, 3]
    assert row["root_children"] == 3
    assert row["root_link_in_bytes"] < row["flat_link_in_bytes"]
    assert row["root_link_in_ratio"] == round(row["flat_link_in_bytes"] / row["root_link_in_bytes"], 2)
    assert row["down_bytes_root_model"] * 9 == row["down_bytes_flat_model"]
    assert row["round_s"] > 0 and row["coordinator_sum_bytes_per_param"] > 0
    assert all(level["check_bytes_per_child"] > 0 for level in row["levels"])


def test_the_root_round_from_saved_inputs_checks_and_folds_every_child(tmp_path):
    """What the memory row's fresh process runs: the root's round from the files its children
    sent. Every child checks out and the update stands for every worker; a child whose partial
    was swapped for another's is refused (its check fails, or its claimed count does)."""
    import json

    import pytest

    from tessera.errors import WireFormatError

    row = tree_round(CONFIG, payloads(12), 3, 4, flat_round_s=None, root_inputs=tmp_path)
    spec = json.loads(Path(row["root_spec"]).read_text())
    assert len(spec["children"]) == row["root_children"] == 2   # 12 -> 4 -> 2 at fan-in 3
    assert root_round(Coordinator(CONFIG), spec) == 12
    first, second = spec["children"][:2]
    Path(first["partial"]).write_bytes(Path(second["partial"]).read_bytes())
    with pytest.raises((AssertionError, WireFormatError)):
        root_round(Coordinator(CONFIG), spec)


def test_every_lie_is_caught_near_its_prediction():
    rows = {r["lie"]: r for r in detection_rows(CONFIG, payloads(10), 10, 4, trials=60)}
    assert set(rows) == set(LIES)
    assert rows["drop-one-member"]["caught_per_round"] == 1.0
    assert rows["scale-x100-one-chunk"]["caught_per_round"] == 1.0
    for lie in ("one-chunk", "tenth-of-chunks"):
        r = rows[lie]
        assert 0 < r["predicted_per_round"] < 1
        assert abs(r["caught_per_round"] - r["predicted_per_round"]) < 0.25, r
