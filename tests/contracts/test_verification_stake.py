"""Verification weighs votes by stake (issue 10, "Three validators can slash anyone"): the
attacks that worked with head-count quorums, each shown to fail now, on the real Market,
ProviderRegistry, Validators and StakeToken (titanoboa).

- Three validators with the minimum stake outvote nobody: a verdict needs 2/3 of the eligible
  stake, and one honest validator with more stake than them decides.
- Splitting stake over many addresses weighs (and earns) exactly what one address does.
- Stake added after a challenge opened does not count; a validator registered later cannot vote.
- A voter cannot vote and then unbond out of reach; the challenged provider cannot either.
"""

from __future__ import annotations

import boa
import pytest
from contracts_support import (
    MIN_STAKE,
    REJECTED,
    TSTK,
    UNBONDING_PERIOD,
    UPHELD,
    USD,
    VOTE_PERIOD,
    VOTER_REWARD,
    deploy_verification,
    deployer,
    events,
    key_account,
)
from test_verification import Env, next_block, quorum_of

CARTEL = [key_account(300 + i) for i in range(4)]   # minimum stake each
WHALE = key_account(310)                             # one honest validator, 1000 TSTK
SPLIT = [key_account(320 + i) for i in range(3)]     # 100 TSTK each ...
WHOLE = key_account(330)                             # ... and the same 300 TSTK in one address


def _validators(system, partials, stakes: dict, by: int):
    with boa.env.prank(deployer(by)):
        vals = partials["Validators"].deploy(system.stake.address, MIN_STAKE, UNBONDING_PERIOD)
    for who, amount in stakes.items():
        system.stake.mint(who.address, amount + 100 * TSTK)
        with boa.env.prank(who.address):
            system.stake.approve(vals.address, 2**256 - 1)
            vals.register(amount)
    return vals


def _env(system, partials, stakes: dict, by: int) -> Env:
    vals = _validators(system, partials, stakes, by)
    ver = deploy_verification(system, partials, vals, by=by)
    system.registry.set_slasher(ver.address, True)
    for who in [*stakes, system.tenant]:
        system.stake.mint(who.address, 100 * TSTK)
        with boa.env.prank(who.address):
            system.stake.approve(ver.address, 2**256 - 1)
    order_id = system.create_order(nodes=2, max_price=2 * USD)
    workers = system.providers[:2]
    leases = [system.accept(order_id, w, price=USD + i, nonce=11) for i, w in enumerate(workers)]
    return Env(system, vals, ver, order_id, leases, workers)


@pytest.fixture
def cartel_env(system, partials) -> Env:
    return _env(system, partials, {**{v: MIN_STAKE for v in CARTEL}, WHALE: 1_000 * TSTK}, by=20)


def test_three_small_validators_cannot_slash_against_the_stake(cartel_env):
    """Four cartel validators at the minimum stake and one honest validator with 1,000 TSTK.
    One cartel member challenges an honest provider and three vote guilty: with heads counted,
    3 of the 4 eligible was a quorum and the provider lost 100 TSTK. By stake the eligible
    weight is 1,300 TSTK, the quorum 866.7, and the cartel's 300 decide nothing; the honest
    validator's 1,000 reject the challenge, and the cartel's bond pays the provider."""
    env = cartel_env
    env.post_round(0)
    provider = env.workers[1].address
    stake_before = env.system.registry.providers(provider).stake
    cid = env.challenge(0, 1, CARTEL[0].address)
    ch = env.ver.challenges(cid)
    assert ch.quorum == quorum_of(3 * MIN_STAKE + 1_000 * TSTK)
    for v in CARTEL[1:]:
        env.vote(cid, v, True)
    assert env.ver.challenges(cid).guilty_votes == 3  # three heads, as before ...
    assert env.ver.verdict(cid) == 1                  # ... but no verdict (OPEN)
    env.vote(cid, WHALE, False)
    ev = env.resolve(cid)
    assert (ev.outcome, ev.slashed) == (REJECTED, 0)
    assert env.system.registry.providers(provider).stake == stake_before
    assert env.system.registry.is_active(provider)
    # the cartel cannot pile on after the verdict either
    with boa.reverts("verification: challenge already resolved"):
        env.vote(cid, CARTEL[1], True)


def test_the_cartel_cannot_reach_a_quorum_by_waiting(cartel_env):
    """Without the honest vote the challenge expires: no slash, the bond goes back."""
    env = cartel_env
    env.post_round(0)
    cid = env.challenge(0, 0, CARTEL[0].address)
    for v in CARTEL[1:]:
        env.vote(cid, v, True)
    boa.env.time_travel(seconds=VOTE_PERIOD)
    ev = env.resolve(cid)
    assert (ev.slashed, ev.bond_returned) == (0, ev.bond_returned) and ev.outcome == 4


