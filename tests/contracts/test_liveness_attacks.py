"""An outside review's attacks on Uptime's set challenges (docs/uptime.md, "Fabrication"): a
decoy front-run meant to void a watcher's whole set, a copied answer meant to void a whole
batch (both fixed: what was named or shown before is left out, not refused), beats shown
twice, a provider proven elsewhere, and the block-gas ceiling of one challenge."""

from __future__ import annotations

import boa
import pytest
from contracts_support import CHALLENGE_BOND, TSTK, events, key_account, set_history, uptime_args
from liveness_support import ANSWERED, CHALLENGER, OPEN, VALS, E, Net, lying_report, refused, setup_net

from tessera.protocol import liveness

LIAR_TWIN = key_account(712)   # the lying validator's second address
COPIER = key_account(713)      # copies answers from the mempool
BLOCK_GAS = 30_000_000         # docs/scale.md: the chain the protocol is sized for


@pytest.fixture
def net(system) -> Net:
    return setup_net(system)


def fund(net: Net, who, amount: int = 100 * TSTK) -> None:
    net.stake.mint(who.address, amount)
    net.stake.approve(net.uptime.address, 2**256 - 1, sender=who.address)


def answer_end() -> int:
    return liveness.answer_end(E, 1, 1)


def test_a_decoy_front_run_does_not_void_the_watchers_set(net):
    """The attack (a liar escapes): VALS[0] reports providers 0..3; 0 and 1 are its decoys (it
    holds their beats, serves them to nobody), 3 is the lie. The watcher sends ONE challenge
    naming {0, 1, 2, 3}; the liar sees it in the mempool and front-runs it from a second address
    with a challenge naming one decoy only, which it answers itself (cost: gas). Were a set
    naming anything named before refused, each decoy would void one send of every watcher (all
    name the same set) until the window closed. It is left out instead: the watcher's challenge
    names the rest, the lie included."""
    u, s, v0 = net.uptime, net.system, VALS[0]
    p0, p1, p2, p3 = s.providers
    words = lying_report(net)
    fund(net, LIAR_TWIN)
    pair = (v0.address, LIAR_TWIN.address)
    before = sum(net.stake.balanceOf(a) for a in pair)
    decoy = net.challenge(v0, E, [p0], words, by=LIAR_TWIN)        # the front-run
    net.answer(decoy, [p0], by=v0)                                 # settles at once
    assert sum(net.stake.balanceOf(a) for a in pair) == before      # it cost the liar nothing
    # the watcher's challenge, mined right behind it:
    with boa.env.prank(CHALLENGER.address):
        cid = u.challenge_inclusions(v0.address, E, words, net.named([p0, p1, p2, p3]))
    assert u.named_word(cid, 0) == 0b1110   # the rest of the set, the lie included


def test_a_copied_answer_does_not_void_the_rest_of_a_batch(net):
    """The attack (an honest validator slashed): a griefer names both inclusions of VALS[1]'s
    honest report. The validator answers [p0, p1] in one call; a copier takes p0's beat from
    the mempool and front-runs with it alone (earning p0's fee). Were a shown beat refused,
    the whole batch would revert, every block, until the window closed. It is skipped,
    unpaid: the batch lands and shows p1."""
    u, p0, p1 = net.uptime, net.system.providers[0], net.system.providers[1]
    net.at(E + 1)
    words = liveness.words_of([0, 1], 4)
    net.report(VALS[1], E, words)
    cid = net.challenge(VALS[1], E, [p0, p1], words)
    u.answer_challenge(cid, [p0.address], [net.beat(p0, E)], sender=COPIER.address)
    assert net.stake.balanceOf(COPIER.address) == u.answer_fee()
    before = net.stake.balanceOf(VALS[1].address)
    net.answer(cid, [p0, p1], by=VALS[1])
    assert [e.provider for e in events(u, "InclusionAnswered")] == [p1.address]
    assert net.stake.balanceOf(VALS[1].address) == before + u.answer_fee()
    assert u.challenges(cid).state == ANSWERED


def test_an_answer_naming_one_provider_twice_is_paid_once(net):
    """Failed attack: one call showing the same beat twice for two fees (the second is a beat
    shown already: skipped, unpaid); and a beat of a provider the challenge did not name."""
    u, p0, p1 = net.uptime, net.system.providers[0], net.system.providers[1]
    words = lying_report(net)
    cid = net.challenge(VALS[0], E, [p0, p1], words)
    u.answer_challenge(cid, [p0.address, p0.address], [net.beat(p0, E)] * 2, sender=COPIER.address)
    assert len(events(u, "InclusionAnswered")) == 1
    assert net.stake.balanceOf(COPIER.address) == u.answer_fee()
    assert u.challenges(cid).answered == 1 and u.challenges(cid).paid == u.answer_fee()
    refused(net, "uptime: every beat given was shown already", lambda: u.answer_challenge(
        cid, [p0.address], [net.beat(p0, E)], sender=COPIER.address))
    refused(net, "uptime: provider not named", lambda: net.answer(cid, [net.system.providers[2]]))


