"""Uptime's liveness reports (issue 15, docs/uptime.md), attacked: validators post one bitmap
per epoch, providers claim receipted beats, anyone challenges an inclusion with a bond.

Each adversary's strategy has a test, and every refused call is checked to change nothing.
The typed data and report words come from tessera.protocol.liveness, so the Python rules and
the contract are checked against each other."""

from __future__ import annotations

from dataclasses import dataclass

import boa
import pytest
from boa.contracts.base_evm_contract import BoaError
from contracts_support import (
    ANSWER_EPOCHS,
    CHALLENGE_BOND,
    INCLUSION_SLASH,
    JAIL_AFTER,
    MIN_STAKE,
    REPORT_DELAY,
    SETTLE_EPOCHS,
    TSTK,
    events,
    heartbeat,
    key_account,
    set_history,
    typed_digest,
    uptime_args,
)
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.protocol import liveness

VALS = [key_account(700 + i) for i in range(3)]
CHALLENGER = key_account(710)
V_STAKE = 200 * TSTK
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
OPEN, ANSWERED, RESOLVED = 1, 2, 3
E = 2  # the epoch most tests report on


@dataclass
class Net:
    system: object
    uptime: object
    vals: object      # the Validators contract
    stake: object

    def at(self, epoch: int) -> None:
        """Move time a little into `epoch` (never backwards; staying in it is fine)."""
        t = self.uptime.epoch_start(epoch) + 1
        if self.uptime.current_epoch() == epoch:
            return
        assert t >= boa.env.timestamp
        boa.env.time_travel(seconds=t - boa.env.timestamp, block_delta=2)

    def open(self) -> bytes:
        set_history()  # py-evm's block hashes are zero until set: the seed must not be
        return self.uptime.open_epoch()

    def beat(self, acct, epoch: int, chain_id: int | None = None, uptime: str | None = None):
        return bytes.fromhex(liveness.sign_beat(
            acct, chain_id or self.system.chain_id, uptime or self.uptime.address, epoch,
            self.uptime.seed(epoch))[2:])

    def receipt(self, validator, provider: str, epoch: int, chain_id: int | None = None):
        return bytes.fromhex(liveness.sign_receipt(
            validator, chain_id or self.system.chain_id, self.uptime.address, provider, epoch)[2:])

    def report(self, validator, epoch: int, words: list[int]) -> None:
        with boa.env.prank(validator.address):
            self.uptime.report_liveness(epoch, words)

    def challenge(self, validator, epoch: int, provider, words, by=CHALLENGER) -> int:
        with boa.env.prank(by.address):
            return self.uptime.challenge_inclusion(validator.address, epoch, provider.address, words)

    def state(self, epoch: int = E) -> tuple:
        """Everything a liveness call may change (for 'a refused call changes nothing')."""
        u, vs = self.uptime, [v.address for v in VALS]
        return (u.live_word(epoch, 0), [u.report_hash(v, epoch) for v in vs],
                [u.beats(p.address, epoch) for p in self.system.providers], u.challenge_count(),
                [u.challenges(i) for i in range(1, u.challenge_count() + 1)],
                [self.stake.balanceOf(a) for a in (u.address, CHALLENGER.address, *vs)],
                [self.vals.stake_of(v) for v in vs], [self.vals.locked_until(v) for v in vs],
                u.seed(epoch))


def setup_net(system, vals=None, uptime=None) -> Net:
    vals, uptime = vals or system.validators, uptime or system.uptime
    for v in VALS:
        system.stake.mint(v.address, V_STAKE)
        with boa.env.prank(v.address):
            system.stake.approve(vals.address, 2**256 - 1)
            vals.register(V_STAKE)
    system.stake.mint(CHALLENGER.address, 1_000 * TSTK)
    with boa.env.prank(CHALLENGER.address):
        system.stake.approve(uptime.address, 2**256 - 1)
    net = Net(system, uptime, vals, system.stake)
    net.at(E)
    net.open()
    return net


@pytest.fixture
def net(system) -> Net:
    """Three validators of 200 TSTK, a funded challenger, epoch E open (time in E)."""
    return setup_net(system)


