"""Where every token is: per lease and per contract, from event records alone (pure).

Every token flow of Tessera's contracts (src/tessera/contracts/*.vy), and the event that tells it:

PaymentToken (TUSD), all of it held by the Market (Settlement holds no tokens: it tells the
Market what to pay):
  in   tenant -> Market   OrderCreated.deposit (create_order), LeaseToppedUp.amount (top_up)
  out  Market -> tenant   OrderCancelled.refund (cancel_order), LeaseClosed.refund (close_lease),
                          DowntimeClaimed.refund (claim_downtime),
                          RoundRefunded.refund (Settlement.release -> Market.refund_tenant)
       Market -> provider Withdrawn.amount_to_provider (withdraw), LeaseClosed.provider_amount
       Market -> treasury Withdrawn.fee, LeaseClosed.fee (the Market keeps no fees)
  An order's deposit moves to its leases' budgets at accept_bid (LeaseCreated.budget): no
  transfer. PayReleased only moves pay from "held for Settlement" to "the provider's".
StakeToken (TSTK):
  ProviderRegistry  in: ProviderRegistered.stake, StakeAdded.amount; out: StakeWithdrawn.amount
                    (the unbonding bucket), Slashed.amount (to its recipient: the tenant for
                    downtime, Verification or HardwareReports, or whoever a slasher names).
  Validators        the same: ValidatorRegistered, ValidatorStakeAdded, ValidatorStakeWithdrawn,
                    ValidatorSlashed.
  Verification      in: ChallengeOpened.bond, the registry's slash of a guilty provider; out at
                    ChallengeResolved: bond_returned + to_challenger, to_tenant, bond_to_provider,
                    burned (StakeToken.burn); it keeps to_voters until RewardClaimed.
  HardwareReports   in: the registry's slash; out: burned at HardwareSlashed, reward_pool as
                    HardwareRewardClaimed.
  Timelock, Uptime, Probes hold no tokens.

`lease_ledgers` splits each lease's budget into what went out and what the Market still holds
for it, and says who can claim the rest; `holdings` sets what each contract holds by the tokens'
Transfer logs (`held`) against what the contracts' own events say parties can claim (`owed`):
`surplus` > 0 is money with no way out, < 0 a shortfall. `problems` words both for the audit.
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
    held: int = 0               # verified: pay streamed, not paid, not proven: Settlement's to release
    escrow: int = 0             # open lease: the rest of its escrow in the Market
    closed: bool = False
    closed_at: int | None = None
    downtime: int = 0           # gross pay of claimed downtime epochs (DowntimeClaimed.amount)
    released: int = 0           # verified: gross pay released to the provider (PayReleased.amount)
    proven: int = 0             # verified: gross pay of rounds proven to cheat (PayReleased.withheld)
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
                 "round_refunded", "held", "escrow", "unaccounted", "downtime", "released",
                 "proven")
        return {"lease_id": self.lease_id, "order_id": self.order_id, "tenant": self.tenant,
                "provider": self.provider, "verified": self.verified, "closed": self.closed,
                "closed_at": self.closed_at, "as_of": self.as_of, "adds_up": self.adds_up,
                **{name: amount_json(getattr(self, name)) for name in parts},
                "claims": [{"kind": c.kind, "party": c.party, "address": c.address,
                            "call": c.call, **amount_json(c.amount)} for c in self.claims],
                "txs": {k: list(v) for k, v in self.txs.items()}}


@dataclass
class Holding:
    """What one contract holds of one token: by the token's Transfer logs (`held`) and by the
    contracts' own events (`owed`: the sum of `claims`)."""
    contract: str
    address: str
    token: str                  # "PaymentToken" or "StakeToken"
    held: int = 0
    claims: list[Claim] = field(default_factory=list)
    transfers: int = 0          # Transfer logs in or out
    # Plain transfers in: into the contract in a transaction where the contract itself emitted
    # no event (a holder's `transfer`, not a protocol call). Listed so that a person can tell a
    # donation (anyone can strand 1 base unit for the price of a transfer) from a stranding bug.
    unsolicited: int = 0
    unsolicited_txs: list[str] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        return TOKENS[self.token][0]

    @property
    def decimals(self) -> int:
        return TOKENS[self.token][1]

    @property
    def owed(self) -> int:
        return sum(c.amount for c in self.claims)

    @property
    def surplus(self) -> int:
        """held - owed: > 0 is money no call can pay out, < 0 claims the tokens do not cover."""
        return self.held - self.owed

    def breakdown(self) -> dict[str, int]:
        """owed by kind of claim."""
        out: dict[str, int] = defaultdict(int)
        for c in self.claims:
            out[c.kind] += c.amount
        return dict(out)

    def show(self, amount: int) -> str:
        return amount_text(amount, self.token)

    def to_json(self) -> dict:
        """JSON-safe: every amount as {"amount": "2.2 TUSD", "base_units": 2200000}."""
        t = self.token
        return {"contract": self.contract, "address": self.address, "token": t,
                "symbol": self.symbol, "decimals": self.decimals, "transfers": self.transfers,
                "held": amount_json(self.held, t), "owed": amount_json(self.owed, t),
                "surplus": amount_json(self.surplus, t),
                "unsolicited": amount_json(self.unsolicited, t),
                "unsolicited_txs": list(self.unsolicited_txs),
                "owed_by_kind": {k: amount_json(v, t) for k, v in sorted(self.breakdown().items())}}


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
            else:
                lease.round_refunded += int(a["refund"])
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
      Market.withdraw), the tenant's if its round is proven to cheat. Open: the rest is escrow,
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
                            "(final rounds) or a refund (rounds proven to cheat)"))
        if not lease.closed:
            claims.append(Claim("lease escrow", "tenant", tenant, lease.escrow,
                                f"Market.close_lease({lid})"))
    # A negative part (more paid out than the lease held) is no claim: it shows as the lease not
    # adding up, and as the Market's shortfall.
    lease.claims = [c for c in claims if c.amount > 0]


