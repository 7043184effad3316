"""Issue 11: a worker's round result and checkpoint states are served only against a read grant
(tessera.protocol.read_grant), over real HTTP: a real anvil with the contracts, a real
`tessera provider run` process, a real verified one-worker DiLoCo job of two rounds run by the
tenant's coordinator (whose pseudo-gradient downloads and spot checks now sign grants), one
registered validator, and a challenge the test opens on round 0.

Before: `GET /leases/{id}/rounds/{r}/pseudo-gradient` and `.../checkpoints/{i}` answered anyone,
so a cheating provider could copy a sibling worker's round for free ("copy-worker").
"""

from __future__ import annotations

import hashlib
import io
import json
import time

import httpx
import pytest
from rich.console import Console
from tests.support.jobs import VERIFIED_DILOCO_JOB
from tests.support.processes import ProviderProcess, tessera_home

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.read_grant import ReadGrantAuth
from tessera.chain.validators import Validators
from tessera.chain.verification import Verification
from tessera.protocol import commitment as cm
from tessera.protocol import read_grant
from tessera.protocol.jobspec import JobSpec
from tessera.tenant.client import Tenant
from tessera.tenant.flow import load_dataset
from tessera.tenant.multinode import run_diloco_job

PROVIDER, TENANT, VALIDATOR, STRANGER = 2, 5, 7, 8
STAKE = 100 * 10**18
JOB = {**VERIFIED_DILOCO_JOB, "name": "read-grant",
       "order": {**VERIFIED_DILOCO_JOB["order"], "nodes": 1}}


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("read-grant")
    with tessera_home(home), private_devnet(home) as (devnet, network):
        provider = ProviderProcess(home, devnet.network_file, account=PROVIDER, price="1.00",
                                   name="p-read-grant")
        provider.start()
        try:
            validator_chain = Chain(network, devnet_account(VALIDATOR))
            Validators(validator_chain).register(STAKE)
            tenant = Tenant(Chain(network, devnet_account(TENANT)))
            spec = JobSpec.model_validate(JOB)
            results = home / "results"
            summary = run_diloco_job(tenant, spec, load_dataset(spec.dataset),
                                     Console(file=io.StringIO(), width=250), results)
            [worker] = summary["workers"]
            yield {"provider": provider, "network": network, "tenant": tenant,
                   "summary": summary, "lease_id": worker["lease_id"], "results": results,
                   "validator_chain": validator_chain}
        finally:
            provider.stop()


def base(world, round_index: int = 0) -> str:
    return f"{world['provider'].url}/leases/{world['lease_id']}/rounds/{round_index}"


def headers(world, account: int, *, lease_id: int | None = None, expiry_in: float = 120,
            chain_id: int | None = None, reader: int | None = None) -> dict[str, str]:
    """Grant headers signed by devnet `account` (in the name of `reader`, itself by default)."""
    network, market = world["network"], world["tenant"].market.address
    grant = read_grant.sign(devnet_account(account), chain_id or network.chain_id, market,
                            world["lease_id"] if lease_id is None else lease_id,
                            int(time.time() + expiry_in))
    if reader is not None:
        grant = read_grant.ReadGrant(grant.lease_id, devnet_account(reader).address,
                                     grant.expiry, grant.signature)
    return grant.headers()


def routes(world, round_index: int = 0) -> list[str]:
    return [f"{base(world, round_index)}/pseudo-gradient",
            f"{base(world, round_index)}/checkpoints/0"]


def test_the_tenants_coordinator_read_every_round_with_its_grants(world):
    """The coordinator downloaded both pseudo-gradients (a contributor's is hash-checked) and
    spot-checked both rounds (p = 1) through its ReadGrantAuth client: nothing was refused for
    want of a grant. (Whether a replay can be judged on this machine is not this test's
    business: only that no state download failed.)"""
    rounds = world["summary"]["rounds"]
    assert [r["contributors"] for r in rounds] == [1, 1], rounds
    for r in rounds:
        assert r["spot_checks"], r
        for check in r["spot_checks"]:
            assert check["ok"] is not False and "could not open" not in check["reason"], check
        assert r["dropped"] == [] and r["challenges"] == []


def test_the_tenant_reads_and_the_round_answer_stays_public(world):
    answer = httpx.get(base(world), timeout=10)     # hashes and the signed commitment
    assert answer.status_code == 200 and answer.json()["commitment"], answer.text
    with httpx.Client(timeout=30, auth=ReadGrantAuth(world["tenant"].chain)) as http:
        payload = http.get(f"{base(world)}/pseudo-gradient")
        state = http.get(f"{base(world)}/checkpoints/0")
    assert payload.status_code == 200 and \
        hashlib.sha256(payload.content).hexdigest() == answer.json()["sha256"]
    assert state.status_code == 200 and len(state.content) > 0
    for url in routes(world):   # the same with hand-made headers
        assert httpx.get(url, headers=headers(world, TENANT), timeout=30).status_code == 200


