"""Issue 16: the tenant's coordinator long-polls each worker's round answer
(`WorkerChannel.answer`, `?wait=`) instead of asking every 20 ms. A real WorkerChannel against
the provider's real app served by uvicorn (tests/support/scripted_rounds.py: a scripted node
decides when the answer appears), every GET of the round's answer counted on the client.

Before: one GET per POLL_S (plus its round trip) for the whole round, ~40-50 per second.
After: one GET per LONG_POLL_S of round time, and the answer taken within a few of the
provider's local checks of its appearance.

The pseudo-gradient is asked for beside the answer (`EarlyPayload`, its own `?wait=` long
poll), so it arrives with the answer instead of one round trip after it (issue 16's per-round
overhead); against a provider from before, the payload is downloaded after the answer.

Adversary strategies, and what stops them:
- the lease's long-poll slots are full (a stranger can no longer fill them: holding needs a
  read grant) so that the tenant's wait is refused (429) and the worker is dropped as faulty:
  a 429 to a wait makes the tenant poll until Retry-After has passed, and a poll without
  `wait` is never refused (test_slots_held_by_others...);
- a provider (or an old one) that ignores `wait` would turn each long poll into a busy loop:
  a 202 much sooner than the wait makes the tenant poll every POLL_S for the rest of the round;
- a provider holding the request past the round's deadline: the wait asked for never passes
  the deadline, and the read timeout is the wait plus a margin;
- a provider whose early payload is not what it signed (or a round re-run meanwhile): bytes
  that do not hash to the signed answer are never used; the payload is downloaded again and
  judged against the signature as before (test_early_bytes_...);
- a provider that answers at once and then sends its payload a byte per read timeout, holding
  every worker's round: the download is held to the round's deadline (test_a_trickled_...).
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from tests.support.scripted_rounds import PARAMS, PAYLOAD, PROVIDER, ScriptedNode, tenant_side
from tests.support.uvicorn_server import serve

from tessera.chain.read_grant import ReadGrantAuth
from tessera.errors import WorkerFault
from tessera.provider.api import create_app
from tessera.provider.long_poll import MAX_WAITERS_PER_LEASE
from tessera.tenant import worker_rounds
from tessera.tenant.worker_rounds import LONG_POLL_S, POLL_S, WorkerChannel, WorkerLease

ANSWER_PATH = re.compile(r"/leases/[0-9]+/rounds/[0-9]+$")
PROMPT_S = 1.5      # "taken at once" on a loaded machine (a held request would take 10 s)


def old_app(node: ScriptedNode) -> FastAPI:
    """A provider from before `wait`: it answers at once whatever the query says."""
    app = FastAPI()

    @app.get("/leases/{lease_id}/rounds/{round_index}")
    def round_result(lease_id: int, round_index: int, root: str | None = None):
        result = node.round_result(lease_id, round_index)
        return JSONResponse(status_code=202, content={"status": "running"}) if result is None \
            else result

    @app.get("/leases/{lease_id}/rounds/{round_index}/pseudo-gradient")
    def payload(lease_id: int, round_index: int) -> Response:
        if node.round_payload(lease_id, round_index) is None:   # at once, whatever `wait` says
            return JSONResponse(status_code=404, content={"detail": "no result yet"})
        return Response(PAYLOAD, media_type="application/octet-stream")

    return app


@pytest.fixture(scope="module")
def providers(tmp_path_factory):
    """(node, url) of a provider that long-polls and of one from before."""
    new, old = (ScriptedNode(tmp_path_factory.mktemp(name)) for name in ("new", "old"))
    with serve(create_app(new)) as new_url, serve(old_app(old)) as old_url:
        for url in (new_url, old_url):     # warm: the first request starts the thread pool
            httpx.get(f"{url}/leases/1/rounds/0", timeout=30)
        yield {"new": (new, new_url), "old": (old, old_url)}


class Counted:
    """A WorkerChannel over an httpx client whose GETs of a round's answer are counted. The
    client's own timeout (1 s) is shorter than any wait: a held request must set its own."""

    def __init__(self, url: str, round_timeout_s: float = 60):
        self.gets = 0
        self.payload_gets: list[float] = []     # when each GET of the pseudo-gradient was sent
        self.http = httpx.Client(timeout=1.0, auth=ReadGrantAuth(tenant_side().chain),
                                 event_hooks={"request": [self._count]})
        self.channel = WorkerChannel(tenant_side(), self.http, lambda b: {"bytes": bytes(b)},
                                     max_payload=1 << 20, round_timeout_s=round_timeout_s)
        self.worker = WorkerLease(lease_id=1, provider=PROVIDER.address, endpoint=url)

    def _count(self, request: httpx.Request) -> None:
        if request.method == "GET" and ANSWER_PATH.search(request.url.path):
            self.gets += 1
        if request.url.path.endswith("/pseudo-gradient"):
            self.payload_gets.append(time.monotonic())

    def collect(self, deadline_in: float = 60):
        return self.channel.collect(self.worker, 0, PARAMS, time.monotonic() + deadline_in)