def refused(net: Net, message: str | None, call, epoch: int = E) -> None:
    before = net.state(epoch)
    with boa.reverts(message) if message else boa.reverts():
        call()
    assert net.state(epoch) == before


# ---------------------------------------------------------------- the Python rules = the contract


def test_digests_words_and_windows_agree_with_the_python_rules(net):
    u, s = net.uptime, net.system
    p0, v0 = s.providers[0], VALS[0]
    assert u.BEAT_TYPEHASH() == keccak(b"Beat(address provider,uint256 epoch,bytes32 seed)")
    assert u.beat_digest(p0.address, E) == typed_digest(
        liveness.beat_typed_data(s.chain_id, u.address, p0.address, E, u.seed(E)))
    assert u.receipt_digest(p0.address, v0.address, E) == typed_digest(
        liveness.receipt_typed_data(s.chain_id, u.address, p0.address, v0.address, E))
    assert u.seed(E) != b"\0" * 32 and u.open_epoch() == u.seed(E)  # idempotent
    assert events(u, "EpochOpened") == [] and u.seed(E + 1) == b"\0" * 32
    net.at(E + 1)
    seed = net.open()
    (opened,) = events(u, "EpochOpened")
    assert (opened.epoch, opened.seed, opened.opener) == (E + 1, seed, boa.env.eoa)
    assert seed == u.seed(E + 1) != u.seed(E)
    words = liveness.words_of([0, 3], 4)
    net.report(v0, E, words)
    (logged,) = events(u, "LivenessReported")
    assert (logged.validator, logged.epoch, list(logged.words)) == (v0.address, E, words)
    assert logged.words_hash == u.report_hash(v0.address, E) == keccak(
        b"".join(x.to_bytes(32, "big") for x in (32, len(words), *words)))
    assert liveness.indices_of([u.live_word(E, 0)]) == [0, 3]
    for current in range(E + 1, E + SETTLE_EPOCHS + 3):
        net.at(current)
        assert u.is_final(E) == liveness.is_final(E, current, REPORT_DELAY, ANSWER_EPOCHS)
    assert u.is_up(s.providers[0].address, E) and not u.is_up(s.providers[1].address, E)
    assert u.is_up(p0.address, 2**256 - 1) and not u.is_final(2**256 - 1)  # no overflow


# ---------------------------------------------------------------- report_liveness


@pytest.mark.parametrize("case, message", [
    ("not a validator", "uptime: not a validator"),
    ("epoch not over", "uptime: epoch not over"),
    ("too late", "uptime: report too late"),
    ("never opened", "uptime: epoch never opened"),
    ("empty", "uptime: empty report"),
    ("bit at provider_count", "uptime: index beyond the registry"),
    ("a word beyond the registry", "uptime: index beyond the registry"),
    ("twice", "uptime: already reported"),
])
def test_report_refusals_change_nothing(net, case, message):
    v0, epoch, words = VALS[0], E, [0b1111]
    who = net.system.outsider if case == "not a validator" else v0
    if case == "epoch not over":
        epoch = E + 1
    net.at(E + 1)
    if case == "too late":
        net.at(E + REPORT_DELAY + 1)
    if case == "never opened":
        net.at(E + 2)  # E + 1 was never opened
        epoch = E + 1
    words = {"empty": [], "bit at provider_count": [1 << 4],
             "a word beyond the registry": [1, 0]}.get(case, words)
    if case == "twice":
        net.report(v0, E, [1])
    refused(net, message, lambda: net.report(who, epoch, words), epoch)
    if case == "twice":
        assert net.uptime.live_word(E, 0) == 1


def test_reports_or_together_and_count_as_down_only_when_final(net):
    u, provs = net.uptime, [p.address for p in net.system.providers]
    net.at(E + 1)
    net.report(VALS[0], E, liveness.words_of([0, 1], 4))
    net.report(VALS[1], E, liveness.words_of([1, 2], 4))
    assert u.live_word(E, 0) == 0b0111
    for current in range(E + 1, E + SETTLE_EPOCHS + 1):
        net.at(current)
        assert all(u.is_up(p, E) for p in provs), "not final yet: everyone counts as up"
    net.at(E + SETTLE_EPOCHS + 1)
    assert [u.is_up(p, E) for p in provs] == [True, True, True, False]
    assert not u.is_up(provs[0], E - 1)                  # no report, no heartbeat: down
    assert not u.is_up(net.system.outsider.address, E)   # never registered, not index 0's bit


