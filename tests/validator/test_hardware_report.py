"""Which hardware-challenge outcomes a validator reports on chain, and what the evidence hash
commits to (validator/hardware.py, chain/hardware.py; docs/hardware.md, "On chain")."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tessera.chain.hardware import Failure, evidence_digest
from tessera.errors import ChainError
from tessera.protocol import hardware_challenge as hc
from tessera.validator.hardware import (
    HardwareOutcome,
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
