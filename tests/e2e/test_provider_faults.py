"""A provider that dies while `tessera job submit` follows its job, with real processes: anvil,
the provider daemon, and the tenant's CLI as a subprocess (SIGKILL is the fault, nothing faked).

- Killed for good: the follow loop retries, says so, and after a short grace closes the lease
  and claims the final epochs the provider was not up in; the command exits 1 with the refund
  and slash in words and no traceback. Chain time is moved forward right after the kill
  (evm_increaseTime) so that whole dead epochs exist, and are final (Uptime.is_final: their
  liveness reports and challenges are over), without waiting for them.
- Killed and restarted within the grace: the loop resumes, the job completes and settles
  normally, and the honest provider is neither closed on early nor claimed against.

Plus the fault classification of the tenant's HTTP calls against a real local HTTP server
(what is retried, what ends the loop at once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import tomli_w
from tests.support.jobs import SMALL_JOB
from tests.support.processes import ProviderProcess, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.uptime import Uptime
from tessera.errors import ProviderUnreachable, TenantError
from tessera.protocol.lease import claimable_epochs
from tessera.tenant.client import Tenant

pytestmark = pytest.mark.e2e

EPOCH = 60       # the restart test must not span a whole epoch; the other moves time
DEAD_EPOCHS = 4          # dead epochs wanted final when the tenant claims
SETTLE = 3               # an epoch is final this many epochs after it ends (devnet liveness rules)
GRACE = "4s"


@pytest.fixture(scope="module")
def chain_home(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("provider-faults")
    with private_devnet(home, epoch_length=EPOCH) as (devnet, network):
        yield home, devnet, network


def job_file(folder: Path, steps: int) -> Path:
    job = {**SMALL_JOB, "workload": {**SMALL_JOB["workload"], "steps": steps}}
    path = folder / f"job-{steps}.toml"
    path.write_text(tomli_w.dumps(job))
    return path


def submit(home: Path, network_file: Path, spec: Path, account: int, grace: str,
           out: Path) -> subprocess.Popen:
    """`tessera job submit` as a user runs it, its output (both streams) into `out`."""
    return subprocess.Popen(
        [sys.executable, "-m", "tessera.cli", "job", "submit", str(spec), "--network",
         str(network_file), "--account", f"devnet:{account}", "--provider-grace", grace],
        stdout=open(out, "wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "TESSERA_HOME": str(home), "PYTHONUNBUFFERED": "1", "COLUMNS": "250"})


def said(out: Path) -> str:
    return " ".join(out.read_text().split())   # rich may wrap long lines


def started_lease(chain: Chain, node: ProviderProcess, proc: subprocess.Popen, out: Path) -> int:
    """The lease the submit process made with `node`, once its job has trained a few steps."""
    def lease_id() -> int | None:
        assert proc.poll() is None, said(out)
        logs = chain.events("Market", "LeaseCreated", chain.network.deploy_block,
                            argument_filters={"provider": node.address})
        return logs[-1]["args"]["lease_id"] if logs else None

    lease = wait_until(lease_id, timeout=60, what="the lease")

    def training() -> bool:
        assert proc.poll() is None, said(out)
        reply = httpx.get(f"{node.url}/leases/{lease}", timeout=5)
        return reply.status_code == 200 and reply.json()["step"] >= 3

    wait_until(training, timeout=120, what="training steps", interval=0.2)
    return lease


def test_dead_provider_is_closed_on_and_its_dead_epochs_claimed(chain_home):
    home, devnet, network = chain_home
    chain = Chain(network, devnet_account(6))
    tenant, uptime = Tenant(chain), Uptime(chain)
    node = ProviderProcess(home, devnet.network_file, account=3, price="1.00", name="p-dies")
    out = home / "submit-dies.out"
    node.start()
    proc = None
    try:
        proc = submit(home, devnet.network_file, job_file(home, 5000), 6, GRACE, out)
        lease_id = started_lease(chain, node, proc, out)
        node.kill()   # SIGKILL: no goodbye, its training child dies with it
        killed_in = uptime.current_epoch()
        usd_before = tenant.market.payment_token.balance_of(chain.address)
        tstk_before = chain.call(chain.stake_token.functions.balanceOf(chain.address))
        supply_before = chain.call(chain.stake_token.functions.totalSupply())
        chain.w3.provider.make_request("evm_increaseTime", [EPOCH * (DEAD_EPOCHS + SETTLE)])
        chain.w3.provider.make_request("evm_mine", [])
        proc.wait(timeout=90)
    finally:
        node.stop()
        if proc is not None and proc.poll() is None:
            proc.kill()
    text = said(out)
    assert proc.returncode == 1, text
    assert "Traceback" not in text
    assert f"provider {node.address} unreachable at {node.url} (attempt 1, retrying in 0.5 s)" \
        in text
    assert "(attempt 2, retrying in 1.0 s)" in text
    assert "giving up on lease" in text and "grace 4 s" in text

    start = network.deploy_block
    [closed] = chain.events("Market", "LeaseClosed", start, argument_filters={"lease_id": lease_id})
    claims = chain.events("Market", "DowntimeClaimed", start,
                          argument_filters={"lease_id": lease_id})
    lease = tenant.market.lease(lease_id)
    assert not lease.is_open and closed["args"]["closed_by"] == chain.address

    # Every epoch the Market would take is taken (final, and the provider not up), and the
    # dead ones are among them; the later ones are not final yet (is_up presumes them up).
    claimed = [e for c in claims for e in c["args"]["epochs"]]
    possible = claimable_epochs(lease.start, lease.closed_at, lease.price_per_gpu_hour,
                                lease.gpus, lease.budget, uptime.genesis(), EPOCH)
    expected = [e for e in possible if not uptime.is_up(node.address, e)]
    assert claimed == expected
    assert set(range(killed_in + 1, killed_in + DEAD_EPOCHS)) <= set(claimed)
    market = chain.market.functions
    assert all(chain.call(market.downtime_claimed(lease_id, e)) for e in claimed)
    assert tenant.market.missed_epochs(lease) == []
    assert lease.downtime == sum(c["args"]["amount"] for c in claims) > 0

    # The money: what the claims and the close sent is what the tenant got, and it is more.
    refunds = sum(c["args"]["refund"] for c in claims) + closed["args"]["refund"]
    usd_gain = tenant.market.payment_token.balance_of(chain.address) - usd_before
    assert usd_gain == refunds and closed["args"]["refund"] > 0
    slashed = sum(c["args"]["stake_slashed"] for c in claims)
    # the slash is burned, not the tenant's (review 26)
    assert chain.call(chain.stake_token.functions.balanceOf(chain.address)) == tstk_before
    assert supply_before - chain.call(chain.stake_token.functions.totalSupply()) == slashed > 0
    assert f"claimed {len(claimed)} epoch(s) without a heartbeat" in text
    assert f"lease {lease_id} closed (tx 0x" in text


def test_provider_back_within_the_grace_is_not_punished(chain_home):
    home, devnet, network = chain_home
    chain = Chain(network, devnet_account(7))
    tenant = Tenant(chain)
    node = ProviderProcess(home, devnet.network_file, account=4, price="1.00", name="p-blips")
    out = home / "submit-blips.out"
    node.start()
    proc = None
    try:
        proc = submit(home, devnet.network_file, job_file(home, 40), 7, "90s", out)
        lease_id = started_lease(chain, node, proc, out)
        node.kill()
        wait_until(lambda: "unreachable at" in said(out), timeout=90,
                   what="the tenant to notice the provider is gone")
        node.start()
        proc.wait(timeout=240)
    finally:
        node.stop()
        if proc is not None and proc.poll() is None:
            proc.kill()
    text = said(out)
    assert proc.returncode == 0, text
    assert f"provider {node.address} unreachable at {node.url} (attempt 1" in text
    assert "answered again after" in text and "giving up" not in text

    start = network.deploy_block
    assert chain.events("Market", "DowntimeClaimed", start,
                        argument_filters={"lease_id": lease_id}) == []
    lease = tenant.market.lease(lease_id)
    assert lease.downtime == 0
    # Closed by the tenant after the results checked out, as with a provider that never blinked.
    [closed] = chain.events("Market", "LeaseClosed", start, argument_filters={"lease_id": lease_id})
    assert closed["args"]["closed_by"] == chain.address and closed["args"]["provider_amount"] > 0
    assert "artifacts in" in text and bytes(lease.result_hash) != bytes(32)


class Scripted(BaseHTTPRequestHandler):
    """Answers GET /leases/<n> with what `answers[n]` says: a status code and body, or 'drop'
    (close the connection without a word). Real HTTP: a fault a provider can send."""
    answers: dict[str, tuple[int, bytes] | str] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        answer = self.answers[self.path.rsplit("/", 1)[-1]]
        if answer == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        code, body = answer
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_which_provider_faults_are_retried(chain_home):
    """ProviderUnreachable (retried by the follow loop): no connection, a dropped one, 5xx,
    429, a non-JSON answer, a 200 that is not a job status. TenantError (ends it at once): a
    4xx refusal. The endpoint cache is seeded by hand: these leases do not exist on chain."""
    _, _, network = chain_home
    tenant = Tenant(Chain(network, devnet_account(8)))
    status = {"lease_id": 1, "status": "running", "step": 1, "steps": 2}
    Scripted.answers = {
        "1": "drop", "2": (503, b'{"detail": "overloaded"}'), "3": (429, b"slow down"),
        "4": (200, b"<html>"), "5": (200, b'{"lease_id": 5}'), "6": (404, b'{"detail": "no"}'),
        "7": (200, json.dumps(status).encode()),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        for lease in range(1, 8):
            tenant._endpoints[lease] = url
        for lease, reason in ((1, "RemoteProtocolError"), (2, "HTTP 503: overloaded"),
                              (3, "HTTP 429: slow down"), (4, "not JSON"),
                              (5, "not a job status")):
            with pytest.raises(ProviderUnreachable, match=reason) as caught:
                tenant.status(lease)
            assert caught.value.url == f"{url}/leases/{lease}"
        with pytest.raises(TenantError, match="provider refused GET .*: no") as refused:
            tenant.status(6)
        assert not isinstance(refused.value, ProviderUnreachable)
        assert tenant.status(7).step == 1
    finally:
        server.shutdown()
    tenant._endpoints[9] = "http://127.0.0.1:1"   # nothing listens on port 1
    with pytest.raises(ProviderUnreachable, match="ConnectError"):
        tenant.status(9)


def test_a_bad_grace_is_refused_before_anything_is_sent(tmp_path):
    """The option is read first: no spec is parsed, no chain is asked, nothing is paid."""
    result = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "job", "submit", str(tmp_path / "job.toml"),
         "--provider-grace", "soon", "--network", str(tmp_path / "none.json")],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "TESSERA_HOME": str(tmp_path), "COLUMNS": "250"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: --provider-grace: duration 'soon' must look like" in result.stderr
