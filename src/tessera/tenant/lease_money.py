"""A lease's whole money, as the tenant reads it: one account for `tessera job status`,
`tessera job close` and the demo, so that they never disagree.

The split is protocol/ledger.lease_ledgers (the explorer's audit uses the same rule): the budget
(escrowed at accept plus top-ups) equals what the provider was paid, the protocol fees, what came
back to the tenant (at close, for downtime, for rounds proven bad and, once a cheat is proven
for the lease, for every other round of its pay still held: forfeited), what a verified lease
still holds for Settlement and what an open lease still has in escrow. Here only the lease's own
events are read (filtered by its id), not the chain's whole history.
"""

from __future__ import annotations

from dataclasses import dataclass

from tessera.chain.client import Chain, tx_hash
from tessera.chain.events import EventReader
from tessera.protocol.events import EventRecord, hex0x, json_safe
from tessera.protocol.ledger import LeaseLedger, lease_ledgers
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL, STAKE_DECIMALS, STAKE_SYMBOL
from tessera.tenant.bidding import money

# The Market's events that name a lease by its `lease_id`, and Settlement's.
MARKET_LEASE_EVENTS = ("LeaseCreated", "LeaseToppedUp", "Withdrawn", "LeaseClosed",
                       "DowntimeClaimed")
SETTLEMENT_LEASE_EVENTS = ("PayReleased", "RoundRefunded")


# What the integers of a job's summary (`tessera demo --json`, a DiLoCo job's summary.json)
# count: the summary carries this as "units". Newer fields name their unit themselves
# (`*_base_units`, `*_s`, `*_unix`).
UNITS = {"money": f"integer base units of {PAYMENT_SYMBOL} (10^-{PAYMENT_DECIMALS} "
                  f"{PAYMENT_SYMBOL}) unless a field says otherwise",
         "stake": f"integer base units of {STAKE_SYMBOL} (10^-{STAKE_DECIMALS} {STAKE_SYMBOL})",
         "price_per_gpu_hour": f"base units of {PAYMENT_SYMBOL} per device-hour",
         "times": "points in time (jailed_until, *_at, *_unix) are Unix seconds of chain "
                  "time; durations (*_s) are seconds"}


def _record(log, timestamps: dict[int, tuple[str, int]], contract: str) -> EventRecord:
    number = int(log["blockNumber"])
    return EventRecord(block_number=number, block_hash=hex0x(log["blockHash"]),
                       timestamp=timestamps[number][1], tx_hash=tx_hash(log),
                       log_index=int(log["logIndex"]), contract=contract, event=log["event"],
                       args=json_safe(dict(log["args"])))


def lease_records(chain: Chain, lease_id: int) -> list[EventRecord]:
    """The events that make up one lease's money: its Market and Settlement events and its
    order's OrderCreated (which says whether it is verified), in chain order. Scans from the
    lease's creation block, except for the order's one event."""
    since = chain.network.deploy_block
    created = chain.events("Market", "LeaseCreated", since, argument_filters={"lease_id": lease_id})
    if not created:
        return []
    start = int(created[0]["blockNumber"])
    order_id = created[0]["args"]["order_id"]
    logs = [("Market", log) for log in created]
    logs += [("Market", log) for log in chain.events(
        "Market", "OrderCreated", since, start, argument_filters={"order_id": order_id})]
    for contract, events in (("Market", MARKET_LEASE_EVENTS[1:]),
                             ("Settlement", SETTLEMENT_LEASE_EVENTS)):
        if contract not in chain.network.contracts:
            continue
        for event in events:
            logs += [(contract, log) for log in chain.events(
                contract, event, start, argument_filters={"lease_id": lease_id})]
    timestamps = EventReader(chain, contracts=("Market",)).blocks(
        int(log["blockNumber"]) for _, log in logs)
    records = [_record(log, timestamps, contract) for contract, log in logs]
    return sorted(records, key=lambda r: r.order)


@dataclass(frozen=True)
class LeaseMoney:
    """A lease's ledger with the provider's pay split by when it was paid."""

    ledger: LeaseLedger
    withdrawn: int           # net to the provider by `withdraw` (a verified lease's pay is
                             # withdrawn after the close too, as its rounds are released)
    withdrawn_fee: int
    withdraw_txs: tuple[str, ...]
    closed_by: str           # "" while open
    topped_up: int = 0       # of the budget, added by top-ups after the accept

    @property
    def paid_at_close(self) -> int:
        return self.ledger.provider_paid - self.withdrawn

    @property
    def fee_at_close(self) -> int:
        return self.ledger.fees - self.withdrawn_fee

    @property
    def tenant_cost(self) -> int:
        """What the lease has cost the tenant so far: its budget less everything refunded (the
        provider's pay, the fees, and what is still held or in escrow for it)."""
        led = self.ledger
        return led.budget - led.refunded - led.downtime_refunded - led.round_refunded