def test_no_grant_is_401_naming_the_headers(world):
    for url in routes(world):
        reply = httpx.get(url, timeout=10)
        assert reply.status_code == 401, reply.text
        detail = reply.json()["detail"]
        assert all(name in detail for name in read_grant.HEADERS), detail
        partial = {k: v for k, v in headers(world, TENANT).items() if k != "X-Tessera-Signature"}
        reply = httpx.get(url, headers=partial, timeout=10)
        assert reply.status_code == 401 and "X-Tessera-Signature" in reply.json()["detail"]
        assert "X-Tessera-Reader" not in reply.json()["detail"]


@pytest.mark.parametrize("case, words", [
    ("stranger", "may not read"),             # a stranger signing its own grant
    ("stranger-as-tenant", "not by its reader"),   # a stranger signing in the tenant's name
    ("expired", "expired"),
    ("too-far-ahead", "ahead"),
    ("other-lease", "not by its reader"),     # the tenant's grant for another lease
    ("other-chain", "not by its reader"),
    ("provider-itself", "may not read"),      # not even the provider's own key
])
def test_a_void_or_unentitled_grant_is_403(world, case, words):
    made = {
        "stranger": lambda: headers(world, STRANGER),
        "stranger-as-tenant": lambda: headers(world, STRANGER, reader=TENANT),
        "expired": lambda: headers(world, TENANT, expiry_in=-5),
        "too-far-ahead": lambda: headers(world, TENANT,
                                         expiry_in=read_grant.MAX_READ_GRANT_AHEAD_S + 60),
        "other-lease": lambda: headers(world, TENANT, lease_id=world["lease_id"] + 1),
        "other-chain": lambda: headers(world, TENANT, chain_id=world["network"].chain_id + 1),
        "provider-itself": lambda: headers(world, PROVIDER),
    }[case]()
    for url in routes(world):
        reply = httpx.get(url, headers=made, timeout=10)
        assert reply.status_code == 403 and words in reply.json()["detail"], (url, reply.text)


@pytest.mark.parametrize("name, value", [
    ("X-Tessera-Reader", "tenant"), ("X-Tessera-Reader", "0x" + "g" * 40),
    ("X-Tessera-Expiry", "soon"), ("X-Tessera-Expiry", "-1"), ("X-Tessera-Expiry", "9" * 200),
    ("X-Tessera-Expiry", "9" * 78), ("X-Tessera-Signature", "0x"),
    ("X-Tessera-Signature", "0x" + "zz" * 65), ("X-Tessera-Signature", "\xff\xfe"),
    ("X-Tessera-Reader", ""),
])
def test_junk_header_values_are_4xx_never_500(world, name, value):
    sent = {**headers(world, TENANT), name: value.encode("latin-1")}
    for url in routes(world):
        reply = httpx.get(url, headers=sent, timeout=10)
        assert reply.status_code == 400 and name in reply.json()["detail"], (url, reply.text)
    # a well-formed signature that recovers to nobody is a void grant, not a crash
    sent = {**headers(world, TENANT), "X-Tessera-Signature": "0x" + "00" * 65}
    reply = httpx.get(routes(world)[1], headers=sent, timeout=10)
    assert reply.status_code == 403 and "signed by None" in reply.json()["detail"]


def test_a_validator_reads_only_the_round_of_an_open_challenge(world):
    """A registered validator is refused until a challenge on the lease's round is open, then
    reads that round, and still not the other round."""
    for url in routes(world, 0) + routes(world, 1):
        reply = httpx.get(url, headers=headers(world, VALIDATOR), timeout=10)
        assert reply.status_code == 403 and "may not read" in reply.json()["detail"], reply.text
    tenant, summary = world["tenant"], world["summary"]
    [job_dir] = world["results"].glob(f"diloco-order-{summary['order_id']}*")
    saved = json.loads((job_dir / "verification" / "round-0.json").read_text())
    signed = [cm.SignedCommitment.model_validate(s) for s in saved["commitments"]]
    ver = Verification(tenant.chain)
    challenge_id, _ = ver.open_challenge(signed[0], ver.round_tree(signed), segment=0,
                                         evidence=b"\x00" * 32)
    assert ver.challenge(challenge_id).lease_id == world["lease_id"]
    with httpx.Client(timeout=30, auth=ReadGrantAuth(world["validator_chain"])) as http:
        for url in routes(world, 0):
            assert http.get(url).status_code == 200, url
        for url in routes(world, 1):
            reply = http.get(url)
            assert reply.status_code == 403 and "may not read" in reply.json()["detail"]
    # a stranger still may not, challenge or not
    reply = httpx.get(routes(world, 0)[1], headers=headers(world, STRANGER), timeout=10)
    assert reply.status_code == 403
