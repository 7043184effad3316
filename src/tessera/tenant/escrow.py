"""A lease's escrow over time, for the tenant: how long each lease has left, a warning before one
runs out, and top-ups, by hand (`tessera job top-up`) or automatic with a ceiling while a job is
followed (job spec `[escrow]`, protocol/jobspec.EscrowSpec).

Time left is one rule: a lease's stream reaches its budget at `protocol.lease.exhausted_at`
(what Market.vy pays by), measured against the chain's clock (the latest block's timestamp),
not this machine's. After that second the provider earns nothing more and `Market.top_up` refuses
("lease exhausted"), so a top-up must come before it: the watch tops up once a lease has less
than `top_up_when_left` left.

The ceiling is counted from the chain, not from this process's memory: before every automatic
top-up the watch sums the `LeaseToppedUp` events of the job's leases (top-ups by hand included),
and tops up at most what is left under the ceiling. A tenant process that restarts, or a second
one following the same job, cannot take the total past it (two racing at the very same moment
could each add one top-up; the ceiling bounds what either sees before it sends).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tessera.chain.market import Lease
from tessera.errors import BridgeError, ChainError, TenantError
from tessera.protocol.figures import format_time
from tessera.protocol.jobspec import EscrowSpec
from tessera.protocol.lease import exhausted_at
from tessera.protocol.money import (
    PAYMENT_DECIMALS,
    PAYMENT_SYMBOL,
    parse_duration,
    parse_payment,
)
from tessera.tenant.bidding import money
from tessera.tenant.client import Tenant

# The watch reads the chain at most this often while a job is followed (the follow loop polls
# its provider every 0.5 s; escrow moves by the hour).
CHECK_EVERY_S = 10.0


@dataclass(frozen=True)
class LeaseTime:
    """Where a lease's escrow stands at chain time `now`."""

    lease_id: int
    provider: str
    budget: int
    rate: int                 # price per GPU-hour x GPUs: base units per hour
    start: int
    runs_out_at: int          # protocol.lease.exhausted_at: the stream reaches the budget
    closed_at: int            # 0 while open
    now: int

    @property
    def is_open(self) -> bool:
        return self.closed_at == 0

    @property
    def left_s(self) -> int:
        """Seconds until the escrow runs out; 0 once it has, or the lease is closed."""
        return max(self.runs_out_at - self.now, 0) if self.is_open else 0

    @property
    def state(self) -> str:
        if not self.is_open:
            return "closed"
        return "open" if self.left_s > 0 else "ran out"

    def runs_out_within(self, seconds: int) -> bool:
        """An open lease whose escrow runs out within `seconds` (or already has)."""
        return self.is_open and self.left_s <= seconds

    def to_json(self) -> dict:
        """JSON for `--json`: money in base units (named), times in Unix seconds (named)."""
        return {"lease_id": self.lease_id, "provider": self.provider, "state": self.state,
                "budget_base_units": self.budget, "rate_base_units_per_hour": self.rate,
                "token": PAYMENT_SYMBOL, "decimals": PAYMENT_DECIMALS,
                "start_unix": self.start, "runs_out_at_unix": self.runs_out_at,
                "closed_at_unix": self.closed_at or None, "left_s": self.left_s,
                "chain_time_unix": self.now}


def lease_time(lease: Lease, now: int) -> LeaseTime:
    return LeaseTime(lease.lease_id, lease.provider, lease.budget,
                     lease.price_per_gpu_hour * lease.gpus, lease.start,
                     exhausted_at(lease.start, lease.budget, lease.price_per_gpu_hour, lease.gpus),
                     lease.closed_at, now)


def duration_text(seconds: int) -> str:
    """'2d 03h', '1h 04m', '12m 30s', '45s': two units at most, for a person."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if seconds >= size or parts:
            parts.append(f"{seconds // size:0{2 if parts else 1}d}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def left_text(t: LeaseTime) -> str:
    """What a person reads about a lease's time: left and when it runs out, or that it ended."""
    if not t.is_open:
        return f"closed at {format_time(t.closed_at)}"
    if t.left_s == 0:
        return f"escrow ran out at {format_time(t.runs_out_at)} (the provider earns no more)"
    return f"{duration_text(t.left_s)} left (runs out at {format_time(t.runs_out_at)})"


def warning_text(t: LeaseTime, pay_from_chain: int | None = None) -> str:
    """`pay_from_chain`: the lease's order was funded from that peer chain (its top-ups too)."""
    peer = f" --pay-from-chain {pay_from_chain}" if pay_from_chain else ""
    return (f"lease {t.lease_id} runs out of escrow in {duration_text(t.left_s)} "
            f"(at {format_time(t.runs_out_at)}): `tessera job top-up {t.lease_id} AMOUNT{peer}` "
            f"adds to it ({money(t.rate)} buys an hour)")