# ---------------------------------------------------------------- challenges


def lying_report(net: Net):
    """VALS[0] names providers 0..3 in epoch E; only providers 0 and 1 signed beats."""
    net.at(E + 1)
    words = liveness.words_of(range(4), 4)
    net.report(VALS[0], E, words)
    return words


def test_an_unanswered_challenge_slashes_returns_the_bond_and_revokes_the_bit(net):
    u, s, v0 = net.uptime, net.system, VALS[0]
    liar_target, p2 = s.providers[3], s.providers[2]
    words = lying_report(net)
    before = net.stake.balanceOf(CHALLENGER.address)
    cid = net.challenge(v0, E, liar_target, words)
    (ev,) = events(u, "InclusionChallenged")
    answer_end = liveness.answer_end(E, REPORT_DELAY, ANSWER_EPOCHS)
    assert (ev.challenge_id, ev.validator, ev.provider, ev.epoch, ev.bond, ev.answer_by_epoch) == (
        cid, v0.address, liar_target.address, E, CHALLENGE_BOND, answer_end)
    assert net.stake.balanceOf(u.address) == CHALLENGE_BOND
    assert net.stake.balanceOf(CHALLENGER.address) == before - CHALLENGE_BOND
    assert net.vals.locked_until(v0.address) >= u.epoch_start(answer_end + 2)
    cid2 = net.challenge(v0, E, p2, words)
    net.at(answer_end)
    refused(net, "uptime: answer time not over", lambda: u.resolve_challenge(cid))
    net.at(answer_end + 1)
    refused(net, "uptime: answer too late",
            lambda: u.answer_challenge(cid2, net.beat(p2, E)))
    # Final and unanswered: neither bit counts any more, whether or not anyone resolves.
    assert not u.is_up(liar_target.address, E) and u.live_word(E, 0) == 0b0011
    supply = net.stake.totalSupply()
    u.resolve_challenge(cid)
    (res,) = events(u, "ChallengeResolved")
    # A fifth to the challenger, the rest burned: a liar front-running an honest challenge with
    # its own (from a second address) still loses four fifths of the slash.
    reward = INCLUSION_SLASH * u.CHALLENGER_SHARE_BPS() // 10_000
    assert (res.slashed, res.to_challenger, res.burned, res.bond_returned) == (
        INCLUSION_SLASH, reward, INCLUSION_SLASH - reward, CHALLENGE_BOND)
    assert reward == INCLUSION_SLASH // 5
    assert net.stake.totalSupply() == supply - (INCLUSION_SLASH - reward)
    assert net.stake.balanceOf(CHALLENGER.address) == before - CHALLENGE_BOND + reward
    assert net.vals.stake_of(v0.address) == V_STAKE - INCLUSION_SLASH
    assert u.challenges(cid).state == RESOLVED
    assert not u.is_up(liar_target.address, E) and u.live_word(E, 0) == 0b0011
    refused(net, "uptime: challenge not open", lambda: u.resolve_challenge(cid))


def test_a_heartbeat_outlives_a_revoked_bit(net):
    u, v0, p2 = net.uptime, VALS[0], net.system.providers[2]
    heartbeat(u, p2.address)   # the on-chain fallback, in E
    words = lying_report(net)
    cid = net.challenge(v0, E, p2, words)
    net.at(liveness.answer_end(E, REPORT_DELAY, ANSWER_EPOCHS) + 1)
    u.resolve_challenge(cid)
    assert u.live_word(E, 0) == 0b1011 and u.is_up(p2.address, E)


