"""Which hardware-challenge outcomes a validator reports on chain, and what the evidence hash
commits to (validator/hardware.py, chain/hardware.py; docs/hardware.md, "On chain")."""

from __future__ import annotations

import json
import random
import socket
import struct
import time
from types import SimpleNamespace

import pytest
from eth_account import Account
from tests.support.tcp_server import ScriptedTcpServer

from tessera.chain.hardware import Failure, evidence_digest
from tessera.errors import ChainError
from tessera.http_deadline import DeadlineClient
from tessera.protocol import hardware_challenge as hc
from tessera.validator.config import HardwareSection
from tessera.validator.hardware import (
    HardwareOutcome,
    busy_then,
    challenge_client,
    challenge_provider,
    evidence_record,
    is_busy,
    reportable,
    serving_lease,
)

PLAN = hc.plan_challenge(100_000, 0.5, 4.0, 1.0)


def outcome(kind: str, reason: str) -> HardwareOutcome:
    return HardwareOutcome("0x" + "11" * 20, 100_000, "0x" + "22" * 32, PLAN, 1.0, kind, reason,
                           "", "0xsig", 123)


@pytest.mark.parametrize(("kind", "reason", "expected"), [
    ("passed", "0.6 s of 2.9 s", False),
    ("late", "answered in 3.1 s; deadline 2.9 s", True),
    ("late", "provider gave up: ...", True),
    ("wrong", "rows [3] of the product are wrong", True),
    ("no-answer", "HTTP 500: boom", True),
    ("no-answer", "HTTP 429: busy with another hardware challenge", True),
    ("no-answer", "unreachable: ConnectionError", False),  # an outage: Uptime's business
    ("leased", "serving open lease 7", False),             # the tenant's device now
])
def test_what_is_reported(kind, reason, expected):
    assert reportable(outcome(kind, reason)) is expected


def test_busy_is_only_a_429():
    assert is_busy(outcome("no-answer", "HTTP 429: busy"))
    assert not is_busy(outcome("no-answer", "HTTP 500: boom"))
    assert not is_busy(outcome("late", "HTTP 429 in a reason of another outcome"))


def test_evidence_commits_to_every_field():
    base = evidence_record(outcome("late", "r"), 7, "0x" + "33" * 20, 31337, "0x" + "44" * 20)
    digest = evidence_digest(base)
    assert len(digest) == 32 and digest == evidence_digest(dict(reversed(base.items())))
    for key, value in base.items():
        changed = {**base, key: (value + 1) if isinstance(value, int | float) else f"{value}x"}
        assert evidence_digest(changed) != digest, key


def test_outcome_codes_match_the_contract():
    assert [Failure.of(n) for n in ("late", "wrong", "no-answer")] == [1, 2, 3]
    with pytest.raises(ValueError, match="not a reportable failure"):
        Failure.of("passed")


class Leases:
    """Stand-in for the one Market read `serving_lease` makes (`Market.lease`); the real read is
    exercised by the e2e hardware tests. Lease 7 is open with PROVIDER, 8 with someone else,
    9 is closed; any other id does not exist."""

    def lease(self, lease_id: int):
        leases = {7: (True, "0x" + "11" * 20), 8: (True, "0x" + "55" * 20),
                  9: (False, "0x" + "11" * 20)}
        if lease_id not in leases:
            raise ChainError(f"lease {lease_id} does not exist")
        is_open, provider = leases[lease_id]
        return SimpleNamespace(lease_id=lease_id, is_open=is_open, provider=provider)


@pytest.mark.parametrize(("reason", "expected"), [
    ('HTTP 423: {"detail":"serving lease 7"}', "leased"),     # open, this provider: not reported
    ('HTTP 423: {"detail":"serving lease 8"}', "no-answer"),  # another provider's lease
    ('HTTP 423: {"detail":"serving lease 9"}', "no-answer"),  # closed
    ('HTTP 423: {"detail":"serving lease 99"}', "no-answer"), # made up
    ("HTTP 500: serving lease 7", "no-answer"),               # only a 423 counts
])
def test_a_provider_serving_an_open_lease_is_not_reported(reason, expected):
    checked = serving_lease(outcome("no-answer", reason), Leases())
    assert checked.outcome == expected
    assert reportable(checked) is (expected != "leased")


