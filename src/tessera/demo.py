"""`tessera demo`: a whole rental on a local chain, with three real provider processes, then a
cheating provider caught and slashed by staked validators (demo_cheater.py)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import TREASURY, Devnet, free_port
from tessera.daemons import spawn, stop, wait_healthy
from tessera.demo_agent import run_agent_act
from tessera.demo_bridge import CrossChainAct, devnet_options
from tessera.demo_cheater import run_cheater_act, settle_held_pay, start_validators
from tessera.explorer.derive_bridge import exact as token_amount
from tessera.explorer.recap import index_and_audit
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.money import STAKE_DECIMALS
from tessera.tenant.bidding import device_text, money, reliability_text
from tessera.tenant.client import Tenant
from tessera.tenant.escrow import paid_from_peer
from tessera.tenant.flow import load_dataset, run_rental
from tessera.tenant.multinode import run_diloco_job

TENANT = 5
# The demo chain is deployed with a 30 s challenge window (default 1 h) so that a verified
# round's held pay is released while you watch; providers sweep their held pay every 5 s.
CHALLENGE_WINDOW_S, PAYOUT_SWEEP_S = 30, 5
# Uptime epochs of 10 s (60 s on a plain devnet), and the validators started with the
# providers: an epoch is final 3 epochs after it ends, so the providers' beats receipted and
# reported by the validators turn into final uptime while you watch (the explorer's last lines:
# "by validators' reports"), not only their fallback heartbeat transactions.
DEMO_EPOCH_S = 10
# Pay for a verified lease's time that no root covers yet is released once the challenge
# window plus this grace has passed (1 h by default): short on the demo chain, so that the demo
# settles every verified lease in full (the time after the last root) before it shows the
# figures, but not nought: time is protected only while its root comes within window + grace,
# and the demo's first root comes 10-40 s after its leases start (workers starting, on a loaded
# machine). With no grace a full test run once paid the cheater for its first 2 s before round
# 0's root was posted (docs/verification.md, "A tenant who stops posting roots").
ROOT_GRACE_S = 30
DEMO_STAKE = 100 * 10**STAKE_DECIMALS   # each provider's (the minimum); bridged on two chains


@dataclass(frozen=True)
class DemoProvider:
    name: str
    account: int
    price: str      # TUSD per device-hour
    threads: int    # the CPU slice it sells; its measured benchmark follows from it


PROVIDERS = (
    DemoProvider("alpha", 2, "1.80", 2),
    DemoProvider("beta", 3, "1.20", 1),
    DemoProvider("gamma", 4, "4.00", 2),  # floor above the order's maximum: it will not bid
)

DEMO_JOB = {
    "name": "demo-charlm",
    "order": {"max_price_per_gpu_hour": "3.00", "duration": "15m", "min_gpus": 1,
              "nodes": 1, "bid_window": "4s"},
    "dataset": {"source": "builtin:stdlib", "max_bytes": 1 << 20},
    "workload": {"kind": "train-charlm", "steps": 500, "eval_every": 50},
}


def provider_config(p: DemoProvider, home: Path, network_file: Path, port: int) -> dict:
    return {
        "provider": {"account": f"devnet:{p.account}", "network": str(network_file),
                     "port": port, "state_dir": str(home / f"provider-{p.name}"),
                     "stake": str(DEMO_STAKE // 10**STAKE_DECIMALS)},
        "pricing": {"price_per_gpu_hour": p.price},
        "limits": {"threads": p.threads, "memory_limit_mb": 4096, "max_job_seconds": 1800},
        "payouts": {"sweep_every": PAYOUT_SWEEP_S},
    }


def start_provider(p: DemoProvider, home: Path, network_file: Path) -> tuple[subprocess.Popen, str]:
    return spawn(home, f"provider-{p.name}", "provider",
                 provider_config(p, home, network_file, free_port()))


DILOCO_JOB = {
    "name": "demo-diloco", "mode": "diloco",
    "order": {"max_price_per_gpu_hour": "5.00", "duration": "15m", "bid_window": "4s"},
    "dataset": {"source": "builtin:stdlib", "max_bytes": 1 << 20},
    "workload": {"kind": "train-charlm"},
    "diloco": {"inner_steps": 25, "rounds": 8, "compression": "int8"},
}


def run_demo(console: Console, steps: int | None = None, home: Path | None = None,
             nodes: int = 1, cheater: bool = True, chains: int = 1, agent: bool = True) -> dict:
    """`chains=2`: the tenant's TUSD is on a second chain and crosses the bridge (demo_bridge.py):
    the order (one lease, or a DiLoCo job's `nodes`) is funded from there."""
    home = Path(home or tempfile.mkdtemp(prefix="tessera-demo-"))
    os.environ["TESSERA_HOME"] = str(home)
    devnet = Devnet(home / "devnet")
    console.print(f"[bold]Tessera demo[/] (state in {home})")
    epochs = {"epoch_length": DEMO_EPOCH_S} if chains == 1 else {}
    network = devnet.up_anywhere(**devnet_options(chains), challenge_window=CHALLENGE_WINDOW_S,
                                 root_grace=ROOT_GRACE_S, **epochs)
    console.print(f"local chain {network.chain_id} at {network.rpc_url}; contracts deployed: "
                  + ", ".join(f"{k} {v}" for k, v in network.contracts.items()))
    procs: dict = {}
    try:
        chain = Chain(network, devnet_account(TENANT))
        bridge = CrossChainAct.start(console, chain, home, procs) if chains == 2 else None
        if bridge:   # the bidding providers' stake comes from the second chain
            bridge.stake_providers([devnet_account(p.account) for p in PROVIDERS[:2]], DEMO_STAKE)
        console.print("starting 3 provider processes, one after another so that each "
                      "measures its benchmark alone (detect hardware, stake, register) ...")
        for p in PROVIDERS:
            procs[p.name] = start_provider(p, home, devnet.network_file)
            wait_healthy({p.name: procs[p.name]})
        if chains == 1:
            console.print("starting 3 validators (stake 100 TSTK each): they receipt the "
                          "providers' beats and post one liveness report per epoch, and later "
                          "replay challenged work and vote ...")
            validators = start_validators(home, devnet.network_file)
            procs.update(validators)
            wait_healthy(validators)
        tenant = Tenant(chain)
        providers_table(console, tenant, procs)
        treasury = devnet_account(TREASURY).address
        treasury_before = tenant.market.payment_token.balance_of(treasury)
        if nodes > 1:
            job = {**DILOCO_JOB, "order": {**DILOCO_JOB["order"], "nodes": nodes}}
            spec = JobSpec.model_validate(job)
            if bridge:
                bridge.pay_from_peer(tenant)
            summary = run_diloco_job(tenant, spec, load_dataset(spec.dataset), console,
                                     results_dir=home / "results")
            summary["pay"] = settle_held_pay(console, chain, summary, procs)
            summary["treasury_received"] = tenant.market.payment_token.balance_of(treasury) - treasury_before
            if bridge:   # what the orders kept once the held pay is released
                summary["paid_from_chain"] = paid_from_peer(
                    tenant, [(w["order_id"], w["lease_id"]) for w in summary["workers"]])
                summary["tenant_spent"] = summary["paid_from_chain"]["spent"]
                summary["cross_chain"] = bridge.finish(summary)
            if cheater:
                if bridge:
                    bridge.release_validators(procs)
                summary["verification"] = run_cheater_act(console, chain, home, procs)
            if agent:
                summary["agent"] = run_agent_act(console, chain, home, procs, summary)
            summary["explorer"] = explore(console, chain, home)
            return summary
        job = dict(DEMO_JOB)
        if steps:
            job["workload"] = {**job["workload"], "steps": steps}
        spec = JobSpec.model_validate(job)
        dataset = load_dataset(spec.dataset)
        if bridge:
            bridge.pay_from_peer(tenant)
        summary = run_rental(tenant, spec, dataset, console, follow=True, close=True,
                             results_dir=home / "results")
        summary["treasury_received"] = tenant.market.payment_token.balance_of(treasury) - treasury_before
        summary["network"] = network.model_dump()
        summary["providers"] = {p.name: {"account": devnet_account(p.account).address,
                                         "floor": p.price, "threads": p.threads,
                                         "endpoint": procs[p.name][1]} for p in PROVIDERS}
        print_summary(console, summary)
        if bridge:
            summary["cross_chain"] = bridge.finish(summary)
        if cheater:
            if bridge:
                bridge.release_validators(procs)
            summary["verification"] = run_cheater_act(console, chain, home, procs)
        if agent:
            summary["agent"] = run_agent_act(console, chain, home, procs, summary)
        summary["explorer"] = explore(console, chain, home)
        return summary
    finally:
        for proc, _ in procs.values():
            stop(proc)
        devnet.down()


def explore(console: Console, chain: Chain, home: Path) -> dict:
    """Index the run, audit it against the chain's logs, and say how to browse it later."""
    recap = index_and_audit(chain, home / "explorer.db")
    verdict = ("[bold green]agrees to the base unit[/]" if recap["audit_agrees"]
               else f"[bold red]{len(recap['audit_problems'])} differences[/]")
    console.rule("[bold]explorer")
    console.print(f"{recap['events']} events indexed into {recap['database']}; `tessera audit` "
                  f"recomputed {recap['figures']} figures from the chain's logs: {verdict}")
    utilization = recap["utilization"]
    console.print(f"revenue: tenants paid {money(recap['tenant_paid'])} = providers "
                  f"{money(recap['provider_income'])} + fees {money(recap['protocol_fees'])}; "
                  f"utilization {'-' if utilization is None else f'{utilization:.1%}'} of registered "
                  "GPU-hours")
    agents = recap.get("agent_payments") or {}
    if agents.get("count"):
        console.print(f"agent payments to providers, beside lease revenue: {agents['count']} "
                      f"for {money(agents['amount_base_units'])}, each linked to its transaction")
    for address, u in recap["uptime"].items():
        console.print(f"uptime {short(address)}: {u['up']}/{u['epochs']} final epochs up "
                      f"({u['bps'] / 100:.2f} %; {u['heartbeats']} by heartbeat tx, {u['reported']} "
                      f"by validators' reports), {u['pending']} pending (not final yet)")
    bridge = recap.get("bridge")
    for line in bridge["lines"] if bridge else []:
        console.print(line, markup=False)
    for t in bridge["transfers"] if bridge else []:
        console.print(f"  transfer {t['message_id'][:12]}… chain {t['source_chain']} -> "
                      f"{t['destination_chain']}: {token_amount(t['amount'], t['token'])}, "
                      f"{t['state']}; sent in "
                      f"{t['source_tx']}, delivered in {t['delivery_tx'] or '-'}", markup=False)
    console.print(f"browse this run: TESSERA_HOME={home} tessera explorer serve")
    return recap


def providers_table(console: Console, tenant: Tenant, procs: dict) -> None:
    table = Table(title="providers on chain")
    for column in ("name", "address", "device", "benchmark", "floor / device-h", "endpoint"):
        table.add_column(column)
    for p in PROVIDERS:
        offer = tenant.market.registry.provider_offer(devnet_account(p.account).address)
        table.add_row(p.name, short(offer.address), f"{device_text(offer)} ({p.threads} threads)",
                      f"{offer.benchmark_score:,} MFLOP/s", money(offer.price_floor), offer.endpoint)
    console.print(table)


def short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}"


