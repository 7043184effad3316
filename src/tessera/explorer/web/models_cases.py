"""API models of verification, settlement, validators, hardware reports and slashes, and the
detail and list answers that hold them (the rest is in `models.py`; units are named the same way:
`*_base_units` with the model's `token` and `decimals`, times in Unix seconds)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tessera.explorer.web.models import (
    AgentPaymentOut,
    EpochStrip,
    EventOut,
    LeaseOut,
    OutageOut,
    Paging,
    PaymentOut,
    ProviderOut,
)
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL, STAKE_DECIMALS, STAKE_SYMBOL


class RoundOut(BaseModel):
    """A round root of the lease's job (Verification `RootPosted`) and what became of its pay."""

    round_index: str = Field(description="decimal text: the tenant chooses it (uint256)")
    root: str
    n_leaves: str
    coordinator: str
    posted_at: int
    tx_hash: str
    settlement: str = Field(description="for this lease: 'released', 'refunded' (proven to cheat, "
                                        "or forfeited) or 'pending'")
    settlement_tx: str | None
    forfeited: bool = Field(False, description="refunded though not itself proven: a cheat was proven "
                                               "for the lease in another round, so Settlement "
                                               "releases none of its pay still held")
    challenge_ids: list[int]


class SettlementOut(BaseModel):
    """A Settlement event of the lease: `release` (PayReleased) or `refund` (RoundRefunded)."""

    kind: str
    tx_hash: str
    log_index: int
    timestamp: int
    from_round: str | None = Field(description="release: the first round walked")
    to_round: str | None = Field(description="release: the first round not walked")
    round_index: str | None = Field(description="refund: the round whose pay went back to the tenant "
                                                "(with `after_last_root`: the rounds then posted)")
    released_until: int | None
    token: str = PAYMENT_SYMBOL
    decimals: int = PAYMENT_DECIMALS
    amount_base_units: str = Field(description="release: gross pay released; refund: the round's gross pay")
    withheld_base_units: str
    refund_base_units: str = Field(description="sent back to the tenant now")
    forfeited: bool = Field(False, description="refund: the round was not itself proven to cheat, but "
                                               "a cheat was proven for the lease in another round "
                                               "(Verification.cheated): none of its pay still held is "
                                               "released; false for a proven round and a release")
    after_last_root: bool = Field(False, description="refund: the pay for the time after the job's "
                                                     "last root (always forfeited)")


class ClaimOut(BaseModel):
    kind: str
    party: str
    address: str
    amount_base_units: str
    call: str = Field(description="the call that pays it out")


class LedgerOut(BaseModel):
    """The lease's budget to the base unit (protocol/ledger.py): budget = provider_paid + fees +
    refunded + downtime_refunded + round_refunded + held + escrow when `adds_up`."""

    token: str = PAYMENT_SYMBOL
    decimals: int = PAYMENT_DECIMALS
    budget_base_units: str
    provider_paid_base_units: str
    fees_base_units: str
    refunded_base_units: str
    downtime_refunded_base_units: str
    round_refunded_base_units: str
    held_base_units: str = Field(description="verified: streamed pay Settlement has yet to release or refund")
    escrow_base_units: str = Field(description="open lease: the rest of its escrow in the Market")
    unaccounted_base_units: str = Field(description="budget less all of the above: 0 when it adds up")
    adds_up: bool
    as_of: int
    claims: list[ClaimOut]


class VoteOut(BaseModel):
    validator: str
    guilty: bool
    token: str = STAKE_SYMBOL
    decimals: int = STAKE_DECIMALS
    weight_base_units: str = Field(description="the voter's stake at the challenge's snapshot block")
    reward_base_units: str = Field(description="claimed reward (RewardClaimed)")
    voted_at: int
    tx_hash: str
    reward_tx: str | None


class SlashOut(BaseModel):
    """A `Slashed` (provider) or `ValidatorSlashed` event and its cause in the same transaction."""

    kind: str = Field(description="provider or validator")
    address: str
    token: str = STAKE_SYMBOL
    decimals: int = STAKE_DECIMALS
    amount_base_units: str
    recipient: str
    slasher: str
    cause: str = Field(description="challenge, hardware, downtime, liveness (an unanswered Uptime "
                                   "inclusion challenge) or direct (a slasher's own call)")
    cause_ref: str | None = Field(description="challenge id, '<provider>/<epoch>', lease id or Uptime "
                                              "challenge id")
    timestamp: int
    tx_hash: str


