"""A tree of aggregators for DiLoCo's mean (compute/aggregation_tree.py): what the root's link
carries, what each node spends, and how often a lying aggregator is caught. Part of
bench/diloco_scale.py (its "tree" rows); the payloads are the same ~1 M-parameter int8
pseudo-gradients as its coordinator rows, so the flat coordinator's `round_s` there is the
comparison.

One round, in this process, every node in turn (nothing here is a distributed time):
  * every worker's payload and its commitment (what it would sign);
  * level by level, each aggregator opens its members' payloads, checks each against the
    member's commitment, sums them into its partial, commits to it and answers its parent's
    sample (the openings of `samples` chunks of every member);
  * each parent checks each child (the scale bound on every chunk, the sampled chunks
    recomputed); the root folds the partials into its exact sum and takes the outer step.
Bytes are what crosses, serialized: payloads (compress.py's wire format), commitments and
openings (aggregation_tree_wire.py), each parsed back by its receiver before the check. The broadcast
down the tree is a model (`down_*`): relaying it is not built.

Detection: one aggregator of `fanout` members whose partial lies in a given way, checked with
fresh sample seeds; `caught` counts the checks that found a fault, next to the predicted rate.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from tessera.compute import aggregation_tree as tree
from tessera.compute import aggregation_tree_wire as wire
from tessera.compute.diloco import Coordinator, DilocoConfig


def _timed(f, *args):
    started = time.perf_counter()
    out = f(*args)
    return out, time.perf_counter() - started


class Aggregator:
    """One node of the tree: its members' opened payloads and commitments, its partial."""

    def __init__(self, members: list[bytes], signed: list[bytes], counts: list[int], reference,
                 chunk: int):
        self.counts = counts          # the parent's assignment: workers under each member
        self.opened = [tree.open_payload(p, reference, chunk, n)
                       for p, n in zip(members, counts, strict=True)]
        self.commitments = [tree.commit(o) for o in self.opened]
        if [c.root() for c in self.commitments] != signed:
            raise AssertionError("a member's payload does not match what it signed")
        self.payload = tree.partial_sum(self.opened, reference, chunk)
        self.partial = tree.open_payload(self.payload, reference, chunk, sum(counts))
        self.commitment = tree.commit(self.partial)
        self.signed = signed

    def answer(self, sample: list[int]) -> dict[int, list[tree.ChunkOpening]]:
        shown = [tree.open_chunks(o, sample) for o in self.opened]
        return {j: [s[j] for s in shown] for j in sample}


def check_child(child: Aggregator, partial: tree.Opened, seed: bytes, samples: int) -> tuple[list[str], int]:
    """A parent's check of one child: (faults, bytes it received for the check beyond the
    partial itself). The parent knows the roots the child's members signed; the child shows
    the commitments' parts and the sampled openings."""
    sample = tree.sample_chunks(seed, partial.chunks, samples)
    sent = [wire.commitment_to_bytes(c) for c in child.commitments]
    sent.append(wire.openings_to_bytes(child.answer(sample)))
    commitments = [wire.commitment_from_bytes(b, partial.chunks) for b in sent[:-1]]
    openings = wire.openings_from_bytes(sent[-1], partial.chunks, partial.chunk, len(commitments))
    faults = tree.check_partial(partial, commitments, child.signed, child.counts, openings,
                                sample)
    shown = sum(len(b) for b in sent)
    return faults, shown


