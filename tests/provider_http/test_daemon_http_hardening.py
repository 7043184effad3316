"""The provider and validator daemons against junk and strangers, over real HTTP: a real anvil
with the contracts, a real `tessera provider run` and `tessera validator run` process, a
real lease (order, bid, accept) with a tenant-signed manifest whose dataset is not yet sent.

Each test is one item of issue 10 ("Daemons"), and failed before it was fixed:
- a stranger's chunked upload was read in full before the caller was checked (the provider's
  memory grew by twice the upload); now the answer comes while the upload is still being sent;
- a body past the cap was read anyway; now 413 while it streams, with or without a length;
- NaN/Infinity in a JSON body made the validation handler fail (500), and a deeply nested
  body killed the provider outright (segfault: py_ecc raises the recursion limit);
- numbers past int64 or uint256 in a path crashed SQLite or the ABI encoder (500);
- a rounds route on a lease that is not a DiLoCo lease answered 202 "running";
- /probe signed a receipt for anyone who named a registered validator.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time

import httpx
import pytest
from tests.provider_http.raw import upload
from tests.support.jobs import SMALL_JOB, lease_for
from tests.support.processes import ProviderProcess, VotingValidator, tessera_home, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.http_limits import JSON_BODY_BYTES
from tessera.protocol import messages
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.probes import request_typed_data, signed_request
from tessera.protocol.wire import Manifest, SignedManifest
from tessera.tenant.client import Tenant

PROVIDER, OTHER_PROVIDER, TENANT, VALIDATOR, STRANGER = 2, 3, 5, 7, 8
MB = 1 << 20
SLACK = 16 * MB    # loopback socket buffers: what a client may hand over before the answer
DATASET = b"tessera hardening dataset\n" * 1500      # named by the manifest, never sent whole


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("hardening")
    with tessera_home(home), private_devnet(home) as (devnet, network):
        provider = ProviderProcess(home, devnet.network_file, account=PROVIDER, price="1.00",
                                   name="p-hardening")
        validator = VotingValidator(home, devnet.network_file, account=VALIDATOR)
        provider.start()
        validator.start()
        try:
            tenant_chain = Chain(network, devnet_account(TENANT))
            spec = JobSpec.model_validate(SMALL_JOB)
            lease_id = lease_for(Tenant(tenant_chain), spec)
            manifest = Manifest(lease_id=lease_id, workload=spec.workload,
                                dataset_sha256=hashlib.sha256(DATASET).hexdigest(),
                                dataset_size=len(DATASET))
            nonce, expiry = 1, int(time.time()) + 3600
            typed = messages.manifest_typed_data(network.chain_id, tenant_chain.market.address,
                                                 lease_id, manifest.digest(), nonce, expiry)
            signed = SignedManifest(manifest=manifest, nonce=nonce, expiry=expiry,
                                    signature=messages.sign(tenant_chain.account, typed))
            reply = httpx.post(f"{provider.url}/leases/{lease_id}/manifest",
                               json=signed.model_dump(mode="json"), timeout=30)
            assert reply.status_code == 200 and reply.json()["status"] == "awaiting-inputs", \
                reply.text
            yield {"provider": provider, "validator": validator, "network": network,
                   "lease_id": lease_id, "manifest": manifest, "tenant_chain": tenant_chain,
                   "chain": Chain(network)}
        finally:
            validator.stop()
            provider.stop()


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def alive(url: str) -> bool:
    return httpx.get(f"{url}/healthz", timeout=10).status_code == 200


# -- bodies: who is sending is checked first, and every body is capped while it streams ------

def test_a_strangers_upload_is_refused_before_it_is_read(world):
    """200 MB, chunked, no Content-Length, to the two raw upload routes: the answer arrives
    while the upload is still being sent (the client had sent at most SLACK), the connection
    is closed, and the provider's memory did not grow by the upload. Before: the provider read
    all 200 MB, then refused, its memory up by about twice that."""
    provider, lease_id = world["provider"], world["lease_id"]
    sha = world["manifest"].dataset_sha256
    before = rss_mb(provider.proc.pid)
    cases = [
        (f"/leases/{lease_id}/blobs/{'ab' * 32}", {}, 403, "not named by"),  # not the dataset
        (f"/leases/424242/blobs/{sha}", {}, 409, "manifest"),                # no such lease
        (f"/leases/{lease_id}/rounds/0",                                     # not a DiLoCo lease
         {"X-Tessera-Nonce": "1", "X-Tessera-Expiry": str(int(time.time()) + 60),
          "X-Tessera-Signature": "0x" + "11" * 65, "X-Tessera-Params-Sha256": "00" * 32},
         409, "not a DiLoCo worker"),
        (f"/leases/{lease_id}/rounds/0", {}, 400, "X-Tessera-Params-Sha256"),  # no signature
    ]
    for path, headers, status, words in cases:
        answer = upload(provider.url, "PUT", path, 200 * MB, headers)
        assert (answer.status, words in answer.detail()) == (status, True), (path, answer)
        assert answer.sent < SLACK, (path, answer.sent)
        assert answer.headers.get("connection") == "close"
    assert rss_mb(provider.proc.pid) - before < 64, (before, rss_mb(provider.proc.pid))
    assert alive(provider.url)


def test_the_dataset_upload_is_capped_at_its_manifest_size_while_it_streams(world):
    """The blob the manifest names may be at most its `dataset_size`: a longer upload gets 413
    while it streams (no Content-Length), and a declared length over it gets 413 before any
    byte is read. Before: the whole upload was read (up to 1 GiB), then refused by its hash."""
    provider, lease_id, manifest = world["provider"], world["lease_id"], world["manifest"]
    path = f"/leases/{lease_id}/blobs/{manifest.dataset_sha256}"
    answer = upload(provider.url, "PUT", path, 64 * MB)
    assert answer.status == 413 and str(manifest.dataset_size) in answer.detail(), answer
    assert answer.sent < manifest.dataset_size + SLACK
    declared = upload(provider.url, "PUT", path, 0,
                      {"Content-Length": str(manifest.dataset_size + 1)}, chunked=False)
    assert declared.status == 413 and declared.sent == 0
    huge = upload(provider.url, "PUT", path, 0, {"Content-Length": str(2**40)}, chunked=False)
    assert huge.status == 413
    status = httpx.get(f"{provider.url}/leases/{lease_id}", timeout=10).json()["status"]
    assert status == "awaiting-inputs"   # nothing was accepted


def test_json_bodies_past_the_cap_are_refused_while_they_stream(world):
    for url, path in ((world["provider"].url, "/probe"),
                      (world["provider"].url, f"/leases/{world['lease_id']}/manifest"),
                      (world["validator"].url, "/challenges/1/case")):
        answer = upload(url, "POST", path, 64 * MB, {"Content-Type": "application/json"})
        assert answer.status == 413 and "larger than" in answer.detail(), (path, answer)
        assert answer.sent < JSON_BODY_BYTES + SLACK, (path, answer.sent)
        declared = upload(url, "POST", path, 0, {"Content-Length": str(JSON_BODY_BYTES + 1)},
                          chunked=False)
        assert declared.status == 413, (path, declared)


# -- junk JSON, numbers out of range, the wrong kind of lease: 4xx with a reason -------------

@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_anywhere_in_a_json_body_are_refused(world, token):
    """Before: 500 with a traceback (the validation handler could not encode NaN)."""
    provider, validator, lease_id = world["provider"], world["validator"], world["lease_id"]
    probe = f'{{"validator": "0x{"11" * 20}", "epoch": {token}, "challenge": "0x00"}}'
    manifest = f'{{"manifest": {{"lease_id": 1, "workload": {{"lr": [{token}]}}}}}}'
    case = f'{{"spec": {{"order": {token}}}, "manifest": {{}}}}'
    for url, path, body in ((provider.url, "/probe", probe),
                            (provider.url, f"/leases/{lease_id}/manifest", manifest),
                            (validator.url, "/challenges/1/case", case)):
        reply = httpx.post(url + path, content=body, timeout=10,
                           headers={"content-type": "application/json"})
        assert reply.status_code == 400, (path, reply.status_code, reply.text)
        assert token in reply.json()["detail"] and "finite" in reply.json()["detail"]


def test_a_deeply_nested_body_is_refused_and_the_daemons_live_on(world):
    """Before: the provider process died (segfault in the C JSON parser, whose recursion
    py_ecc's 100,000 recursion limit no longer stops) on one request from anyone."""
    for url, path in ((world["provider"].url, "/probe"), (world["validator"].url,
                                                          "/challenges/1/case")):
        reply = httpx.post(url + path, content="[" * 100_000 + "]" * 100_000, timeout=30,
                           headers={"content-type": "application/json"})
        assert reply.status_code == 400 and "recursion limit" in reply.text, reply.text[:300]
        assert alive(url)


def test_numbers_past_int64_in_a_path_are_refused(world):
    """Before: 500 (SQLite cannot bind 2**63; the ABI encoder cannot encode 2**256)."""
    p, v, lease = world["provider"].url, world["validator"].url, world["lease_id"]
    cases = [("GET", f"{p}/leases/{2**63}"), ("GET", f"{p}/leases/{2**63}/logs"),
             ("GET", f"{p}/leases/{lease}/logs?since={2**63}"),
             ("GET", f"{p}/leases/{2**63}/rounds/0"), ("GET", f"{p}/leases/{lease}/rounds/{2**64}"),
             ("GET", f"{p}/leases/{2**256}/rounds/0/checkpoints/0"),
             ("GET", f"{p}/orders/{2**63}/bid"), ("GET", f"{p}/orders/{2**256}/bid"),
             ("GET", f"{p}/orders/-1/bid"), ("GET", f"{p}/leases/{2**63}/artifacts"),
             ("PUT", f"{p}/leases/{2**256}/blobs/{'ab' * 32}"),
             ("GET", f"{v}/receipts/{2**63}"), ("GET", f"{v}/receipts/{2**256}"),
             ("POST", f"{v}/challenges/{2**256}/case")]
    for method, url in cases:
        reply = httpx.request(method, url, timeout=10, json={} if method == "POST" else None)
        assert reply.status_code == 422, (url, reply.status_code, reply.text)
        assert "9223372036854775807" in reply.text or "greater than or equal" in reply.text
    assert alive(p) and alive(v)


def test_rounds_of_a_lease_that_is_not_a_diloco_lease_are_refused(world):
    """Before: GET /leases/{id}/rounds/{r} answered 202 {"status": "running"} for a training
    lease, so a tenant would poll it for ever."""
    p, lease_id = world["provider"].url, world["lease_id"]
    for path in (f"/leases/{lease_id}/rounds/0", f"/leases/{lease_id}/rounds/3/pseudo-gradient",
                 f"/leases/{lease_id}/rounds/0/checkpoints/0"):
        reply = httpx.get(p + path, timeout=10)
        assert reply.status_code == 409, (path, reply.text)
        assert "runs a train-charlm job, not a DiLoCo worker" in reply.json()["detail"]
    # even the lease's own tenant, signing properly, cannot queue a round on it
    chain, params = world["tenant_chain"], b"parameters"
    expiry = int(time.time()) + 60
    typed = messages.round_typed_data(chain.network.chain_id, chain.market.address, lease_id, 0,
                                      hashlib.sha256(params).digest(), 7, expiry)
    reply = httpx.put(f"{p}/leases/{lease_id}/rounds/0", content=params, timeout=10, headers={
        "x-tessera-nonce": "7", "x-tessera-expiry": str(expiry),
        "x-tessera-signature": messages.sign(chain.account, typed),
        "x-tessera-params-sha256": hashlib.sha256(params).hexdigest()})
    assert reply.status_code == 409 and "not a DiLoCo worker" in reply.text


# -- /probe: only the validator it names, for this provider and chain, before its expiry -----

def probe_request(world, *, signer: int = VALIDATOR, validator: int | None = None,
                  provider: str | None = None, deadline_in: float = 10,
                  chain_id: int | None = None) -> dict:
    """A probe body, signed by devnet account `signer` in the name of `validator`."""
    chain, network = world["chain"], world["network"]
    body = {"provider": provider or world["provider"].address,
            "validator": devnet_account(validator or signer).address,
            "epoch": chain.probes.functions.current_epoch().call(),
            "challenge": "0x" + secrets.token_hex(32), "deadline": int(time.time() + deadline_in)}
    typed = request_typed_data(chain_id or network.chain_id, chain.probes.address,
                               body["provider"], body["validator"], body["epoch"],
                               body["challenge"], body["deadline"])
    return {**body, "signature": messages.sign(devnet_account(signer), typed)}


def test_probe_answers_only_the_named_validators_own_fresh_request(world):
    """How a caller would get round the signature, each refused without a receipt signed:
    an unsigned request naming a validator (the old format), another key signing in a
    validator's name, a validator's request for another provider or another chain, one past
    its deadline, one with a deadline far ahead (to be used later), a non-validator signing for
    itself, and the same signed request sent twice. Before: the unsigned request got a receipt."""
    url = world["provider"].url + "/probe"
    unsigned = {k: v for k, v in probe_request(world).items() if k not in ("signature", "provider")}
    cases = [
        (unsigned, 422, "signature"),
        (probe_request(world, signer=STRANGER, validator=VALIDATOR), 403, "not by the validator"),
        (probe_request(world, provider=devnet_account(OTHER_PROVIDER).address), 400,
         "names provider"),
        (probe_request(world, chain_id=world["network"].chain_id + 1), 403, "not by the validator"),
        (probe_request(world, deadline_in=-1), 400, "has passed"),
        (probe_request(world, deadline_in=3600), 400, "ahead"),
        (probe_request(world, signer=STRANGER), 403, "not a registered validator"),
    ]
    for body, status, words in cases:
        reply = httpx.post(url, json=body, timeout=10)
        assert reply.status_code == status and words in reply.text, (status, reply.text)
    for _ in range(3):   # an epoch may turn between reading it and asking
        good = probe_request(world)
        reply = httpx.post(url, json=good, timeout=10)
        if reply.status_code != 409:
            break
    assert reply.status_code == 200, reply.text
    receipt = reply.json()
    assert (receipt["challenge"], receipt["provider"]) == (good["challenge"],
                                                           world["provider"].address)
    again = httpx.post(url, json=good, timeout=10)
    assert again.status_code == 409 and "already answered" in again.text


def test_the_validator_daemon_signs_its_probes_and_they_are_answered(world):
    """The real validator process probes the real provider with signed requests: its receipts
    document holds an answered probe of this provider."""
    validator, provider = world["validator"], world["provider"]

    def answered():
        epoch = world["chain"].probes.functions.current_epoch().call()
        for e in range(max(epoch - 3, 0), epoch + 1):
            doc = validator.receipts(e) or {"receipts": []}
            if any(r["provider"].lower() == provider.address.lower() and r["answered"]
                   for r in doc["receipts"]):
                return True
        return False

    wait_until(answered, timeout=150, what="an answered probe of the provider")


def test_the_probe_client_signs_what_the_provider_checks(world):
    """`signed_request` (what the validator's client sends) is the format the provider takes."""
    chain = world["chain"]
    request = signed_request(devnet_account(VALIDATOR), world["network"].chain_id,
                             chain.probes.address, world["provider"].address,
                             chain.probes.functions.current_epoch().call(),
                             "0x" + secrets.token_hex(32), int(time.time()) + 10)
    reply = httpx.post(world["provider"].url + "/probe", content=json.dumps(request.model_dump()),
                       headers={"content-type": "application/json"}, timeout=10)
    assert reply.status_code in (200, 409), reply.text   # 409 only if the epoch just turned
    if reply.status_code == 200:
        assert reply.json()["validator"] == devnet_account(VALIDATOR).address


def test_a_verified_worker_asking_more_threads_than_the_provider_gives_is_refused(world):
    """Issue 11: a verified DiLoCo worker signs the thread count it trains with and every replay
    uses the job's, so the provider may not quietly train it with its own `[limits] threads`
    (the honest worker would then fail every check): it refuses the manifest, 409, naming both.
    (This provider's limit is the config default, 1; the lease is the world's, whose tenant
    signs a second manifest: the thread check comes before the one-manifest-per-lease rule.)"""
    from tessera.protocol.workload import DilocoWorkerWorkload

    model = JobSpec.model_validate(SMALL_JOB).workload.model_copy(update={"threads": 2})
    worker = DilocoWorkerWorkload(model=model, worker=0, workers=1, checkpoint_every=2)
    reply = post_manifest(world, worker, len(DATASET))
    assert reply.status_code == 409, reply.text
    assert "trains with 2 threads" in reply.text and "at most 1" in reply.text


@pytest.mark.parametrize("change, said", [
    ({"dataset_size": 1040, "workload": {"block_size": 4096}}, "needs at least"),
    ({"workload": {"n_layer": 48, "n_embd": 4096, "n_head": 32}}, "[limits] memory_limit_mb"),
])
def test_a_job_that_cannot_run_here_is_refused_before_it_starts(world, change, said):
    """Review 27, finding 1: a manifest whose job could only fail (a dataset too small for its
    blocks, a model whose fp32 state alone passes the memory limit) was accepted, failed at
    once, and the provider closed the lease itself: counted against its reliability, for a
    thousandth of a TUSD of the tenant's rent. It is refused now, 422, naming the problem."""
    workload = JobSpec.model_validate(SMALL_JOB).workload.model_copy(update=change["workload"])
    reply = post_manifest(world, workload, change.get("dataset_size", len(DATASET)))
    assert reply.status_code == 422, reply.text
    assert said in reply.text, reply.text


def post_manifest(world, workload, dataset_size: int) -> httpx.Response:
    """A second manifest for the world's lease, signed by its tenant, posted to the provider
    (its checks come before the one-manifest-per-lease rule)."""
    tenant_chain, network, lease_id = world["tenant_chain"], world["network"], world["lease_id"]
    manifest = Manifest(lease_id=lease_id, workload=workload,
                        dataset_sha256=hashlib.sha256(DATASET).hexdigest(),
                        dataset_size=dataset_size)
    nonce, expiry = 1, int(time.time()) + 3600
    typed = messages.manifest_typed_data(network.chain_id, tenant_chain.market.address, lease_id,
                                         manifest.digest(), nonce, expiry)
    signed = SignedManifest(manifest=manifest, nonce=nonce, expiry=expiry,
                            signature=messages.sign(tenant_chain.account, typed))
    return httpx.post(f"{world['provider'].url}/leases/{lease_id}/manifest",
                      json=signed.model_dump(mode="json"), timeout=30)