class ChallengeOut(BaseModel):
    challenge_id: int
    job: int
    round_index: str
    lease_id: int
    provider: str
    challenger: str
    status: str = Field(description="open, upheld (guilty), rejected (innocent) or expired (no quorum)")
    token: str = STAKE_SYMBOL
    decimals: int = STAKE_DECIMALS
    bond_base_units: str
    quorum_base_units: str = Field(description="stake weight a verdict needs")
    guilty_votes: int
    innocent_votes: int
    guilty_stake_base_units: str
    innocent_stake_base_units: str
    slashed_base_units: str
    to_challenger_base_units: str
    to_tenant_base_units: str
    to_voters_base_units: str
    burned_base_units: str
    bond_to_provider_base_units: str
    bond_returned_base_units: str
    deadline: int
    opened_at: int
    opened_tx: str
    answered_tx: str | None
    resolved_at: int | None
    resolved_tx: str | None


class ChallengeDetail(ChallengeOut):
    votes: list[VoteOut] = Field(description="one page of its votes (`?votes=N`)")
    votes_paging: Paging
    slashes: list[SlashOut]
    events: list[EventOut] = Field(description="one page of its Verification events, chain order "
                                               "(`?page=N`); empty inside a lease's answer")
    events_paging: Paging | None = None
    verdict_events: list[EventOut] = Field(
        default_factory=list, description="the registry's events (slash, jail) in the verdict's transaction")


class HardwareCaseOut(BaseModel):
    provider: str
    epoch: int
    status: str = Field(description="open, pending (quorum reached), disputed, slashed or cleared")
    reporters: int
    token: str = STAKE_SYMBOL
    decimals: int = STAKE_DECIMALS
    reported_base_units: str
    quorum_base_units: str
    slashed_base_units: str
    first_at: int
    first_tx: str
    resolved_tx: str | None


class ValidatorOut(BaseModel):
    address: str
    token: str = STAKE_SYMBOL
    decimals: int = STAKE_DECIMALS
    stake_base_units: str
    unbonding_base_units: str
    withdrawn_base_units: str
    slashed_base_units: str
    slashes: int
    endpoint: str
    locked_until: int
    votes: int
    hardware_reports: int
    registered_at: int
    registered_tx: str


class LivenessNamedOut(BaseModel):
    """A provider an inclusion challenge names, and whether its beat signature was shown."""

    registry_index: int
    provider: str | None = Field(description="null: an index no indexed registration has")
    answered_by: str | None = Field(description="who showed its beat on this challenge (null: nobody)")
    answered_tx: str | None
    to_answerer_base_units: str = Field(description="of the bond, to `answered_by` for this beat")
    shown_on_challenge: int | None = Field(
        description="another challenge of the same epoch on which its beat was shown (it then counts "
                    "as answered here too, without pay); null if none")


class LivenessChallengeOut(BaseModel):
    """An Uptime inclusion challenge: someone bonded that a validator's liveness report named a set
    of providers without holding their beat signatures (docs/uptime.md). Each beat shown in time
    pays its shower the answer fee from the bond; each one never shown costs the validator a slash;
    the rest of the bond goes back to the challenger whatever the outcome."""

    challenge_id: int
    validator: str
    epoch: str
    challenger: str
    status: str = Field(description="open (answer by the end of `answer_by_epoch`), answered (every "
                                    "named beat shown, here or on another challenge: the reports stand) "
                                    "or resolved (`unanswered` beats not shown: validator slashed, "
                                    "those reported bits revoked)")
    answer_by_epoch: str
    named_count: int
    named: list[LivenessNamedOut] = Field(
        description="named providers in registry order (on a provider's page: that provider), at most "
                    "20; `named_more` are left out")
    named_more: int
    answered: int = Field(description="beats shown on this challenge")
    unanswered: int = Field(description="named beats never shown (once resolved)")
    token: str = STAKE_SYMBOL
    decimals: int = STAKE_DECIMALS
    bond_base_units: str
    paid_base_units: str = Field(description="of the bond, to answerers (the answer fee per beat shown)")
    bond_returned_base_units: str = Field(description="the rest of the bond (bond - paid), back to the "
                                                      "challenger in either outcome (once settled)")
    slashed_base_units: str
    to_challenger_base_units: str = Field(description="the challenger's share of the slash")
    burned_base_units: str = Field(description="the rest of the slash, burned")
    opened_at: int
    opened_tx: str
    resolved_at: int | None
    resolved_tx: str | None = Field(description="the ChallengeResolved (for an answered one, the last "
                                                "answer's transaction or resolve_challenge's)")