def test_a_challenged_validator_cannot_unbond_out_of_the_slash(system, factories):
    """Validators with a one-second unbonding period: only the challenge's lock keeps the
    stake in reach until the challenge can be resolved."""
    with boa.env.prank(key_account(720).address):
        vals = factories["Validators"].deploy(system.stake.address, MIN_STAKE, 1)
        uptime = factories["Uptime"].deploy(*uptime_args(system.registry.address, vals.address))
    vals.set_slasher(uptime.address, True, sender=key_account(720).address)
    net = setup_net(system, vals, uptime)
    v0 = VALS[0]
    words = lying_report(net)
    cid = net.challenge(v0, E, system.providers[3], words)
    with boa.env.prank(v0.address):
        vals.request_unbond(V_STAKE)
    boa.env.time_travel(seconds=2)
    with boa.env.prank(v0.address), boa.reverts("validators: stake locked by an undecided vote"):
        vals.withdraw_unbonded()
    net.at(liveness.answer_end(E, REPORT_DELAY, ANSWER_EPOCHS) + 1)
    before = system.stake.balanceOf(CHALLENGER.address)
    uptime.resolve_challenge(cid)
    assert system.stake.balanceOf(CHALLENGER.address) == \
        before + CHALLENGE_BOND + INCLUSION_SLASH * uptime.CHALLENGER_SHARE_BPS() // 10_000
    assert vals.validators(v0.address).unbonding == V_STAKE - INCLUSION_SLASH


def test_an_answered_challenge_pays_the_validator_and_keeps_the_bit(net):
    u, s, v0, p1 = net.uptime, net.system, VALS[0], net.system.providers[1]
    good = net.beat(p1, E)
    words = lying_report(net)
    cid = net.challenge(v0, E, p1, words)
    v_before = net.stake.balanceOf(v0.address)
    high_s = (good[:32] + (SECP256K1_N - int.from_bytes(good[32:64], "big")).to_bytes(32, "big")
              + bytes([55 - good[64]]))  # the same signer, the other s: malleated
    net.at(E + 2)  # another open epoch: a beat of E + 1 exists to replay
    net.open()
    for bad, message in [
        (net.beat(s.providers[0], E), "uptime: beat not signed by the provider"),   # another's
        (net.beat(p1, E + 1), "uptime: beat not signed by the provider"),           # other epoch
        (net.beat(p1, E, chain_id=s.chain_id + 1), "uptime: beat not signed by the provider"),
        (net.beat(p1, E, uptime=s.market.address), "uptime: beat not signed by the provider"),
        (high_s, "bad signature"), (good[:64] + bytes([29]), "bad signature"),
        (good[:64], "bad signature"), (b"\0" * 65, "bad signature"),
    ]:
        refused(net, message, lambda bad=bad: u.answer_challenge(cid, bad, sender=s.outsider.address))
    net.at(liveness.answer_end(E, REPORT_DELAY, ANSWER_EPOCHS))  # the last answer epoch
    u.answer_challenge(cid, good, sender=s.outsider.address)    # anyone may answer
    (ans,) = events(u, "ChallengeAnswered")
    assert (ans.validator, ans.bond_to_validator, ans.answered_by) == (
        v0.address, CHALLENGE_BOND, s.outsider.address)
    assert net.stake.balanceOf(v0.address) == v_before + CHALLENGE_BOND
    assert net.stake.balanceOf(u.address) == 0 and u.challenges(cid).state == ANSWERED
    refused(net, "uptime: challenge not open", lambda: u.answer_challenge(cid, good))
    net.at(liveness.answer_end(E, REPORT_DELAY, ANSWER_EPOCHS) + 1)
    refused(net, "uptime: challenge not open", lambda: u.resolve_challenge(cid))
    assert net.vals.stake_of(v0.address) == V_STAKE and u.is_up(p1.address, E)


