"""protocol/liveness.py: report words, windows, and the signed beat (pure rules; the contract's
side of each is tested against them in tests/contracts/test_liveness.py)."""

from __future__ import annotations

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from tessera.protocol import liveness, messages

UPTIME = "0x" + "ab" * 20


@given(st.sets(st.integers(min_value=0, max_value=10_000 - 1), max_size=300))
def test_words_round_trip(indices):
    words = liveness.words_of(indices, 10_000)
    assert liveness.indices_of(words) == sorted(indices)
    assert all(liveness.named(words, i) == (i in indices) for i in range(0, 10_000, 97))
    assert len(words) == (max(indices) // 256 + 1 if indices else 0)


def test_words_refuse_indices_outside_the_registry():
    with pytest.raises(ValueError, match="outside 0 .. 9"):
        liveness.words_of([3, 10], 10)
    with pytest.raises(ValueError, match="outside"):
        liveness.words_of([-1], 10)
    with pytest.raises(ValueError, match="past what one report covers"):
        liveness.words_of([512 * 256], 10**6)


def test_windows_follow_the_contract():
    # report_delay 1, answer_epochs 1: reports in e+1, claims and challenges to e+2, answers to
    # e+3, final from e+4.
    e = 7
    assert [liveness.reports_accepted(e, c, 1) for c in (7, 8, 9)] == [False, True, False]
    assert [liveness.claims_accepted(e, c, 1) for c in (7, 8, 9, 10)] == [False, True, True, False]
    assert liveness.answer_end(e, 1, 1) == 10
    assert [liveness.is_final(e, c, 1, 1) for c in (10, 11)] == [False, True]


def test_a_beat_names_chain_contract_epoch_and_seed():
    provider = Account.create()
    seed = b"\x11" * 32
    sig = liveness.sign_beat(provider, 31337, UPTIME, 5, seed)
    typed = liveness.beat_typed_data(31337, UPTIME, provider.address, 5, seed)
    assert messages.recover(typed, sig) == provider.address
    for other in (liveness.beat_typed_data(1, UPTIME, provider.address, 5, seed),
                  liveness.beat_typed_data(31337, "0x" + "cd" * 20, provider.address, 5, seed),
                  liveness.beat_typed_data(31337, UPTIME, provider.address, 6, seed),
                  liveness.beat_typed_data(31337, UPTIME, provider.address, 5, b"\x12" * 32)):
        assert messages.recover(other, sig) != provider.address
