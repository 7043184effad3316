"""TEST ONLY: how the "copy-worker" cheat (cheats.py) gets a sibling lease's round: by
collusion, from the sibling's job folder on this machine, or over its provider's HTTP API,
which now serves a round's states only to the lease's tenant and validators (read grants,
docs/verification.md), so a copier without a grant is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tessera.compute.checkpoints import clone_optimizer_state, decode_state, tensor_hash
from tessera.compute.diloco import PseudoGradient, State
from tessera.compute.diloco_worker import checkpoint_path
from tessera.compute.replay import CommittingWorker, RoundTrace, commitment_from_states


@dataclass
class Copied:
    """A sibling's round as the copy-worker cheat got it."""

    lease_id: int
    source: str            # "folder" (TEST ONLY collusion, read from disk) or "http"
    answer: dict           # its round answer (result.json / GET /leases/{id}/rounds/{r})
    states: list[bytes]    # every checkpoint state behind it (checkpoints.encode_state)


def read_sibling_folder(folder: Path, round_index: int,
                        n_checkpoints: int) -> tuple[dict, list[bytes]] | None:
    """TEST ONLY collusion: a sibling lease's answer and states read from its job folder (the
    sibling's worker writes its checkpoint files before result.json, so a complete answer has
    them all); None while it has not answered."""
    base = Path(folder) / "rounds" / str(round_index)
    try:
        answer = json.loads((base / "result.json").read_text())
        if len(answer.get("checkpoints") or []) != n_checkpoints:
            return None
        return answer, [checkpoint_path(base, i).read_bytes() for i in range(n_checkpoints)]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def fetch_sibling_round(siblings: Sequence[dict], round_index: int, n_checkpoints: int,
                        wait_s: float) -> tuple[Copied | None, list[str]]:
    """For "copy-worker": the first sibling whose round answer and every checkpoint state behind
    it can be had within `wait_s`: from its job folder when the cheat colludes with it
    ("folder"), else over its provider's HTTP API ("endpoint"), which serves the states only
    to the lease's tenant and validators (read grants), so it is refused. Returns what was
    copied (None: nothing in time) and why HTTP reads were refused."""
    deadline = time.monotonic() + wait_s
    refused: set[str] = set()
    with httpx.Client(timeout=5) as http:
        while True:
            for sibling in siblings:
                if sibling.get("folder"):
                    got = read_sibling_folder(sibling["folder"], round_index, n_checkpoints)
                    if got is not None:
                        return Copied(sibling["lease_id"], "folder", *got), sorted(refused)
                if not sibling.get("endpoint"):
                    continue
                base = f"{sibling['endpoint']}/leases/{sibling['lease_id']}/rounds/{round_index}"
                try:
                    answer = http.get(base)
                    if answer.status_code != 200 or \
                            len(answer.json().get("checkpoints") or []) != n_checkpoints:
                        continue
                    states = [http.get(f"{base}/checkpoints/{i}") for i in range(n_checkpoints)]
                except (httpx.HTTPError, ValueError):
                    continue
                bad = [r for r in states if r.status_code != 200]
                if not bad:
                    return Copied(sibling["lease_id"], "http", answer.json(),
                                  [r.content for r in states]), sorted(refused)
                refused.add(f"GET {bad[0].request.url.path}: {bad[0].status_code} "
                            f"{bad[0].text[:120]}")
            if time.monotonic() > deadline:
                return None, sorted(refused)
            time.sleep(0.1)


def copied_round(worker: CommittingWorker, start: State, round_index: int, k: int,
                 answer: dict, states: list[bytes]) -> RoundTrace | None:
    """A sibling's round presented as this worker's: its checkpoint states committed under this
    worker's index and its pseudo-gradient θ − θ_H (encoded with this worker's own residual,
    so the payload check passes). The AdamW state carried into the next round is the copied end
    state, so the next round's links hold too. None if the sibling's round does not start
    from `start`."""
    names = worker.parameter_names()
    decoded = [decode_state(data, names) for data in states]
    params, opts = [p for p, _ in decoded], [o for _, o in decoded]
    if tensor_hash(params[0]) != tensor_hash(start):
        return None
    h, w = worker.config.inner_steps, worker.config.workload
    worker.optimizer.load_state_dict({"state": clone_optimizer_state(opts[-1])["state"],
                                      "param_groups": worker.optimizer.state_dict()["param_groups"]})
    pg = PseudoGradient(worker.worker, round_index,
                        {n: start[n] - params[-1][n] for n in start}, answer["inner_loss"],
                        answer["inner_loss"], h, h * w.batch_size * w.block_size,
                        answer["compute_s"])
    return commitment_from_states(worker, round_index, k, params, opts, pg)