class LivenessReportOut(BaseModel):
    """One `LivenessReported`: the registry indices whose beats the validator held for an epoch."""

    validator: str
    epoch: int
    providers_named: int = Field(description="bits set in its words")
    words_hash: str
    block_number: int
    timestamp: int
    tx_hash: str


class ValidatorDetail(ValidatorOut):
    vote_list: list[VoteOut] = Field(description="one page of its votes, newest first (`?votes=N`)")
    votes_paging: Paging
    slash_list: list[SlashOut] = Field(description="one page of its slashes, newest first (`?slashes=N`)")
    slashes_paging: Paging
    liveness_reports: list[LivenessReportOut] = Field(
        description="one page of its liveness reports, newest first (`?reports=N`)")
    reports_paging: Paging
    liveness_challenges: list[LivenessChallengeOut] = Field(
        description="one page of the inclusion challenges against its reports, newest first (`?liveness=N`)")
    liveness_paging: Paging


class LeaseDetail(LeaseOut):
    ledger: LedgerOut | None = Field(description="null only when the lease's events are incomplete; "
                                                 "from every money event of the lease, whatever the page")
    rounds: list[RoundOut]
    settlements: list[SettlementOut] = Field(description="one page, chain order (`?settlements=N`)")
    settlements_paging: Paging
    challenges: list[ChallengeDetail] = Field(description="one page (`?challenges=N`), each with the "
                                                          "first page of its votes")
    challenges_paging: Paging
    events: list[EventOut] = Field(description="one page of the lease's events, chain order (`?page=N`)")
    events_paging: Paging
    payments: list[PaymentOut] = Field(description="one page, chain order (`?payments=N`)")
    payments_paging: Paging


class ProviderDetail(ProviderOut):
    lease_list: list[LeaseOut] = Field(description="one page, newest first (`?leases=N`)")
    leases_paging: Paging
    payments: list[PaymentOut] = Field(description="one page, newest first (`?payments=N`)")
    payments_paging: Paging
    agent_payment_list: list[AgentPaymentOut] = Field(
        description="agent payments to it, one page, newest first (`?agent_payments=N`)")
    agent_payments_paging: Paging
    outage_reports: list[OutageOut] = Field(description="the latest (at most a page), oldest first")
    recent_epochs: EpochStrip | None = Field(description="null without the Uptime contract")
    liveness_challenges: list[LivenessChallengeOut] = Field(
        description="inclusion challenges of reports naming it, one page, newest first (`?liveness=N`)")
    liveness_paging: Paging
    slashes: list[SlashOut] = Field(description="one page, newest first (`?slashes=N`)")
    slashes_paging: Paging
    challenges: list[ChallengeOut] = Field(description="one page, newest first (`?challenges=N`)")
    challenges_paging: Paging
    hardware_cases: list[HardwareCaseOut] = Field(description="one page, newest epoch first (`?cases=N`)")
    cases_paging: Paging


class Page(BaseModel):
    page: int
    pages: int
    total: int


class LeasePage(Page):
    leases: list[LeaseOut] = Field(description="newest first")


class ProviderPage(Page):
    providers: list[ProviderOut] = Field(
        description="in registration order, each with its offer, stake, earnings, uptime, "
                    "probes, outages, downtime and reliability")


class ChallengePage(Page):
    challenges: list[ChallengeOut] = Field(description="newest first")
