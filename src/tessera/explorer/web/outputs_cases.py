"""Derived rows of verification, settlement, validators, hardware reports and slashes shaped into
the API models of `models_cases.py`, and each lease's ledger (`protocol.ledger`, the one rule)."""

from __future__ import annotations

from tessera.explorer import db
from tessera.explorer.derive import record_of
from tessera.explorer.web.models_cases import (
    ChallengeDetail,
    ChallengeOut,
    ClaimOut,
    HardwareCaseOut,
    LeaseDetail,
    LedgerOut,
    RoundOut,
    SettlementOut,
    SlashOut,
    ValidatorOut,
    VoteOut,
)
from tessera.explorer.web.outputs import event_out, lease_out, paging_out, payment_out
from tessera.explorer.web.queries import ChallengeView, LeaseView, Snapshot
from tessera.protocol.ledger import LeaseLedger, lease_ledgers


def lease_ledger(view: LeaseView, as_of: int) -> LeaseLedger | None:
    """The lease's ledger from its own money events, every one of them (and its order's
    OrderCreated, which says whether it is verified), as of the indexed block."""
    rows = ([view.order_event] if view.order_event is not None else []) + view.money_events
    return lease_ledgers([record_of(row) for row in rows], as_of).get(view.lease.lease_id)


def ledger_out(ledger: LeaseLedger) -> LedgerOut:
    return LedgerOut(
        budget_base_units=str(ledger.budget), provider_paid_base_units=str(ledger.provider_paid),
        fees_base_units=str(ledger.fees), refunded_base_units=str(ledger.refunded),
        downtime_refunded_base_units=str(ledger.downtime_refunded),
        round_refunded_base_units=str(ledger.round_refunded), held_base_units=str(ledger.held),
        escrow_base_units=str(ledger.escrow), unaccounted_base_units=str(ledger.unaccounted),
        adds_up=ledger.adds_up, as_of=ledger.as_of,
        claims=[ClaimOut(kind=c.kind, party=c.party, address=c.address, amount_base_units=str(c.amount),
                         call=c.call) for c in ledger.claims])


def after_last_root(s: db.Settlement, rounds: list[db.Round]) -> bool:
    """Whether a refund is of the time after the job's last root (Settlement logs it with
    round_index = the rounds then posted, forfeited): no root of that index was posted before it.
    A round's own refund always comes after its root (the round must be final)."""
    return s.kind == "refund" and not any(
        r.round_index == s.round_index and r.block_number < s.block_number for r in rounds)


def round_settlement(view: LeaseView, r: db.Round) -> tuple[str, str | None, bool]:
    """('refunded' | 'released' | 'pending', tx, forfeited) for one round of the lease's job. A
    refund of the time after the last root, logged before this round's root with its index, is
    not this round's."""
    for s in view.settlements:
        if s.kind == "refund" and s.round_index == r.round_index and s.block_number > r.block_number:
            return "refunded", s.tx_hash, s.forfeited
    for s in view.settlements:
        if s.kind == "release" and s.from_round is not None and s.from_round <= r.round_index < s.to_round:
            return "released", s.tx_hash, False
    return "pending", None, False


def round_outs(view: LeaseView) -> list[RoundOut]:
    out = []
    for r in view.rounds:
        state, tx, forfeited = round_settlement(view, r)
        out.append(RoundOut(
            round_index=str(r.round_index), root=r.root, n_leaves=str(r.n_leaves), coordinator=r.coordinator,
            posted_at=r.posted_at, tx_hash=r.tx_hash, settlement=state, settlement_tx=tx, forfeited=forfeited,
            challenge_ids=[c.challenge_id for c in view.challenges.rows if c.round_index == r.round_index]))
    return out


def settlement_out(s: db.Settlement, rounds: list[db.Round]) -> SettlementOut:
    return SettlementOut(
        kind=s.kind, tx_hash=s.tx_hash, log_index=s.log_index, timestamp=s.timestamp,
        from_round=None if s.from_round is None else str(s.from_round),
        to_round=None if s.to_round is None else str(s.to_round),
        round_index=None if s.round_index is None else str(s.round_index), released_until=s.released_until,
        amount_base_units=str(s.amount), withheld_base_units=str(s.withheld), refund_base_units=str(s.refund),
        forfeited=s.forfeited, after_last_root=after_last_root(s, rounds))