def parse_warn_within(text: str | int) -> int:
    """`--warn-within`: '30m', '2h', ... or seconds."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"--warn-within: {exc}") from None


def parse_top_up(text: str) -> int:
    """A top-up amount typed by a person, in TUSD ('0.50'): base units, above zero."""
    amount = parse_payment(text, "top-up amount")
    if amount == 0:
        raise ValueError("top-up amount must be above zero")
    return amount


# -- reading the tenant's leases ---------------------------------------------------------------
def chain_now(tenant: Tenant) -> int:
    return tenant.chain.block_timestamp()


def lease_times(tenant: Tenant, lease_ids: Iterable[int]) -> list[LeaseTime]:
    now = chain_now(tenant)
    return [lease_time(tenant.market.lease(i), now) for i in lease_ids]


def my_lease_ids(tenant: Tenant) -> list[int]:
    """Every lease this account holds as tenant, from the Market's `LeaseCreated` events."""
    chain = tenant.chain
    logs = chain.events("Market", "LeaseCreated", chain.network.deploy_block,
                        argument_filters={"tenant": chain.address})
    return sorted({log["args"]["lease_id"] for log in logs})


def listing_order(times: list[LeaseTime]) -> list[LeaseTime]:
    """Open leases first, the soonest to run out first; then closed ones, the latest first."""
    return sorted(times, key=lambda t: (0, t.runs_out_at, t.lease_id) if t.is_open
                  else (1, -t.closed_at, -t.lease_id))


def topped_up(tenant: Tenant, lease_ids: Iterable[int]) -> int:
    """What the chain says these leases of this account's have been topped up by, in total (by
    the account, or by the payer of an order it was paid for: then the payer only)."""
    wanted = set(lease_ids)
    chain = tenant.chain
    logs = chain.events("Market", "LeaseToppedUp", chain.network.deploy_block,
                        argument_filters={"tenant": chain.address})
    return sum(log["args"]["amount"] for log in logs if log["args"]["lease_id"] in wanted)


def paid_from_peer(tenant: Tenant, leases: Iterable[tuple[int, int]]) -> dict:
    """A job paid from the peer chain, from its (order id, lease id) pairs: each order's deposit
    (what its funding brought), its leases' top-ups (each sent from the peer: only the payer
    tops up a paid-for lease) and what the Market has refunded of both so far (to BridgeOrders,
    which owes it back there); `spent`: what the job cost the account on the peer chain."""
    market, by_order = tenant.market, {}
    for order_id, lease_id in leases:
        by_order.setdefault(order_id, set()).add(lease_id)
    orders = [{"order_id": o, "deposit": market.order(o).deposit,
               "topped_up": topped_up(tenant, ids), "refunded": market.refunded(o)}
              for o, ids in sorted(by_order.items())]
    return {"chain_id": tenant.pay_from.network.chain_id, "orders": orders,
            "spent": sum(o["deposit"] + o["topped_up"] - o["refunded"] for o in orders)}


# -- topping up ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TopUp:
    lease_id: int
    amount: int
    budget: int               # the lease's budget after it
    before: LeaseTime
    after: LeaseTime
    txs: list[str]
    in_flight_from: int | None = None   # a bridged top-up sent from this chain, not yet delivered

    def text(self) -> str:
        if self.in_flight_from is not None:
            return (f"lease {self.lease_id}: a top-up of {money(self.amount)} sent from chain "
                    f"{self.in_flight_from} (tx {', '.join(self.txs)}), on its way; "
                    f"{left_text(self.after)} until it lands")
        return (f"lease {self.lease_id} topped up by {money(self.amount)} (tx "
                f"{', '.join(self.txs)}): budget {money(self.budget)}, "
                f"{left_text(self.after)}")

    def to_json(self) -> dict:
        return {"lease_id": self.lease_id, "amount_base_units": self.amount,
                "budget_base_units": self.budget, "token": PAYMENT_SYMBOL,
                "decimals": PAYMENT_DECIMALS, "runs_out_at_unix": self.after.runs_out_at,
                "left_s": self.after.left_s, "txs": self.txs,
                "in_flight_from_chain": self.in_flight_from}


