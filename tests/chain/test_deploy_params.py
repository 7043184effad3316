"""DeployParams refuses a claim window that a late challenge outlives (issue 10: a provider
must not unbond out of a slash while a challenge against its closed lease can still come)."""

from dataclasses import replace

import pytest

from tessera.chain.deploy import DeployParams
from tessera.protocol import liveness


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


def test_the_answer_window_holds_a_whole_reports_answers_on_the_chain_deployed_to():
    """Issue 15 (G1b, review 3): a griefer names every inclusion of an honest report of the
    largest size in the last block of the challenge window. Told the chain's block gas limit
    and block time, DeployParams raises the answer epochs until the validator alone, one group
    of answer_batches_per_group batches every BLOCKS_PER_GROUP blocks, shows all of it (and the
    claim window and unbonding period with them), refuses fewer, and refuses epochs so short
    that Uptime's 64 answer epochs cannot hold it."""
    params = DeployParams(treasury="0x" + "11" * 20)
    beats = liveness.MAX_LIVENESS_WORDS * liveness.WORD_BITS
    for epoch_length, block_gas, block_s in ((600, 30_000_000, 12), (3_600, 30_000_000, 12),
                                             (60, 150_000_000, 2), (600, 45_000_000, 12)):
        sized = params.with_epoch(epoch_length, (block_gas, block_s * 1000))
        n = sized.liveness_answer_epochs
        groups = n * epoch_length // block_s // liveness.BLOCKS_PER_GROUP
        per_group = liveness.answer_batches_per_group(block_gas) * liveness.MAX_ANSWERS
        assert groups * per_group >= beats                              # enough epochs
        assert n == 1 or (n - 1) * epoch_length // block_s // liveness.BLOCKS_PER_GROUP \
            * per_group < beats                                          # and no more
        assert sized.unbonding_period >= sized.liveness_unbonding_floor(epoch_length)
        if n > 1:
            with pytest.raises(ValueError, match=f"liveness_answer_epochs \\({n - 1}\\) must"):
                replace(sized, liveness_answer_epochs=n - 1)
    assert params.with_epoch(600, (30_000_000, 12_000)).liveness_answer_epochs == 7   # L1
    assert params.with_epoch(3_600, (30_000_000, 12_000)).liveness_answer_epochs == 2
    with pytest.raises(ValueError, match="epochs of 10 s are too short.*at least 60 s"):
        params.with_epoch(10, (30_000_000, 12_000))
    with pytest.raises(ValueError, match="both or neither"):
        replace(params, chain_block_gas=30_000_000)
    assert params.with_epoch(60).liveness_answer_epochs == 1      # unknown chain: unchecked
