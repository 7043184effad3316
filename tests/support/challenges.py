"""Checks on on-chain challenges shared by the end-to-end tests where validators vote."""

from __future__ import annotations

import hashlib
import secrets
import time

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.tokens import StakeToken
from tessera.chain.verification import Outcome, Verification
from tessera.protocol import messages
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.wire import Manifest, SignedManifest
from tessera.tenant.client import Tenant
from tessera.tenant.flow import load_dataset
from tessera.tenant.multinode import worker_workload
from tessera.validator.challenges import CLAIMED


def decided_and_claimed(ver: Verification, challenge_id: int, validators, outcome: Outcome):
    """False while the challenge is open; once decided, it must be `outcome`, and the answer is
    whether every one of `validators` has claimed its reward."""
    record = ver.challenge(challenge_id)
    if record.status == Outcome.OPEN:
        return False
    assert record.status == outcome
    return all(ver.chain.call(ver.contract.functions.votes(challenge_id, v.address)) == CLAIMED
               for v in validators)


def signed_manifest(tenant: Tenant, spec: JobSpec, lease_id: int, worker: int,
                    workers: int) -> SignedManifest:
    """The manifest the tenant sent for `lease_id` when `worker` is the lease's worker index,
    signed again by the tenant's key (the same content, so the same digest, as
    `Tenant.send_manifest` signed); another index makes a second, different manifest."""
    dataset = load_dataset(spec.dataset)
    manifest = Manifest(lease_id=lease_id, workload=worker_workload(spec, worker, workers),
                        dataset_sha256=hashlib.sha256(dataset).hexdigest(),
                        dataset_size=len(dataset))
    nonce, expiry = secrets.randbits(64), int(time.time()) + 600
    chain = tenant.chain
    typed = messages.manifest_typed_data(chain.network.chain_id, tenant.market.address,
                                         lease_id, manifest.digest(), nonce, expiry)
    return SignedManifest(manifest=manifest, nonce=nonce, expiry=expiry,
                          signature=messages.sign(chain.account, typed))


def register_validators(network, accounts, stake: int = 100 * 10**18) -> None:
    """Devnet `accounts` staked as validators (a challenge needs a quorum of 3 to exist)."""
    for account in accounts:
        chain = Chain(network, devnet_account(account))
        StakeToken(chain).ensure_allowance(chain.validators.address, stake)
        chain.send(chain.validators.functions.register(stake))
