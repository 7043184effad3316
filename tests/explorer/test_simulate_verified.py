"""The verified scenario (tessera.explorer.simulate_verified) does what it claims: read back from
the contracts' own state and from every event the explorer reads."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from tessera.chain.client import Chain
from tessera.chain.events import EventReader
from tessera.chain.hardware import HardwareReports, RoundStatus
from tessera.chain.market import Market
from tessera.chain.registry import ProviderRegistry
from tessera.chain.settlement import Settlement
from tessera.chain.tokens import PaymentToken, StakeToken
from tessera.chain.validators import Validators
from tessera.chain.verification import Outcome, Verification
from tessera.explorer.simulate import TSTK
from tessera.explorer.simulate_verified import (
    BAD_ROUND,
    EVENTS,
    ROUNDS,
    VALIDATOR_STAKES,
    VerifiedWorkload,
)
from tessera.protocol.lease import accrued_at


@pytest.fixture(scope="module")
def world(verified_market_run):
    _home, _devnet, network, _work, scenario = verified_market_run
    chain = Chain(network)
    events = EventReader(chain).events(network.deploy_block, chain.block_number())
    return chain, scenario, events


def named(events, contract: str, event: str) -> list[dict]:
    return [e.args for e in events if e.contract == contract and e.event == event]


def test_every_promised_event_is_read(world):
    chain, scenario, events = world
    seen = defaultdict(set)
    for e in events:
        seen[e.contract].add(e.event)
    for contract, names in EVENTS.items():
        assert names <= seen[contract], f"{contract}: missing {sorted(names - seen[contract])}"
    # Every event of these four contracts appears but the ones no scenario step can emit (the
    # withdraw guard is set only where a bridge is deployed: tests/bridge/test_bridge_owner.py).
    elsewhere = {"Validators": {"WithdrawGuardSet"}}
    for contract in ("Verification", "Settlement", "HardwareReports", "Validators"):
        abi = {a["name"] for a in chain.contract(contract).abi if a.get("type") == "event"}
        assert abi - seen[contract] <= {"EIP712DomainChanged", "OwnershipTransferred",
                                        *elsewhere.get(contract, ())}, contract
    assert all(scenario.first_block <= e.block_number <= scenario.last_block
               for e in events if e.contract in ("Verification", "Settlement", "HardwareReports"))


def test_challenge_outcomes(world):
    chain, s, events = world
    ver = Verification(chain)
    upheld, rejected, expired = (ver.challenge(c) for c in s.challenges)
    assert (upheld.status, rejected.status, expired.status) == (
        Outcome.UPHELD, Outcome.REJECTED, Outcome.EXPIRED)
    assert (upheld.provider, upheld.lease_id, upheld.round_index) == (
        s.cheater, s.cheater_lease, BAD_ROUND)
    assert upheld.challenger == s.validators[3] and rejected.challenger == s.tenant
    assert (rejected.provider, expired.provider) == (s.accused, s.unresolved)
    assert upheld.answer != b"\0" * 32 and rejected.answer != b"\0" * 32
    assert expired.answer == b"\0" * 32
    v1, v2, v3, _ = VALIDATOR_STAKES
    assert (upheld.guilty_stake, upheld.innocent_stake) == (v1 + v2, v3)
    assert (rejected.guilty_stake, rejected.innocent_stake) == (v3, v1 + v2)
    assert max(expired.guilty_stake, expired.innocent_stake) < expired.quorum
    assert ver.proven(s.cheat_job, BAD_ROUND, s.cheater_lease)
    assert not ver.proven(s.honest_job, 0, s.accused_lease)

    resolved = {r["challenge_id"]: r for r in named(events, "Verification", "ChallengeResolved")}
    params = ver.params()
    cheat = resolved[s.upheld]
    assert cheat["slashed"] == params.slash_amount and cheat["to_voters"] == params.voter_reward
    rest = params.slash_amount - params.voter_reward
    assert cheat["to_challenger"] == rest * params.challenger_bps // 10_000
    assert cheat["to_tenant"] == rest * params.tenant_bps // 10_000
    assert cheat["burned"] == rest - cheat["to_challenger"] - cheat["to_tenant"]
    assert cheat["bond_returned"] == upheld.bond
    false = resolved[s.rejected]
    assert false["slashed"] == 0 and false["to_voters"] == params.voter_reward
    assert false["bond_to_provider"] == rejected.bond - params.voter_reward > 0
    assert resolved[s.expired]["bond_returned"] == expired.bond
    assert resolved[s.expired]["slashed"] == resolved[s.expired]["to_voters"] == 0
    # Both winning voters claimed both pools, exactly; nothing is left in Verification.
    claims = named(events, "Verification", "RewardClaimed")
    assert len(claims) == 4
    for cid in (s.upheld, s.rejected):
        assert sum(c["amount"] for c in claims if c["challenge_id"] == cid) == params.voter_reward
    assert StakeToken(chain).balance_of(ver.address) == 0


def test_slashes_and_jails(world):
    chain, s, _events = world
    registry = ProviderRegistry(chain)
    now = chain.block_timestamp()
    record = {p: registry.provider_record(p) for p in
              (s.cheater, s.partner, s.accused, s.unresolved, s.hw_slashed, s.hw_cleared)}
    assert record[s.cheater]["slashed_total"] == Verification(chain).params().slash_amount
    assert record[s.cheater]["jailed_until"] > now
    hw = HardwareReports(chain)
    assert record[s.hw_slashed]["slashed_total"] == hw.params().hardware_slash
    assert record[s.hw_slashed]["jailed_until"] > now
    for honest in (s.partner, s.accused, s.unresolved, s.hw_cleared):
        assert record[honest]["slashed_total"] == 0 and record[honest]["jailed_until"] == 0
    assert hw.round(s.hw_slashed, s.hw_epoch).status == RoundStatus.SLASHED
    assert hw.round(s.hw_cleared, s.hw_epoch).status == RoundStatus.CLEARED
    assert hw.reward_of(s.validators[0], s.hw_slashed, s.hw_epoch) == 0  # claimed
    assert hw.contract.functions.unclaimed().call() == 0
    assert StakeToken(chain).balance_of(hw.address) == 0


def test_settlement_and_escrow(world):
    """Every lease is released up to its close and nothing is left in the Market. The cheater's
    lease (issue 11) is paid nothing: its cheat was proven in round 1 before any of its pay was
    released, so every round and the time after the last root (round_index = ROUNDS) went back
    to the tenant, round 1 as proven, the rest `forfeited`; its releases carry amount 0, it has
    nothing to withdraw and never withdrew. The honest leases of both jobs are paid in full.

    A cheater's way round a one-round penalty, keeping the pay of the rounds it was not caught
    in, is what this checks: none of its streamed pay reached it."""
    chain, s, events = world
    market, settlement = Market(chain), Settlement(chain)
    refunds = named(events, "Settlement", "RoundRefunded")
    assert [(r["lease_id"], r["round_index"], r["forfeited"]) for r in refunds] == [
        (s.cheater_lease, i, i != BAD_ROUND) for i in range(ROUNDS + 1)]
    assert all(r["refund"] == r["amount"] > 0 and r["tenant"] == s.tenant for r in refunds)
    releases = named(events, "Settlement", "PayReleased")
    for lease_id in s.leases:
        lease, rel = market.lease(lease_id), settlement.releases(lease_id)
        assert lease.closed_at and rel.next_round == ROUNDS and rel.until == lease.closed_at
        # Every unit of the budget went to the provider (paid) or back to the tenant.
        assert lease.budget == lease.paid + lease.downtime_refunded + rel.refunded
        mine = [r for r in releases if r["lease_id"] == lease_id]
        assert len(mine) == 2 and sum(r["amount"] for r in mine) == lease.paid
        streamed = accrued_at(lease.price_per_gpu_hour, lease.gpus, lease.budget, lease.start,
                              lease.closed_at)
        if lease_id == s.cheater_lease:   # all of it back to the tenant, none of it paid
            assert lease.paid == 0 and [r["amount"] for r in mine] == [0, 0]
            assert rel.proven == sum(r["amount"] for r in refunds) == streamed > 0
            assert sum(r["withheld"] for r in mine) == sum(r["refund"] for r in mine) == rel.proven
        else:
            assert rel.proven == 0 and lease.paid == streamed > 0
        assert market.withdrawable(lease_id) == 0
    assert PaymentToken(chain).balance_of(market.address) == 0
    withdrawn = {w["lease_id"] for w in named(events, "Market", "Withdrawn")}
    assert withdrawn == set(s.leases) - {s.cheater_lease}


def test_validators_stake(world):
    chain, s, events = world
    validators = Validators(chain)
    v1, _v2, v3, v4 = s.validators
    assert validators.stake_of(v1) == VALIDATOR_STAKES[0] + 50 * TSTK
    assert validators.stake_of(v3) == VALIDATOR_STAKES[2] - 10 * TSTK
    assert validators.stake_of(v4) == 0 and validators.record(v4)["unbonding"] == 0
    assert [w["amount"] for w in named(events, "Validators", "ValidatorStakeWithdrawn")] == [
        VALIDATOR_STAKES[3]]


def test_deterministic_for_a_seed(verified_market_run, private_devnet, tmp_path: Path):
    """The same seed on a fresh devnet gives the same scenario and the same event sequence."""
    _home, _devnet, network, _work, scenario = verified_market_run
    chain = Chain(network)
    first = EventReader(chain).events(scenario.first_block, scenario.last_block)
    with private_devnet(tmp_path) as (_d, other):
        again = VerifiedWorkload(other, seed=11).verified()
        second = EventReader(Chain(other)).events(again.first_block, again.last_block)
    # (the hardware epoch counts from the Uptime deploy's wall-clock time: not compared)
    assert replace(again, hw_epoch=0) == replace(scenario, hw_epoch=0)
    shape = [[(e.block_number - s.first_block, e.log_index, e.contract, e.event) for e in run]
             for run, s in ((first, scenario), (second, again))]
    assert shape[0] == shape[1]
