"""CommitteeWatch with an inbox deployed before committee recovery existed (review 17, L3): its
STALL_PERIOD call reverts, which stopped every validator's rotation duty and the relayer for all
inboxes. Such an inbox is simply never due a renewal. A stand-in object plays the old inbox:
this version deploys no such contract, and the revert is the only thing that matters here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tessera.chain.bridge_committee import CommitteeWatch
from tessera.errors import RpcUnavailable, TxRefused


class OldInbox:
    address = "0x" + "0a" * 20
    chain = SimpleNamespace(block_timestamp=lambda: 10**9)

    def stall_period(self) -> int:
        raise TxRefused("STALL_PERIOD", "execution reverted")

    def rotated_at(self) -> int:
        raise AssertionError("not asked: the inbox has no renewal clock")


class NewInbox(OldInbox):
    address = "0x" + "0b" * 20

    def stall_period(self) -> int:
        return 21 * 86_400

    def rotated_at(self) -> int:
        return 10**9 - 7 * 86_400


def test_an_inbox_without_a_stall_period_is_never_due_a_renewal():
    watch = CommitteeWatch.__new__(CommitteeWatch)
    watch._stall_periods = {}
    assert watch._renewal_due(OldInbox()) is False
    assert watch._renewal_due(OldInbox()) is False          # remembered, not asked again
    assert watch._renewal_due(NewInbox()) is True            # the others are not held up


class FlakyInbox(NewInbox):
    """An inbox whose first read fails as an RPC that restarts does (RpcUnavailable)."""
    address = "0x" + "0c" * 20
    calls = 0

    def stall_period(self) -> int:
        FlakyInbox.calls += 1
        if FlakyInbox.calls == 1:
            raise RpcUnavailable("STALL_PERIOD", "connection refused")
        return super().stall_period()


def test_a_failed_read_is_asked_again_not_taken_for_an_old_inbox():
    # Review 18, M-1: any ChainError was remembered as "no STALL_PERIOD": one RPC hiccup
    # turned the renewals off for good, and three weeks later the owner's recovery was open
    watch = CommitteeWatch.__new__(CommitteeWatch)
    watch._stall_periods = {}
    with pytest.raises(RpcUnavailable):
        watch._renewal_due(FlakyInbox())
    assert watch._renewal_due(FlakyInbox()) is True