def sparkline(values: list[float], width: int = 40) -> str:
    bars = "▁▂▃▄▅▆▇█"
    if len(values) > width:  # mean of equal buckets
        size = len(values) / width
        values = [sum(chunk) / len(chunk) for i in range(width)
                  if (chunk := values[int(i * size):int((i + 1) * size)] or values[-1:])]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(bars[int((v - lo) / span * (len(bars) - 1))] for v in values)


def print_summary(console: Console, s: dict) -> None:
    console.rule("[bold]summary")
    bids = Table(title=f"bids for order {s['order_id']}")
    for column in ("provider", "device", "price / device-h", "reliability", "verdict"):
        bids.add_column(column)
    for b in sorted(s["bids"], key=lambda b: b["price_per_gpu_hour"]):
        verdict = "won" if b["provider"] == s["winner"]["provider"] else (
            "valid" if b["valid"] else "rejected: " + "; ".join(b["problems"]))
        bids.add_row(short(b["provider"]), str(b.get("device_memory") or b["device"]),
                     money(b["price_per_gpu_hour"]),
                     reliability_text(b["reliability"]), verdict)
    console.print(bids)
    bidders = {b["provider"] for b in s["bids"]}
    silent = [name for name, p in s["providers"].items() if p["account"] not in bidders]
    if silent:
        console.print(f"no bid from: {', '.join(silent)} (floor above the order's maximum)")
    console.print(f"rule: {s['selection_rule']}")
    history = [h for h in s["loss_history"] if h.get("train_loss") is not None]
    losses = [h["train_loss"] for h in history]
    m = s["metrics"]
    console.print(f"ran: byte-level transformer, {history[-1]['step'] if history else 0} steps on "
                  f"{m.get('device')} with {m.get('threads')} thread(s), "
                  f"{s.get('tokens_per_s') or 0:,.0f} tokens/s")
    console.print(f"training loss {losses[0]:.3f} -> {losses[-1]:.3f}  {sparkline(losses)}")
    console.print(f"held-out loss {m.get('final_val_loss'):.4f}; result {s['result_hash']}")
    st, lm = s["settlement"], s["lease_money"]
    pay = Table(title=f"lease {s['lease_id']}: where its budget went")
    pay.add_column("to")
    pay.add_column("amount", justify="right")
    pay.add_row(f"provider {s['winner']['provider']}: withdrawn after its result",
                money(lm["provider_withdrawn"]))
    pay.add_row("provider: paid by the close", money(lm["provider_paid_at_close"]))
    pay.add_row("protocol fee -> treasury", money(lm["fees"]))
    back = s.get("paid_from_chain")   # refunds of an order paid from the peer chain
    to = f"BridgeOrders, back to chain {back['chain_id']}" if back else f"tenant {s['tenant']}"
    pay.add_row(f"refund at close -> {to}", money(lm["refunded_at_close"]))
    if lm["downtime_refunded"]:
        pay.add_row("downtime refund -> tenant", money(lm["downtime_refunded"]))
    pay.add_row("= the lease's budget" + ("" if lm["adds_up"] else " ([red]does NOT add up[/])"),
                money(lm["budget"]))
    pay.add_row("the order's unallocated escrow, refunded after accept",
                money(s.get("unallocated_refund", 0)))
    pay.add_row("tenant's net cost (= provider + fee)", money(s["tenant_spent"]))
    console.print(pay)
    console.print("transactions:")
    for name, value in s["transactions"].items():
        for h in value if isinstance(value, list) else [value]:
            console.print(f"  {name:<9} {h}")
    for h in st["provider_withdrawn_earlier"]["txs"]:
        console.print(f"  {'withdraw':<9} {h}")
    console.print(f"order to active lease: {s['order_to_lease_s']} s (includes the bid window)")
    console.print(f"[bold green]verified and settled[/]: {len(s['checks'])} checks passed; "
                  f"treasury received {money(s['treasury_received'])}")
