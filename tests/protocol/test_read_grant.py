"""tessera.protocol.read_grant: the signed ReadGrant a reader sends with a request for a round's
pseudo-gradient or checkpoint state, its headers, and what makes a grant void."""

from __future__ import annotations

import pytest
from eth_account import Account

from tessera.protocol import messages, read_grant

CHAIN_ID, MARKET, OTHER_MARKET = 31337, "0x" + "12" * 20, "0x" + "34" * 20
LEASE, NOW = 7, 1_700_000_000
READER, STRANGER = Account.from_key("0x" + "01" * 32), Account.from_key("0x" + "02" * 32)


def grant(account=READER, *, lease_id: int = LEASE, expiry: int = NOW + 300,
          chain_id: int = CHAIN_ID, market: str = MARKET) -> read_grant.ReadGrant:
    return read_grant.sign(account, chain_id, market, lease_id, expiry)


def test_a_fresh_grant_from_its_reader_holds_and_round_trips_through_its_headers():
    g = grant()
    assert g.reader == READER.address and g.lease_id == LEASE
    assert set(g.headers()) == {"X-Tessera-Reader", "X-Tessera-Expiry", "X-Tessera-Signature"}
    back = read_grant.from_headers(g.headers(), LEASE)
    assert back == g
    assert read_grant.problem(back, CHAIN_ID, MARKET, NOW) is None
    # header names are case-insensitive, as HTTP's are
    lower = {k.lower(): v for k, v in g.headers().items()}
    assert read_grant.missing_headers(lower) == []
    assert read_grant.from_headers(lower, LEASE) == g


def test_the_signed_message_names_chain_market_lease_reader_and_expiry():
    typed = read_grant.typed_data(CHAIN_ID, MARKET, LEASE, READER.address, NOW)
    assert typed["primaryType"] == "ReadGrant"
    assert typed["domain"]["chainId"] == CHAIN_ID
    assert typed["domain"]["verifyingContract"].lower() == MARKET
    assert typed["domain"]["name"] == messages.DOMAIN_NAME   # the Market's lease messages
    assert typed["message"] == {"leaseId": LEASE, "reader": READER.address, "expiry": NOW}
    # no other message of the Market's domain signs the same digest
    other = messages.manifest_typed_data(CHAIN_ID, typed["domain"]["verifyingContract"], LEASE,
                                         b"\0" * 32, 0, NOW)
    assert messages.digest(typed) != messages.digest(other)


@pytest.mark.parametrize("void, words", [
    (lambda: grant(expiry=NOW - 1), "expired"),
    (lambda: grant(expiry=NOW + read_grant.MAX_READ_GRANT_AHEAD_S + 1), "ahead"),
    (lambda: grant(lease_id=LEASE + 1), "not by its reader"),      # sent for lease LEASE
    (lambda: grant(chain_id=CHAIN_ID + 1), "not by its reader"),
    (lambda: grant(market=OTHER_MARKET), "not by its reader"),
    # a stranger signing in the reader's name
    (lambda: read_grant.ReadGrant(LEASE, READER.address, NOW + 300, grant(STRANGER).signature),
     "not by its reader"),
    # a signature of the right length that recovers to nobody
    (lambda: read_grant.ReadGrant(LEASE, READER.address, NOW + 300, "0x" + "00" * 65),
     "signed by None"),
])
def test_a_void_grant_says_why(void, words):
    g = void()
    received = read_grant.from_headers(g.headers(), LEASE)   # the lease of the request's path
    assert words in read_grant.problem(received, CHAIN_ID, MARKET, NOW)


def test_the_limits_are_inclusive():
    assert read_grant.problem(grant(expiry=NOW), CHAIN_ID, MARKET, NOW) is None
    ahead = NOW + read_grant.MAX_READ_GRANT_AHEAD_S
    assert read_grant.problem(grant(expiry=ahead), CHAIN_ID, MARKET, NOW) is None


@pytest.mark.parametrize("name, value, words", [
    ("X-Tessera-Reader", "alice", "X-Tessera-Reader must be an address"),
    ("X-Tessera-Reader", "0x" + "zz" * 20, "X-Tessera-Reader must be an address"),
    ("X-Tessera-Expiry", "-1", "X-Tessera-Expiry must be unix seconds"),
    ("X-Tessera-Expiry", "1e9", "X-Tessera-Expiry must be unix seconds"),
    ("X-Tessera-Expiry", "1_000", "X-Tessera-Expiry must be unix seconds"),
    ("X-Tessera-Expiry", " 1000", "X-Tessera-Expiry must be unix seconds"),
    ("X-Tessera-Expiry", "9" * 78, "at most 2**256-1"),
    ("X-Tessera-Expiry", "9" * 79, "X-Tessera-Expiry must be unix seconds"),
    ("X-Tessera-Signature", "0x00", "X-Tessera-Signature must be a signature"),
    ("X-Tessera-Signature", "ab" * 65, "X-Tessera-Signature must be a signature"),
])
def test_malformed_headers_are_named(name, value, words):
    headers = {**grant().headers(), name: value}
    with pytest.raises(ValueError, match=words.replace("*", r"\*")):
        read_grant.from_headers(headers, LEASE)


def test_missing_headers_are_named():
    headers = grant().headers()
    assert read_grant.missing_headers({}) == list(read_grant.HEADERS)
    del headers["X-Tessera-Signature"]
    assert read_grant.missing_headers(headers) == ["X-Tessera-Signature"]
    with pytest.raises(ValueError, match="missing header X-Tessera-Signature"):
        read_grant.from_headers(headers, LEASE)


@pytest.mark.parametrize("path, lease", [
    ("/leases/3/rounds/0/pseudo-gradient", 3),
    ("/leases/12/rounds/4/checkpoints/2", 12),
    ("/proxy/provider-a/leases/5/rounds/1/checkpoints/0", 5),   # an endpoint with a prefix
    ("/leases/3/rounds/0", None),          # the round's answer stays public
    ("/leases/3", None),
    ("/leases/3/manifest", None),
    ("/leases/3/rounds/0/pseudo-gradient/x", None),
    ("/leases/3/rounds/0/checkpoints/", None),
    ("/leases/x/rounds/0/pseudo-gradient", None),
])
def test_only_the_two_routes_need_a_grant(path, lease):
    assert read_grant.lease_of_path(path) == lease


@pytest.mark.parametrize("path, query, lease", [
    ("/leases/3/rounds/0", "wait=10", 3),          # a held answer needs a grant (review 9)
    ("/leases/3/rounds/0", "wait=", 3),
    ("/p/leases/4/rounds/2", "x=1&wait=2.5", 4),
    ("/leases/3/rounds/0", "", None),              # asking without wait stays public
    ("/leases/3/rounds/0", "waiting=1", None),
    ("/leases/3/rounds/0/pseudo-gradient", "", 3),
    ("/leases/3", "wait=1", None),
])
def test_a_grant_goes_with_the_protected_routes_and_held_answers(path, query, lease):
    assert read_grant.lease_of_request(path, query) == lease