def test_a_beat_shown_on_one_challenge_settles_the_others_as_answered(net):
    """Two validators named provider 1; both inclusions are challenged and only the first is
    answered: the chain has seen the beat, so the second validator is not slashed either."""
    u, p1 = net.uptime, net.system.providers[1]
    words = lying_report(net)
    net.report(VALS[1], E, words)
    first, second = (net.challenge(v, E, p1, words) for v in VALS[:2])
    u.answer_challenge(first, net.beat(p1, E))
    net.at(liveness.answer_end(E, REPORT_DELAY, ANSWER_EPOCHS) + 1)
    v1_before = net.stake.balanceOf(VALS[1].address)
    u.resolve_challenge(second)
    (ans,) = events(u, "ChallengeAnswered")
    assert (ans.challenge_id, ans.validator, ans.bond_to_validator) == (
        second, VALS[1].address, CHALLENGE_BOND)
    assert net.stake.balanceOf(VALS[1].address) == v1_before + CHALLENGE_BOND
    assert net.vals.stake_of(VALS[1].address) == V_STAKE and u.challenges(second).state == ANSWERED
    assert u.is_up(p1.address, E) and net.stake.balanceOf(u.address) == 0


def test_challenge_refusals_change_nothing(net):
    u, s, v0 = net.uptime, net.system, VALS[0]
    words = liveness.words_of([0, 1], 4)
    net.at(E + 1)
    net.report(v0, E, words)
    p0, p3 = s.providers[0], s.providers[3]
    for call, message in [
        (lambda: net.challenge(v0, E, p0, [0b111]), "uptime: words are not the report"),
        (lambda: net.challenge(v0, E, p0, [*words, 0]), "uptime: words are not the report"),
        (lambda: net.challenge(v0, E, p3, words), "uptime: provider not in the report"),
        (lambda: net.challenge(v0, E, s.outsider, words), "uptime: not registered"),
        (lambda: net.challenge(VALS[1], E, p0, words), "uptime: no such report"),
        (lambda: net.challenge(v0, E + 1, p0, words), "uptime: challenge out of its window"),
        (lambda: u.answer_challenge(7, b"\0" * 65), "uptime: challenge not open"),
        (lambda: u.resolve_challenge(7), "uptime: challenge not open"),
    ]:
        refused(net, message, call)
    refused(net, None, lambda: u.challenge_inclusion(  # no approval: no bond, no challenge
        v0.address, E, p0.address, words, sender=s.outsider.address))
    net.challenge(v0, E, p0, words)
    refused(net, "uptime: already challenged", lambda: net.challenge(v0, E, p0, words))
    net.at(E + REPORT_DELAY + 2)
    refused(net, "uptime: challenge out of its window", lambda: net.challenge(v0, E, s.providers[1], words))


# ---------------------------------------------------------------- claim_beat


def test_claim_beat_with_a_receipt_and_its_refusals(net):
    u, s, v0 = net.uptime, net.system, VALS[0]
    p1, p2 = s.providers[1], s.providers[2]
    receipt, beat = net.receipt(v0, p1.address, E), net.beat(p1, E)

    def claim(who=p1, epoch=E, validator=v0, rec=None, bt=None):
        return lambda: u.claim_beat(epoch, validator.address, receipt if rec is None else rec,
                                    beat if bt is None else bt, sender=who.address)

    refused(net, "uptime: epoch not over", claim())
    net.at(E + 1)
    not_receipted = "uptime: receipt not signed by the validator"
    for call, message in [
        (claim(validator=s.outsider, rec=net.receipt(s.outsider, p1.address, E)), "uptime: not a validator"),
        (claim(validator=VALS[1]), "uptime: receipt not signed by the validator"),
        (claim(rec=net.receipt(v0, p2.address, E)), "uptime: receipt not signed by the validator"),
        (claim(rec=net.receipt(v0, p1.address, E - 1)), "uptime: receipt not signed by the validator"),
        (claim(rec=net.receipt(v0, p1.address, E, chain_id=s.chain_id + 1)), not_receipted),
        (claim(who=p2, bt=net.beat(p2, E)), "uptime: receipt not signed by the validator"),
        (claim(bt=net.beat(p2, E)), "uptime: beat not signed by the provider"),
        (claim(bt=net.beat(p1, E, chain_id=s.chain_id + 1)), "uptime: beat not signed by the provider"),
        (claim(bt=net.beat(p1, E, uptime=s.market.address)), "uptime: beat not signed by the provider"),
        (claim(who=s.outsider), "uptime: not registered"),
        (claim(epoch=E + 1), "uptime: epoch not over"),
        (claim(epoch=E - 1), "uptime: epoch never opened"),
    ]:
        refused(net, message, call)
    net.at(E + REPORT_DELAY + 1)  # the last claim epoch
    claim()()
    (ev,) = events(u, "BeatClaimed")
    assert (ev.provider, ev.epoch, ev.validator) == (p1.address, E, v0.address)
    assert u.beats(p1.address, E)
    refused(net, "uptime: already beat this epoch", claim())
    net.at(E + REPORT_DELAY + 2)
    p0 = s.providers[0]
    refused(net, "uptime: claim too late", claim(who=p0, rec=net.receipt(v0, p0.address, E),
                                                 bt=net.beat(p0, E)))
    net.at(E + SETTLE_EPOCHS + 1)
    assert u.is_up(p1.address, E) and not u.is_up(p2.address, E)


