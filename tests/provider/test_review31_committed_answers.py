"""Reviews 31 and 32: ways a tenant still got its honest provider voted guilty after answers
were set aside by root (provider/superseded_answers.py). In each, the provider answered 404
to a validator's `?root=` for a commitment it had signed.

In process against a real anvil (the harness of tests/provider/test_round_authorization.py):
the worker's files are written by the test as compute/diloco_worker.py writes them; the
worker's pruning is the real function. Fault injection: a round's answer made old by setting
its result.json's modification time (the hours a tenant would wait), and, in the first test,
the node's lock held by the test to stop a GET at the point where a long re-send PUT held it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest
from tests.provider.test_round_authorization import PROVIDER, queue, verified_lease, write_answer
from tests.support.provider_node import provider_world

from tessera.compute.diloco_worker import (
    CHECKPOINT_DIR,
    RETAIN_AFTER_EXPIRY_S,
    RETAIN_S,
    SUPERSEDED_DIR,
    prune_checkpoints,
)
from tessera.errors import Refused
from tessera.files import write_atomic
from tessera.provider.diloco_rounds import SIGN_MARGIN_S

ROOT_A, ROOT_B = "cd" * 32, "ef" * 32     # write_answer's root, and the re-run's


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    with provider_world(tmp_path_factory.mktemp("review31"), private_devnet, PROVIDER) as world:
        yield world


def states(folder, tag: bytes) -> None:
    (folder / CHECKPOINT_DIR).mkdir(exist_ok=True)
    for i in range(2):
        write_atomic(folder / CHECKPOINT_DIR / f"{i}.bin", tag + bytes([i]))


def answer_a(node, lease_id: int, params: bytes):
    folder = write_answer(node, lease_id, params)
    states(folder, b"A")
    return folder


def answer_b(folder, params: bytes) -> None:
    """The worker's re-run from other parameters: other states, another root."""
    states(folder, b"B")
    write_atomic(folder / "result.json", json.dumps({
        "params_sha256": hashlib.sha256(params).hexdigest(), "sha256": "11" * 32, "size": 7,
        "inner_loss": 1.0, "compute_s": 0.1, "checkpoint_every": 5, "checkpoint_root": ROOT_B,
        "checkpoints": [{"step": 5, "params_hash": "01" * 32, "optimizer_hash": "02" * 32}],
        "payload": {"residual_in_hash": "03" * 32, "residual_out_hash": "04" * 32,
                    "threads": 1, "profile": "cpu-avx2-v1"}}).encode())


def openable(node, lease_id: int, root: str) -> bool:
    try:
        node.rounds.checkpoint(lease_id, 0, 1, root)
        return node.rounds.result(lease_id, 0, root) is not None
    except Refused:
        return False


