"""Uptime's inclusion challenges (issue 15, docs/uptime.md), attacked: anyone bonds that a
validator's liveness report named a provider without its signed beat; the beat shown in time
pays the bond to the answerer and the validator, no answer slashes the validator and revokes
the bit (test_liveness.py: reports, receipt claims, outages).

Each adversary's strategy has a test, and every refused call is checked to change nothing."""

from __future__ import annotations

import boa
import pytest
from boa.contracts.base_evm_contract import BoaError
from contracts_support import (
    ANSWER_EPOCHS,
    CHALLENGE_BOND,
    INCLUSION_SLASH,
    REPORT_DELAY,
    SETTLE_EPOCHS,
    events,
    heartbeat,
    key_account,
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
    validators_with_fast_unbonding,
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
    vals, uptime = validators_with_fast_unbonding(system, factories)
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


def test_an_answered_challenge_pays_the_answerer_and_the_validator_and_keeps_the_bit(net):
    u, s, v0, p1 = net.uptime, net.system, VALS[0], net.system.providers[1]
    good = net.beat(p1, E)
    words = lying_report(net)
    cid = net.challenge(v0, E, p1, words)
    v_before, o_before = (net.stake.balanceOf(a) for a in (v0.address, s.outsider.address))
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
    share = CHALLENGE_BOND * u.ANSWERER_SHARE_BPS() // 10_000
    assert 0 < share < CHALLENGE_BOND and share == CHALLENGE_BOND // 2
    assert (ans.validator, ans.answered_by, ans.to_answerer, ans.to_validator) == (
        v0.address, s.outsider.address, share, CHALLENGE_BOND - share)
    assert net.stake.balanceOf(v0.address) == v_before + CHALLENGE_BOND - share
    assert net.stake.balanceOf(s.outsider.address) == o_before + share
    assert net.stake.balanceOf(u.address) == 0 and u.challenges(cid).state == ANSWERED
    refused(net, "uptime: challenge not open", lambda: u.answer_challenge(cid, good))
    net.at(liveness.answer_end(E, REPORT_DELAY, ANSWER_EPOCHS) + 1)
    refused(net, "uptime: challenge not open", lambda: u.resolve_challenge(cid))
    assert net.vals.stake_of(v0.address) == V_STAKE and u.is_up(p1.address, E)


def test_a_beat_shown_on_one_challenge_settles_the_others_as_answered(net):
    """Two validators named provider 1; both inclusions are challenged and only the first is
    answered: the chain has seen the beat, so the second validator is not slashed either, and
    gets the second bond whole (nobody answered it; paying its resolver would let the
    challenger resolve its own challenge for a refund)."""
    u, p1 = net.uptime, net.system.providers[1]
    words = lying_report(net)
    net.report(VALS[1], E, words)
    first, second = (net.challenge(v, E, p1, words) for v in VALS[:2])
    u.answer_challenge(first, net.beat(p1, E))
    net.at(liveness.answer_end(E, REPORT_DELAY, ANSWER_EPOCHS) + 1)
    v1_before = net.stake.balanceOf(VALS[1].address)
    u.resolve_challenge(second)
    (ans,) = events(u, "ChallengeAnswered")
    # Nobody answered this one: the whole bond to the validator, none to its resolver.
    assert (ans.challenge_id, ans.validator, ans.to_validator, ans.to_answerer, ans.answered_by) == (
        second, VALS[1].address, CHALLENGE_BOND, 0, boa.env.eoa)
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


def test_a_self_challenge_costs_its_griefer_what_the_answerer_gets(net):
    """The griefer: a validator (VALS[1]) reports provider 1 honestly, then challenges its own
    inclusion from a second address, so that the provider (or a colleague) must spend a
    transaction or lose its epoch. Under 'the bond goes to the validator' it got its bond back
    either way; now whoever answers takes ANSWERER_SHARE_BPS of it, so the griefer's pair loses
    that share each time, to the one who answered. A validator that answers a challenge of its
    own report itself gets the whole bond back (next test)."""
    u, p1 = net.uptime, net.system.providers[1]
    words = honest_reports(net)
    net.stake.mint(GRIEFER.address, CHALLENGE_BOND)
    net.stake.approve(u.address, CHALLENGE_BOND, sender=GRIEFER.address)
    pair = (VALS[1].address, GRIEFER.address)
    pair_before, p1_before = sum(net.stake.balanceOf(a) for a in pair), net.stake.balanceOf(p1.address)
    cid = net.challenge(VALS[1], E, p1, words, by=GRIEFER)
    net.at(E + REPORT_DELAY + 1 + ANSWER_EPOCHS)      # the provider answers in the last epoch
    share = CHALLENGE_BOND * u.ANSWERER_SHARE_BPS() // 10_000
    u.answer_challenge(cid, net.beat(p1, E), sender=p1.address)
    (ans,) = events(u, "ChallengeAnswered")
    assert (ans.answered_by, ans.to_answerer, ans.to_validator) == (p1.address, share, CHALLENGE_BOND - share)
    assert net.stake.balanceOf(p1.address) == p1_before + share
    assert sum(net.stake.balanceOf(a) for a in pair) == pair_before - share
    net.at(E + SETTLE_EPOCHS + 1)
    assert u.is_up(p1.address, E) and net.stake.balanceOf(u.address) == 0


def test_a_validator_answering_for_itself_gets_the_whole_bond(net):
    u, p0 = net.uptime, net.system.providers[0]
    words = honest_reports(net)
    cid = net.challenge(VALS[2], E, p0, words)
    before = net.stake.balanceOf(VALS[2].address)
    share = CHALLENGE_BOND * u.ANSWERER_SHARE_BPS() // 10_000
    u.answer_challenge(cid, net.beat(p0, E), sender=VALS[2].address)
    (ans,) = events(u, "ChallengeAnswered")
    assert (ans.answered_by, ans.to_answerer, ans.to_validator) == (
        VALS[2].address, share, CHALLENGE_BOND - share)
    assert net.stake.balanceOf(VALS[2].address) == before + CHALLENGE_BOND
    assert net.stake.balanceOf(u.address) == 0


def test_challenging_and_answering_oneself_still_pays_the_validator_for_the_lock(net):
    """The other griefer: anyone holding a beat signature (the provider itself, a validator it
    beat to, anyone once an answer put it in calldata) challenges an honest report and answers
    the challenge at once, only to lock the validator's stake (withdraw_unbonded waits for the
    challenge). Were the whole bond the answerer's, that lock would cost gas alone, every
    epoch; the validator's share makes each lock cost the challenger, to the validator."""
    u, p0 = net.uptime, net.system.providers[0]
    words = honest_reports(net)
    seen = net.beat(p0, E)   # e.g. read from an earlier answer's calldata
    before = [net.stake.balanceOf(a) for a in (CHALLENGER.address, VALS[1].address)]
    assert net.vals.locked_until(VALS[1].address) == 0
    cid = net.challenge(VALS[1], E, p0, words)
    u.answer_challenge(cid, seen, sender=CHALLENGER.address)
    assert net.vals.locked_until(VALS[1].address) >= u.epoch_start(
        liveness.answer_end(E, REPORT_DELAY, ANSWER_EPOCHS) + 2)
    kept = CHALLENGE_BOND * (10_000 - u.ANSWERER_SHARE_BPS()) // 10_000
    assert kept > 0
    assert [net.stake.balanceOf(a) for a in (CHALLENGER.address, VALS[1].address)] == [
        before[0] - kept, before[1] + kept]


# ---------------------------------------------------------------- every wei has a way out

# (validator, provider: 0 and 1 signed beats, epoch E + 0/1); (challenge, with the real beat?,
# who answers: an outsider, the provider, the challenged validator, the challenger)
challenge_step = st.tuples(st.just("challenge"), st.integers(0, 2),
                           st.sampled_from([0, 1, 2, 3, 0, 1]), st.integers(0, 1))
answer_step = st.tuples(st.just("answer"), st.integers(0, 20), st.sampled_from([True, True, False]),
                        st.integers(0, 3))
step = st.one_of(challenge_step, challenge_step, challenge_step, answer_step, answer_step,
                 st.tuples(st.just("resolve"), st.integers(0, 20)),
                 st.tuples(st.just("time"), st.integers(1, 2)))
steps_strategy = st.builds(lambda first, rest: [first, *rest], challenge_step,
                           st.lists(step, min_size=5, max_size=30))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_strategy)