# ---------------------------------------------------------------- outages and downtime claims


def test_report_outage_needs_every_final_epoch_down(net):
    """Epochs E .. E+4: provider 0 named by a report in one, provider 1 claimed one, provider
    2 beat on chain in one; provider 3 was never up and is the only one that can be jailed."""
    u, s, v0 = net.uptime, net.system, VALS[0]
    p = s.providers
    last = E + JAIL_AFTER - 1
    for epoch in range(E, last + 1):
        net.at(epoch)
        net.open()
        if epoch == E + 1:
            heartbeat(u, p[2].address)
        if epoch == E + 2:
            net.report(v0, E + 1, liveness.words_of([0], 4))
        if epoch == E + 3:
            u.claim_beat(E + 2, v0.address, net.receipt(v0, p[1].address, E + 2),
                         net.beat(p[1], E + 2), sender=p[1].address)
    net.at(last + SETTLE_EPOCHS)
    refused(net, "uptime: outage epochs not final", lambda: u.report_outage(p[3].address, E))
    refused(net, "uptime: outage epochs not final", lambda: u.report_outage(p[3].address, 2**256 - 1))
    net.at(last + SETTLE_EPOCHS + 1)
    for who in p[:3]:
        refused(net, "uptime: provider was up in that stretch",
                lambda who=who: u.report_outage(who.address, E))
    u.report_outage(p[3].address, E, sender=s.outsider.address)
    assert s.registry.providers(p[3].address).jailed_until > boa.env.timestamp
    assert [s.registry.providers(x.address).jailed_until for x in p[:3]] == [0, 0, 0]


def test_market_downtime_waits_for_finality_and_respects_reports(net):
    s, m, u = net.system, net.system.market, net.uptime
    oid = s.create_order(max_price=2 * 10**6, duration=3600)
    lease = s.accept(oid, s.providers[0], 10**6, nonce=1)
    first = u.current_epoch() + 1
    for epoch in (first, first + 1):
        net.at(epoch)
        net.open()
    net.at(first + 2)
    net.report(VALS[0], first + 1, liveness.words_of([0], 4))
    net.at(first + 1 + SETTLE_EPOCHS)  # first is final, first + 1 is not yet
    for epochs in ([first + 1], [first, first + 1]):
        with boa.reverts("market: provider up (or epoch not final)"):
            m.claim_downtime(lease, epochs, sender=s.tenant.address)
    net.at(first + 2 + SETTLE_EPOCHS)
    with boa.reverts("market: provider up (or epoch not final)"):
        m.claim_downtime(lease, [first + 1], sender=s.tenant.address)  # a validator saw it live
    m.claim_downtime(lease, [first], sender=s.tenant.address)
    assert m.downtime_claimed(lease, first) and not m.downtime_claimed(lease, first + 1)


# ---------------------------------------------------------------- every wei has a way out

# (validator, provider: 0 and 1 signed beats, epoch E + 0/1); (challenge, with the real beat?)
challenge_step = st.tuples(st.just("challenge"), st.integers(0, 2),
                           st.sampled_from([0, 1, 2, 3, 0, 1]), st.integers(0, 1))