def _round(providers, kind: str, round_s: float, **counted) -> tuple[Counted, float]:
    """One round whose answer appears `round_s` from now, collected: the counter and how long
    after the answer's appearance collect returned."""
    node, url = providers[kind]
    node.reset()
    appears = time.monotonic() + round_s
    node.answer_at(1, 0, at=appears)
    tenant = Counted(url, **counted)
    answer = tenant.collect()
    assert answer.pseudo_gradient == {"bytes": PAYLOAD} and answer.result.round == 0
    return tenant, time.monotonic() - appears


def test_a_round_costs_one_request_per_long_poll(providers):
    """A 2.5 s round: one GET (W = LONG_POLL_S = 10 s), and the answer is taken at once."""
    round_s = 2.5
    tenant, after = _round(providers, "new", round_s)
    assert tenant.gets <= round_s / LONG_POLL_S + 3 and tenant.gets == 1, tenant.gets
    assert after < PROMPT_S, after


def test_waits_are_renewed_for_a_round_longer_than_one(providers, monkeypatch):
    """With W = 0.5 s a 2.5 s round takes about 5 GETs, each held, none at once."""
    monkeypatch.setattr(worker_rounds, "LONG_POLL_S", 0.5)
    round_s = 2.5
    tenant, after = _round(providers, "new", round_s)
    assert 4 <= tenant.gets <= round_s / 0.5 + 3, tenant.gets
    assert after < PROMPT_S, after


def test_an_old_provider_is_polled_as_before(providers):
    """A provider that ignores `wait` answers 202 at once: the tenant polls it every POLL_S
    (what every round cost before) and still gets the answer."""
    round_s = 1.5
    tenant, after = _round(providers, "old", round_s)
    assert tenant.gets >= 0.3 * round_s / POLL_S, tenant.gets   # polled, not stuck waiting
    assert tenant.gets <= round_s / POLL_S + 3
    assert after < PROMPT_S


def test_a_late_round_is_late_at_its_deadline_not_after_a_wait(providers):
    """No answer and a deadline 1.5 s away: the wait asked for is cut to the time left, so
    WorkerFault("late") comes at the deadline, after about one GET."""
    node, url = providers["new"]
    node.reset()
    tenant = Counted(url, round_timeout_s=1.5)
    start = time.monotonic()
    with pytest.raises(WorkerFault) as fault:
        tenant.collect(deadline_in=1.5)
    took = time.monotonic() - start
    assert fault.value.kind == "late" and 1.5 <= took < 2.5, (fault.value, took)
    assert tenant.gets <= 3, tenant.gets


def test_slots_held_by_others_do_not_fault_the_worker(providers):
    """Every long-poll slot of lease 1 is held (a stranger no longer can: holding needs a read
    grant, review 9; an earlier coordinator of the same tenant, or validators, can): the
    tenant's waits are refused (429), so it polls while Retry-After lasts, and still takes the
    answer promptly."""
    node, url = providers["new"]
    node.reset()
    codes: list[int] = []
    grants = ReadGrantAuth(tenant_side().chain)

    def hold() -> None:
        codes.append(httpx.get(f"{url}/leases/1/rounds/0", params={"wait": "20"}, auth=grants,
                               timeout=30).status_code)

    holders = [threading.Thread(target=hold) for _ in range(MAX_WAITERS_PER_LEASE)]
    for thread in holders:
        thread.start()
    deadline = time.monotonic() + 20
    while node.lookups < 3 * MAX_WAITERS_PER_LEASE:
        assert time.monotonic() < deadline, "the stranger's waits never came"
        time.sleep(0.05)
    appears = time.monotonic() + 1.5
    node.answer_at(1, 0, at=appears)
    tenant = Counted(url)
    answer = tenant.collect()
    assert answer.result.round == 0 and time.monotonic() - appears < PROMPT_S
    assert tenant.gets > 3, tenant.gets     # refused waits, then polls
    for thread in holders:
        thread.join(timeout=10)
    assert codes == [200] * MAX_WAITERS_PER_LEASE


