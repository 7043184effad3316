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


def test_liveness_needs_a_claim_window_and_an_unbonding_period_past_finality():
    """A closed lease's last epochs turn final (claimable) report_delay + 1 + answer_epochs
    epochs after they end; a validator must not withdraw before a challenge of its report can
    be resolved (report_delay + answer_epochs + 3 epochs: challenges lock nothing)."""
    params = DeployParams(treasury="0x" + "11" * 20)
    with pytest.raises(ValueError, match="claim_window .* epochs"):
        replace(params, epoch_length=86_400)
    with pytest.raises(ValueError, match="unbonding_period .* resolved"):
        replace(params, epoch_length=3_600)
    daily = params.with_epoch(86_400)
    assert (daily.epoch_length, daily.claim_window, daily.unbonding_period) == \
        (86_400, 4 * 86_400, 5 * 86_400)
    assert params.with_epoch(60) == params      # the devnet's defaults already suffice
