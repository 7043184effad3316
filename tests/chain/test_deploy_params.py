"""DeployParams refuses a claim window that a late challenge outlives (issue 10: a provider
must not unbond out of a slash while a challenge against its closed lease can still come)."""

from dataclasses import replace

import pytest

from tessera.chain.deploy import DeployParams


def test_default_claim_window_outlasts_a_late_challenge():
    params = DeployParams(treasury="0x" + "11" * 20)
    v = params.verification
    assert params.claim_window >= v.challenge_window + params.root_grace + v.vote_period


def test_a_claim_window_shorter_than_a_late_challenge_is_refused():
    params = DeployParams(treasury="0x" + "11" * 20)
    late = params.verification.challenge_window + params.root_grace + params.verification.vote_period
    with pytest.raises(ValueError, match="claim_window .* must be at least"):
        replace(params, claim_window=late - 1)
    assert replace(params, claim_window=late).claim_window == late