def lease_money(chain: Chain, lease_id: int, as_of: int | None = None) -> LeaseMoney:
    """`as_of`: the time an open lease's stream is measured at (default: the chain's now)."""
    records = lease_records(chain, lease_id)
    now = chain.block_timestamp() if as_of is None else as_of
    ledger = lease_ledgers(records, now).get(lease_id) or LeaseLedger(lease_id)
    withdrawn = [r for r in records if r.event == "Withdrawn"]
    closed = [r for r in records if r.event == "LeaseClosed"]
    return LeaseMoney(ledger, sum(r.args["amount_to_provider"] for r in withdrawn),
                      sum(r.args["fee"] for r in withdrawn),
                      tuple(r.tx_hash for r in withdrawn),
                      closed[0].args["closed_by"] if closed else "",
                      sum(r.args["amount"] for r in records if r.event == "LeaseToppedUp"))


def money_lines(m: LeaseMoney, refunds_to: str = "you") -> list[str]:
    """The lease's money in words, every part of its budget named, ending with the check that
    they add up to it. `job status` and `job close` both print exactly these. `refunds_to`:
    who the refunds went to (an order paid by someone else: that payer)."""
    led = m.ledger
    lines = [f"budget {money(led.budget)}" + (f" (of it {money(m.topped_up)} topped up)"
                                              if m.topped_up else "")]
    paid = f"  to the provider {money(led.provider_paid)}"
    if led.provider_paid:
        paid += (f": {money(m.withdrawn)} withdrawn by the provider, "
                 f"{money(m.paid_at_close)} paid by the close" if led.closed else
                 ": withdrawn by the provider so far")
    lines.append(paid)
    lines.append(f"  protocol fee {money(led.fees)}")
    if led.closed:
        lines.append(f"  refunded to {refunds_to} at the close {money(led.refunded)}")
    if led.downtime_refunded:
        lines.append(f"  refunded to {refunds_to} for epochs without a heartbeat "
                     f"{money(led.downtime_refunded)}")
    if led.round_refunded or led.verified:
        line = f"  refunded to {refunds_to} for rounds proven bad {money(led.round_refunded)}"
        if led.forfeited_refunded:
            line += (f" (of it {money(led.forfeited_refunded)} forfeited: a cheat was proven in "
                     "another round, so none of the provider's pay still held is released)")
        lines.append(line)
    if led.verified:
        lines.append(f"  held for Settlement {money(led.held)} (the provider's once its rounds "
                     "are final, yours for a round proven bad, all of it once a cheat is proven)")
    if not led.closed:
        whose = ("yours at the close" if led.verified else "the pay the provider earned and "
                 "has not withdrawn, and the rest, yours at the close")
        lines.append(f"  still in escrow {money(led.escrow)} ({whose})")
    parts = (led.provider_paid + led.fees + led.refunded + led.downtime_refunded
             + led.round_refunded + led.held + led.escrow)
    if led.adds_up:
        lines.append(f"  = {money(parts)}: adds up to the budget")
    else:
        lines.append(f"  = {money(parts)}: does NOT add up to the budget "
                     f"({money(led.unaccounted)} unaccounted; `tessera audit` says more)")
    return lines


def money_json(m: LeaseMoney) -> dict:
    """The same for `--json`: base units, named."""
    led = m.ledger
    return {"token": PAYMENT_SYMBOL, "decimals": PAYMENT_DECIMALS, "unit": "base units",
            "budget": led.budget, "topped_up": m.topped_up, "provider_paid": led.provider_paid,
            "provider_withdrawn": m.withdrawn, "provider_paid_at_close":
            m.paid_at_close, "fees": led.fees, "refunded_at_close": led.refunded,
            "downtime_refunded": led.downtime_refunded, "round_refunded": led.round_refunded,
            "round_forfeited": led.forfeited_refunded,
            "held_for_settlement": led.held, "escrow": led.escrow, "adds_up": led.adds_up,
            "tenant_cost": m.tenant_cost, "txs": led.all_txs}


def short_line(m: LeaseMoney) -> str:
    """One line per lease: its budget and every part of it, for a job's several leases."""
    led = m.ledger
    parts = [f"provider {money(led.provider_paid)}", f"fees {money(led.fees)}",
             f"refunded {money(led.refunded + led.downtime_refunded)}"]
    if led.verified or led.round_refunded:
        parts.append(f"proven rounds refunded {money(led.round_refunded)}" + (
            f" (of it {money(led.forfeited_refunded)} forfeited)" if led.forfeited_refunded else ""))
    if led.held or led.verified:
        parts.append(f"held for Settlement {money(led.held)}")
    if not led.closed:
        parts.append(f"in escrow {money(led.escrow)}")
    check = "" if led.adds_up else f" (does NOT add up: {money(led.unaccounted)} unaccounted)"
    return f"lease {led.lease_id}: budget {money(led.budget)} = {' + '.join(parts)}{check}"


def job_cost_line(moneys: list[LeaseMoney]) -> str:
    """What a job's leases cost the tenant, split into where it went: the provider's pay, the
    fees, and what is still held or in escrow (which may yet come back)."""
    def total(part: str) -> int:
        return sum(getattr(m.ledger, part) for m in moneys)
    cost = sum(m.tenant_cost for m in moneys)
    line = (f"the tenant paid {money(cost)} for {len(moneys)} lease(s): providers "
            f"{money(total('provider_paid'))} + fees {money(total('fees'))}")
    if total("held"):
        line += (f" + held for Settlement {money(total('held'))} (paid to the providers as "
                 "rounds become final, refunded for rounds proven bad, or all of a lease's once "
                 "a cheat is proven for it)")
    if total("escrow"):
        line += f" + still in escrow {money(total('escrow'))}"
    return line