# ------------------------------------------------------------------ contracts


def holdings(records: Iterable[EventRecord], addresses: dict[str, str],
             as_of: int | None = None,
             ledgers: dict[int, LeaseLedger] | None = None) -> list[Holding]:
    """What every contract in `addresses` ({contract name: address}) holds of each token, by
    the tokens' Transfer logs, against what its events say parties can claim. One Holding per
    (contract, token), tokens' own addresses included (tokens sent there have no way out)."""
    records = sorted(records, key=lambda r: r.order)
    if ledgers is None:
        ledgers = lease_ledgers(records, as_of)
    by_address = {addr.lower(): name for name, addr in addresses.items()}
    rows = {(name, token): Holding(name, addr, token)
            for name, addr in addresses.items() for token in TOKENS}
    emitted = {(r.tx_hash, r.contract) for r in records}      # which contracts acted in a tx
    for r in records:
        if r.event != "Transfer" or r.contract not in TOKENS:
            continue
        value = int(r.args["value"])
        for side, sign in (("sender", -1), ("receiver", 1)):
            name = by_address.get(str(r.args[side]).lower())
            if name is not None:
                row = rows[(name, r.contract)]
                row.held += sign * value
                row.transfers += 1
                if sign > 0 and value and (r.tx_hash, name) not in emitted:
                    row.unsolicited += value
                    row.unsolicited_txs.append(r.tx_hash)
    claims = _claims(records, ledgers)
    for (name, token), found in claims.items():
        if (name, token) in rows:
            rows[(name, token)].claims = found
    return list(rows.values())