def aged(path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_a_get_racing_a_resend_is_not_handed_a_commitment_nothing_keeps(world):
    """Finding 1 (high): the GET read answer A before the re-send's PUT took the lock (a
    PUT holds it while it hashes up to a model's full state), then signed a commitment to A
    after the PUT had removed A's answer without setting it aside (no commitment existed yet).
    The commitment is now signed only to the answer still current under the lock: the GET
    gets nothing (202) and asks again."""
    network, node = world
    _, lease_id = verified_lease(network, node)
    expiry = int(time.time()) + 600
    queue(network, node, lease_id, 0, b"A", 1, expiry)
    answer_a(node, lease_id, b"A")                  # answered; its commitment not asked yet
    got = {}
    with node.ctx.lock:                             # the long PUT holds the lock...
        get = threading.Thread(target=lambda: got.update(answer=node.rounds.result(lease_id, 0)))
        get.start()                                 # ...the GET reads A and waits for it
        time.sleep(0.3)
        queue(network, node, lease_id, 0, b"B", 2, expiry + 1)     # the re-send itself
    get.join(10)
    assert got["answer"] is None                    # 202: it asks again
    assert not (node.ctx.jobs.round_folder(lease_id, 0) / SUPERSEDED_DIR).exists()
    answer_b(node.ctx.jobs.round_folder(lease_id, 0), b"B")
    handed = node.rounds.result(lease_id, 0).commitment.commitment
    assert handed.checkpoint_root == "0x" + ROOT_B and openable(node, lease_id, ROOT_B)


def test_a_commitment_signed_again_hours_later_keeps_its_states(world):
    """Finding 2: a tenant asking 7 h 59 min after the answer got a commitment signed again
    for 2 h more, while the worker pruned the states 8 h after the answer. Now they are kept
    RETAIN_AFTER_EXPIRY_S past the latest commitment's expiry too."""
    network, node = world
    _, lease_id = verified_lease(network, node)
    queue(network, node, lease_id, 0, b"A", 11, int(time.time()) + 600)
    folder = answer_a(node, lease_id, b"A")
    first = node.rounds.result(lease_id, 0).commitment.commitment
    chain = node.ctx.chain
    chain.w3.provider.make_request("evm_increaseTime", [7 * 3600 + 59 * 60])
    chain.w3.provider.make_request("evm_mine", [])
    again = node.rounds.result(lease_id, 0).commitment.commitment
    assert again.checkpoint_root == first.checkpoint_root and again.expiry > first.expiry
    aged(folder / "result.json", RETAIN_S + 1)       # and the answer is 8 h old
    prune_checkpoints(node.ctx.jobs.folder(lease_id))
    assert openable(node, lease_id, ROOT_A)


def test_states_moved_aside_again_keep_the_latest_commitments_time(world):
    """Finding 3: A, B; 8 h later (A's states pruned) A again, re-run, committed afresh; then B:
    the fresh states went under A's old folder, whose old result.json and commitment made the
    next prune delete them at once. The folder now takes the latest commitment and answer."""
    network, node = world
    _, lease_id = verified_lease(network, node)
    out, now = node.ctx.jobs.folder(lease_id), int(time.time())
    queue(network, node, lease_id, 0, b"A", 31, now + 600)
    folder = answer_a(node, lease_id, b"A")
    node.rounds.result(lease_id, 0)                          # commitment to A
    queue(network, node, lease_id, 0, b"B", 32, now + 900)   # A set aside
    answer_b(folder, b"B")
    node.rounds.result(lease_id, 0)                          # commitment to B
    kept = folder / SUPERSEDED_DIR / ROOT_A
    chain = node.ctx.chain                                   # 8 h pass
    chain.w3.provider.make_request("evm_increaseTime", [8 * 3600 + 60])
    chain.w3.provider.make_request("evm_mine", [])
    for path in (kept / "result.json", folder / "result.json"):
        aged(path, RETAIN_S + 60)
    (kept / "commitment.json").write_text(json.dumps(       # its commitment long expired
        {**json.loads((kept / "commitment.json").read_text()),
         "commitment": {**json.loads((kept / "commitment.json").read_text())["commitment"],
                        "expiry": now - RETAIN_S}}))
    prune_checkpoints(out)
    assert not (kept / CHECKPOINT_DIR).exists()
    queue(network, node, lease_id, 0, b"A", 33, now + 1200)  # A again: B set aside
    answer_a(node, lease_id, b"A")                           # the re-run: A's root, afresh
    node.rounds.result(lease_id, 0)                          # committed again, 2 h to go
    queue(network, node, lease_id, 0, b"B", 34, now + 1500)  # B again: A's states go aside
    answer_b(folder, b"B")
    prune_checkpoints(out)                                   # the worker's next answer
    assert openable(node, lease_id, ROOT_A)


def test_an_old_rounds_commitment_is_not_signed_again(world):
    """The other side of finding 2's fix: states are kept past the latest commitment's
    expiry, so a tenant asking for every old round's answer every hour would keep every
    round's states for good. Only one of the last two rounds (what a resumed tenant re-sends)
    is signed again; an older one keeps its commitment, and its states go in time."""
    network, node = world
    _, lease_id = verified_lease(network, node)
    expiry = int(time.time()) + 600
    queue(network, node, lease_id, 0, b"A", 41, expiry)
    folder = answer_a(node, lease_id, b"A")
    first = node.rounds.result(lease_id, 0).commitment
    for r in (1, 2):                                  # the job goes on
        queue(network, node, lease_id, r, f"round {r}".encode(), 41 + r, expiry)
        write_atomic(node.ctx.jobs.round_folder(lease_id, r) / "result.json", json.dumps(
            {"params_sha256": hashlib.sha256(f"round {r}".encode()).hexdigest()}))
    chain = node.ctx.chain
    chain.w3.provider.make_request("evm_increaseTime", [7 * 3600])
    chain.w3.provider.make_request("evm_mine", [])
    assert node.rounds.result(lease_id, 0).commitment == first     # not signed again
    aged(folder / "result.json", RETAIN_S + 1)
    os.utime(folder / "commitment.json")
    (folder / "commitment.json").write_text(first.model_copy(update={"commitment": first.commitment
        .model_copy(update={"expiry": int(time.time()) - RETAIN_S})}).model_dump_json())
    prune_checkpoints(node.ctx.jobs.folder(lease_id))
    assert not (folder / CHECKPOINT_DIR).exists()


def later_round(network, node, lease_id: int, r: int, nonce: int) -> None:
    """The job goes on: round r queued and answered."""
    params = f"round {r}".encode()
    queue(network, node, lease_id, r, params, nonce, int(time.time()) + 600)
    write_atomic(node.ctx.jobs.round_folder(lease_id, r) / "result.json", json.dumps(
        {"params_sha256": hashlib.sha256(params).hexdigest()}).encode())


def pruned_410(node, lease_id: int) -> None:
    with pytest.raises(Refused, match="past their retention") as refused:
        node.rounds.result(lease_id, 0)
    assert refused.value.status == 410


def test_no_commitment_is_signed_to_states_already_pruned(world):
    """Review 32, finding 1a (high): a tenant that never asked for round 0's answer asks for
    it once the worker has pruned its states (8 h): it was signed a fresh commitment it could
    post and challenge, and nothing could open it. Now 410, nothing signed; and the same
    within SIGN_MARGIN_S of the states going (the worker prunes without the node's lock)."""
    network, node = world
    _, lease_id = verified_lease(network, node)
    queue(network, node, lease_id, 0, b"A", 101, int(time.time()) + 600)
    folder = answer_a(node, lease_id, b"A")            # answered; the tenant stays silent
    aged(folder / "result.json", RETAIN_S - SIGN_MARGIN_S + 5)   # about to go
    pruned_410(node, lease_id)
    aged(folder / "result.json", RETAIN_S + 1)         # 8 h pass
    later_round(network, node, lease_id, 1, 102)       # round 1 answered: the worker prunes
    prune_checkpoints(node.ctx.jobs.folder(lease_id))
    assert not (folder / CHECKPOINT_DIR).exists()
    pruned_410(node, lease_id)
    assert not (folder / "commitment.json").exists()


def test_no_commitment_is_signed_again_to_states_already_pruned(world):
    """Review 32, finding 1b: asked at t0 (expiry t0 + 2 h, states kept to t0 + 8 h), asked
    again after that: it was signed again for 2 h more, to pruned states. Now 410."""
    network, node = world
    _, lease_id = verified_lease(network, node)
    queue(network, node, lease_id, 0, b"A", 111, int(time.time()) + 600)
    folder = answer_a(node, lease_id, b"A")
    first = node.rounds.result(lease_id, 0).commitment
    chain = node.ctx.chain
    chain.w3.provider.make_request("evm_increaseTime", [8 * 3600 + 120])
    chain.w3.provider.make_request("evm_mine", [])
    aged(folder / "result.json", RETAIN_S + 120)       # 8 h as the worker sees them
    expired = int(time.time()) - RETAIN_AFTER_EXPIRY_S - 60
    (folder / "commitment.json").write_text(first.model_copy(update={
        "commitment": first.commitment.model_copy(update={"expiry": expired})}).model_dump_json())
    later_round(network, node, lease_id, 1, 112)        # answered: the worker prunes
    prune_checkpoints(node.ctx.jobs.folder(lease_id))
    assert not (folder / CHECKPOINT_DIR).exists()
    pruned_410(node, lease_id)
