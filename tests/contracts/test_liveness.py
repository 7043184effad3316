"""Uptime's liveness reports (issue 15, docs/uptime.md), attacked: validators post one bitmap
per epoch, providers claim receipted beats (test_liveness_challenges.py: inclusion challenges).

Each adversary's strategy has a test, and every refused call is checked to change nothing.
The typed data and report words come from tessera.protocol.liveness, so the Python rules and
the contract are checked against each other."""

from __future__ import annotations

import boa
import pytest
from contracts_support import (
    ANSWER_EPOCHS,
    JAIL_AFTER,
    REPORT_DELAY,
    SETTLE_EPOCHS,
    TSTK,
    events,
    heartbeat,
    key_account,
    typed_digest,
)
from eth_utils import keccak
from liveness_support import V_STAKE, VALS, E, Net, refused, setup_net, validators_with_short_unbonding

from tessera.protocol import liveness


@pytest.fixture
def net(system) -> Net:
    """Three validators of 200 TSTK, a funded challenger, epoch E open (time in E)."""
    return setup_net(system)


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
    # The seed: the previous block's hash (set_history's) with its low 8 bytes the block number.
    block = boa.env.evm.patch.block_number
    assert seed[:24] == keccak(b"block %d" % (block - 1))[:24]
    assert u.opened_block(E + 1) == int.from_bytes(seed[24:], "big") == block
    assert u.opened_block(E + 2) == 0 and 0 < u.opened_block(E) < block
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


def test_a_receipt_outlives_its_validators_unbonding(system, factories):
    """A validator receipts a beat, then leaves before the provider claims: it unbonds and
    withdraws everything (VALS[1]), or is slashed below the minimum (VALS[2]). It was a
    validator when the epoch opened, so its receipt still counts: an honest provider keeps its
    epoch, and its tenant gets no downtime refund for it.

    The adversary is the provider's (or tenant's) side of a validator: receipting, then
    leaving at once so that the receipt is void. (It cannot withdraw before the claim window
    ends: Uptime takes no Validators whose unbonding is that short.)"""
    vals, uptime = validators_with_short_unbonding(system, factories)
    net = setup_net(system, vals, uptime)
    p1, p2 = system.providers[1], system.providers[2]
    held = {p.address: (net.receipt(v, p.address, E), net.beat(p, E))
            for v, p in ((VALS[1], p1), (VALS[2], p2))}
    net.at(E + 1)
    with boa.env.prank(VALS[1].address):   # no active stake left: no longer a validator
        vals.request_unbond(V_STAKE)
    owner = key_account(720).address
    vals.set_slasher(owner, True, sender=owner)
    vals.slash(VALS[2].address, 150 * TSTK, owner, sender=owner)   # 50 left, under the minimum
    assert not vals.is_validator(VALS[1].address) and vals.validators(VALS[1].address).stake == 0
    assert not vals.is_validator(VALS[2].address)
    for v, p in ((VALS[1], p1), (VALS[2], p2)):
        assert vals.stake_at(v.address, uptime.opened_block(E)) == V_STAKE
        uptime.claim_beat(E, v.address, *held[p.address], sender=p.address)
        (ev,) = events(uptime, "BeatClaimed")
        assert (ev.provider, ev.epoch, ev.validator) == (p.address, E, v.address)
    net.at(E + SETTLE_EPOCHS + 1)
    assert uptime.is_up(p1.address, E) and uptime.is_up(p2.address, E)


def test_a_receipt_from_no_validator_when_the_epoch_opened_is_refused(system, factories):
    """Who may receipt: a validator now, or one at the end of the block that opened the epoch.

    Adversaries, each refused with 'uptime: not a validator' and no change:
    - a validator that left BEFORE the epoch opened selling receipts for it (it has no stake
      left to lose: `stake_at` the opening block is zero);
    - an address that joins after the epoch opened, receipts, and leaves before the claim
      (while it stays a validator its receipt counts, as any current validator's word does);
    - the zero address (stake_at refuses it: the rule answers first).
    And a claim in the very block that opened the epoch (possible only where a test moves the
    clock without a block) uses `is_validator` alone instead of reverting in `stake_at`."""
    vals, uptime = validators_with_short_unbonding(system, factories)
    net = setup_net(system, vals, uptime)
    p = system.providers
    joiner, stayer = key_account(730), key_account(731)
    net.at(E + 1)
    with boa.env.prank(VALS[0].address):   # leaves (its stake unbonding: no active stake)
        vals.request_unbond(V_STAKE)
    boa.env.time_travel(seconds=2, block_delta=1)
    net.open()                                      # E + 1 opens after VALS[0] left ...
    boa.env.time_travel(seconds=2, block_delta=1)   # ... and two blocks before these two join
    for who in (joiner, stayer):
        system.stake.mint(who.address, V_STAKE)
        system.stake.approve(vals.address, V_STAKE, sender=who.address)
        vals.register(V_STAKE, sender=who.address)
    e1 = E + 1
    signed = {who.address: net.receipt(who, p[i].address, e1)
              for i, who in ((1, VALS[0]), (2, joiner), (3, stayer))}
    beats = {i: net.beat(p[i], e1) for i in (1, 2, 3)}
    boa.env.time_travel(seconds=2, block_delta=1)
    with boa.env.prank(joiner.address):
        vals.request_unbond(V_STAKE)
    net.at(e1 + 1)
    opened = uptime.opened_block(e1)
    assert [vals.stake_at(a.address, opened) for a in (VALS[0], joiner, stayer)] == [0, 0, 0]
    assert vals.stake_at(joiner.address, opened + 2) == V_STAKE   # it was one, after the opening
    assert [vals.is_validator(a.address) for a in (VALS[0], joiner, stayer)] == [False, False, True]
    for i, who in ((1, VALS[0]), (2, joiner)):
        refused(net, "uptime: not a validator", lambda i=i, who=who: uptime.claim_beat(
            e1, who.address, signed[who.address], beats[i], sender=p[i].address), e1)
    refused(net, "uptime: not a validator", lambda: uptime.claim_beat(
        e1, "0x" + "00" * 20, signed[stayer.address], beats[3], sender=p[3].address), e1)
    uptime.claim_beat(e1, stayer.address, signed[stayer.address], beats[3], sender=p[3].address)
    assert uptime.beats(p[3].address, e1) and not uptime.beats(p[2].address, e1)
    # The same-block edge: E + 2 opens, and the clock moves on with no new block.
    e2 = e1 + 1
    net.open()
    late = {i: (net.receipt(v, p[i].address, e2), net.beat(p[i], e2)) for i, v in ((1, stayer), (2, VALS[1]))}
    with boa.env.prank(VALS[1].address):
        vals.request_unbond(V_STAKE)
    # Without the guard, stake_at would revert 'validators: block not yet final' here.
    boa.env.evm.patch.timestamp = uptime.epoch_start(e2 + 1) + 1
    assert uptime.opened_block(e2) == boa.env.evm.patch.block_number
    refused(net, "uptime: not a validator", lambda: uptime.claim_beat(
        e2, VALS[1].address, *late[2], sender=p[2].address), e2)
    uptime.claim_beat(e2, stayer.address, *late[1], sender=p[1].address)
    assert uptime.beats(p[1].address, e2)

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
