"""The explorer's JSON API models: they define the answers of `/api/...` and make `/openapi.json`.

Every figure travels as a `FigureOut` (exact integer as decimal text in base units of its `unit`,
with the sorted tx hashes that make it up); definitions in docs/explorer.md.

Units: every amount outside a figure is a `*_base_units` field (exact integer as decimal text) on a
model that names its `token` and `decimals` (TUSD: 6, TSTK: 18); times are Unix seconds (UTC);
an event's `arg_units` names the unit of each of its args that has one.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL, STAKE_DECIMALS, STAKE_SYMBOL


class FigureOut(BaseModel):
    """One figure: an exact integer with the sorted hashes of the transactions that make it up."""

    name: str = Field(description="figure name, e.g. revenue.by_day.tenant_paid (docs/explorer.md)")
    key: str = Field(description="day, provider address, GPU model, day/model, or 'all'")
    value: str = Field(description="exact integer as decimal text, in base units of `unit` (may exceed 2^53)")
    unit: str = Field(description="TUSD or TSTK (token base units), GPU-seconds, seconds, bps or count")
    decimals: int = Field(description="the token's decimals (value / 10^decimals tokens); 0 for other units")
    txs: list[str] = Field(description="sorted tx hashes behind the figure: the first 100 (or "
                           "the requested page on /api/figure); `tx_count` counts them all")
    tx_count: int = Field(description="how many transactions make up the figure")


class RevenueRow(BaseModel):
    key: str
    tenant_paid: FigureOut
    provider_income: FigureOut
    protocol_fees: FigureOut


class UtilizationRow(BaseModel):
    key: str
    leased_gpu_seconds: FigureOut
    registered_gpu_seconds: FigureOut
    utilization: float | None = Field(description="leased / registered, for display only")


class PriceRow(BaseModel):
    model: str
    count: FigureOut
    min: FigureOut
    p25: FigureOut
    median: FigureOut
    p75: FigureOut
    max: FigureOut
    spread_base_units: str = Field(description="max - min of the price per GPU-hour, in TUSD base "
                                   "units (6 decimals; both parts are figures)")


class StakeOut(BaseModel):
    active: FigureOut
    unbonding: FigureOut
    slashed: FigureOut
    slashes_count: FigureOut
    slashes_amount: FigureOut
    jails_count: FigureOut


class LeaseTotals(BaseModel):
    total: FigureOut
    active: FigureOut
    active_gpus: FigureOut
    closed: FigureOut
    closed_refunds: FigureOut
    top_ups: FigureOut


class Units(BaseModel):
    payment_symbol: str = PAYMENT_SYMBOL
    payment_decimals: int = PAYMENT_DECIMALS
    stake_symbol: str = STAKE_SYMBOL
    stake_decimals: int = STAKE_DECIMALS


class UptimeOut(BaseModel):
    """Up epochs against epochs owed since registration, by their evidence (Uptime.is_up's rule,
    from logs: protocol/uptime_book.py, docs/uptime.md)."""

    epochs: FigureOut = Field(description="epochs owed since the registration's epoch: the final ones, "
                                          "and those not final already up by a heartbeat bit")
    up: FigureOut = Field(description="owed epochs that were up: heartbeats + claimed + reported")
    heartbeats: FigureOut = Field(description="up by the provider's Heartbeat transaction")
    claimed: FigureOut = Field(description="up by a receipt claim (BeatClaimed) a report left out")
    reported: FigureOut = Field(description="up by validators' liveness reports (final, not revoked)")
    revoked: FigureOut = Field(description="down: reported, but a resolved inclusion challenge "
                                           "revoked it (ChallengeResolved)")
    pending: FigureOut = Field(description="epochs not final yet and not up by a heartbeat bit: "
                                           "neither up nor down yet")
    bps: FigureOut | None = Field(description="up * 10000 // epochs; null while no epoch is owed")


class ReliabilityOut(BaseModel):
    """The reliability score (basis points) and the parts it is made of (docs/explorer.md)."""

    bps: FigureOut = Field(description="the score, 0..10000")
    uptime_bps: FigureOut = Field(description="up share of epochs owed, smoothed towards the prior")
    completion_bps: FigureOut = Field(description="finished share of decided leases, smoothed")
    tenure_bps: FigureOut = Field(description="age as a share of 90 days")
    penalty_bps: FigureOut = Field(description="subtracted for slashes and jailings")
    finished: FigureOut
    failed: FigureOut
    slashes: FigureOut
    jails: FigureOut
    age_seconds: FigureOut


class LivenessOut(BaseModel):
    """Validators' probes, reported outages and claimed downtime (docs/validators.md, docs/uptime.md)."""

    probes_answered: FigureOut = Field(description="probes answered, summed over validators' reports")
    probes_missed: FigureOut = Field(description="probes missed, as the validators posted them")
    outages: FigureOut = Field(description="outages reported (Uptime.report_outage), each a jailing")
    outage_epochs: FigureOut = Field(description="epochs those reports cover")
    downtime_epochs: FigureOut = Field(description="epochs of its leases claimed as downtime")
    downtime_forfeited: FigureOut = Field(description="pay for those epochs, payment base units")