def test_bonds_are_always_held_for_open_challenges_only(system, steps):
    """Epochs E and E+1 are reported by every validator naming all four providers; providers 0
    and 1 signed beats. Whatever is challenged, answered (by whom), resolved and when, the
    Uptime holds exactly the open challenges' bonds, each challenge ends answered or resolved
    by the end of its window, and every party's balance is what the rules say: an answer pays
    ANSWERER_SHARE_BPS of the bond to its sender and the rest to the validator, a resolve after
    a beat shown elsewhere the whole bond to the validator, an unanswered one the bond and a
    fifth of the (capped) slash to the challenger."""
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
        share = CHALLENGE_BOND * u.ANSWERER_SHARE_BPS() // 10_000
        parties = [system.outsider.address, CHALLENGER.address, *(v.address for v in VALS),
                   *(p.address for p in provs), boa.env.eoa]   # the last one resolves
        expected = {a: net.stake.balanceOf(a) for a in parties}
        stake_left = [V_STAKE] * len(VALS)
        model: dict[int, list] = {}  # id -> [epoch, provider index, validator index, state]

        def settle(cid: int, c: list, answerer: str | None) -> None:
            validator = VALS[c[2]].address
            if answerer is not None:
                expected[answerer] += share
                expected[validator] += CHALLENGE_BOND - share
                c[3] = ANSWERED
            elif any(x[:2] == c[:2] and x[3] == ANSWERED for x in model.values()):
                expected[validator] += CHALLENGE_BOND   # proven on another challenge
                c[3] = ANSWERED
            else:
                slashed = min(INCLUSION_SLASH, stake_left[c[2]])
                stake_left[c[2]] -= slashed
                expected[CHALLENGER.address] += CHALLENGE_BOND + slashed * u.CHALLENGER_SHARE_BPS() // 10_000
                c[3] = RESOLVED
            assert u.challenges(cid).state == c[3]

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
                    answerer = [system.outsider.address, provs[c[1]].address if c else CHALLENGER.address,
                                VALS[c[2]].address if c else CHALLENGER.address, CHALLENGER.address][s[3]]
                    call = lambda cid=cid, sig=sig, by=answerer: u.answer_challenge(  # noqa: E731
                        cid, sig, sender=by)
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
                    expected[CHALLENGER.address] -= CHALLENGE_BOND
                else:  # a resolve settles as answered if the beat was shown on another
                    settle(cid, c, answerer if s[0] == "answer" else None)
            held = sum(CHALLENGE_BOND for c in model.values() if c[3] == OPEN)
            assert net.stake.balanceOf(u.address) == held
            assert {a: net.stake.balanceOf(a) for a in parties} == expected, s
        # After every window: each open challenge resolves, and nothing is left behind.
        net.at(max(u.current_epoch(), liveness.answer_end(E + 1, REPORT_DELAY, ANSWER_EPOCHS) + 1))
        for cid, c in model.items():
            if c[3] == OPEN:
                u.resolve_challenge(cid)
                settle(cid, c, None)
            assert u.challenges(cid).state == c[3]
        assert net.stake.balanceOf(u.address) == 0
        assert {a: net.stake.balanceOf(a) for a in parties} == expected
        for vi, v in enumerate(VALS):
            lost = sum(INCLUSION_SLASH for c in model.values() if c[2] == vi and c[3] == RESOLVED)
            assert net.vals.stake_of(v.address) == max(0, V_STAKE - lost) == stake_left[vi]