def test_a_provider_proven_on_another_challenge_leaves_nothing_stuck(net):
    """Failed attack: a provider named by two challenges (two reports), its beat shown on the
    first. The second can never reach answered == named, so it stays open until
    resolve_challenge settles it as answered: one fee per beat, the rest back to the
    challenger, no token left in Uptime, nobody slashed."""
    u, s = net.uptime, net.system
    p0, p1 = s.providers[0], s.providers[1]
    net.at(E + 1)
    words = liveness.words_of([0, 1], 4)
    for v in VALS[1:]:
        net.report(v, E, words)
    x = net.challenge(VALS[1], E, [p0], words)
    y = net.challenge(VALS[2], E, [p0, p1], words)
    net.answer(x, [p0], by=COPIER)
    net.answer(y, [p1], by=COPIER)
    refused(net, "uptime: every beat given was shown already",
            lambda: net.answer(y, [p0], by=VALS[2]))
    assert u.challenges(y).state == OPEN
    net.at(answer_end() + 1)
    c_before = net.stake.balanceOf(CHALLENGER.address)
    u.resolve_challenge(y)
    (res,) = events(u, "ChallengeResolved")
    fee = u.answer_fee()
    assert (res.unanswered, res.bond_returned) == (0, CHALLENGE_BOND - fee)
    assert net.stake.balanceOf(CHALLENGER.address) == c_before + CHALLENGE_BOND - fee
    assert net.stake.balanceOf(u.address) == 0 and u.challenges(y).state == ANSWERED
    assert net.vals.stake_of(VALS[2].address) == net.vals.stake_of(VALS[1].address)


MOCK_REGISTRY = """
# pragma version ~=0.4.3
provider_count: public(uint256)
@deploy
def __init__(n: uint256):
    self.provider_count = n
@external
@view
def is_registered(a: address) -> bool:
    return False
@external
@view
def index_of(a: address) -> uint256:
    return 0
"""


def intrinsic(data: bytes) -> int:
    return 21_000 + sum(16 if b else 4 for b in data)


@pytest.mark.parametrize("providers", [100_000])
def test_a_report_of_100k_providers_can_be_challenged_within_a_block(system, factories, providers):
    """The liar spreads its decoys one per registry word, so that the one challenge naming its
    report writes three fresh words per 256 providers (challenged, disputed, named): at the
    scale this network is sized for (100,000 providers, 391 words, docs/scale.md) it still
    fits a 30 M-gas block. The known limit, in docs/scale.md: past about 425 words (about
    109,000 providers) it does not, and the watch (one challenge per report) would have to
    split it. The registry is a mock (a real one of 100,000 providers takes minutes to fill);
    the report's bounds check reads only its provider_count."""
    reg = boa.loads(MOCK_REGISTRY, providers)
    vals = factories["Validators"].deploy(system.stake.address, 100 * TSTK, 3600)
    up = factories["Uptime"].deploy(*uptime_args(reg.address, vals.address))
    vals.set_slasher(up.address, True)
    v, ch = VALS[0].address, CHALLENGER.address
    system.stake.mint(v, 200 * TSTK)
    system.stake.mint(ch, up.challenge_bond_for(providers))   # one per 32 named: own answers
    system.stake.approve(vals.address, 2**256 - 1, sender=v)
    vals.register(200 * TSTK, sender=v)
    system.stake.approve(up.address, 2**256 - 1, sender=ch)
    boa.env.time_travel(seconds=int(up.epoch_start(E)) + 1 - boa.env.timestamp, block_delta=2)
    set_history()
    up.open_epoch()
    boa.env.time_travel(seconds=60, block_delta=2)
    words = [1] * -(-providers // 256)
    up.report_liveness(E, words, sender=v)
    report_gas = up._computation.get_gas_used() + intrinsic(
        up.report_liveness.prepare_calldata(E, words))
    up.challenge_inclusions(v, E, words, words, sender=ch, gas=100_000_000)
    gas = up._computation.get_gas_used() + intrinsic(
        up.challenge_inclusions.prepare_calldata(v, E, words, words))
    assert report_gas < BLOCK_GAS
    assert gas <= BLOCK_GAS, f"challenge of a {len(words)}-word report: {gas:,} gas"