def save_root_inputs(folder: Path, nodes: list[Aggregator], samples: int) -> Path:
    """What the root receives from each child, as files: the partial, then for its check the
    members' commitments and the sampled openings, the roots its members signed and their counts.
    Returns the spec file `root_round` reads (in a fresh process, for its resident memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    children = []
    for k, node in enumerate(nodes):
        seed = k.to_bytes(4, "big")
        sample = tree.sample_chunks(seed, node.partial.chunks, samples)
        (folder / f"child-{k}.bin").write_bytes(node.payload)
        (folder / f"child-{k}.commitments").write_bytes(b"".join(
            len(b).to_bytes(4, "big") + b for b in
            (wire.commitment_to_bytes(c) for c in node.commitments)))
        (folder / f"child-{k}.openings").write_bytes(wire.openings_to_bytes(node.answer(sample)))
        children.append({"partial": str(folder / f"child-{k}.bin"),
                         "commitments": str(folder / f"child-{k}.commitments"),
                         "openings": str(folder / f"child-{k}.openings"), "seed": seed.hex(),
                         "signed": [r.hex() for r in node.signed], "counts": node.counts})
    spec = folder / "root.json"
    spec.write_text(json.dumps({"samples": samples, "children": children}))
    return spec


def root_round(coordinator: Coordinator, spec: dict) -> int:
    """The root's part of a round from the files `save_root_inputs` wrote, one child at a time
    as they would arrive: read and parse its partial and check material, check it, fold it into
    the exact sum; then the outer step. Returns the workers the update stands for."""
    reference, chunk, samples = coordinator.published, coordinator.config.chunk, spec["samples"]
    stream = coordinator.stream()
    for child in spec["children"]:
        partial = tree.open_payload(Path(child["partial"]).read_bytes(), reference, chunk,
                                    sum(child["counts"]))
        raw, commitments = Path(child["commitments"]).read_bytes(), []
        while raw:
            size = int.from_bytes(raw[:4], "big")
            commitments.append(wire.commitment_from_bytes(raw[4:4 + size], partial.chunks))
            raw = raw[4 + size:]
        openings = wire.openings_from_bytes(Path(child["openings"]).read_bytes(), partial.chunks,
                                            chunk, len(commitments))
        sample = tree.sample_chunks(bytes.fromhex(child["seed"]), partial.chunks, samples)
        faults = tree.check_partial(partial, commitments,
                                    [bytes.fromhex(r) for r in child["signed"]], child["counts"],
                                    openings, sample)
        assert faults == [], faults
        stream.add(tree.partial_state(partial, reference), partial.members)
        del partial, commitments, openings
    return coordinator.apply_stream(stream).contributors


def tree_round(config: DilocoConfig, payloads: list[bytes], fanout: int, samples: int,
               flat_round_s: float | None, root_inputs: Path | None = None) -> dict:
    """`root_inputs`: a folder where what the root receives is saved (`save_root_inputs`); the
    row then names its spec file (`root_spec`) for a measurement of the root's memory."""
    torch.set_num_threads(1)
    coordinator = Coordinator(config)
    reference, chunk = coordinator.published, config.chunk
    signed = [tree.commit(tree.open_payload(p, reference, chunk)).root() for p in payloads]
    level, levels = [(p, s, 1) for p, s in zip(payloads, signed, strict=True)], []
    checked_by_parent = 0
    while len(level) > fanout:
        nodes, times = [], []
        for i in range(0, len(level), fanout):
            group = level[i:i + fanout]
            node, seconds = _timed(Aggregator, [p for p, _, _ in group], [s for _, s, _ in group],
                                   [n for _, _, n in group], reference, chunk)
            nodes.append(node)
            times.append(seconds)
        check_s, shown = [], []
        for k, node in enumerate(nodes):                      # each checked by its parent
            (faults, extra), seconds = _timed(check_child, node, node.partial,
                                              k.to_bytes(4, "big"), samples)
            assert faults == [], faults
            check_s.append(seconds)
            shown.append(extra)
        levels.append({"aggregators": len(nodes), "fan_in": fanout,
                       "aggregator_s_max": round(max(times), 3),
                       "check_s_per_child": round(statistics.median(check_s), 4),
                       "check_bytes_per_child": max(shown),
                       "partial_bytes": len(nodes[0].payload)})
        level = [(n.payload, n.commitment.root(), n.partial.members) for n in nodes]
        checked_by_parent = sum(shown)
        top_nodes = nodes
    started = time.perf_counter()
    stream = coordinator.stream()
    for payload, _, count in level:
        opened = tree.open_payload(payload, reference, chunk, count)
        stream.add(tree.partial_state(opened, reference), opened.members)
    update = coordinator.apply_stream(stream)
    root_s = time.perf_counter() - started
    assert update.contributors == len(payloads)
    top = levels[-1] if levels else None
    root_in = sum(len(p) for p, _, _ in level) + (checked_by_parent if top else 0)
    flat_in = sum(len(p) for p in payloads)
    params = sum(t.numel() for t in reference.values())
    root_check_s = (top["check_s_per_child"] * top["aggregators"]) if top else 0.0
    return {"workers": len(payloads), "fanout": fanout, "samples": samples, "params": params,
            "chunks": -(-params // chunk), "levels": levels,
            "root_children": len(level),
            "root_link_in_bytes": root_in, "flat_link_in_bytes": flat_in,
            "root_link_in_ratio": round(flat_in / root_in, 2),
            "busiest_aggregator_link_in_bytes": fanout * len(payloads[0]),
            "down_bytes_root_model": len(level) * len(update.broadcast),
            "down_bytes_flat_model": len(payloads) * len(update.broadcast),
            "root_fold_and_step_s": round(root_s, 3),
            "root_check_s": round(root_check_s, 3),
            "round_s": round(root_s + root_check_s, 3),
            "flat_round_s": flat_round_s,
            "coordinator_sum_bytes_per_param": round(stream.bytes() / params, 2),
            **({"root_spec": str(save_root_inputs(root_inputs, top_nodes, samples))}
               if root_inputs is not None and levels else {})}


def _lie(kind: str, node: Aggregator, reference, chunk: int, rng: torch.Generator) -> tree.Opened:
    """The partial an aggregator that lies in `kind`'s way sends instead of its honest one."""
    p = node.partial
    if kind == "one-chunk":
        j = int(torch.randint(p.chunks, (1,), generator=rng))
        q = p.q.clone()
        q[j * chunk:(j + 1) * chunk] = -q[j * chunk:(j + 1) * chunk]
        return tree.Opened(q, p.scales, chunk, p.members)
    if kind == "tenth-of-chunks":
        q = p.q.clone()
        for j in torch.randperm(p.chunks, generator=rng)[:max(1, p.chunks // 10)].tolist():
            q[j * chunk:(j + 1) * chunk] = -q[j * chunk:(j + 1) * chunk]
        return tree.Opened(q, p.scales, chunk, p.members)
    if kind == "drop-one-member":
        short = tree.partial_sum(node.opened[1:], reference, chunk)
        o = tree.open_payload(short, reference, chunk, p.members - 1)
        return tree.Opened(o.q, o.scales, chunk, p.members)
    if kind == "scale-x100-one-chunk":
        scales = p.scales.clone()
        scales[int(torch.randint(p.chunks, (1,), generator=rng))] *= 100
        return tree.Opened(p.q, scales, chunk, p.members)
    raise ValueError(kind)


LIES = ("one-chunk", "tenth-of-chunks", "drop-one-member", "scale-x100-one-chunk")


def detection_rows(config: DilocoConfig, payloads: list[bytes], fanout: int, samples: int,
                   trials: int) -> list[dict]:
    reference = Coordinator(config).published
    node = Aggregator(payloads[:fanout],
                      [tree.commit(tree.open_payload(p, reference, config.chunk)).root()
                       for p in payloads[:fanout]], [1] * fanout, reference, config.chunk)
    chunks = node.partial.chunks
    predicted = {"one-chunk": 1 - tree.escape_probability(chunks, 1, samples),
                 "tenth-of-chunks": 1 - tree.escape_probability(chunks, max(1, chunks // 10), samples),
                 "drop-one-member": 1.0, "scale-x100-one-chunk": 1.0}
    rows = []
    for kind in LIES:
        rng = torch.Generator().manual_seed(len(kind))
        caught = 0
        for t in range(trials):
            lie = _lie(kind, node, reference, config.chunk, rng)
            faults, _ = check_child(node, lie, f"{kind}/{t}".encode(), samples)
            caught += bool(faults)
        rows.append({"lie": kind, "trials": trials, "caught_per_round": round(caught / trials, 4),
                     "predicted_per_round": round(predicted[kind], 4),
                     "chunks": chunks, "samples": samples})
    return rows
