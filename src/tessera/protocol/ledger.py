"""Where every token is: per lease and per contract, from event records alone (pure).

Every token flow of Tessera's contracts (src/tessera/contracts/*.vy), and the event that tells it:

PaymentToken (TUSD), all of it held by the Market (Settlement holds no tokens: it tells the
Market what to pay):
  in   tenant -> Market   OrderCreated.deposit (create_order), LeaseToppedUp.amount (top_up;
                          by the payer for an order paid by someone else)
  out  Market -> tenant   OrderCancelled.refund (cancel_order), LeaseClosed.refund (close_lease),
                          DowntimeClaimed.refund (claim_downtime),
                          RoundRefunded.refund (Settlement.release -> Market.refund_tenant: a
                          round proven to cheat, or `forfeited`, every round and the tail of a
                          lease once a cheat is proven for it; several per lease)
       Market -> provider Withdrawn.amount_to_provider (withdraw), LeaseClosed.provider_amount
       Market -> treasury Withdrawn.fee, LeaseClosed.fee (the Market keeps no fees)
  An order's deposit moves to its leases' budgets at accept_bid (LeaseCreated.budget): no
  transfer. PayReleased only moves pay from "held for Settlement" to "the provider's". An order
  paid by someone else (create_order_for, OrderSponsored) has its deposit from that payer and
  every refund above goes to it (also logged as Refunded), not to the tenant.
StakeToken (TSTK):
  ProviderRegistry  in: ProviderRegistered.stake, StakeAdded.amount; out: StakeWithdrawn.amount
                    (the unbonding bucket), Slashed.amount (to its recipient: the Market for
                    downtime, which burns it, Verification or HardwareReports, or whoever a
                    slasher names).
  Validators        the same: ValidatorRegistered, ValidatorStakeAdded, ValidatorStakeWithdrawn,
                    ValidatorSlashed.
  Verification      in: ChallengeOpened.bond, the registry's slash of a guilty provider; out at
                    ChallengeResolved: bond_returned + to_challenger, to_tenant, bond_to_provider,
                    burned (StakeToken.burn); it keeps to_voters until RewardClaimed.
  HardwareReports   in: the registry's slash; out: burned at HardwareSlashed, reward_pool as
                    HardwareRewardClaimed.
  Timelock, Uptime, Probes hold no tokens.
AgentBudget (TUSD; protocol/holdings.py, protocol/agent_payments.py):
  in   owner -> AgentBudget   Deposited.amount (deposit)
  out  AgentBudget -> owner   Withdrawn.amount (withdraw: the owner's way out, any time)
       AgentBudget -> payee   AgentPaid.amount (pay, signed by a grant's session key)
  An agent's x402 "exact" payment (EIP-3009) moves from its wallet to the payee and touches no
  Tessera contract: the PaymentToken's AuthorizationUsed and the Transfer after it.

`lease_ledgers` splits each lease's budget into what went out and what the Market still holds
for it, and says who can claim the rest; `lease_problems` words what does not add up. What each
contract holds against what parties can claim is protocol/holdings.py, built on these.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from tessera.protocol.events import EventRecord
from tessera.protocol.lease import accrued_at
from tessera.protocol.money import (
    PAYMENT_DECIMALS,
    PAYMENT_SYMBOL,
    STAKE_DECIMALS,
    STAKE_SYMBOL,
    show_amount,
)

TOKENS = {"PaymentToken": (PAYMENT_SYMBOL, PAYMENT_DECIMALS),
          "StakeToken": (STAKE_SYMBOL, STAKE_DECIMALS)}
ZERO = "0x0000000000000000000000000000000000000000"


@dataclass(frozen=True)
class Claim:
    """A part of what a contract holds, and who can take it out by which call."""
    kind: str      # "order deposit", "lease escrow", "settlement hold", "provider stake", ...
    party: str     # "tenant", "provider", "tenant or provider", "challenger", "voters", ...
    address: str   # the party's address ("" when several)
    amount: int    # base units of the holding's token
    call: str      # the call that pays it out, e.g. "Market.withdraw(3)"


@dataclass
class LeaseLedger:
    """One lease's budget, to the base unit: budget == provider_paid + fees + refunded +
    downtime_refunded + round_refunded + held + escrow (`adds_up`).

    `held` and `escrow` are what the contracts' rules say the lease may still hold (at `as_of`
    for an open lease), not a remainder, so a closed lease that holds more than its claims does
    not add up: `unaccounted` is the difference."""
    lease_id: int
    order_id: int = 0
    tenant: str = ""
    provider: str = ""
    verified: bool = False
    price_per_gpu_hour: int = 0
    gpus: int = 0
    start: int = 0
    fee_bps: int = 0
    budget: int = 0             # LeaseCreated.budget + LeaseToppedUp.amount
    provider_paid: int = 0      # net, to the provider: Withdrawn + LeaseClosed.provider_amount
    fees: int = 0               # to the treasury: Withdrawn.fee + LeaseClosed.fee
    refunded: int = 0           # LeaseClosed.refund, to the tenant
    downtime_refunded: int = 0  # DowntimeClaimed.refund, to the tenant
    round_refunded: int = 0     # Settlement RoundRefunded.refund, to the tenant
    forfeited_refunded: int = 0  # of round_refunded: the `forfeited` ones (a cheat proven in
                                 # another round of the lease; not a part of the sum)
    held: int = 0               # verified: pay streamed, not paid, not proven: Settlement's to release
    escrow: int = 0             # open lease: the rest of its escrow in the Market
    closed: bool = False
    closed_at: int | None = None
    downtime: int = 0           # gross pay of claimed downtime epochs (DowntimeClaimed.amount)
    released: int = 0           # verified: gross pay released to the provider (PayReleased.amount)
    proven: int = 0             # verified: gross pay withheld (PayReleased.withheld): rounds
                                # proven to cheat or forfeited
    as_of: int = 0
    claims: list[Claim] = field(default_factory=list)
    txs: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def paid_gross(self) -> int:
        return self.provider_paid + self.fees

    @property
    def out(self) -> int:
        """Everything the Market sent out for this lease."""
        return (self.paid_gross + self.refunded + self.downtime_refunded + self.round_refunded)

    @property
    def remaining(self) -> int:
        """What the Market still holds for this lease, by its events."""
        return self.budget - self.out

    @property
    def unaccounted(self) -> int:
        """Held for the lease beyond every claim on it (> 0: no way out; < 0: a shortfall)."""
        return self.remaining - self.held - self.escrow

    @property
    def adds_up(self) -> bool:
        return self.unaccounted == 0 and self.held >= 0 and self.escrow >= 0

    @property
    def all_txs(self) -> list[str]:
        return sorted({tx for txs in self.txs.values() for tx in txs})

    def to_json(self) -> dict:
        """JSON-safe: every amount as {"amount": "0.15 TUSD", "base_units": 150000}."""
        parts = ("budget", "provider_paid", "fees", "refunded", "downtime_refunded",
                 "round_refunded", "forfeited_refunded", "held", "escrow", "unaccounted",
                 "downtime", "released", "proven")
        return {"lease_id": self.lease_id, "order_id": self.order_id, "tenant": self.tenant,
                "provider": self.provider, "verified": self.verified, "closed": self.closed,
                "closed_at": self.closed_at, "as_of": self.as_of, "adds_up": self.adds_up,
                **{name: amount_json(getattr(self, name)) for name in parts},
                "claims": [{"kind": c.kind, "party": c.party, "address": c.address,
                            "call": c.call, **amount_json(c.amount)} for c in self.claims],
                "txs": {k: list(v) for k, v in self.txs.items()}}


def exact_amount(amount: int, token: str = "PaymentToken") -> str:
    """'2.2 TUSD', '-0.000001 TUSD', '1141 TSTK': exact, no separators (for JSON)."""
    symbol, decimals = TOKENS[token]
    whole, frac = divmod(abs(amount), 10**decimals)
    text = f"{whole}.{frac:0{decimals}d}".rstrip("0").rstrip(".")
    return f"{'-' if amount < 0 else ''}{text} {symbol}"


def amount_json(amount: int, token: str = "PaymentToken") -> dict:
    """An amount for JSON: exact decimal text with the symbol, and the base units named."""
    return {"amount": exact_amount(amount, token), "base_units": amount}


def amount_text(amount: int, token: str = "PaymentToken") -> str:
    """'2.2 TUSD (2200000 base units)': for a person, with the exact figure beside it."""
    symbol, decimals = TOKENS[token]
    return f"{show_amount(amount, decimals, symbol)} ({amount} base units)"


# ------------------------------------------------------------------ leases


def lease_ledgers(records: Iterable[EventRecord], as_of: int | None = None) -> dict[int, LeaseLedger]:
    """Every lease's ledger from the Market's and Settlement's events. `as_of` (default: the
    latest record's time; pass the indexed head's) splits an open lease's escrow between the
    provider and the tenant. For one lease's page, `records` may be just that lease's events
    (those with its `lease_id`) and its order's OrderCreated, which says whether it is verified."""
    records = sorted(records, key=lambda r: r.order)
    if as_of is None:
        as_of = max((r.timestamp for r in records), default=0)
    verified_orders: set[int] = set()
    leases: dict[int, LeaseLedger] = {}
    for r in records:
        a = r.args
        if r.contract == "Market":
            if r.event == "OrderCreated":
                if a.get("verified"):
                    verified_orders.add(int(a["order_id"]))
                continue
            if "lease_id" not in a or r.event == "ResultCommitted":
                continue
            lid = int(a["lease_id"])
            if r.event == "LeaseCreated":
                leases[lid] = LeaseLedger(
                    lid, order_id=int(a["order_id"]), tenant=a["tenant"], provider=a["provider"],
                    verified=int(a["order_id"]) in verified_orders,
                    price_per_gpu_hour=int(a["price_per_gpu_hour"]), gpus=int(a["gpus"]),
                    start=int(a["start"]), fee_bps=int(a["fee_bps"]), budget=int(a["budget"]))
                leases[lid].txs["budget"].append(r.tx_hash)
                continue
            lease = leases.get(lid)
            if lease is None:
                continue
            if r.event == "LeaseToppedUp":
                lease.budget += int(a["amount"])
                lease.txs["budget"].append(r.tx_hash)
            elif r.event == "Withdrawn":
                _pay(lease, r, int(a["amount_to_provider"]), int(a["fee"]))
            elif r.event == "LeaseClosed":
                _pay(lease, r, int(a["provider_amount"]), int(a["fee"]))
                lease.refunded += int(a["refund"])
                lease.closed, lease.closed_at = True, r.timestamp
                lease.txs["refunded"].append(r.tx_hash)
            elif r.event == "DowntimeClaimed":
                lease.downtime += int(a["amount"])
                lease.downtime_refunded += int(a["refund"])
                lease.txs["downtime_refunded"].append(r.tx_hash)
        elif r.contract == "Settlement" and r.event in ("PayReleased", "RoundRefunded"):
            lease = leases.get(int(a["lease_id"]))
            if lease is None:
                continue
            if r.event == "PayReleased":
                lease.released += int(a["amount"])
                lease.proven += int(a["withheld"])
                lease.txs["released"].append(r.tx_hash)
            else:   # one per round sent back (proven, or forfeited: a cheat proven elsewhere)
                lease.round_refunded += int(a["refund"])
                if a.get("forfeited", False):
                    lease.forfeited_refunded += int(a["refund"])
                lease.txs["round_refunded"].append(r.tx_hash)
    for lease in leases.values():
        _settle(lease, as_of)
    return leases