def top_up(tenant: Tenant, lease_id: int, amount: int, wait: bool = True) -> TopUp:
    """Add `amount` base units to an open lease's escrow (from the peer chain when the tenant
    pays from one: `Tenant.top_up`; `wait`: for its delivery). Refused before any transaction,
    with the reason, when the lease is not this account's (from a peer: when its order's
    funding is not this account's, `fund_top_up`), is closed or has run out, or the balance
    is short (`Market.top_up` would refuse the same; the token's approval is the only other
    transaction)."""
    if amount <= 0:
        raise TenantError("a top-up must be above zero")
    lease = tenant.market.lease(lease_id)
    if tenant.pay_from is None and lease.tenant.lower() != tenant.chain.address.lower():
        raise TenantError(f"lease {lease_id} belongs to {lease.tenant}, not {tenant.chain.address}")
    before = lease_time(lease, chain_now(tenant))
    if not before.is_open:
        raise TenantError(f"lease {lease_id} is closed ({left_text(before)}): nothing to top up")
    if before.left_s == 0:
        raise TenantError(f"lease {lease_id}'s escrow ran out at {format_time(before.runs_out_at)}"
                          ": the Market takes no top-up after that; close it and lease again")
    txs = tenant.top_up(lease_id, amount, wait)   # from the peer chain with `pay_from`
    lease = tenant.market.lease(lease_id)
    after = lease_time(lease, chain_now(tenant))
    pending = tenant.pay_from is not None and not wait
    return TopUp(lease_id, amount, lease.budget, before, after, txs,
                 tenant.pay_from.network.chain_id if pending else None)


# -- the watch while a job is followed -----------------------------------------------------------
@dataclass
class EscrowWatch:
    """Watches a job's leases while the tenant follows it: says once per lease (and again after
    each top-up) when one will run out within `policy.warn_within`, and, if `policy.top_up` is
    set, tops up any lease with less than `policy.top_up_below` left, by `policy.top_up` or
    what is left under `policy.top_up_ceiling`, whichever is less (never past it).

    `check` is cheap to call often: it reads the chain at most every `every_s` seconds. It never
    raises for a chain or top-up failure: it says what failed and stops topping that lease up
    (a failed top-up retried every ten seconds would spam the chain and the console)."""

    tenant: Tenant
    policy: EscrowSpec = field(default_factory=EscrowSpec)
    notice: Callable[[str], None] = lambda line: None
    every_s: float = CHECK_EVERY_S
    clock: Callable[[], float] = time.monotonic
    warned: dict[int, int] = field(default_factory=dict)     # lease -> runs_out_at warned about
    stopped: set[int] = field(default_factory=set)           # leases not topped up any more
    top_ups: list[TopUp] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ceiling_told: bool = False
    _last: float | None = None

    def check(self, lease_ids: Iterable[int], *, force: bool = False) -> None:
        now = self.clock()
        if not force and self._last is not None and now - self._last < self.every_s:
            return
        self._last = now
        lease_ids = list(lease_ids)
        try:
            times = lease_times(self.tenant, lease_ids)
        except ChainError as exc:
            self.notice(f"escrow check skipped: {exc}")
            return
        for t in times:
            if self.policy.top_up is not None and t.is_open and t.left_s > 0 \
                    and t.left_s < self.policy.top_up_below and t.lease_id not in self.stopped:
                t = self._top_up(t, lease_ids)
            if t.runs_out_within(self.policy.warn_within) and \
                    self.warned.get(t.lease_id) != t.runs_out_at:
                self.warned[t.lease_id] = t.runs_out_at
                peer = self.tenant.pay_from
                line = warning_text(t, peer.network.chain_id if peer else None) if t.left_s else \
                    f"lease {t.lease_id}: {left_text(t)}"
                self.warnings.append(line)
                self.notice(line)

    def _top_up(self, t: LeaseTime, job_leases: list[int]) -> LeaseTime:
        """A top-up from a peer chain is sent without waiting for it (the job goes on); until
        it lands it counts against the ceiling, and its lease gets no second one (review 14)."""
        ceiling = self.policy.top_up_ceiling
        try:
            in_flight = (self.tenant.peer_payments().top_ups_in_flight()
                         if self.tenant.pay_from is not None else {})
            if t.lease_id in in_flight:
                return t
            already = topped_up(self.tenant, job_leases) + sum(
                amount for lease, amount in in_flight.items() if lease in job_leases)
            amount = min(self.policy.top_up, ceiling - already)
            if amount <= 0:
                if not self.ceiling_told:
                    self.ceiling_told = True
                    self.notice(f"automatic top-ups stop: the job's leases have been topped up "
                                f"by {money(already)}, the ceiling is {money(ceiling)}")
                return t
            done = top_up(self.tenant, t.lease_id, amount, wait=False)
        except (ChainError, TenantError, BridgeError) as exc:
            self.stopped.add(t.lease_id)
            self.notice(f"automatic top-up of lease {t.lease_id} failed, not retried: {exc}")
            return t
        self.top_ups.append(done)
        self.notice(f"automatic top-up: {done.text()} ({money(already + amount)} of the "
                    f"{money(ceiling)} ceiling used)")
        return done.after

    def summary(self) -> dict:
        """What the watch did, for a job's summary (`--json`): amounts in base units, named."""
        return {"warn_within_s": self.policy.warn_within,
                "top_up_base_units": self.policy.top_up,
                "top_up_ceiling_base_units": self.policy.top_up_ceiling,
                "token": PAYMENT_SYMBOL, "decimals": PAYMENT_DECIMALS,
                "top_ups": [u.to_json() for u in self.top_ups], "warnings": self.warnings}

