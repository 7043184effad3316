"""A rental against real processes: anvil, a provider daemon over HTTP, the tenant SDK."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from rich.console import Console
from tests.support.jobs import SMALL_JOB, lease_for
from tests.support.processes import ProviderProcess, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.protocol import messages
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.wire import Manifest, SignedManifest
from tessera.tenant.client import Tenant
from tessera.tenant.flow import load_dataset, run_rental

pytestmark = pytest.mark.e2e


def test_full_rental_settles_and_conserves_money(provider, tenant_chain, tessera_home):
    tenant = Tenant(tenant_chain)
    spec = JobSpec.model_validate(SMALL_JOB)
    dataset = load_dataset(spec.dataset)
    market = tenant.market
    treasury = tenant_chain.call(market.contract.functions.treasury())
    before = {a: market.payment_token.balance_of(a) for a in (tenant_chain.address, provider.address,
                                                      treasury, market.address)}
    summary = run_rental(tenant, spec, dataset, Console(quiet=True), follow=True, close=True,
                         results_dir=tessera_home / "e2e-results")
    after = {a: market.payment_token.balance_of(a) for a in before}
    st = summary["settlement"]
    paid = st["provider"] + st["provider_withdrawn_earlier"]["amount"]
    fee = st["fee"] + st["provider_withdrawn_earlier"]["fee"]
    assert summary["job_status"] == "succeeded"
    assert paid > 0 and st["refund"] > 0
    assert after[provider.address] - before[provider.address] == paid
    assert after[treasury] - before[treasury] == fee
    assert before[tenant_chain.address] - after[tenant_chain.address] == paid + fee
    assert after[market.address] == before[market.address]
    assert any("recomputed" in check for check in summary["checks"])
    lease = market.lease(summary["lease_id"])
    assert not lease.is_open
    assert bytes(lease.result_hash).hex() == summary["result_hash"]


def test_manifest_signed_by_someone_else_is_refused(provider, tenant_chain):
    tenant = Tenant(tenant_chain)
    spec = JobSpec.model_validate(SMALL_JOB)
    lease_id = lease_for(tenant, spec)
    dataset = load_dataset(spec.dataset)
    manifest = Manifest(lease_id=lease_id, workload=spec.workload,
                        dataset_sha256=hashlib.sha256(dataset).hexdigest(),
                        dataset_size=len(dataset))
    intruder = devnet_account(7)
    typed = messages.manifest_typed_data(tenant_chain.network.chain_id,
                                         tenant.market.address, lease_id,
                                         manifest.digest(), 1, 2**40)
    signed = SignedManifest(manifest=manifest, nonce=1, expiry=2**40,
                            signature=messages.sign(intruder, typed))
    response = httpx.post(f"{provider.url}/leases/{lease_id}/manifest",
                          json=signed.model_dump(mode="json"))
    assert response.status_code == 403
    assert "not signed by its tenant" in response.json()["detail"]
    lease_url = f"{provider.url}/leases/{lease_id}"
    wait_until(lambda: httpx.get(lease_url).status_code == 200, timeout=30,
               what="the provider to see the lease")
    assert httpx.get(lease_url).json()["status"] == "awaiting-manifest"
    settlement = tenant.close(lease_id)
    assert settlement.refund > 0


def test_provider_killed_mid_job_loses_no_money_and_remembers_its_lease(
        tessera_home, devnet, network):
    node = ProviderProcess(tessera_home, devnet.network_file, account=3, price="0.50",
                           name="p-crash")
    node.start()
    try:
        tenant = Tenant(Chain(network, devnet_account(6)))
        job = {**SMALL_JOB, "workload": {**SMALL_JOB["workload"], "steps": 2000}}
        spec = JobSpec.model_validate(job)
        lease_id = lease_for(tenant, spec)
        assert tenant.market.lease(lease_id).provider == node.address
        tenant.send_manifest(lease_id, spec.workload, load_dataset(spec.dataset))
        wait_until(lambda: tenant.status(lease_id).step > 0, timeout=120, what="training steps")
        node.kill()
        node.start()
        status = tenant.status(lease_id)
        assert status.status in ("running", "succeeded")
        before = tenant.market.payment_token.balance_of(tenant.chain.address)
        lease = tenant.market.lease(lease_id)
        settlement = tenant.close(lease_id)
        assert settlement.refund > 0
        assert settlement.provider_amount + settlement.fee + settlement.refund + lease.paid \
            == lease.budget
        assert tenant.market.payment_token.balance_of(tenant.chain.address) - before == settlement.refund
        wait_until(lambda: tenant.status(lease_id).status == "closed", timeout=90,
                   what="provider to see the close")
        node.stop()  # SIGTERM: a clean shutdown
        assert node.proc.returncode == 0
        assert '"event": "stopped"' in (tessera_home / "p-crash.log").read_text()
    finally:
        node.stop()


def test_metrics_and_health_are_served(provider):
    health = httpx.get(f"{provider.url}/healthz").json()
    assert health["status"] == "ok" and health["provider"] == provider.address
    metrics = httpx.get(f"{provider.url}/metrics").text
    assert "tessera_provider_last_block" in metrics


def test_job_that_fails_is_closed_by_the_provider_and_refunded(provider, network):
    tenant = Tenant(Chain(network, devnet_account(9)))
    # passes the provider's floors (review 27: a job that cannot run is refused before it
    # starts) but not its memory limit: one batch's activations are several of its 4 GiB
    too_big = {**SMALL_JOB, "workload": {**SMALL_JOB["workload"], "batch_size": 1024,
                                         "block_size": 4096}}
    spec = JobSpec.model_validate(too_big)
    lease_id = lease_for(tenant, spec)
    before = tenant.market.payment_token.balance_of(tenant.chain.address)
    tenant.send_manifest(lease_id, spec.workload, load_dataset(spec.dataset))
    final = tenant.follow(lease_id, poll_s=0.2, timeout_s=120)
    assert final.status == "failed" and "exit code" in final.detail
    wait_until(lambda: not tenant.market.lease(lease_id).is_open, timeout=90,
               what="the provider to close the failed lease")
    lease = tenant.market.lease(lease_id)
    refund = tenant.market.payment_token.balance_of(tenant.chain.address) - before
    assert refund > 0 and refund + lease.paid == lease.budget
