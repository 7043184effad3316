"""Review 28 on review 27's "a job that cannot run is refused before it starts": the checks
judged the manifest's declared `dataset_size`, which the upload never had to match (a 10-byte
dataset declared as 1 MiB passed, failed at once, and the provider closed the lease as failed),
and a job asking for CUDA on a CPU-only provider failed the same way. An in-process provider
node on a real anvil, a real lease and the tenant's real signatures."""

from __future__ import annotations

import hashlib
import time

import pytest
import torch
from tests.support import provider_node
from tests.support.jobs import SMALL_JOB
from tests.support.provider_node import provider_world

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.errors import Refused
from tessera.protocol import messages
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.wire import Manifest, SignedManifest
from tessera.tenant.client import Tenant

PROVIDER, TENANT = 2, 5


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    with provider_world(tmp_path_factory.mktemp("manifest-runnable"), private_devnet,
                        PROVIDER) as world:
        yield world


def signed_manifest(network, node, lease_id: int, workload, dataset: bytes,
                    size: int) -> SignedManifest:
    manifest = Manifest(lease_id=lease_id, workload=workload,
                        dataset_sha256=hashlib.sha256(dataset).hexdigest(), dataset_size=size)
    nonce, expiry = 1, int(time.time()) + 3600
    typed = messages.manifest_typed_data(network.chain_id, node.ctx.market.address, lease_id,
                                         manifest.digest(), nonce, expiry)
    return SignedManifest(manifest=manifest, nonce=nonce, expiry=expiry,
                          signature=messages.sign(devnet_account(TENANT), typed))


def new_lease(network, node) -> int:
    lease_id = provider_node.lease_of(network, Tenant(Chain(network, devnet_account(TENANT))),
                                      PROVIDER)
    node.poll_once()
    return lease_id


def test_a_dataset_must_have_the_size_its_manifest_declares(world):
    network, node = world
    workload = JobSpec.model_validate(SMALL_JOB).workload
    short = b"ten bytes!"
    assert workload.dataset_problem(len(short))               # too small to train on
    with pytest.raises(Refused, match="needs at least") as refused:   # declared honestly
        node.manifests.accept(signed_manifest(network, node, new_lease(network, node),
                                              workload, short, len(short)))
    assert refused.value.status == 422
    lease_id = new_lease(network, node)                       # declared as 1 MiB: a lie
    node.manifests.accept(signed_manifest(network, node, lease_id, workload, short, 1 << 20))
    with pytest.raises(Refused, match="blob has 10 bytes") as refused:
        node.manifests.accept_blob(lease_id, hashlib.sha256(short).hexdigest(), short)
    assert refused.value.status == 400
    assert node.state.lease(lease_id).status == "awaiting-inputs"     # nothing started


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a CUDA device")
def test_a_cuda_job_is_refused_by_a_provider_without_cuda(world):
    network, node = world
    workload = JobSpec.model_validate(SMALL_JOB).workload.model_copy(update={"device": "cuda"})
    dataset = b"tessera dataset\n" * 4096
    with pytest.raises(Refused, match="no CUDA device") as refused:
        node.manifests.accept(signed_manifest(network, node, new_lease(network, node),
                                              workload, dataset, len(dataset)))
    assert refused.value.status == 422
