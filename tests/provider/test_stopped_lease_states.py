"""provider/retention.py: the node prunes the checkpoint states of leases whose worker no
longer runs (review 32, finding 2: a closed lease's states stayed for good, and many short
verified leases filled a provider's disk). In process against a real anvil (the harness of
tests/provider/test_round_authorization.py); the answers' ages are set on their files."""

from __future__ import annotations

import os
import time

import pytest
from tests.provider.test_round_authorization import PROVIDER, queue, verified_lease, write_answer
from tests.support.provider_node import provider_world

from tessera.compute.diloco_worker import CHECKPOINT_DIR, RETAIN_S


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    with provider_world(tmp_path_factory.mktemp("stopped-states"), private_devnet,
                        PROVIDER) as world:
        yield world


def answered(network, node, age_s: float):
    """A verified lease with round 0 answered `age_s` ago; its round folder."""
    _, lease_id = verified_lease(network, node)
    queue(network, node, lease_id, 0, b"A", 1, int(time.time()) + 600)
    folder = write_answer(node, lease_id, b"A")
    old = time.time() - age_s
    os.utime(folder / "result.json", (old, old))
    return lease_id, folder


def test_a_stopped_leases_states_go_when_their_time_is_up_and_no_sooner(world):
    network, node = world
    old_closed, old_closed_folder = answered(network, node, RETAIN_S + 60)
    new_closed, new_closed_folder = answered(network, node, 60)
    running, running_folder = answered(network, node, RETAIN_S + 60)
    for lease in (old_closed, new_closed):
        node.state.update_lease(lease, status="closed")
    node.stopped_states._next = 0.0       # (each poll_once sweeps: the harness polled)
    node.stopped_states.sweep()
    assert not (old_closed_folder / CHECKPOINT_DIR).exists()
    assert (old_closed_folder / "result.json").exists()          # the answer stays
    assert (new_closed_folder / CHECKPOINT_DIR / "0.bin").exists()  # its time is not up
    assert (running_folder / CHECKPOINT_DIR / "0.bin").exists()     # its worker prunes it
    assert old_closed in node.stopped_states._done
    assert new_closed not in node.stopped_states._done
    # the next sweep waits PRUNE_EVERY_S, and then takes the rest once its time is up
    os.utime(new_closed_folder / "result.json", (0, 0))
    node.stopped_states.sweep()
    assert (new_closed_folder / CHECKPOINT_DIR / "0.bin").exists()
    node.stopped_states._next = 0.0
    node.stopped_states.sweep()
    assert not (new_closed_folder / CHECKPOINT_DIR).exists()