def vote_out(v: db.Vote) -> VoteOut:
    return VoteOut(validator=v.validator, guilty=v.guilty, weight_base_units=str(v.weight),
                   reward_base_units=str(v.reward), voted_at=v.voted_at, tx_hash=v.tx_hash,
                   reward_tx=v.reward_tx)


def slash_out(s: db.Slash) -> SlashOut:
    return SlashOut(kind=s.kind, address=s.address, amount_base_units=str(s.amount), recipient=s.recipient,
                    slasher=s.slasher, cause=s.cause, cause_ref=s.cause_ref, timestamp=s.timestamp,
                    tx_hash=s.tx_hash)


def challenge_out(c: db.Challenge) -> ChallengeOut:
    money = {f"{part}_base_units": str(getattr(c, part)) for part in (
        "bond", "quorum", "guilty_stake", "innocent_stake", "slashed", "to_challenger", "to_tenant",
        "to_voters", "burned", "bond_to_provider", "bond_returned")}
    return ChallengeOut(
        challenge_id=c.challenge_id, job=c.job, round_index=str(c.round_index), lease_id=c.lease_id,
        provider=c.provider, challenger=c.challenger, status=c.status, guilty_votes=c.guilty_votes,
        innocent_votes=c.innocent_votes, deadline=c.deadline, opened_at=c.opened_at, opened_tx=c.opened_tx,
        answered_tx=c.answered_tx, resolved_at=c.resolved_at, resolved_tx=c.resolved_tx, **money)


def challenge_detail(view: ChallengeView) -> ChallengeDetail:
    return ChallengeDetail(**challenge_out(view.challenge).model_dump(),
                           votes=[vote_out(v) for v in view.votes.rows], votes_paging=paging_out(view.votes),
                           slashes=[slash_out(s) for s in view.slashes],
                           events=[event_out(ev) for ev in view.events.rows],
                           events_paging=paging_out(view.events),
                           verdict_events=[event_out(ev) for ev in view.verdict_events])


def hardware_case_out(h: db.HardwareCase) -> HardwareCaseOut:
    return HardwareCaseOut(provider=h.provider, epoch=h.epoch, status=h.status, reporters=h.reporters,
                           reported_base_units=str(h.reported), quorum_base_units=str(h.quorum),
                           slashed_base_units=str(h.slashed), first_at=h.first_at, first_tx=h.first_tx,
                           resolved_tx=h.resolved_tx)


def validator_out(v: db.Validator) -> ValidatorOut:
    return ValidatorOut(address=v.address, stake_base_units=str(v.stake),
                        unbonding_base_units=str(v.unbonding), withdrawn_base_units=str(v.withdrawn),
                        slashed_base_units=str(v.slashed), slashes=v.slashes, endpoint=v.endpoint,
                        locked_until=v.locked_until, votes=v.votes, hardware_reports=v.reports,
                        registered_at=v.registered_at, registered_tx=v.registered_tx)


def lease_detail(snap: Snapshot, view: LeaseView) -> LeaseDetail:
    ledger = lease_ledger(view, snap.as_of)
    challenges = [ChallengeDetail(**challenge_out(c).model_dump(),
                                  votes=[vote_out(v) for v in view.votes[c.challenge_id].rows],
                                  votes_paging=paging_out(view.votes[c.challenge_id]),
                                  slashes=[slash_out(s) for s in view.slashes[c.challenge_id]], events=[])
                  for c in view.challenges.rows]
    return LeaseDetail(**lease_out(snap, view.lease).model_dump(),
                       ledger=ledger_out(ledger) if ledger else None, rounds=round_outs(view),
                       settlements=[settlement_out(s, view.rounds) for s in view.settlement_page.rows],
                       settlements_paging=paging_out(view.settlement_page),
                       challenges=challenges, challenges_paging=paging_out(view.challenges),
                       events=[event_out(ev) for ev in view.events.rows],
                       events_paging=paging_out(view.events),
                       payments=[payment_out(p) for p in view.payments.rows],
                       payments_paging=paging_out(view.payments))