def test_stake_added_after_opening_does_not_count(cartel_env):
    """The attack: open a challenge, then stake 10,000 TSTK (on an existing validator, or a new
    one) and outweigh everyone. Weight is read at the block before the challenge opened."""
    env = cartel_env
    env.post_round(0)
    cid = env.challenge(0, 1, env.tenant.address)
    late = key_account(340)
    env.system.stake.mint(CARTEL[1].address, 10_000 * TSTK)
    env.system.stake.mint(late.address, 10_000 * TSTK)
    with boa.env.prank(CARTEL[1].address):
        env.vals.add_stake(10_000 * TSTK)
    with boa.env.prank(late.address):
        env.system.stake.approve(env.vals.address, 2**256 - 1)
        env.vals.register(10_000 * TSTK)
    next_block()
    with boa.reverts("verification: validator joined after the challenge opened"):
        env.vote(cid, late, True)
    env.vote(cid, CARTEL[1], True)
    (voted,) = events(env.ver, "Voted")
    assert voted.weight == MIN_STAKE == env.ver.vote_weight(cid, CARTEL[1].address)
    assert env.ver.challenges(cid).guilty_stake == MIN_STAKE


def test_a_vote_weighs_no_more_than_the_stake_left(cartel_env):
    """Unbonding after the snapshot and then voting: the vote weighs what is still staked."""
    env = cartel_env
    env.post_round(0)
    cid = env.challenge(0, 1, env.tenant.address)
    with boa.env.prank(WHALE.address):
        env.vals.request_unbond(700 * TSTK)
    env.vote(cid, WHALE, False)
    assert env.ver.vote_weight(cid, WHALE.address) == 300 * TSTK


def test_a_voter_cannot_vote_then_unbond_out_of_reach(cartel_env):
    """The attack: vote, request the unbond at once, withdraw after the unbonding period while
    the vote's verdict is still to be carried out. The vote locks the voter's stake until the
    deadline plus one vote period; it stays slashable (slash reaches the unbonding bucket)."""
    env = cartel_env
    env.post_round(0)
    cid = env.challenge(0, 1, env.tenant.address)
    deadline = env.ver.challenges(cid).deadline
    env.vote(cid, WHALE, False)
    assert env.vals.locked_until(WHALE.address) == deadline + VOTE_PERIOD
    with boa.env.prank(WHALE.address):
        env.vals.request_unbond(1_000 * TSTK)
    boa.env.time_travel(seconds=UNBONDING_PERIOD)
    assert boa.env.timestamp < deadline + VOTE_PERIOD
    with boa.env.prank(WHALE.address), boa.reverts("validators: stake locked by an undecided vote"):
        env.vals.withdraw_unbonded()
    boa.env.time_travel(seconds=deadline + VOTE_PERIOD - boa.env.timestamp)
    with boa.env.prank(WHALE.address):
        env.vals.withdraw_unbonded()
    assert env.vals.validators(WHALE.address).unbonding == 0


def test_the_challenged_provider_cannot_unbond_out_of_reach(cartel_env):
    """The provider unbonds when challenged and tries to withdraw before the verdict is
    carried out: open_challenge locked its registry stake until deadline + vote period."""
    env = cartel_env
    env.post_round(0)
    provider = env.workers[0]
    cid = env.challenge(0, 0, env.tenant.address)
    deadline = env.ver.challenges(cid).deadline
    assert env.system.registry.locked_until(provider.address) == deadline + VOTE_PERIOD
    env.vote(cid, WHALE, True)  # decided; nobody has carried it out yet
    with boa.env.prank(provider.address):
        env.system.registry.request_unbond(MIN_STAKE)
    boa.env.time_travel(seconds=UNBONDING_PERIOD)
    # refused (its open lease holds the stake too; the challenge's lock alone would do)
    assert boa.env.timestamp < env.system.registry.locked_until(provider.address)
    with boa.env.prank(provider.address), boa.reverts():
        env.system.registry.withdraw_unbonded()
    ev = env.resolve(cid)
    assert ev.outcome == UPHELD and ev.slashed > 0  # taken from the unbonding bucket


def test_splitting_stake_gives_no_more_weight_nor_reward(system, partials):
    """Three addresses with 100 TSTK each against one with 300 TSTK, both voting guilty with
    the whale (1,000 TSTK) on the other side of nothing: each side's weight is 300 TSTK and
    each side earns the same share of the voter pool."""
    env = _env(system, partials, {**{v: MIN_STAKE for v in SPLIT}, WHOLE: 3 * MIN_STAKE,
                                  WHALE: 1_000 * TSTK}, by=21)
    env.post_round(0)
    cid = env.challenge(0, 1, env.tenant.address)
    for v in [*SPLIT, WHOLE, WHALE]:
        env.vote(cid, v, True)
    ch = env.ver.challenges(cid)
    split = sum(env.ver.vote_weight(cid, v.address) for v in SPLIT)
    assert split == env.ver.vote_weight(cid, WHOLE.address) == 3 * MIN_STAKE
    env.resolve(cid)
    rewards = {}
    for v in [*SPLIT, WHOLE]:
        with boa.env.prank(v.address):
            env.ver.claim_reward(cid)
        (claimed,) = events(env.ver, "RewardClaimed")
        rewards[v.address] = claimed.amount
    assert ch.guilty_votes == 5
    assert sum(rewards[v.address] for v in SPLIT) <= rewards[WHOLE.address]
    assert rewards[WHOLE.address] == VOTER_REWARD * 3 * MIN_STAKE // (1_600 * TSTK)
    with boa.env.prank(WHALE.address):
        env.ver.claim_reward(cid)
    (claimed,) = events(env.ver, "RewardClaimed")
    # the shares are rounded on the running total: together they are the pool, to the unit
    assert sum(rewards.values()) + claimed.amount == env.ver.challenges(cid).voter_pool