class ProviderScore(BaseModel):
    address: str
    uptime: UptimeOut | None = Field(description="null on a network without the Uptime contract")
    liveness: LivenessOut
    reliability: ReliabilityOut


class DowntimeTotals(BaseModel):
    claims: FigureOut = Field(description="Market.claim_downtime transactions")
    epochs: FigureOut
    forfeited: FigureOut = Field(description="pay for the claimed epochs, payment base units")
    refunds: FigureOut = Field(description="refunded to tenants at once, payment base units")


class AgentPaymentsOut(BaseModel):
    """Agent payments to a registered provider (or to all of them): AgentBudget payments and
    x402 "exact" EIP-3009 transfers (docs/explorer.md, "Agent payments"). Self-payments are not
    excluded: `self_*` counts those from the payee's own address; payments through another
    address the provider controls cannot be told apart on chain."""

    count: FigureOut
    amount: FigureOut = Field(description="payment-token base units")
    payers: FigureOut = Field(description="distinct payers (budget owners, EIP-3009 authorizers)")
    self_count: FigureOut = Field(description="paid from the provider's own address")
    self_amount: FigureOut


class AgentTotals(AgentPaymentsOut):
    """Agent payments to registered providers, by scheme, and the AgentBudget's own money."""

    budget_count: FigureOut = Field(description="AgentBudget payments to providers (scheme 'budget')")
    budget_amount: FigureOut
    exact_count: FigureOut = Field(description="EIP-3009 transfers to providers (x402 'exact')")
    exact_amount: FigureOut
    deposits: FigureOut = Field(description="AgentBudget deposits (all owners)")
    withdrawals: FigureOut
    paid: FigureOut = Field(description="AgentBudget payments to any payee, providers or not")
    balance: FigureOut = Field(description="deposits - withdrawals - paid: what owners can withdraw")
    grants: FigureOut


class AgentPaymentOut(BaseModel):
    """One agent payment; `tx_hash`/`log_index` are the log that moved the money."""

    tx_hash: str
    log_index: int
    block_number: int
    timestamp: int
    scheme: str = Field(description="'budget' (AgentBudget.pay) or 'exact' (EIP-3009 transfer)")
    payer: str = Field(description="budget: the grant's owner; exact: the paying wallet")
    key: str = Field(description="budget: the session key that signed; exact: the paying wallet")
    payee: str
    grant_id: int | None
    nonce: str
    to_provider: bool = Field(description="the payee was a registered provider: agent revenue")
    self_paid: bool = Field(description="payer == payee")
    token: str = PAYMENT_SYMBOL
    decimals: int = PAYMENT_DECIMALS
    amount_base_units: str


REVENUE_INCLUDES = (
    "revenue: tenants' lease payouts from the Market (Withdrawn, LeaseClosed: provider income + "
    "protocol fees); agent_payments: AgentBudget payments and x402 'exact' EIP-3009 transfers to "
    "registered providers, counted beside lease revenue, not in it; self-payments not excluded")


class Overview(BaseModel):
    block: int = Field(description="last final block indexed: every figure is as of this block")
    block_hash: str | None
    as_of: int = Field(description="timestamp of that block")
    units: Units
    providers: FigureOut
    orders: FigureOut
    revenue: RevenueRow
    revenue_by_day: list[RevenueRow]
    utilization: UtilizationRow
    utilization_by_day: list[UtilizationRow]
    utilization_by_model: list[UtilizationRow]
    prices: list[PriceRow]
    stake: StakeOut
    leases: LeaseTotals
    downtime: DowntimeTotals
    agent_payments: AgentTotals
    revenue_includes: str = Field(REVENUE_INCLUDES, description="what `revenue` and "
                                  "`agent_payments` count")