def _claims(records: list[EventRecord],
            ledgers: dict[int, LeaseLedger]) -> dict[tuple[str, str], list[Claim]]:
    """Every claim on every contract, from its own events (Transfer logs not used)."""
    orders: dict[int, list] = {}                       # id -> [tenant, deposit, allocated, open]
    stakes = {"ProviderRegistry": defaultdict(lambda: [0, 0]),   # who -> [stake, unbonding]
              "Validators": defaultdict(lambda: [0, 0])}
    bonds: dict[int, tuple[str, int]] = {}             # open challenge -> (challenger, bond)
    pools: dict[int, int] = {}                          # decided challenge -> voter pool left
    rewards: dict[tuple[str, int], int] = {}            # hardware (provider, epoch) -> pool left
    staking = {("ProviderRegistry", "ProviderRegistered"): ("provider", "stake", "add"),
               ("ProviderRegistry", "StakeAdded"): ("provider", "amount", "add"),
               ("ProviderRegistry", "UnbondRequested"): ("provider", "amount", "unbond"),
               ("ProviderRegistry", "StakeWithdrawn"): ("provider", "amount", "withdraw"),
               ("ProviderRegistry", "Slashed"): ("provider", "amount", "slash"),
               ("Validators", "ValidatorRegistered"): ("validator", "stake", "add"),
               ("Validators", "ValidatorStakeAdded"): ("validator", "amount", "add"),
               ("Validators", "ValidatorUnbondRequested"): ("validator", "amount", "unbond"),
               ("Validators", "ValidatorStakeWithdrawn"): ("validator", "amount", "withdraw"),
               ("Validators", "ValidatorSlashed"): ("validator", "amount", "slash")}
    for r in records:
        a = r.args
        key = (r.contract, r.event)
        if key in staking:
            who_field, amount_field, action = staking[key]
            bucket = stakes[r.contract][a[who_field]]
            amount = int(a[amount_field])
            if action == "add":
                bucket[0] += amount
            elif action == "unbond":
                bucket[0] -= amount
                bucket[1] += amount
            elif action == "withdraw":
                bucket[1] -= amount
            else:                                    # active stake first, then unbonding
                from_stake = min(amount, max(bucket[0], 0))
                bucket[0] -= from_stake
                bucket[1] -= amount - from_stake
        elif key == ("Market", "OrderCreated"):
            orders[int(a["order_id"])] = [a["tenant"], int(a["deposit"]), 0, True]
        elif key == ("Market", "LeaseCreated") and int(a["order_id"]) in orders:
            orders[int(a["order_id"])][2] += int(a["budget"])
        elif key == ("Market", "OrderCancelled") and int(a["order_id"]) in orders:
            orders[int(a["order_id"])][3] = False
        elif key == ("Verification", "ChallengeOpened"):
            bonds[int(a["challenge_id"])] = (a["challenger"], int(a["bond"]))
        elif key == ("Verification", "ChallengeResolved"):
            bonds.pop(int(a["challenge_id"]), None)
            pools[int(a["challenge_id"])] = int(a["to_voters"])
        elif key == ("Verification", "RewardClaimed"):
            pools[int(a["challenge_id"])] = pools.get(int(a["challenge_id"]), 0) - int(a["amount"])
        elif key == ("HardwareReports", "HardwareSlashed"):
            rewards[(a["provider"], int(a["epoch"]))] = int(a["reward_pool"])
        elif key == ("HardwareReports", "HardwareRewardClaimed"):
            k = (a["provider"], int(a["epoch"]))
            rewards[k] = rewards.get(k, 0) - int(a["amount"])

    out: dict[tuple[str, str], list[Claim]] = defaultdict(list)
    market = out[("Market", "PaymentToken")]
    for oid, (tenant, deposit, allocated, is_open) in sorted(orders.items()):
        if is_open and deposit != allocated:
            market.append(Claim("order deposit", "tenant", tenant, deposit - allocated,
                                f"Market.cancel_order({oid})"))
    for lid in sorted(ledgers):
        market.extend(ledgers[lid].claims)
    for contract, who in (("ProviderRegistry", "provider"), ("Validators", "validator")):
        found = out[(contract, "StakeToken")]
        for address, (stake, unbonding) in sorted(stakes[contract].items()):
            if stake:
                found.append(Claim(f"{who} stake", who, address, stake,
                                   f"{contract}.request_unbond, then withdraw_unbonded"))
            if unbonding:
                found.append(Claim(f"{who} unbonding", who, address, unbonding,
                                   f"{contract}.withdraw_unbonded (after the unbonding period)"))
    verification = out[("Verification", "StakeToken")]
    for cid, (challenger, bond) in sorted(bonds.items()):
        verification.append(Claim("challenge bond", "challenger (or provider, if rejected)",
                                  challenger, bond, f"Verification.resolve({cid})"))
    for cid, pool in sorted(pools.items()):
        if pool:
            verification.append(Claim("voter rewards", "winning voters", "", pool,
                                      f"Verification.claim_reward({cid})"))
    hardware = out[("HardwareReports", "StakeToken")]
    for (provider, epoch), pool in sorted(rewards.items()):
        if pool:
            hardware.append(Claim("hardware rewards", "reporters", "", pool,
                                  f"HardwareReports.claim({provider}, {epoch})"))
    return out


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


def holding_problems(rows: Iterable[Holding],
                     accepted: dict[tuple[str, str], int] | None = None) -> list[str]:
    """One line per contract and token whose holdings differ from what parties can claim.

    `accepted` ({(contract, token symbol): base units}) is stuck money a person has looked at and
    accepted (a donation nobody can undo): a surplus of exactly that is not a problem, any other
    surplus still is, so a later stranding is still caught."""
    accepted = accepted or {}
    out = []
    for h in rows:
        known = accepted.get((h.contract, h.symbol), 0)
        if h.surplus > 0 and h.surplus != known:
            claimable = (f"parties can claim only {h.show(h.owed)}" if h.owed
                         else "no party can claim any of it")
            line = (f"{h.contract} ({h.address}) holds {h.show(h.held)} but {claimable}: "
                    f"{h.show(h.surplus)} has no way out")
            if known:
                line += f" ({h.show(known)} of it accepted as stuck)"
            if h.unsolicited:
                txs = ", ".join(h.unsolicited_txs[:3]) + (" ..." if len(h.unsolicited_txs) > 3 else "")
                line += (f"; {h.show(h.unsolicited)} came in by plain transfers, not protocol calls "
                         f"(tx {txs}): once checked, accept it with --accept-stuck "
                         f"{h.contract}:{h.symbol}:{exact_amount(h.surplus, h.token).split()[0]}")
            out.append(line)
        elif h.surplus < 0:
            out.append(f"{h.contract} ({h.address}) holds {h.show(h.held)} but owes "
                       f"{h.show(h.owed)}: a shortfall of {h.show(-h.surplus)}")
        elif known and h.surplus == 0:
            out.append(f"{h.contract}: {h.show(known)} accepted as stuck, but it holds no stuck "
                       f"{h.symbol}: the acceptance is out of date")
    for (contract, symbol), _ in accepted.items():
        if not any(h.contract == contract and h.symbol == symbol for h in rows):
            out.append(f"--accept-stuck names {contract}:{symbol}, which the audit does not hold")
    return out