answer_step = st.tuples(st.just("answer"), st.integers(0, 20), st.sampled_from([True, True, False]))
step = st.one_of(challenge_step, challenge_step, challenge_step, answer_step, answer_step,
                 st.tuples(st.just("resolve"), st.integers(0, 20)),
                 st.tuples(st.just("time"), st.integers(1, 2)))
steps_strategy = st.builds(lambda first, rest: [first, *rest], challenge_step,
                           st.lists(step, min_size=5, max_size=30))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_strategy)
def test_bonds_are_always_held_for_open_challenges_only(system, steps):
    """Epochs E and E+1 are reported by every validator naming all four providers; providers 0
    and 1 signed beats. Whatever is challenged, answered, resolved and when, the Uptime holds
    exactly the open challenges' bonds, and each challenge ends answered or resolved by the
    end of its window."""
    with boa.env.anchor():
        net = setup_net(system)
        u, provs = net.uptime, system.providers
        net.at(E + 1)
        net.open()
        words = liveness.words_of(range(4), 4)
        for v in VALS:
            net.report(v, E, words)
        net.at(E + 2)
        for v in VALS:
            net.report(v, E + 1, words)
        model: dict[int, list] = {}  # id -> [epoch, provider index, state]
        for s in steps:
            current = u.current_epoch()
            if s[0] == "time":
                net.at(current + s[1])
                continue
            if s[0] == "challenge":
                _, vi, pi, de = s
                ok = liveness.claims_accepted(E + de, current, REPORT_DELAY) and not any(
                    c[:3] == [E + de, pi, vi] for c in model.values())
                call = lambda vi=vi, pi=pi, de=de: net.challenge(  # noqa: E731
                    VALS[vi], E + de, provs[pi], words)
            else:
                # newest first (hypothesis favours small numbers); 20: an unknown id
                cid = len(model) + 1 if s[1] == 20 or not model else len(model) - s[1] % len(model)
                c = model.get(cid)
                end = c and liveness.answer_end(c[0], REPORT_DELAY, ANSWER_EPOCHS)
                if s[0] == "answer":  # only providers 0 and 1 signed: others get a wrong beat
                    ok = bool(c) and c[3] == OPEN and current <= end and s[2] and c[1] < 2
                    signer = (c[1] if s[2] and c[1] < 2 else (c[1] + 1) % 4) if c else 0
                    sig = net.beat(provs[signer], c[0] if c else E)
                    call = lambda cid=cid, sig=sig: u.answer_challenge(cid, sig)  # noqa: E731
                else:
                    ok = bool(c) and c[3] == OPEN and current > end
                    call = lambda cid=cid: u.resolve_challenge(cid)  # noqa: E731
            try:
                result = call()
            except BoaError:
                assert not ok, s
            else:
                assert ok, s
                if s[0] == "challenge":
                    model[result] = [E + de, pi, vi, OPEN]
                else:  # a resolve settles as answered if the beat was shown on another
                    proven = any(x[:2] == c[:2] and x[3] == ANSWERED for x in model.values())
                    model[cid][3] = ANSWERED if s[0] == "answer" or proven else RESOLVED
                    assert u.challenges(cid).state == model[cid][3]
            held = sum(CHALLENGE_BOND for c in model.values() if c[3] == OPEN)
            assert net.stake.balanceOf(u.address) == held
        # After every window: each open challenge resolves, and nothing is left behind.
        net.at(max(u.current_epoch(), liveness.answer_end(E + 1, REPORT_DELAY, ANSWER_EPOCHS) + 1))
        for cid, c in model.items():
            if c[3] == OPEN:
                u.resolve_challenge(cid)
                proven = any(x[:2] == c[:2] and x[3] == ANSWERED for x in model.values())
                c[3] = ANSWERED if proven else RESOLVED
            assert u.challenges(cid).state == c[3]
        assert net.stake.balanceOf(u.address) == 0
        for vi, v in enumerate(VALS):
            lost = sum(INCLUSION_SLASH for c in model.values() if c[2] == vi and c[3] == RESOLVED)
            assert net.vals.stake_of(v.address) == max(0, V_STAKE - lost)
