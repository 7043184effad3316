"""What `tessera job status`, `job list`, `job close` and `job top-up` print: a lease's state,
its time left (tenant/escrow.py) and its whole money (tenant/lease_money.py), the same way in
every command."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tessera.chain.accounts import tessera_home
from tessera.chain.contract import ZERO_ADDRESS
from tessera.chain.uptime import Uptime
from tessera.errors import TenantError
from tessera.protocol.figures import format_time
from tessera.protocol.jobspec import DEFAULT_WARN_WITHIN
from tessera.protocol.wire import LeaseStatus
from tessera.tenant.bidding import money, tstk
from tessera.tenant.client import LeaseClose, Tenant, tenant_for
from tessera.tenant.escrow import (
    LeaseTime,
    duration_text,
    lease_time,
    lease_times,
    left_text,
    listing_order,
    my_lease_ids,
    parse_top_up,
    parse_warn_within,
    top_up,
    warning_text,
)
from tessera.tenant.lease_money import LeaseMoney, lease_money, money_lines

JOB_STATE = "job.json"    # tenant/coordinator.STATE_FILE: a DiLoCo job's folder holds it
CLOSED_WHILE = "closed on chain while "   # provider/leases.py's detail of a lease closed on chain


def say(console: Console, line: str, style: str | None = None) -> None:
    """Print a line as text (addresses, amounts and paths are not rich markup)."""
    console.print(escape(line), style=style)


def diloco_job_of(lease_id: int, home: Path | None = None) -> dict | None:
    """The local record of the DiLoCo job this tenant ran with `lease_id` as a worker (its
    `job.json`), or None: how the tenant knows a lease's rounds in all."""
    results = (home or tessera_home()) / "jobs" / "results"
    for path in sorted(results.glob(f"*/{JOB_STATE}")) if results.is_dir() else ():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(saved, dict) and any(isinstance(w, dict) and w.get("lease_id") == lease_id
                                           for w in saved.get("workers", [])):
            return saved
    return None


def job_lines(lease_id: int, logs: list[dict], lease_open: bool, closed_by: str,
              tenant: str, diloco: dict | None) -> list[str]:
    """The job's progress as its provider logged it, told for what it is. A DiLoCo worker
    serves rounds until its lease is closed (the tenant closes it after the last round), so its
    'step' is the rounds it answered and its provider's 'closed on chain while running' is how
    such a lease ends, not a failure."""
    start = next((e for e in logs if e.get("event") == "start"), None)
    if start is None or "inner_steps" not in start:
        return []
    answered = max((e["round"] + 1 for e in logs if e.get("event") == "progress"
                    and isinstance(e.get("round"), int)), default=0)
    total = (diloco or {}).get("config", {}).get("rounds")
    of = f"/{total}" if total else ""
    worker = next((w for w in (diloco or {}).get("workers", []) if w.get("lease_id") == lease_id),
                  {})
    lines = [f"job: DiLoCo worker {start.get('worker', '?')} of {start.get('workers', '?')}, "
             f"{start.get('inner_steps')} inner steps a round; answered {answered}{of} rounds"]
    if worker.get("fault"):
        state = f"dropped by the coordinator ({worker['fault']}: {worker.get('reason', '')})"
    elif lease_open:
        state = "serving rounds"
    elif closed_by.lower() == tenant.lower():
        done = diloco is not None and diloco.get("finished")
        state = ("finished: the tenant closed the lease after the job's last round" if done
                 else "the tenant closed the lease (a DiLoCo worker serves rounds until then)")
    else:
        state = "its provider closed the lease"
    lines.append(f"state: {state}")
    return lines


