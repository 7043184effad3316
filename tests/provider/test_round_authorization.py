"""Who may queue a DiLoCo round at a provider, and what checking it costs (issue 16).

`Rounds.authorize` (provider/diloco_rounds.py) runs before a round's parameters are read. It
read the lease from the chain twice per round (once before the body, once under the lock): two
round trips to the provider's RPC endpoint on every round's critical path, 0.1 s a round over a
50 ms link. It now reads nothing: the tenant is the node's own record of the lease (from its
LeaseCreated event) and the lease's openness is the record's status, which the node's watcher
sets to closed when it follows the LeaseClosed event.

In process against a real anvil: a real lease from a real signed bid, followed by the node's
real watcher (`poll_once`); only the lease's DiLoCo manifest is written into the node's state
directly (accepting a real one starts a worker process, which is not what is tested here).

Adversary strategies, and what stops them:
- a stranger (or another tenant) signs a round for the lease: 403, whoever signs;
- the tenant replays a round signed for another lease or round: the signature covers both;
- the tenant closes its lease (its escrow comes back) and goes on sending rounds for free
  compute: refused from the head at which the node follows the close; before that (one head)
  the round starts, and the worker is stopped when the close is followed.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from tests.support import provider_node
from tests.support.provider_node import provider_world

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.compute import diloco_worker
from tessera.errors import Refused
from tessera.files import write_atomic
from tessera.protocol import messages
from tessera.provider.node import ProviderNode
from tessera.tenant.client import Tenant

PROVIDER, TENANT, STRANGER = 3, 5, 6
PARAMS_SHA256 = "ab" * 32


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    with provider_world(tmp_path_factory.mktemp("round-authorization"), private_devnet,
                        PROVIDER) as world:
        yield world


def lease_of(network, tenant: Tenant) -> int:
    return provider_node.lease_of(network, tenant, PROVIDER)


def signed(network, node: ProviderNode, signer: int, lease_id: int, round_index: int = 0):
    """(nonce, expiry, signature) of a round request signed by devnet account `signer`."""
    nonce, expiry = 7 + round_index, int(time.time()) + 600
    typed = messages.round_typed_data(network.chain_id, node.ctx.market.address, lease_id,
                                      round_index, bytes.fromhex(PARAMS_SHA256), nonce, expiry)
    return nonce, expiry, messages.sign(devnet_account(signer), typed)


def verified_lease(network, node: ProviderNode) -> tuple[Tenant, int]:
    """A lease of TENANT's that this node runs as a verified DiLoCo worker (k = 5)."""
    tenant = Tenant(Chain(network, devnet_account(TENANT)))
    lease_id = lease_of(network, tenant)
    node.poll_once()
    node.state.update_lease(lease_id, status="running", manifest={
        "workload": {"kind": "diloco-worker", "checkpoint_every": 5}})
    return tenant, lease_id


def queue(network, node: ProviderNode, lease_id: int, round_index: int, params: bytes,
          nonce: int, expiry: int) -> None:
    """The tenant's signed round request, accepted by the node."""
    typed = messages.round_typed_data(network.chain_id, node.ctx.market.address, lease_id,
                                      round_index, hashlib.sha256(params).digest(), nonce, expiry)
    node.rounds.accept(lease_id, round_index, params, nonce, expiry,
                       messages.sign(devnet_account(TENANT), typed))