class ProviderOut(BaseModel):
    address: str
    gpu_model: str = Field(description="'cpu-<arch>' for a provider without a GPU")
    is_cpu: bool = Field(description="a CPU provider: gpu_memory_mb is its system memory")
    gpu_count: int
    gpu_memory_mb: int
    endpoint: str
    token: str = Field(PAYMENT_SYMBOL, description="the token of price_floor_base_units")
    decimals: int = PAYMENT_DECIMALS
    price_floor_base_units: str = Field(description="offer's floor price per GPU-hour")
    registered_at: int
    registered_tx: str
    jailed_until: int
    locked_until: int = Field(description="its stake cannot be withdrawn before (StakeHeld)")
    stake_active: FigureOut
    stake_unbonding: FigureOut
    stake_slashed: FigureOut
    stake_withdrawn: FigureOut
    leases: FigureOut
    leases_active: FigureOut
    tenant_paid: FigureOut
    provider_income: FigureOut
    protocol_fees: FigureOut
    agent_payments: AgentPaymentsOut = Field(description="agent payments to it, beside lease revenue")
    uptime: UptimeOut | None = Field(description="null on a network without the Uptime contract")
    liveness: LivenessOut
    reliability: ReliabilityOut


class PaymentOut(BaseModel):
    tx_hash: str
    log_index: int
    block_number: int
    timestamp: int
    day: str
    kind: str
    lease_id: int
    provider: str
    token: str = PAYMENT_SYMBOL
    decimals: int = PAYMENT_DECIMALS
    provider_amount_base_units: str
    fee_base_units: str


class EventOut(BaseModel):
    block_number: int
    block_hash: str
    timestamp: int
    tx_hash: str
    log_index: int
    contract: str
    event: str
    args: dict = Field(description="decoded args: token amounts as exact decimal text in base units, other "
                                   "integers as numbers, bytes as 0x hex, addresses checksummed")
    arg_units: dict[str, str] = Field(description="the unit of each arg that has one: TUSD, TSTK or ETH "
                                                  "(base units), time (Unix seconds), seconds, bps")


class LeaseOut(BaseModel):
    lease_id: int
    order_id: int = Field(description="the Market order; for a verified lease also its Verification job")
    verified: bool
    tenant: str
    provider: str
    gpu_model: str
    token: str = PAYMENT_SYMBOL
    decimals: int = PAYMENT_DECIMALS
    price_per_gpu_hour_base_units: str
    gpus: int
    budget_base_units: str = Field(description="after every top-up")
    start: int
    exhausts_at: int = Field(description="first second at which earned reaches the budget")
    time_left_s: int | None = Field(description="seconds until exhausts_at for an active lease, else null")
    closed_at: int | None
    status: str = Field(description="'closed', 'exhausted' or 'active' as of the last indexed block")
    earned_base_units: str = Field(description="gross paid out of escrow so far (provider + fees)")
    provider_income_base_units: str
    fees_base_units: str
    refund_base_units: str = Field(description="LeaseClosed.refund")
    result_hash: str | None
    created_tx: str
    closed_tx: str | None


class EpochOut(BaseModel):
    epoch: int
    start: int = Field(description="timestamp at which the epoch starts")
    state: str = Field(description="heartbeat, claim or report (up, by that evidence), revoked or down "
                                   "(final, not up), pending (not final yet)")
    up: bool | None = Field(description="null while pending")
    tx: str | None = Field(description="the transaction its cell links to: the heartbeat or receipt claim, "
                                       "else the resolution that revoked it, else the first validator's "
                                       "report naming it (also while pending); null: no evidence")
    txs: list[str] = Field(description="every transaction of its evidence (heartbeat or claim, reports, "
                                       "the revoking resolution)")


class EpochStrip(BaseModel):
    """The provider's most recent epochs (up to 120) up to the block's, oldest first: what the uptime
    chart draws."""

    genesis: int
    epoch_length: int
    first_epoch: int = Field(description="the registration's epoch")
    last_epoch: int = Field(description="the epoch of the block (still running)")
    final_through: int = Field(description="the last final epoch: report_delay + 1 + answer_epochs "
                                           "epochs before the block's; later ones can still change")
    epochs: list[EpochOut]


class OutageOut(BaseModel):
    """One `OutageReported` event: the epochs without a heartbeat and the jail it set."""

    first_epoch: int
    last_epoch: int
    jailed_until: int
    reporter: str
    tx_hash: str
    timestamp: int


class Paging(BaseModel):
    """Which page of a list this answer holds: every list that anyone can grow (a lease's or a
    transaction's events, a provider's leases, a figure's transactions, ...) is paged, each by its
    own query parameter (`?page=`, `?leases=`, `?votes=`, ...), `size` rows a page."""

    page: int
    pages: int
    total: int = Field(description="rows in the whole list")
    size: int = Field(description="rows per page")


class TxOut(BaseModel):
    tx_hash: str
    events: list[EventOut] = Field(description="one page of its events, log order (`?page=N`)")
    paging: Paging
    agent_payments: list[AgentPaymentOut] = Field(
        default_factory=list, description="the agent payments this transaction made")


class FigureTxs(BaseModel):
    figure: FigureOut = Field(description="the figure; its `txs` here are one page (`?page=N`) of them")
    txs_paging: Paging
    block: int
