"""Uptime's inclusion challenges (issue 15, docs/uptime.md), attacked: anyone bonds that a
validator's liveness report named providers without their signed beats, naming any set of the
report's inclusions in one challenge; each beat shown in time pays its shower a fixed answer
fee from the bond, the rest always goes back to the challenger, and each provider left
unanswered slashes the validator and revokes its bit (test_liveness.py: reports, receipt
claims, outages).

Each adversary's strategy has a test, and every refused call is checked to change nothing."""

from __future__ import annotations

from pathlib import Path

import boa
import pytest
from boa.contracts.base_evm_contract import BoaError
from contracts_support import (
    ANSWER_EPOCHS,
    CHALLENGE_BOND,
    EPOCH,
    INCLUSION_SLASH,
    MIN_STAKE,
    REPORT_DELAY,
    SETTLE_EPOCHS,
    events,
    heartbeat,
    key_account,
    uptime_args,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from liveness_support import (
    ANSWERED,
    CHALLENGER,
    OPEN,
    RESOLVED,
    SECP256K1_N,
    V_STAKE,
    VALS,
    E,
    Net,
    lying_report,
    refused,
    setup_net,
    unbonding_liar,
)

from tessera.protocol import liveness

GRIEFER = key_account(711)   # a validator's second address


@pytest.fixture
def net(system) -> Net:
    """Three validators of 200 TSTK, a funded challenger, epoch E open (time in E)."""
    return setup_net(system)


def honest_reports(net: Net, indices=(0, 1)) -> list[int]:
    """VALS[1] and VALS[2] name providers 0 and 1 in epoch E: both signed beats."""
    net.at(E + 1)
    words = liveness.words_of(indices, 4)
    for v in VALS[1:]:
        net.report(v, E, words)
    return words


# ---------------------------------------------------------------- challenges


def answer_end() -> int:
    return liveness.answer_end(E, REPORT_DELAY, ANSWER_EPOCHS)


def test_an_unanswered_challenge_slashes_per_provider_returns_the_bond_and_revokes_the_bits(net):
    u, s, v0 = net.uptime, net.system, VALS[0]
    p2, p3 = s.providers[2], s.providers[3]
    words = lying_report(net)
    before = net.stake.balanceOf(CHALLENGER.address)
    cid = net.challenge(v0, E, [p2, p3], words)
    (ev,) = events(u, "InclusionsChallenged")
    assert (ev.challenge_id, ev.validator, ev.epoch, ev.challenger, ev.named_count, ev.bond,
            ev.answer_by_epoch, list(ev.named)) == (
        cid, v0.address, E, CHALLENGER.address, 2, CHALLENGE_BOND, answer_end(), [0b1100])
    assert net.stake.balanceOf(u.address) == CHALLENGE_BOND
    assert net.stake.balanceOf(CHALLENGER.address) == before - CHALLENGE_BOND
    assert u.named_word(cid, 0) == u.challenged_word(v0.address, E, 0) == 0b1100
    net.at(answer_end())
    refused(net, "uptime: answer time not over", lambda: u.resolve_challenge(cid))
    net.at(answer_end() + 1)
    refused(net, "uptime: answer too late", lambda: net.answer(cid, [p2]))
    # Final and unanswered: neither bit counts any more, whether or not anyone resolves.
    assert not u.is_up(p3.address, E) and u.live_word(E, 0) == 0b0011
    supply = net.stake.totalSupply()
    u.resolve_challenge(cid)
    (res,) = events(u, "ChallengeResolved")
    # A fifth to the challenger, the rest burned: a liar front-running an honest challenge with
    # its own (from a second address) still loses four fifths of the slash.
    slash = 2 * INCLUSION_SLASH
    reward = slash * u.CHALLENGER_SHARE_BPS() // 10_000
    assert (res.unanswered, res.slashed, res.to_challenger, res.burned, res.bond_returned) == (
        2, slash, reward, slash - reward, CHALLENGE_BOND)
    assert reward == slash // 5
    assert net.stake.totalSupply() == supply - (slash - reward)
    assert net.stake.balanceOf(CHALLENGER.address) == before + reward   # the bond back too
    assert net.vals.stake_of(v0.address) == V_STAKE - slash
    assert u.challenges(cid).state == RESOLVED and net.stake.balanceOf(u.address) == 0
    assert not u.is_up(p3.address, E) and u.live_word(E, 0) == 0b0011
    refused(net, "uptime: challenge not open", lambda: u.resolve_challenge(cid))


def test_decoys_do_not_shield_a_lie(net):
    """The decoy shield: the liar names providers 0 and 1 (its decoys: it holds their beats but
    serves them to nobody) beside provider 3 (offline: the lie), so that a challenger naming one
    inclusion at random mostly hits a decoy and loses its bond. Named all at once, the decoys
    are answered (each pays the liar the answer fee: its gas, no more) and the lie is slashed
    anyway: the challenger gets the rest of its bond and a fifth of the slash."""
    u, s, v0 = net.uptime, net.system, VALS[0]
    p0, p1, p3 = s.providers[0], s.providers[1], s.providers[3]
    words = lying_report(net)
    before = [net.stake.balanceOf(a) for a in (CHALLENGER.address, v0.address)]
    cid = net.challenge(v0, E, [p0, p1, p3], words)
    net.answer(cid, [p0, p1], by=v0)
    answers = events(u, "InclusionAnswered")
    fee = u.answer_fee()
    assert fee == CHALLENGE_BOND * u.ANSWER_FEE_BPS() // 10_000 // u.NAMED_PER_BOND() > 0
    assert [(a.provider, a.answered_by, a.to_answerer) for a in answers] == [
        (p0.address, v0.address, fee), (p1.address, v0.address, fee)]
    assert u.challenges(cid).state == OPEN and u.challenges(cid).answered == 2
    refused(net, "uptime: beat not signed by the provider", lambda: u.answer_challenge(
        cid, [p3.address], [net.beat(p0, E)], sender=v0.address))
    net.at(answer_end() + 1)
    u.resolve_challenge(cid)
    (res,) = events(u, "ChallengeResolved")
    reward = INCLUSION_SLASH * u.CHALLENGER_SHARE_BPS() // 10_000
    assert (res.unanswered, res.slashed, res.bond_returned, res.to_challenger) == (
        1, INCLUSION_SLASH, CHALLENGE_BOND - 2 * fee, reward)
    assert [net.stake.balanceOf(a) for a in (CHALLENGER.address, v0.address)] == [
        before[0] - 2 * fee + reward, before[1] + 2 * fee]
    assert net.vals.stake_of(v0.address) == V_STAKE - INCLUSION_SLASH
    assert u.is_up(p0.address, E) and u.is_up(p1.address, E) and not u.is_up(p3.address, E)
    assert net.stake.balanceOf(u.address) == 0


def test_a_heartbeat_outlives_a_revoked_bit(net):
    u, v0, p2 = net.uptime, VALS[0], net.system.providers[2]
    heartbeat(u, p2.address)   # the on-chain fallback, in E
    words = lying_report(net)
    cid = net.challenge(v0, E, [p2], words)
    net.at(answer_end() + 1)
    u.resolve_challenge(cid)
    assert u.live_word(E, 0) == 0b1011 and u.is_up(p2.address, E)


def test_a_challenged_validator_cannot_unbond_out_of_the_slash(system, factories):
    """The liar requests its unbonding right after its report, so that the stake has left when
    the challenge can be resolved. Nothing locks it: Uptime takes only a Validators whose
    unbonding outlasts a challenge's answer window by an epoch, so at resolve the stake is
    still in the unbonding bucket, and slashed there. (No lock, so that nobody can keep an
    honest validator from leaving by challenging it every epoch.)"""
    net, words = unbonding_liar(system, factories)
    vals, uptime, v0 = net.vals, net.uptime, VALS[0]
    cid = net.challenge(v0, E, [system.providers[3]], words)
    assert vals.locked_until(v0.address) == 0
    net.at(answer_end() + 1)
    with boa.env.prank(v0.address), boa.reverts("validators: still unbonding"):
        vals.withdraw_unbonded()
    before = system.stake.balanceOf(CHALLENGER.address)
    uptime.resolve_challenge(cid)
    assert system.stake.balanceOf(CHALLENGER.address) == \
        before + CHALLENGE_BOND + INCLUSION_SLASH * uptime.CHALLENGER_SHARE_BPS() // 10_000
    assert vals.validators(v0.address).unbonding == V_STAKE - INCLUSION_SLASH


def test_uptime_refuses_validators_that_unbond_before_a_challenge_resolves(system, factories):
    short = (REPORT_DELAY + ANSWER_EPOCHS + 3) * EPOCH - 1
    vals = factories["Validators"].deploy(system.stake.address, MIN_STAKE, short)
    with boa.reverts("uptime: unbonding period shorter than a challenge"):
        factories["Uptime"].deploy(*uptime_args(system.registry.address, vals.address))
    vals = factories["Validators"].deploy(system.stake.address, MIN_STAKE, short + 1)
    factories["Uptime"].deploy(*uptime_args(system.registry.address, vals.address))


def test_an_answered_challenge_pays_the_answerers_returns_the_rest_and_keeps_the_bits(net):
    u, s, v0 = net.uptime, net.system, VALS[0]
    p0, p1 = s.providers[0], s.providers[1]
    good = net.beat(p1, E)
    words = lying_report(net)
    cid = net.challenge(v0, E, [p0, p1], words)
    v_before, o_before, p0_before, c_before = (net.stake.balanceOf(a) for a in (
        v0.address, s.outsider.address, p0.address, CHALLENGER.address))
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
        refused(net, message, lambda bad=bad: u.answer_challenge(
            cid, [p1.address], [bad], sender=s.outsider.address))
    for providers, sigs, message in [
        ([], [], "uptime: no provider given"),
        ([p1.address], [good, good], "uptime: one signature per provider"),
        ([s.providers[2].address], [net.beat(s.providers[2], E)], "uptime: provider not named"),
        ([s.outsider.address], [good], "uptime: not registered"),
    ]:
        refused(net, message, lambda p=providers, g=sigs: u.answer_challenge(
            cid, p, g, sender=s.outsider.address))
    net.at(answer_end())  # the last answer epoch
    net.answer(cid, [p0], by=p0)                                  # the provider, for itself
    assert u.challenges(cid).state == OPEN
    # p0 again (shown already: skipped, unpaid, so that a copier cannot void a batch) and p1
    u.answer_challenge(cid, [p0.address, p1.address], [net.beat(p0, E), good],
                       sender=s.outsider.address)                 # anyone
    (ans,) = events(u, "InclusionAnswered")
    (res,) = events(u, "ChallengeResolved")
    fee = u.answer_fee()
    assert (ans.validator, ans.provider, ans.answered_by, ans.to_answerer) == (
        v0.address, p1.address, s.outsider.address, fee)
    assert (res.unanswered, res.slashed, res.bond_returned) == (0, 0, CHALLENGE_BOND - 2 * fee)
    assert net.stake.balanceOf(v0.address) == v_before             # nothing to the validator
    assert net.stake.balanceOf(CHALLENGER.address) == c_before + CHALLENGE_BOND - 2 * fee
    assert net.stake.balanceOf(s.outsider.address) == o_before + fee
    assert net.stake.balanceOf(p0.address) == p0_before + fee
    assert net.stake.balanceOf(u.address) == 0 and u.challenges(cid).state == ANSWERED
    refused(net, "uptime: challenge not open", lambda: net.answer(cid, [p1]))
    net.at(answer_end() + 1)
    refused(net, "uptime: challenge not open", lambda: u.resolve_challenge(cid))
    assert net.vals.stake_of(v0.address) == V_STAKE and u.is_up(p1.address, E)


def test_a_beat_shown_on_one_challenge_settles_the_others_as_answered(net):
    """Two validators named provider 1; both inclusions are challenged and only the first is
    answered: the chain has seen the beat, so the second validator is not slashed either, and
    the second bond goes back whole to its challenger. Showing the same beat again on the
    second challenge is refused: one beat, one fee."""
    u, p1 = net.uptime, net.system.providers[1]
    words = lying_report(net)
    net.report(VALS[1], E, words)
    first, second = (net.challenge(v, E, [p1], words) for v in VALS[:2])
    net.answer(first, [p1])
    assert u.proven_word(E, 0) == 0b0010
    refused(net, "uptime: every beat given was shown already", lambda: net.answer(second, [p1]))
    net.at(answer_end() + 1)
    c_before = net.stake.balanceOf(CHALLENGER.address)
    u.resolve_challenge(second)
    (res,) = events(u, "ChallengeResolved")
    assert (res.challenge_id, res.validator, res.unanswered, res.bond_returned) == (
        second, VALS[1].address, 0, CHALLENGE_BOND)
    assert net.stake.balanceOf(CHALLENGER.address) == c_before + CHALLENGE_BOND
    assert net.vals.stake_of(VALS[1].address) == V_STAKE and u.challenges(second).state == ANSWERED
    assert u.is_up(p1.address, E) and net.stake.balanceOf(u.address) == 0


def test_challenge_refusals_change_nothing(net):
    u, s, v0 = net.uptime, net.system, VALS[0]
    words = liveness.words_of([0, 1], 4)
    net.at(E + 1)
    net.report(v0, E, words)
    p0 = s.providers[0]

    def raw(named, validator=v0, epoch=E, report=words):
        return lambda: u.challenge_inclusions(validator.address, epoch, report, named,
                                              sender=CHALLENGER.address)
    for call, message in [
        (raw([1], report=[0b111]), "uptime: words are not the report"),
        (raw([1], report=[*words, 0]), "uptime: words are not the report"),
        (raw([0b1000]), "uptime: provider not in the report"),
        (raw([0b1001]), "uptime: provider not in the report"),    # one good, one not
        (raw([1, 0]), "uptime: named words beyond the report"),
        (raw([0]), "uptime: no provider named"),
        (raw([]), "uptime: no provider named"),
        (raw([1], validator=VALS[1]), "uptime: no such report"),
        (raw([1], epoch=E + 1), "uptime: challenge out of its window"),
        (lambda: net.answer(7, [p0]), "uptime: challenge not open"),
        (lambda: u.resolve_challenge(7), "uptime: challenge not open"),
    ]:
        refused(net, message, call)
    refused(net, None, lambda: u.challenge_inclusions(  # no approval: no bond, no challenge
        v0.address, E, words, [1], sender=s.outsider.address))
    net.challenge(v0, E, [p0], words)
    refused(net, "uptime: every provider named was challenged already",
            lambda: net.challenge(v0, E, [p0], words))
    # One new, one named before (a liar's decoy challenge sent first, say): the new one is
    # named, at the bond of one; naming a decoy first cannot void a watcher's set.
    cid = u.challenge_inclusions(v0.address, E, words, [0b11], sender=CHALLENGER.address)
    (ev,) = events(u, "InclusionsChallenged")
    assert (ev.challenge_id, list(ev.named), ev.named_count) == (cid, [0b10], 1)
    assert u.named_word(cid, 0) == 0b10 and u.challenged_word(v0.address, E, 0) == 0b11
    net.at(E + REPORT_DELAY + 2)
    refused(net, "uptime: challenge out of its window", lambda: net.challenge(v0, E, [p0], words))


def test_the_bond_grows_by_one_per_named_per_bond_providers(net):
    """A bond per NAMED_PER_BOND named providers: naming all of a large report costs one bond
    per 32, not one per provider; enough that every named beat could be shown by its own
    provider alone and paid the most an own answer is paid (OWN_ANSWER_MAX_FEES fees), so
    the fees never exceed the bond."""
    u = net.uptime
    per = u.NAMED_PER_BOND()
    assert per == 32
    for named, bonds in [(1, 1), (per, 1), (per + 1, 2), (2 * per, 2), (10_000, 313)]:
        assert u.challenge_bond_for(named) == bonds * CHALLENGE_BOND
        assert named * u.answer_fee() * u.OWN_ANSWER_MAX_FEES() <= u.challenge_bond_for(named)
    assert u.answer_fee() == CHALLENGE_BOND // 512     # one batched beat's gas, as before


BITCOUNT = (Path(__file__).parents[2] / "src/tessera/contracts/bitcount.vy").read_text() + """

@external
@pure
def count_of(word: uint256) -> uint256:
    return self.count(word)
"""


@pytest.fixture(scope="module")
def counter():
    return boa.loads(BITCOUNT)


@settings(max_examples=200, deadline=None)
@given(word=st.one_of(st.integers(0, 2**256 - 1), st.sampled_from([0, 2**256 - 1, 2**255, 1])))
def test_bitcount_counts_every_set_bit(counter, word):
    """The module's SWAR sum against Python's count of the bits (all 256 set included: a field
    that could overflow would show there)."""
    assert counter.count_of(word) == bin(word).count("1")


def test_a_self_challenge_costs_its_griefer_what_the_answerer_gets(net):
    """The griefer: a validator (VALS[1]) reports provider 1 honestly, then challenges its own
    inclusion from a second address, so that the provider (or a colleague) must spend a
    transaction or lose its epoch: whoever answers takes the answer fee from the bond, so the
    griefer's pair pays that answer, to the one who answered."""
    u, p1 = net.uptime, net.system.providers[1]
    words = honest_reports(net)
    net.stake.mint(GRIEFER.address, CHALLENGE_BOND)
    net.stake.approve(u.address, CHALLENGE_BOND, sender=GRIEFER.address)
    pair = (VALS[1].address, GRIEFER.address)
    pair_before, p1_before = sum(net.stake.balanceOf(a) for a in pair), net.stake.balanceOf(p1.address)
    cid = net.challenge(VALS[1], E, [p1], words, by=GRIEFER)
    net.at(E + REPORT_DELAY + 1 + ANSWER_EPOCHS)      # the provider answers in the last epoch
    net.answer(cid, [p1], by=p1)
    (ans,) = events(u, "InclusionAnswered")
    (res,) = events(u, "ChallengeResolved")
    fee = u.answer_fee()
    assert (ans.answered_by, ans.to_answerer, res.bond_returned) == (p1.address, fee, CHALLENGE_BOND - fee)
    assert net.stake.balanceOf(p1.address) == p1_before + fee
    assert sum(net.stake.balanceOf(a) for a in pair) == pair_before - fee
    net.at(E + SETTLE_EPOCHS + 1)
    assert u.is_up(p1.address, E) and net.stake.balanceOf(u.address) == 0


def test_a_validator_answering_beats_it_withheld_earns_only_the_fees(net):
    """The drain: a validator withholds its beats from everyone (so that watchers name them)
    and answers them on chain, to collect the challengers' bonds. It gets the answer fee per
    beat, what one batched answer costs in gas, and the rest of the bond goes back to the
    challenger: withholding pays nothing, and a watcher's budget drains by fees, not bonds."""
    u, p0, p1 = net.uptime, net.system.providers[0], net.system.providers[1]
    words = honest_reports(net)
    before = [net.stake.balanceOf(a) for a in (VALS[2].address, CHALLENGER.address)]
    cid = net.challenge(VALS[2], E, [p0, p1], words)
    net.answer(cid, [p0, p1], by=VALS[2])
    answers, (res,) = events(u, "InclusionAnswered"), events(u, "ChallengeResolved")
    fee = u.answer_fee()
    assert [a.to_answerer for a in answers] == [fee, fee]
    assert res.bond_returned == CHALLENGE_BOND - 2 * fee
    assert [net.stake.balanceOf(a) for a in (VALS[2].address, CHALLENGER.address)] == [
        before[0] + 2 * fee, before[1] - 2 * fee]
    assert 2 * fee * 256 == CHALLENGE_BOND and net.stake.balanceOf(u.address) == 0


def test_a_challenge_locks_nothing(net):
    """The other griefer: anyone holding a beat signature (the provider itself, a validator it
    beat to, anyone once an answer put it in calldata) challenges an honest report and answers
    it at once, every epoch, to keep the validator's stake from leaving. Challenges lock
    nothing (the unbonding period outlasts them instead), so this buys nothing."""
    u, p0 = net.uptime, net.system.providers[0]
    words = honest_reports(net)
    cid = net.challenge(VALS[1], E, [p0], words)
    net.answer(cid, [p0], by=CHALLENGER)      # the beat, e.g. read from an earlier answer's calldata
    assert net.vals.locked_until(VALS[1].address) == 0 and u.challenges(cid).state == ANSWERED


# ---------------------------------------------------------------- every wei has a way out

# (validator, the providers named as a 4-bit mask, epoch E + 0/1); (challenge, the providers
# shown as a mask, with their real beats?, who answers: an outsider, the first provider shown,
# the challenged validator, the challenger; time moved to own_answer_from first?)
challenge_step = st.tuples(st.just("challenge"), st.integers(0, 2), st.integers(1, 15),
                           st.integers(0, 1))
answer_step = st.tuples(st.just("answer"), st.integers(0, 20), st.integers(1, 15),
                        st.sampled_from([True, True, False]), st.integers(0, 3),
                        st.sampled_from([False, False, True]))   # from own_answer_from first?
# a provider (0 or 1: the two that signed) showing its own beat alone, on the latest challenges
own_step = st.tuples(st.just("answer"), st.integers(0, 2), st.sampled_from([1, 2]), st.just(True),
                     st.just(1), st.sampled_from([False, True]))
step = st.one_of(challenge_step, challenge_step, answer_step, answer_step, own_step,
                 st.tuples(st.just("resolve"), st.integers(0, 20)),
                 st.tuples(st.just("time"), st.integers(0, 2)))
steps_strategy = st.builds(lambda first, rest: [first, *rest], challenge_step,
                           st.lists(step, min_size=5, max_size=30))


def bits(mask: int) -> list[int]:
    return [i for i in range(4) if mask >> i & 1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_strategy)
def test_bonds_are_always_held_for_open_challenges_only(system, steps):
    """Epochs E and E+1 are reported by every validator naming all four providers; providers 0
    and 1 signed beats. Whatever sets are challenged (overlapping ones: only the new part is
    named), answered (by whom, how many at once, beats shown already among them: skipped),
    resolved and when, the Uptime holds exactly what is left of the open challenges' bonds,
    each challenge ends answered or resolved after its window, and every party's balance is
    what the rules say: each beat shown pays its sender the answer fee, except a provider's
    own beat shown alone from own_answer_from on (paid its gas: at least one fee, at most
    OWN_ANSWER_MAX_FEES); the rest of the bond goes back to the challenger, with a fifth of
    the (capped) slash of inclusion_slash per named provider never shown. (Time moves by whole
    epochs or, step ("time", 0), half of one, so that own answers happen.)"""
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
        fee = u.answer_fee()
        parties = [system.outsider.address, CHALLENGER.address, *(v.address for v in VALS),
                   *(p.address for p in provs), boa.env.eoa]   # the last one resolves
        expected = {a: net.stake.balanceOf(a) for a in parties}
        stake_left = [V_STAKE] * len(VALS)
        taken: dict[tuple[int, int], int] = {}    # (validator, epoch) -> mask named so far
        proven: dict[int, int] = {}               # epoch -> mask of beats shown
        model: dict[int, dict] = {}

        def settle(cid: int, c: dict) -> None:
            rest = c["bond"] - c["paid"]
            unanswered = len(bits(c["named"] & ~proven.get(c["epoch"], 0)))
            expected[CHALLENGER.address] += rest
            if unanswered == 0:
                c["state"] = ANSWERED
            else:
                slashed = min(INCLUSION_SLASH * unanswered, stake_left[c["v"]])
                stake_left[c["v"]] -= slashed
                expected[CHALLENGER.address] += slashed * u.CHALLENGER_SHARE_BPS() // 10_000
                c["state"] = RESOLVED
            assert u.challenges(cid).state == c["state"]

        for s in steps:
            current = u.current_epoch()
            if s[0] == "time":
                if s[1]:
                    net.at(current + s[1])
                else:
                    boa.env.time_travel(seconds=int(u.epoch_length()) // 2, block_delta=1)
                continue
            if s[0] == "challenge":
                _, vi, mask, de = s
                ok = liveness.claims_accepted(E + de, current, REPORT_DELAY) and \
                    bool(mask & ~taken.get((vi, E + de), 0))
                call = lambda vi=vi, mask=mask, de=de: net.challenge(  # noqa: E731
                    VALS[vi], E + de, [provs[i] for i in bits(mask)], words)
            else:
                # newest first (hypothesis favours small numbers); 20: an unknown id
                cid = len(model) + 1 if s[1] == 20 or not model else len(model) - s[1] % len(model)
                c = model.get(cid)
                end = c and liveness.answer_end(c["epoch"], REPORT_DELAY, ANSWER_EPOCHS)
                if s[0] == "answer":  # only providers 0 and 1 signed: others' beats are wrong
                    _, _, mask, real, who, late = s
                    if late and c and boa.env.timestamp < u.own_answer_from(c["epoch"]):
                        boa.env.time_travel(seconds=u.own_answer_from(c["epoch"]) - boa.env.timestamp,
                                            block_delta=1)
                        current = u.current_epoch()
                    epoch = c["epoch"] if c else E
                    shown = bits(mask)
                    new = mask & ~proven.get(epoch, 0)   # beats shown already are skipped
                    ok = bool(c) and c["state"] == OPEN and current <= end and \
                        mask & ~c["named"] == 0 and new != 0 and (real and max(bits(new)) < 2)
                    sigs = [net.beat(provs[i if real and i < 2 else (i + 1) % 4], epoch) for i in shown]
                    answerer = [system.outsider.address, provs[shown[0]].address,
                                VALS[c["v"]].address if c else CHALLENGER.address,
                                CHALLENGER.address][who]
                    call = lambda cid=cid, shown=shown, sigs=sigs, by=answerer: u.answer_challenge(  # noqa: E731
                        cid, [provs[i].address for i in shown], sigs, sender=by)
                else:
                    ok = bool(c) and c["state"] == OPEN and current > end
                    call = lambda cid=cid: u.resolve_challenge(cid)  # noqa: E731
            try:
                result = call()
            except BoaError:
                assert not ok, s
            else:
                assert ok, s
                if s[0] == "challenge":
                    named = mask & ~taken.get((vi, E + de), 0)
                    model[result] = {"epoch": E + de, "named": named, "v": vi, "state": OPEN,
                                     "paid": 0, "answered": 0, "bond": CHALLENGE_BOND}
                    assert u.named_word(result, 0) == named
                    taken[(vi, E + de)] = taken.get((vi, E + de), 0) | named
                    expected[CHALLENGER.address] -= CHALLENGE_BOND
                elif s[0] == "answer":
                    paid_each = [a.to_answerer for a in events(u, "InclusionAnswered")]
                    own = len(shown) == 1 and answerer == provs[shown[0]].address and \
                        boa.env.timestamp >= u.own_answer_from(c["epoch"])
                    paid = paid_each[0] if own else fee * len(bits(new))
                    assert sum(paid_each) == paid
                    assert fee <= paid <= fee * u.OWN_ANSWER_MAX_FEES() if own else True
                    expected[answerer] += paid
                    c["paid"] += paid
                    c["answered"] |= new
                    proven[c["epoch"]] = proven.get(c["epoch"], 0) | new
                    if c["answered"] == c["named"]:
                        settle(cid, c)
                else:
                    settle(cid, c)
            held = sum(c["bond"] - c["paid"] for c in model.values() if c["state"] == OPEN)
            assert net.stake.balanceOf(u.address) == held
            assert {a: net.stake.balanceOf(a) for a in parties} == expected, s
        # After every window: each open challenge resolves, and nothing is left behind.
        net.at(max(u.current_epoch(), liveness.answer_end(E + 1, REPORT_DELAY, ANSWER_EPOCHS) + 1))
        for cid, c in model.items():
            if c["state"] == OPEN:
                u.resolve_challenge(cid)
                settle(cid, c)
            assert u.challenges(cid).state == c["state"]
        assert net.stake.balanceOf(u.address) == 0
        assert {a: net.stake.balanceOf(a) for a in parties} == expected
        for vi, v in enumerate(VALS):
            assert net.vals.stake_of(v.address) == stake_left[vi]