def write_answer(node: ProviderNode, lease_id: int, params: bytes) -> Path:
    """The worker's answer to round 0, as compute/diloco_worker.py writes it, its states first
    (hashes and states made up: not checked here); the round's folder."""
    folder = node.ctx.jobs.round_folder(lease_id, 0)
    (folder / diloco_worker.CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    for i in range(2):      # checkpoint 0 and the residual: a commitment needs them kept
        write_atomic(diloco_worker.checkpoint_path(folder, i), b"state %d" % i)
    write_atomic(folder / "pseudo_gradient.bin", b"payload")
    write_atomic(folder / "result.json", json.dumps({
        "params_sha256": hashlib.sha256(params).hexdigest(),
        "sha256": hashlib.sha256(b"payload").hexdigest(), "size": 7,
        "inner_loss": 1.0, "compute_s": 0.1, "checkpoint_every": 5, "checkpoint_root": "cd" * 32,
        "checkpoints": [{"step": 5, "params_hash": "01" * 32, "optimizer_hash": "02" * 32}],
        "payload": {"residual_in_hash": "03" * 32, "residual_out_hash": "04" * 32,
                    "threads": 1, "profile": "cpu-avx2-v1"}}).encode())
    return folder


class RpcCount:
    """Counts the JSON-RPC requests a chain client sends (a spy on the real provider). web3
    builds its middleware chain around `make_request` once and keeps it: the chain is dropped
    on the way in and out so that the spy is in it (without that, nothing was ever counted)."""

    def __init__(self, chain: Chain):
        self.provider, self.calls = chain.w3.provider, []
        self.real = self.provider.make_request

    def __enter__(self):
        def counted(method, params):
            self.calls.append(method)
            return self.real(method, params)
        self.provider.make_request = counted
        self.provider._request_func_cache = (None, None)
        return self

    def __exit__(self, *exc):
        del self.provider.make_request
        self.provider._request_func_cache = (None, None)


def test_the_spy_counts(world):
    """The spy the tests below rely on sees a read."""
    _, node = world
    with RpcCount(node.ctx.chain) as rpc:
        node.ctx.chain.block_timestamp()
    assert rpc.calls == ["eth_getBlockByNumber"], rpc.calls


def test_a_round_is_authorized_from_the_nodes_record_without_a_chain_read(world):
    network, node = world
    tenant = Tenant(Chain(network, devnet_account(TENANT)))
    lease_id = lease_of(network, tenant)
    node.poll_once()                                           # the node follows LeaseCreated
    record = node.state.lease(lease_id)
    assert record is not None and record.tenant.lower() == tenant.chain.address.lower()
    # the manifest, as accepting a real one records it (without starting a worker process)
    node.state.update_lease(lease_id, status="running",
                            manifest={"workload": {"kind": "diloco-worker"}})
    with RpcCount(node.ctx.chain) as rpc:
        for r in range(3):
            assert node.rounds.authorize(lease_id, r, PARAMS_SHA256,
                                         *signed(network, node, TENANT, lease_id, r)) \
                == record.tenant
    assert rpc.calls == []
    # a stranger's signature, and the tenant's for another round, are refused
    with pytest.raises(Refused, match="not signed by its tenant") as refused:
        node.rounds.authorize(lease_id, 3, PARAMS_SHA256, *signed(network, node, STRANGER,
                                                                  lease_id, 3))
    assert refused.value.status == 403
    nonce, expiry, signature = signed(network, node, TENANT, lease_id, 4)
    with pytest.raises(Refused, match="not signed by its tenant"):
        node.rounds.authorize(lease_id, 5, PARAMS_SHA256, nonce, expiry, signature)


def test_a_closed_lease_takes_no_round_once_the_node_follows_the_close(world):
    network, node = world
    tenant = Tenant(Chain(network, devnet_account(TENANT)))
    lease_id = lease_of(network, tenant)
    node.poll_once()
    node.state.update_lease(lease_id, status="running",
                            manifest={"workload": {"kind": "diloco-worker"}})
    tenant.market.close_lease(lease_id)
    # the documented lag: until the node follows the close, the round is still taken
    node.rounds.authorize(lease_id, 0, PARAMS_SHA256, *signed(network, node, TENANT, lease_id))
    node.poll_once()                                           # the node follows LeaseClosed
    assert node.state.lease(lease_id).status == "closed"
    with pytest.raises(Refused, match="is closed") as refused:
        node.rounds.authorize(lease_id, 1, PARAMS_SHA256,
                              *signed(network, node, TENANT, lease_id, 1))
    assert refused.value.status == 409


def test_a_rounds_commitment_is_signed_without_a_chain_read(world):
    """With verification on, the answer's first look-up signs the round's Commitment. It read
    the lease (for its order) and the chain's time (for its expiry) there: two more round trips
    on every verified round's critical path. Now the order is the node's record and the time is
    read beside the worker's steps, when the round is queued."""
    from tessera.chain.verification import Verification
    from tessera.protocol import commitment as cm

    network, node = world
    tenant, lease_id = verified_lease(network, node)
    params = b"round 0's global parameters"
    before = tenant.chain.block_timestamp()
    queue(network, node, lease_id, 0, params, 11, int(time.time()) + 600)
    deadline = time.monotonic() + 10
    while (lease_id, 0) not in node.rounds._queued_at:     # read in the background
        assert time.monotonic() < deadline, "the chain's time was not read when queued"
        time.sleep(0.01)
    queued_at = node.rounds._queued_at[(lease_id, 0)]
    assert queued_at >= before
    folder = write_answer(node, lease_id, params)
    node.rounds._verification = Verification(node.ctx.chain)   # made once per node
    with RpcCount(node.ctx.chain) as rpc:
        signed_from = int(time.time())
        answer = node.rounds.result(lease_id, 0)
        signed_by = int(time.time())
    assert rpc.calls == []
    c = answer.commitment.commitment
    assert c.job == tenant.market.lease(lease_id).order_id and c.lease_id == lease_id
    # from the chain time queued, or the wall clock at signing if later (review 24): a loaded
    # machine's clock can pass the queued block's time by a second before the answer is served
    assert max(queued_at, signed_from) + cm.VALIDITY_S <= c.expiry \
        <= max(queued_at, signed_by) + cm.VALIDITY_S
    # a node that restarted since the round was queued reads the time then
    (folder / "commitment.json").unlink()
    node.rounds._queued_at.clear()
    with RpcCount(node.ctx.chain) as rpc:
        again = node.rounds.result(lease_id, 0).commitment.commitment
    assert rpc.calls and again.expiry >= queued_at + cm.VALIDITY_S


def test_a_tenant_cannot_fill_the_providers_disk_with_rounds(world):
    """Review 27, finding 2: rounds at any index (12 of 16 MiB, indices up to 2**63 - 1) were
    all queued and kept for good. A new round must be the lease's first or the next after the
    last queued, at most MAX_OPEN_ROUNDS wait for answers, the parameters of answered rounds
    are deleted, and a round's PUT is capped at the model's full state. (Downward rounds were
    also how a tenant grew the queued chain times without bound: refused now, so the
    QUEUED_TIMES_KEPT bound is not reached this way.)"""
    from tessera.compute.model import parameter_count
    from tessera.compute.segment_check import max_state_bytes
    from tessera.protocol.workload import TrainingWorkload
    from tessera.provider.diloco_rounds import MAX_OPEN_ROUNDS, QUEUED_TIMES_KEPT

    network, node = world
    _, lease_id = verified_lease(network, node)
    node.state.update_lease(lease_id, manifest={"workload": {
        "kind": "diloco-worker", "checkpoint_every": 5,
        "model": TrainingWorkload().model_dump(mode="json")}})
    expiry = int(time.time()) + 600
    queue(network, node, lease_id, 12, b"round 12", 12, expiry)        # a first round: any index
    for r, why in ((11, "not the next one"), (14, "not the next one"), (2**63 - 1, "not the next")):
        with pytest.raises(Refused, match=why) as refused:
            queue(network, node, lease_id, r, f"round {r}".encode(), r, expiry)
        assert refused.value.status == 409
    queue(network, node, lease_id, 13, b"round 13", 13, expiry)
    assert MAX_OPEN_ROUNDS == 2
    with pytest.raises(Refused, match="2 rounds not yet answered") as refused:
        queue(network, node, lease_id, 14, b"round 14", 14, expiry)
    assert refused.value.status == 429
    queue(network, node, lease_id, 12, b"round 12", 12, expiry)        # a re-send is fine
    assert QUEUED_TIMES_KEPT >= MAX_OPEN_ROUNDS
    # round 12 answered: 14 may come, and 12's parameters go
    folder = node.ctx.jobs.round_folder(lease_id, 12)
    sha = hashlib.sha256(b"round 12").hexdigest()
    write_atomic(folder / "result.json", json.dumps({"params_sha256": sha}))
    queue(network, node, lease_id, 14, b"round 14", 14, expiry)
    assert not (folder / "params.bin").exists()
    assert (node.ctx.jobs.round_folder(lease_id, 13) / "params.bin").exists()
    assert node.rounds.round_bytes(lease_id) == max_state_bytes(parameter_count(TrainingWorkload()))
    # Review 28: an old round re-sent with other parameters is never run again by the worker
    # (never answered, never deleted): only the last two may be; the same parameters are fine
    queue(network, node, lease_id, 12, b"round 12", 12, expiry)
    with pytest.raises(Refused, match="too old to run again") as refused:
        queue(network, node, lease_id, 12, b"round 12, other parameters", 21, expiry + 1)
    assert refused.value.status == 409
    queue(network, node, lease_id, 13, b"round 13, other parameters", 22, expiry + 1)


def test_a_round_resent_hours_later_gets_a_fresh_commitment(world):
    """Review 9, finding 2: a resumed tenant re-sends a round hours after its first send. The
    commitment signed then (and the chain time queued then) would expire within the tenant's
    minimum of its round's start, and an honest worker was dropped as "bad-commitment". A
    commitment short of REUSE_MIN_LIFE_S that no posted root holds is signed again."""
    from tessera.chain.verification import Verification
    from tessera.provider.diloco_rounds import REUSE_MIN_LIFE_S

    network, node = world
    tenant, lease_id = verified_lease(network, node)
    params = b"the round's parameters"

    def send(nonce: int) -> None:   # a later send is signed to expire later
        queue(network, node, lease_id, 0, params, nonce, int(time.time()) + 600 + nonce)

    send(1)
    write_answer(node, lease_id, params)
    node.rounds._verification = Verification(node.ctx.chain)
    first = node.rounds.result(lease_id, 0).commitment.commitment
    assert node.rounds.result(lease_id, 0).commitment.commitment == first   # asked again: kept
    chain = tenant.chain
    chain.w3.provider.make_request("evm_increaseTime", [7000])               # hours pass
    chain.w3.provider.make_request("evm_mine", [])
    node.rounds._queued_at[(lease_id, 0)] = first.expiry - 7200   # as if still queued from then
    send(2)                                                         # the resumed tenant's send
    now = chain.block_timestamp()
    again = node.rounds.result(lease_id, 0).commitment.commitment
    assert first.expiry < now + REUSE_MIN_LIFE_S                   # the old one: too short
    assert again.expiry >= now + REUSE_MIN_LIFE_S and again.result_hash == first.result_hash
    assert node.rounds.result(lease_id, 0).commitment.commitment == again   # and kept


def test_a_round_put_reads_only_the_rounds_not_yet_settled(world, monkeypatch):
    """Every round PUT looked at every earlier round's request.json and result.json three
    times (authorize, accept, dropping answered parameters): its cost grew with the job's
    length. A round seen answered, its parameters deleted, is settled in memory and not read
    again; a settled round re-sent with other parameters waits again (and counts towards
    MAX_OPEN_ROUNDS); a stopped lease's memory is dropped."""
    from tessera.compute import diloco_worker
    from tessera.provider import diloco_rounds

    network, node = world
    _, lease_id = verified_lease(network, node)
    expiry = int(time.time()) + 600
    reads = []
    real = diloco_worker.round_answered
    monkeypatch.setattr(diloco_rounds, "round_answered",
                        lambda folder: reads.append(folder.name) or real(folder))
    per_put = []
    for r in range(12):
        params = f"round {r}".encode()
        before = len(reads)
        queue(network, node, lease_id, r, params, r, expiry)
        per_put.append(len(reads) - before)
        write_atomic(node.ctx.jobs.round_folder(lease_id, r) / "result.json",
                     json.dumps({"params_sha256": hashlib.sha256(params).hexdigest()}))
    # each PUT reads the round answered since the previous one (twice: before and after its
    # parameters go) and no other: the same count at round 11 as at round 1
    assert per_put[1:] == [per_put[1]] * 11 and per_put[1] <= 3, per_put
    assert node.rounds._settled[lease_id] == set(range(11))
    # round 11 re-sent with other parameters waits again: with round 12 queued, two wait
    queue(network, node, lease_id, 11, b"round 11 again", 40, expiry + 1)
    assert 11 not in node.rounds._settled[lease_id]
    queue(network, node, lease_id, 12, b"round 12", 12, expiry)
    with pytest.raises(Refused, match=r"2 rounds not yet answered \(11, 12\)"):
        queue(network, node, lease_id, 13, b"round 13", 13, expiry)
    # the lease stops: the next PUT (any lease's) drops what was kept for it
    node.state.update_lease(lease_id, status="closed")
    _, other = verified_lease(network, node)
    queue(network, node, other, 0, b"round 0", 0, expiry)
    assert lease_id not in node.rounds._settled and lease_id not in node.rounds._round_bytes


def test_answered_rounds_reopened_count_as_waiting(world):
    """Review 30, finding 5: answered rounds sent again with other parameters were not counted
    against MAX_OPEN_ROUNDS (only a new round was checked): answer 0-2, re-open 1, send 3,
    re-open 2 left three rounds' parameters waiting on disk. Re-opening counts now."""
    network, node = world
    _, lease_id = verified_lease(network, node)
    expiry = int(time.time()) + 600
    for r in range(3):
        queue(network, node, lease_id, r, f"round {r}".encode(), r, expiry)
        write_atomic(node.ctx.jobs.round_folder(lease_id, r) / "result.json", json.dumps(
            {"params_sha256": hashlib.sha256(f"round {r}".encode()).hexdigest()}))
    queue(network, node, lease_id, 1, b"round 1 again", 11, expiry + 1)
    queue(network, node, lease_id, 3, b"round 3", 3, expiry)
    with pytest.raises(Refused, match=r"2 rounds not yet answered \(1, 3\)") as refused:
        queue(network, node, lease_id, 2, b"round 2 again", 12, expiry + 1)
    assert refused.value.status == 429
    waiting = [r for r in range(4) if (node.ctx.jobs.round_folder(lease_id, r) / "params.bin")
               .exists()]
    assert waiting == [1, 3]


def test_a_round_sent_back_to_its_first_parameters_is_run_again(world):
    """Review 30, finding 4: round r answered from A, re-sent with B, then with A again while
    the worker trained B. The old answer to A still matched the request, so the node counted
    the round answered, while the worker, its B run superseded, had gone back to the state
    before r and never ran r again: its next round started from a stale AdamW state and the
    honest worker was dropped. A re-send with other parameters now removes the old answer."""
    network, node = world
    _, lease_id = verified_lease(network, node)
    expiry = int(time.time()) + 600
    folder = node.ctx.jobs.round_folder(lease_id, 0)
    queue(network, node, lease_id, 0, b"A", 1, expiry)
    write_atomic(folder / "result.json", json.dumps(
        {"params_sha256": hashlib.sha256(b"A").hexdigest()}))
    assert diloco_worker.round_answered(folder) is True
    queue(network, node, lease_id, 0, b"B", 2, expiry + 1)
    queue(network, node, lease_id, 0, b"A", 3, expiry + 2)
    assert diloco_worker.round_answered(folder) is False       # waits: the worker runs it
    assert diloco_worker.pending_round(node.ctx.jobs.folder(lease_id)) == 0