# -- the payload asked for beside the answer (EarlyPayload): one round trip less per round ---

def test_the_payload_is_asked_for_beside_the_answer(providers):
    """A 1.5 s round: the pseudo-gradient's one GET is sent before the answer appears (held by
    the provider until then), so no GET of it follows the answer."""
    tenant, after = _round(providers, "new", round_s := 1.5)
    assert len(tenant.payload_gets) == 1, tenant.payload_gets
    assert tenant.payload_gets[0] < time.monotonic() - after - 0.5 * round_s
    assert after < PROMPT_S, after


def test_an_old_provider_s_payload_is_downloaded_after_the_answer(providers):
    """A provider from before `wait` answers the early GET 404 at once: the tenant does not
    keep asking, and downloads the payload after the answer, as before."""
    tenant, after = _round(providers, "old", round_s := 1.0)
    assert len(tenant.payload_gets) == 2, tenant.payload_gets
    first, second = tenant.payload_gets
    assert second - first > 0.5 * round_s       # the early one failed, the second came after
    assert after < PROMPT_S


def test_early_bytes_that_are_not_the_signed_payload_are_not_used(providers, tmp_path):
    """The early GET is answered with other bytes (the worker re-ran the round from other
    parameters while it waited; here: a stale file): they are dropped, not counted as the
    worker's fault, and the payload is downloaded again and checked against the signature."""
    node, url = providers["new"]
    node.reset()
    stale = tmp_path / "stale.bin"
    stale.write_bytes(b"an earlier answer's pseudo-gradient")
    served = []
    real = node.round_payload

    def first_stale(lease_id: int, round_index: int):
        path = real(lease_id, round_index)
        if path is not None:
            served.append(path)
        return stale if path is not None and len(served) == 1 else path

    node.round_payload = first_stale
    try:
        node.answer_at(1, 0, at=time.monotonic() + 1.0)
        tenant = Counted(url)
        answer = tenant.collect()
    finally:
        del node.round_payload
    assert answer.pseudo_gradient == {"bytes": PAYLOAD}
    assert len(tenant.payload_gets) == 2 and len(served) == 2


def test_a_trickled_payload_is_late_at_the_deadline(tmp_path):
    """A provider answers at once but sends its pseudo-gradient a few bytes at a time, each well
    inside the client's read timeout: without a bound the round (every worker's) waited for as
    long as it liked. The download is held to the round's deadline like the answer, and the
    worker is dropped as late."""
    import asyncio

    from fastapi.responses import StreamingResponse

    node = ScriptedNode(tmp_path)
    node.answer_at(1, 0, at=0)
    app = FastAPI()

    @app.get("/leases/{lease_id}/rounds/{round_index}")
    def round_result(lease_id: int, round_index: int, root: str | None = None):
        return node.round_result(lease_id, round_index)

    @app.get("/leases/{lease_id}/rounds/{round_index}/pseudo-gradient")
    def payload(lease_id: int, round_index: int) -> StreamingResponse:
        async def drip():
            for byte in PAYLOAD:
                yield bytes([byte])
                await asyncio.sleep(0.1)
        return StreamingResponse(drip(), media_type="application/octet-stream")

    with serve(app) as url:
        tenant = Counted(url, round_timeout_s=2.0)
        started = time.monotonic()
        with pytest.raises(WorkerFault) as fault:
            tenant.collect(deadline_in=2.0)
        took = time.monotonic() - started
    assert fault.value.kind == "late" and "pseudo-gradient" in str(fault.value)
    assert 2.0 <= took < 4.0, took       # not the 26 s the drip would take
