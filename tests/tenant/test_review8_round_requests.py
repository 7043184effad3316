"""Review 8: the provider's round authorization from its own record of the lease (df33c27),
attacked, in process against a real anvil (as tests/provider/test_round_authorization.py: a
real lease from a real signed bid, the node's real watcher, a real signed manifest through
`Manifests.accept`; only the worker's start is skipped: its status is set to running).

- HOLE: a reorg that gives the lease id to another tenant. The node records a lease's tenant
  from the first LeaseCreated it follows (`NodeState.add_lease`: INSERT OR IGNORE) and never
  again; the manifest path reads the chain (the new tenant's manifest is accepted) but keeps
  the old record. Rounds are now authorized against that stale tenant: the lease's real tenant
  is refused (403) and the tenant whose lease the reorg erased drives the worker of a lease it
  does not pay for. Before df33c27 `authorize` read the tenant from the chain. Fixed: the
  manifest path, which reads the lease from the chain, corrects a record without a manifest
  whose tenant or order differs (`Manifests.accept`).
- HELD: replaying a tenant's earlier signed request for a round that was since re-sent with
  other parameters (what a speculative step's first send is once `_step_again` re-sends) is
  refused: the later-expiring request wins (provider/diloco_rounds.py `accept`).
"""

from __future__ import annotations

import hashlib
import secrets
import time

import pytest
from tests.support import provider_node
from tests.support.jobs import VERIFIED_DILOCO_JOB
from tests.support.provider_node import provider_world

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.errors import Refused
from tessera.protocol import messages
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.wire import Manifest, SignedManifest
from tessera.provider.node import ProviderNode
from tessera.tenant.client import Tenant
from tessera.tenant.multinode import worker_workload

PROVIDER, TENANT, OTHER = 3, 5, 6
SPEC = JobSpec.model_validate(VERIFIED_DILOCO_JOB)   # its manifests' workload


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    with provider_world(tmp_path_factory.mktemp("review8-rounds"), private_devnet,
                        PROVIDER) as world:
        yield world


def lease_of(network, tenant: Tenant) -> int:
    return provider_node.lease_of(network, tenant, PROVIDER)


def manifest_of(network, node: ProviderNode, tenant: Tenant, lease_id: int) -> SignedManifest:
    """The tenant's signed DiLoCo manifest for the lease, as `Tenant.send_manifest` signs it."""
    manifest = Manifest(lease_id=lease_id, workload=worker_workload(SPEC, 0, 1),
                        dataset_sha256="cd" * 32, dataset_size=1000)
    nonce, expiry = secrets.randbits(63), int(time.time()) + 600
    typed = messages.manifest_typed_data(network.chain_id, node.ctx.market.address, lease_id,
                                         manifest.digest(), nonce, expiry)
    return SignedManifest(manifest=manifest, nonce=nonce, expiry=expiry,
                          signature=messages.sign(tenant.chain.account, typed))


def round_request(network, node: ProviderNode, signer: Tenant, lease_id: int, round_index: int,
                  params: bytes, expiry: int) -> tuple[int, int, str]:
    nonce = secrets.randbits(63)
    typed = messages.round_typed_data(network.chain_id, node.ctx.market.address, lease_id,
                                      round_index, hashlib.sha256(params).digest(), nonce, expiry)
    return nonce, expiry, messages.sign(signer.chain.account, typed)


def running_lease(network, node: ProviderNode, tenant: Tenant) -> int:
    lease_id = lease_of(network, tenant)
    node.poll_once()
    node.manifests.accept(manifest_of(network, node, tenant, lease_id))
    node.state.update_lease(lease_id, status="running")   # (its worker's start, skipped)
    return lease_id


def test_an_earlier_signed_request_replayed_after_a_resend_is_refused(world):
    network, node = world
    tenant = Tenant(Chain(network, devnet_account(TENANT)))
    lease_id = running_lease(network, node, tenant)
    now = int(time.time())
    poisoned, fixed = b"speculative step, with the caught answer", b"the step taken again"
    first = round_request(network, node, tenant, lease_id, 1, poisoned, now + 600)
    again = round_request(network, node, tenant, lease_id, 1, fixed, now + 601)
    node.rounds.accept(lease_id, 1, poisoned, *first)
    node.rounds.accept(lease_id, 1, fixed, *again)        # the re-send wins: it expires later
    with pytest.raises(Refused, match="signed later") as refused:
        node.rounds.accept(lease_id, 1, poisoned, *first)  # the first send, replayed
    assert refused.value.status == 409
    node.rounds.accept(lease_id, 1, fixed, *again)        # the current one: idempotent
    folder = node.ctx.jobs.round_folder(lease_id, 1)
    assert (folder / "params.bin").read_bytes() == fixed
    # another tenant's signature over the current parameters: refused
    other = Tenant(Chain(network, devnet_account(OTHER)))
    with pytest.raises(Refused, match="not signed by its tenant"):
        node.rounds.accept(lease_id, 1, fixed,
                           *round_request(network, node, other, lease_id, 1, fixed, now + 700))


def test_a_reorged_lease_takes_rounds_from_its_tenant_on_chain(world):
    network, node = world
    erased = Tenant(Chain(network, devnet_account(OTHER)))
    real = Tenant(Chain(network, devnet_account(TENANT)))
    w3 = real.chain.w3
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    lease_id = lease_of(network, erased)
    node.poll_once()                                       # the node follows its LeaseCreated
    assert node.state.lease(lease_id).tenant.lower() == erased.chain.address.lower()
    assert w3.provider.make_request("evm_revert", [snapshot])["result"]   # the reorg
    assert lease_of(network, real) == lease_id             # the id now belongs to `real`
    node.poll_once()
    assert real.market.lease(lease_id).tenant.lower() == real.chain.address.lower()
    node.manifests.accept(manifest_of(network, node, real, lease_id))   # checked on chain: ok
    node.state.update_lease(lease_id, status="running")
    expiry = int(time.time()) + 600
    intruder = round_request(network, node, erased, lease_id, 0, b"p", expiry)
    with pytest.raises(Refused):                           # held: the erased tenant's round
        node.rounds.accept(lease_id, 0, b"p", *intruder)
    node.rounds.accept(lease_id, 0, b"q",                  # and the lease's tenant's is taken
                       *round_request(network, node, real, lease_id, 0, b"q", expiry + 1))