def _pay(lease: LeaseLedger, r: EventRecord, net: int, fee: int) -> None:
    lease.provider_paid += net
    lease.fees += fee
    if net:
        lease.txs["provider_paid"].append(r.tx_hash)
    if fee:
        lease.txs["fees"].append(r.tx_hash)


def _settle(lease: LeaseLedger, as_of: int) -> None:
    """Set `held`, `escrow` and `claims` by the contracts' rules (docs in the module's words):

    - unverified, open: the whole rest is escrow: the provider's pay for live time not yet
      withdrawn (Market.withdraw), the tenant's the rest (Market.close_lease);
    - unverified, closed: nothing (close_lease paid out everything; a later downtime claim
      refunds nothing);
    - verified: `held` is the pay streamed up to the close (or `as_of`) less paid, proven and
      claimed downtime: the provider's once released (Settlement.release, then
      Market.withdraw), the tenant's if its round is proven to cheat, all of it once a cheat
      is proven for the lease in any round (forfeited). Open: the rest is escrow,
      the tenant's at close_lease; closed: close_refund took the rest, so escrow is 0.
    """
    lease.as_of = as_of
    end = lease.closed_at if lease.closed else as_of
    streamed = accrued_at(lease.price_per_gpu_hour, lease.gpus, lease.budget, lease.start, end)
    remaining = lease.remaining
    lid, tenant, provider = lease.lease_id, lease.tenant, lease.provider
    claims: list[Claim] = []
    if not lease.verified:
        lease.held = 0
        lease.escrow = 0 if lease.closed else remaining
        if not lease.closed:
            earned = max(0, min(remaining, streamed - lease.downtime - lease.paid_gross))
            claims.append(Claim("lease escrow", "provider", provider, earned,
                                f"Market.withdraw({lid})"))
            claims.append(Claim("lease escrow", "tenant", tenant, remaining - earned,
                                f"Market.close_lease({lid})"))
    else:
        # Not capped by `remaining`: Settlement keeps refunds within `excess`, so an open lease
        # always holds this much; a lease that does not is a shortfall (escrow < 0).
        held = max(0, streamed - lease.proven - lease.downtime - lease.paid_gross)
        lease.held = held
        lease.escrow = 0 if lease.closed else remaining - held
        released = max(0, min(held, lease.released - lease.downtime - lease.paid_gross))
        claims.append(Claim("settlement hold", "provider", provider, released,
                            f"Market.withdraw({lid})"))
        claims.append(Claim("settlement hold", "tenant or provider", "", held - released,
                            f"Settlement.release({lid}, round), then Market.withdraw({lid}) "
                            "(final rounds) or a refund (rounds proven to cheat; every round "
                            "once a cheat is proven for the lease)"))
        if not lease.closed:
            claims.append(Claim("lease escrow", "tenant", tenant, lease.escrow,
                                f"Market.close_lease({lid})"))
    # A negative part (more paid out than the lease held) is no claim: it shows as the lease not
    # adding up, and as the Market's shortfall.
    lease.claims = [c for c in claims if c.amount > 0]


# ------------------------------------------------------------------ problems


def lease_problems(ledgers: dict[int, LeaseLedger]) -> list[str]:
    """One line per lease whose budget does not add up to what went out and what it may hold."""
    out = []
    for lid in sorted(ledgers):
        lease = ledgers[lid]
        if lease.adds_up:
            continue
        state = "closed" if lease.closed else "open"
        parts = (f"paid {lease.provider_paid} + fees {lease.fees} + refunded {lease.refunded} + "
                 f"downtime refunded {lease.downtime_refunded} + rounds refunded "
                 f"{lease.round_refunded} + held for Settlement {lease.held} + escrow {lease.escrow}")
        diff = lease.remaining - lease.held - max(lease.escrow, 0)
        if diff > 0:
            what = f"{amount_text(diff)} still in the Market for it that no call can pay out"
        else:
            what = (f"{amount_text(-diff)} more paid out than its budget allows (the rest of the "
                    "Market's escrow pays for it)")
        out.append(f"Market, TUSD, lease {lid} ({state}): budget {lease.budget} != {parts} "
                   f"(base units): {what}")
    return out