class BrokenReply(ScriptedTcpServer):
    """A provider that takes the challenge and breaks its reply in one of several ways."""

    def __init__(self, how: str):
        self.how = how
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)                  # the whole challenge (a few hundred bytes)
            if self.how == "reset":           # RST instead of an answer
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif self.how == "garbage-status":
                conn.sendall(b"HTTZ/9 two hundred\r\n\r\n")
            elif self.how == "bad-chunk":
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n")
            elif self.how == "short-body":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"a\":")
        except OSError:
            pass
        finally:
            conn.close()                      # "close": nothing sent at all


def _challenge(url: str, http=None):
    return challenge_provider(http or DeadlineClient(), url, Account.create().address, Account.create(),
                              1000, HardwareSection(target_s=0.1, slack=1.0, allowance_s=0.5),
                              31337, "0x" + "11" * 20, random.Random(0))


@pytest.mark.parametrize("how", ["close", "reset", "garbage-status", "bad-chunk", "short-body"])
def test_a_provider_that_breaks_its_reply_after_the_challenge_is_reported(how):
    # Review 16, F4: such a provider was "unreachable", never reported, so a node slower than
    # its claim could break every answer; the connection was made, so the challenge was its.
    server = BrokenReply(how)
    try:
        out = _challenge(server.url)
    finally:
        server.close()
    assert server.connections == 1
    assert out.outcome == "no-answer" and out.reason.startswith("broken answer"), out.reason
    assert reportable(out)


def test_a_provider_that_cannot_be_reached_is_not_reported():
    for url in (refused_url(), "http://no-such-host.invalid:7001"):
        out = _challenge(url)
        assert out.outcome == "no-answer" and out.reason.startswith("unreachable"), out.reason
        assert not reportable(out)


class Replies(ScriptedTcpServer):
    """A provider (or proxy) that reads the request and sends `raw`, whatever was asked."""

    def __init__(self, raw: bytes):
        self.raw = raw
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(self.raw)
        finally:
            conn.close()


def refused_url() -> str:
    """A local address nothing listens on: its connections are refused."""
    closed = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    return url