def status_report(tenant: Tenant, lease_id: int, warn_within: int = DEFAULT_WARN_WITHIN,
                  home: Path | None = None) -> tuple[LeaseTime, LeaseMoney, list[str]]:
    """Everything `job status` says about a lease, as lines (and the figures behind them)."""
    lease = tenant.market.lease(lease_id)
    now = tenant.chain.block_timestamp()
    t = lease_time(lease, now)
    m = lease_money(tenant.chain, lease_id, now)
    verified = " (verified: pay released round by round)" if m.ledger.verified else ""
    who = ("" if lease.is_open else " by the tenant" if m.closed_by.lower() ==
           lease.tenant.lower() else " by the provider" if m.closed_by else "")
    lines = [f"lease {lease_id}{verified}: provider {lease.provider}, "
             f"{money(lease.price_per_gpu_hour)}/device-hour x {lease.gpus}, "
             f"{'open' if lease.is_open else 'closed' + who}",
             f"time: {left_text(t)}"]
    if t.is_open and t.runs_out_within(warn_within):
        lines.append(f"warning: {warning_text(t)}")
    lines += ["money:", *money_lines(m)]
    return t, m, lines


def show_status(lease_id: int, network: Path | None, account: str, console: Console,
                warn_within: str | int = DEFAULT_WARN_WITHIN) -> None:
    within = parse_warn_within(warn_within)
    tenant = tenant_for(network, account)
    t, m, lines = status_report(tenant, lease_id, within)
    for line in lines:
        say(console, line, "yellow" if line.startswith("warning") else None)
    try:
        logs = tenant.logs(lease_id)
        status = tenant.status(lease_id)
    except TenantError as exc:
        say(console, f"provider: {exc}")
        return
    diloco = job_lines(lease_id, logs, t.is_open, m.closed_by, tenant.market.lease(lease_id).tenant,
                       diloco_job_of(lease_id))
    if diloco:
        for line in diloco:
            say(console, line)
        return
    say(console, single_job_line(status))


def single_job_line(status: LeaseStatus) -> str:
    """A one-node job's progress; its provider calls a lease closed after the job ended
    'closed on chain while succeeded', which reads as the job's state: say it in order."""
    loss = f", loss {status.train_loss:.4f}" if status.train_loss is not None else ""
    of = f"/{status.steps}" if status.steps else ""
    was = status.detail.removeprefix(CLOSED_WHILE) if status.status == "closed" and \
        status.detail.startswith(CLOSED_WHILE) else None
    if was in ("succeeded", "failed"):
        return f"job: {was} (step {status.step}{of}{loss}), then its lease was closed on chain"
    if was is not None:
        return (f"job: stopped at step {status.step}{of}{loss}: its lease was closed on chain "
                f"while it was {was}")
    return f"job: {status.status}, step {status.step}{of}{loss} {status.detail}".rstrip()


def list_leases(network: Path | None, account: str, console: Console,
                warn_within: str | int = DEFAULT_WARN_WITHIN, as_json: bool = False) -> None:
    """`tessera job list`: every lease of this tenant, open ones first (soonest to run out
    first), each with its time left; a warning for each that runs out within `warn_within`."""
    within = parse_warn_within(warn_within)
    tenant = tenant_for(network, account)
    times = listing_order(lease_times(tenant, my_lease_ids(tenant)))
    if as_json:
        print(json.dumps({"tenant": tenant.chain.address, "warn_within_s": within,
                          "leases": [{**t.to_json(), "warn": t.runs_out_within(within)}
                                     for t in times]}, indent=2))
        return
    if not times:
        say(console, f"no leases for {tenant.chain.address}")
        return
    table = Table(title=f"leases of {tenant.chain.address}")
    for column in ("lease", "state", "provider", "per device-hour", "budget", "time left",
                   "runs out / closed at"):
        table.add_column(column)
    for t in times:
        left = duration_text(t.left_s) if t.is_open else "-"
        table.add_row(str(t.lease_id), t.state, t.provider, money(t.rate), money(t.budget),
                      f"[yellow]{left}[/]" if t.runs_out_within(within) else left,
                      format_time(t.runs_out_at if t.is_open else t.closed_at))
    console.print(table)
    for t in times:
        if t.is_open and t.runs_out_within(within):
            say(console, f"warning: {warning_text(t)}", "yellow")


