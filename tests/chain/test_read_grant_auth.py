"""tessera.chain.read_grant.ReadGrantAuth on an httpx client (no chain needed: it only signs):
grant headers on the two protected routes, for the lease the path names, signed by the chain's
account, reused until they near their expiry; nothing on any other request."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest
from eth_account import Account

from tessera.chain.read_grant import RENEW_BEFORE_S, ReadGrantAuth
from tessera.protocol import read_grant

CHAIN_ID, MARKET = 31337, "0x" + "12" * 20
ACCOUNT = Account.from_key("0x" + "05" * 32)


def fake_chain(account=ACCOUNT):
    return SimpleNamespace(account=account, network=SimpleNamespace(chain_id=CHAIN_ID),
                           market=SimpleNamespace(address=MARKET))


def client(auth: ReadGrantAuth, seen: list[httpx.Request]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)
    return httpx.Client(transport=httpx.MockTransport(handler), auth=auth,
                        base_url="http://provider.test/prefix")


def test_grants_go_only_with_the_protected_routes_and_hold_for_their_lease():
    seen: list[httpx.Request] = []
    with client(ReadGrantAuth(fake_chain()), seen) as http:
        for path in ("/leases/4/rounds/0/pseudo-gradient", "/leases/9/rounds/2/checkpoints/3",
                     "/leases/4/rounds/0", "/leases/4/manifest", "/probe"):
            http.get(path)
        http.put("/leases/4/rounds/1", content=b"x")
    protected, public = seen[:2], seen[2:]
    for request, lease in zip(protected, (4, 9), strict=True):
        grant = read_grant.from_headers(request.headers, lease)
        assert grant.reader == ACCOUNT.address
        assert read_grant.problem(grant, CHAIN_ID, MARKET, grant.expiry - 1) is None
    for request in public:
        assert read_grant.missing_headers(request.headers) == list(read_grant.HEADERS)


def test_a_grant_is_reused_until_it_nears_its_expiry(monkeypatch):
    auth = ReadGrantAuth(fake_chain(), validity_s=300)
    clock = [1_700_000_000.0]
    monkeypatch.setattr("tessera.chain.read_grant.time.time", lambda: clock[0])
    first = auth.grant(4)
    clock[0] += 300 - RENEW_BEFORE_S - 1
    assert auth.grant(4) is first
    clock[0] += 2
    renewed = auth.grant(4)
    assert renewed.expiry > first.expiry
    assert auth.grant(5).lease_id == 5


def test_no_account_signs_nothing():
    seen: list[httpx.Request] = []
    with client(ReadGrantAuth(fake_chain(account=None)), seen) as http:
        http.get("/leases/4/rounds/0/pseudo-gradient")
    assert read_grant.missing_headers(seen[0].headers) == list(read_grant.HEADERS)


@pytest.mark.parametrize("validity", [0, read_grant.MAX_READ_GRANT_AHEAD_S + 1])
def test_a_validity_the_provider_would_refuse_is_refused_here(validity):
    with pytest.raises(ValueError, match="validity_s"):
        ReadGrantAuth(fake_chain(), validity_s=validity)


def test_a_checkpoint_root_query_keeps_the_grant_and_anything_else_in_it_drops_it():
    """The verifiers ask for the states of a committed answer by root (`?root=0x…`,
    provider/superseded_answers.py): the grant goes with it. A `root` that is not a checkpoint
    root is an endpoint's appended path (review 15's `?x=`): no grant."""
    seen: list[httpx.Request] = []
    root = "0x" + "ab" * 32
    with client(ReadGrantAuth(fake_chain()), seen) as http:
        http.get(f"/leases/9/rounds/2/checkpoints/3?root={root}")
        http.get("/leases/9/rounds/2/checkpoints/3?root=/leases/5/rounds/0/checkpoints/0")
    assert read_grant.from_headers(seen[0].headers, 9).reader == ACCOUNT.address
    assert read_grant.missing_headers(seen[1].headers) == list(read_grant.HEADERS)