def test_busy_then_unreachable_is_a_dodge_and_is_reported():
    # Review 17, H1: a provider answers 429 to the signed challenge, then refuses the retry's
    # connection: it had the challenge, so the retry's "unreachable" is no outage
    server = Replies(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\n\r\nbusy")
    try:
        first = _challenge(server.url)
    finally:
        server.close()
    assert is_busy(first) and reportable(first)
    retry = busy_then(_challenge(refused_url()))   # the retry's connection refused
    assert retry.reason.startswith("busy, then unreachable") and reportable(retry)
    answered = busy_then(outcome("late", "answered in 3.1 s"))   # any other retry: as it is
    assert answered.reason == "answered in 3.1 s"


def test_a_proxy_in_the_environment_is_not_used_for_challenges(monkeypatch):
    # Review 17, L1: through a proxy, a provider that is down became "HTTP 502", reported
    proxy = Replies(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 7\r\n\r\nrefused")
    url = refused_url()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    try:
        through_proxy = _challenge(url, DeadlineClient(max_body=1 << 20))
        direct = _challenge(url, challenge_client())
    finally:
        proxy.close()
    assert reportable(through_proxy) and proxy.connections == 1     # the hazard, shown
    assert direct.reason.startswith("unreachable") and not reportable(direct)


class Honest(ScriptedTcpServer):
    """A provider that computes the product and answers at once, signed."""

    def __init__(self, key):
        self.key = key
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        from tessera.compute.hardware_challenge import compute_fingerprints
        from tessera.protocol import messages

        try:
            raw = b""
            while b"\r\n\r\n" not in raw:
                raw += conn.recv(65536)
            head, body = raw.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            while len(body) < length:
                body += conn.recv(65536)
            req = json.loads(body)
            fp = hc.pack_fingerprints(int(v) for v in compute_fingerprints(req["seed"], req["size"]))
            typed = hc.answer_typed_data(31337, "0x" + "11" * 20, self.key.address,
                                         req["validator"], req["seed"], req["size"],
                                         req["deadline_ms"], fp)
            body = json.dumps(dict(
                provider=self.key.address, validator=req["validator"], seed=req["seed"],
                size=req["size"], deadline_ms=req["deadline_ms"], fingerprints=fp, device="cpu",
                compute_ms=1.0, signature=messages.sign(self.key, typed))).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
        finally:
            conn.close()


def test_the_validators_slow_resolver_does_not_make_an_honest_node_late(monkeypatch):
    # Review 17, L2: the name was resolved inside the timed exchange (and after the signed
    # deadline was set), so a resolver taking seconds made an honest, fast node "late"
    key = Account.create()
    server = Honest(key)
    url = server.url.replace("127.0.0.1", "localhost")
    cfg = HardwareSection()
    # a small claim: the product takes this host far less than its deadline, even when the
    # host is busy with other tests, so only the resolver's time could make it late
    plan = hc.plan_challenge(1_000, cfg.target_s, cfg.slack, cfg.allowance_s)
    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):   # a name takes seconds; an address none, as for real
        if host == "localhost":
            time.sleep(plan.deadline_s - 0.5 * plan.expected_s)
        return real(host, *args, **kwargs)

    def challenge():
        return challenge_provider(DeadlineClient(max_body=1 << 20), url, key.address,
                                  Account.create(), 1_000, cfg, 31337, "0x" + "11" * 20,
                                  random.Random(0))

    try:
        monkeypatch.setattr(socket, "getaddrinfo", slow)
        out = challenge()
        assert out.outcome == "passed", out.reason
        monkeypatch.setattr("tessera.validator.hardware.RESOLVE_S", 0.2)   # a resolver that hangs
        out = challenge()
    finally:
        server.close()
    assert out.reason.startswith("unreachable: name not resolved") and not reportable(out)


@pytest.mark.parametrize("endpoint", ["http://xn--mgb0j.example:8000",       # IDNA 2003 refuses it
                                      "http://xn--strae-oqa.example:8000"])  # 2003: strasse
def test_an_internationalised_name_is_looked_up_as_httpx_connects_to_it(endpoint, monkeypatch):
    # Review 19: the Unicode form went to getaddrinfo, which encodes it by IDNA 2003: one name
    # crashed every validator's challenge round (UnicodeError), another resolved a different
    # name than the one httpx, the probes and tenants connect to (a dodge)
    asked = []

    def resolver(host, *args, **kwargs):
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "unknown name")

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    out = _challenge(endpoint)
    assert asked == [endpoint.removeprefix("http://").rsplit(":", 1)[0]]
    assert out.reason.startswith("unreachable: name not resolved") and not reportable(out)


@pytest.mark.parametrize("status, charset", [(500, "hex"), (408, "base64"), (429, "rot13"),
                                             (503, "zlib")])
def test_a_reply_whose_charset_cannot_decode_is_judged_not_raised(status, charset):
    # Review 20: `.text` decoded by the declared charset raised past every handler, and the
    # round skipped the provider: nothing stored, nothing reported, for any slow node
    server = Replies(b"HTTP/1.1 %d X\r\nContent-Type: text/plain; charset=%s\r\n"   # a bytes codec
                     b"Content-Length: 4\r\n\r\nbusy" % (status, charset.encode()))
    try:
        out = _challenge(server.url)
    finally:
        server.close()
    assert out.outcome in ("late", "no-answer") and reportable(out), out.reason