def top_up_lease(lease_id: int, amount: str, network: Path | None, account: str,
                 console: Console, pay_from_chain: int | None = None) -> None:
    """`tessera job top-up LEASE AMOUNT [--pay-from-chain ID]`: the amount is refused before any
    connection if it is not an amount of TUSD above zero."""
    units = parse_top_up(amount)
    tenant = tenant_for(network, account, pay_from_chain=pay_from_chain)
    done = top_up(tenant, lease_id, units)
    say(console, done.text())


def close_lease(lease_id: int, network: Path | None, account: str, console: Console) -> None:
    tenant = tenant_for(network, account)
    settlement = tenant.close(lease_id)
    for line in close_lines(tenant, settlement)[0]:
        say(console, line)


def claim_downtime(lease_id: int, network: Path | None, account: str, console: Console) -> None:
    """`tessera job claim`: claim the pay of the lease's final epochs in which its provider was
    not up (open or closed lease, within the claim window); say when later epochs turn final."""
    tenant = tenant_for(network, account)
    lease = tenant.market.lease(lease_id)
    if lease.tenant.lower() != tenant.chain.address.lower():
        raise TenantError(f"lease {lease_id} belongs to {lease.tenant}, not {tenant.chain.address}")
    claims = tenant.claim_downtime(lease_id)
    for claim in claims:
        say(console, f"claimed {len(claim.epochs)} epoch(s) the provider was down: refund "
                     f"{money(claim.refund)}, provider stake burned {tstk(claim.stake_slashed)} "
                     f"(tx {claim.tx})")
    if not claims:
        say(console, f"lease {lease_id}: no final epoch without the provider up is left to claim")
    say(console, pending_line(tenant, lease_id))


def pending_line(tenant: Tenant, lease_id: int) -> str:
    """When the lease's last epochs turn final (claimable): an epoch is final
    report_delay + 1 + answer_epochs epochs after it ends (docs/uptime.md)."""
    uptime = Uptime(tenant.chain)
    report_delay, answer_epochs = uptime.liveness_rules()
    lease = tenant.market.lease(lease_id)
    end = lease.closed_at or tenant.chain.block_timestamp()
    genesis, length = uptime.genesis(), uptime.epoch_length()
    last = (end - genesis) // length - 1           # the lease's last whole epoch so far
    final_at = genesis + (last + report_delay + 2 + answer_epochs) * length
    return (f"epochs up to {last} are final at {format_time(final_at)}: downtime in them is "
            f"claimable with `tessera job claim {lease_id}` until the claim window closes")


def close_lines(tenant: Tenant, settlement: LeaseClose) -> tuple[list[str], LeaseMoney]:
    """What a close did, then the lease's whole money (as `job status` shows it); and that
    money."""
    lease_id = settlement.lease_id
    lines = []
    payer = tenant.market.refund_to(tenant.market.lease(lease_id).order_id)
    whom = "you" if payer in (ZERO_ADDRESS, tenant.chain.address) else f"the order's payer {payer}"
    if tenant.pay_from is not None:   # BridgeOrders: back to the chain the deposit came from
        whom = f"BridgeOrders (for chain {tenant.pay_from.network.chain_id})"
    if settlement.downtime_epochs:
        lines.append(f"provider missed {len(settlement.downtime_epochs)} epoch(s) of the lease: "
                     f"downtime refund {money(settlement.downtime_refund)}, provider stake "
                     f"burned {tstk(settlement.stake_slashed)} "
                     f"(tx {', '.join(settlement.downtime_txs)})")
    lines.append(f"lease {lease_id} closed (tx {settlement.tx}): the close paid the provider "
                 f"{money(settlement.provider_amount)}, fee {money(settlement.fee)}, refunded "
                 f"{whom} {money(settlement.refund)}; the lease's money in all:")
    m = lease_money(tenant.chain, lease_id)
    lines += money_lines(m, whom)
    lines.append(pending_line(tenant, lease_id))
    if m.ledger.verified:
        lines.append("this lease is verified: what it accrued but is not released yet stays "
                     "held until its rounds are final; `tessera job release "
                     f"{lease_id}` then pays the provider and refunds any proven round to you")
    return lines, m

