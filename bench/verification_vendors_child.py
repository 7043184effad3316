"""The child processes of bench/verification_vendors.py: train, replay and cheat one segment
at a time on the default workload, each process under one GEMM kernel (its environment)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from tessera.compute import numerics

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "diloco.toml"
WORKER, WORKERS = 1, 3


def child(spec: dict) -> None:
    numerics.pin()                                   # before the first torch op
    os.environ["MKL_CBWR"] = os.environ.get("MKL_CBWR_SET", numerics.PROFILE_ENV["MKL_CBWR"])
    import json

    from verification_vendors import K

    role = spec["role"]
    setup = _setup(spec["h"], spec["rounds"], spec.get("model"))
    answer = {"dist-train": _train, "dist-replay": _replay, "dist-cheat": _cheat}[role](
        spec, *setup, K)
    print(json.dumps(answer))


def _setup(h: int, rounds: int, model: dict | None = None):
    from tessera.compute.corpus import build_stdlib_corpus
    from tessera.compute.diloco import DilocoConfig
    from tessera.compute.train import configure_determinism, split
    from tessera.protocol.jobspec import JobSpec

    wl = JobSpec.model_validate(tomllib.loads(EXAMPLE.read_text())).workload
    wl = wl.model_copy(update={"device": "cpu", "threads": 1, **(model or {})})
    configure_determinism(wl)
    tokens, _ = split(build_stdlib_corpus(1 << 20), wl)
    return DilocoConfig(workload=wl, workers=WORKERS, inner_steps=h, rounds=rounds), tokens


def distance(end: dict, claimed: dict, start: dict) -> dict:
    """||end - claimed|| / ||claimed - start|| (L2 over every parameter) and max |end - claimed|."""
    off = sum(((end[n].double() - claimed[n].double()) ** 2).sum().item() for n in claimed)
    moved = sum(((claimed[n].double() - start[n].double()) ** 2).sum().item() for n in claimed)
    worst = max((end[n].double() - claimed[n].double()).abs().max().item() for n in claimed)
    return {"rel_l2": (off / moved) ** 0.5 if moved else float("inf"), "max_abs": worst}


def _train(spec: dict, cfg, tokens, k: int) -> dict:
    import torch

    from tessera.compute.diloco import new_model, parameter_state
    from tessera.compute.replay import CommittingWorker

    theta = parameter_state(new_model(cfg.workload))
    worker = CommittingWorker(cfg, WORKER, tokens)
    rounds = []
    for r in range(cfg.rounds):
        trace = worker.run_round_committed(theta, r, k, keep_states=True)
        rounds.append({"params": trace.params, "opts": trace.optimizer_states})
        theta = {n: theta[n] - trace.pseudo_gradient.tensors[n] for n in theta}
    torch.save(rounds, spec["out"])
    return {"rounds": len(rounds)}


def _replay(spec: dict, cfg, tokens, k: int) -> dict:
    import torch

    from tessera.compute.replay import replay_segment

    results = {}
    for name, path in spec["files"].items():
        rows = []
        for r, saved in enumerate(torch.load(path, weights_only=False)):
            for s in range(len(saved["params"]) - 1):
                rep = replay_segment(cfg, WORKER, r, saved["params"][s], saved["opts"][s], s, k=k,
                                     train_tokens=tokens)
                rows.append(distance(rep.end_params, saved["params"][s + 1], saved["params"][s]))
        results[name] = {"segments": len(rows),
                         "bitwise": sum(row["max_abs"] == 0.0 for row in rows),
                         "worst_rel_l2": max(row["rel_l2"] for row in rows),
                         "worst_max_abs": max(row["max_abs"] for row in rows)}
    return {"results": results}


def _cheat_segment(cfg, tokens, k: int, r: int, saved: dict, s: int, cheat: str) -> dict:
    """Segment s of round r from its committed start, played with `cheat`."""
    import torch

    from tessera.compute.checkpoints import clone_optimizer_state, segment_bounds
    from tessera.compute.diloco import derive_seed, load_parameters, parameter_state, shard_for
    from tessera.compute.replay import _replay_model
    from tessera.compute.train import batch, inner_step

    w = cfg.workload
    start, end = segment_bounds(cfg.inner_steps, k)[s:s + 2]
    model = _replay_model(cfg, torch.device("cpu"))
    load_parameters(model, saved["params"][s])
    opt = torch.optim.AdamW(model.parameters(), lr=w.learning_rate, weight_decay=w.weight_decay)
    opt.load_state_dict({"state": clone_optimizer_state(saved["opts"][s])["state"],
                         "param_groups": opt.state_dict()["param_groups"]})
    shard = shard_for(tokens, WORKER, cfg.workers)
    gen = torch.Generator().manual_seed(derive_seed(w.seed, r, WORKER))
    for _ in range(start):
        torch.randint(len(shard) - w.block_size - 1, (w.batch_size,), generator=gen)
    model.train()
    torch.set_num_threads(2 if cheat == "threads-2-of-1" else 1)
    for step in range(start, end):
        x, y = batch(shard, w, gen, "cpu")
        if cheat == "skip-last-step" and step == end - 1:
            continue
        if cheat == "half-batch":
            x, y = x[: len(x) // 2], y[: len(y) // 2]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cheat == "bf16-autocast"):
            inner_step(model, opt, x, y, w.max_grad_norm,
                       w.learning_rate_at(r * cfg.inner_steps + step))
    torch.set_num_threads(1)
    return parameter_state(model)


def _cheat(spec: dict, cfg, tokens, k: int) -> dict:
    import torch
    from verification_vendors import CHEATS

    rounds = torch.load(spec["file"], weights_only=False)
    saves = {"skip-last-step": True, "half-batch": True, "bf16-autocast": True,
             "threads-2-of-1": False}   # 2 threads on one signed: no arithmetic saved (cores)
    results = {}
    for cheat in CHEATS:
        rows = [distance(_cheat_segment(cfg, tokens, k, r, saved, s, cheat),
                         saved["params"][s + 1], saved["params"][s])
                for r, saved in enumerate(rounds) for s in range(len(saved["params"]) - 1)]
        results[cheat] = {"segments": len(rows), "saves_compute": saves[cheat],
                          "least_rel_l2": min(row["rel_l2"] for row in rows),
                          "least_max_abs": min(row["max_abs"] for row in rows)}
    return {"results": results}
