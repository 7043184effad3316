"""Explorer commands: `tessera explorer index`, `tessera explorer serve`, `tessera audit`, `tessera stats`.

Registered by tessera.cli (see docs/explorer.md); also runnable alone as
`python -m tessera.explorer.cli {explorer index|explorer serve|audit|stats}`.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tessera.chain.client import Chain
from tessera.chain.network import load_network
from tessera.command_errors import fail
from tessera.errors import ChainError, NetworkError
from tessera.http_limits import GRACEFUL_SHUTDOWN_S
from tessera.protocol.figures import ALL, Figures, figure_unit, ratio
from tessera.protocol.money import (
    PAYMENT_DECIMALS,
    PAYMENT_SYMBOL,
    STAKE_DECIMALS,
    STAKE_SYMBOL,
    format_amount,
    show_amount,
)

explorer_app = typer.Typer(help="Index the chain's events into a database for figures and audits.",
                           no_args_is_help=True)
console = Console()

NetworkOption = typer.Option(None, "--network", help="network file (default: the devnet's)")
DatabaseOption = typer.Option(None, "--database",
                              help="SQLAlchemy URL (default: sqlite:///$TESSERA_HOME/explorer.db)")


def _chain(network: Path | None) -> Chain:
    try:
        chain = Chain(load_network(network), timeout=60)
        chain.check_connected()
        return chain
    except (ChainError, NetworkError) as exc:
        fail(str(exc))


@explorer_app.command("index")
def index(
    network: Path | None = NetworkOption,
    database: str | None = DatabaseOption,
    confirmations: int = typer.Option(12, "--confirmations", min=0,
                                      help="index only blocks at least this deep (head - N)"),
    batch_blocks: int = typer.Option(500, "--batch-blocks", min=1, help="blocks per transaction"),
    follow: bool = typer.Option(False, "--follow", help="keep indexing new final blocks"),
    poll: float = typer.Option(2.0, "--poll", help="seconds between polls with --follow"),
    chain_confirmations: list[str] = typer.Option(
        [], "--chain-confirmations", metavar="CHAIN_ID=N",
        help="a peer chain's own confirmations for its bridge events (default --confirmations)"),
) -> None:
    """Copy final events into the database (resumable, reorg-safe): the market's, and on a
    network with peer chains every chain's bridge events, each chain with its own cursor."""
    from tessera.explorer.bridge_index import bridge_indexers, parse_chain_confirmations, sync_bridge
    from tessera.explorer.db import make_engine
    from tessera.explorer.indexer import Indexer, SyncReport

    chain = _chain(network)
    try:
        engine = make_engine(database)
        indexer = Indexer(chain, engine, confirmations=confirmations, batch_blocks=batch_blocks)
        per_chain = parse_chain_confirmations(chain_confirmations)
        bridges = bridge_indexers(chain.network, engine, confirmations, batch_blocks, per_chain)
    except ValueError as exc:
        fail(str(exc))

    def show(report: SyncReport) -> None:
        if report.reorg_rolled_back_to is not None:
            console.print(f"reorg: rolled back to block {report.reorg_rolled_back_to} and re-indexed")
        if report.batches:
            console.print(f"indexed blocks {report.from_block}..{report.to_block}: "
                          f"{report.events} events in {report.batches} batches "
                          f"(head {report.head}, final up to {report.safe_head})")
        elif not follow:
            console.print(f"up to date (head {report.head}, final up to {report.safe_head})")

    def once() -> int:
        report = indexer.sync()
        show(report)
        done = sync_bridge(bridges, engine) if bridges else None
        for line in done.lines(quiet=follow) if done else []:
            console.print(line)
        return report.batches + (sum(r.batches for r in done.reports.values()) if done else 0)

    try:
        if follow:
            stopping = {"now": False}
            signal.signal(signal.SIGTERM, lambda *_: stopping.update(now=True))
            try:
                while not stopping["now"]:
                    if once() == 0:
                        time.sleep(poll)
            except KeyboardInterrupt:
                pass
        else:
            once()
    except ChainError as exc:
        fail(str(exc))


@explorer_app.command("serve")
def serve(
    database: str | None = DatabaseOption,
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="TCP port"),
) -> None:
    """Serve the web explorer (HTML pages and a JSON API, /openapi.json) over the indexed database."""
    import uvicorn

    from tessera.explorer.db import make_engine
    from tessera.explorer.web import create_app

    app = create_app(make_engine(database))
    _build_figures(app.state.explorer)
    console.print(f"explorer: http://{host}:{port}/  (API: /api/overview, schema: /openapi.json)")
    uvicorn.run(app, host=host, port=port, log_level="info",
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


def _build_figures(explorer) -> None:
    """Fold every indexed event into the figures before listening (about 20 s at a million
    events on 2 cores), so that no visitor waits for it; later events are added as they come."""
    import time

    from fastapi import HTTPException

    started = time.perf_counter()
    console.print("explorer: building the figures from the indexed events ...")
    try:
        snap = explorer.snapshot()
    except HTTPException as exc:     # nothing indexed yet: pages say so until there is
        console.print(f"explorer: {exc.detail}")
        return
    console.print(f"explorer: figures as of block {snap.block:,} in {time.perf_counter() - started:,.1f} s")


def audit(
    network: Path | None = NetworkOption,
    database: str | None = DatabaseOption,
    show_figures: bool = typer.Option(False, "--figures", help="also list every figure"),
    as_json: bool = typer.Option(False, "--json", help="the report as JSON (amounts with units)"),
    accept_stuck: list[str] = typer.Option(
        [], "--accept-stuck", metavar="CONTRACT:TOKEN:AMOUNT",
        help="stuck money you have checked and accept, e.g. Market:TUSD:0.000001 (a plain "
             "transfer nobody can undo); the audit still fails if the stuck amount differs"),
) -> None:
    """Recompute every figure from the chain's logs (no database) and compare with the database;
    check that every lease adds up and that every token each contract holds has a way out."""
    from tessera.explorer.audit import audit as run_audit
    from tessera.explorer.db import make_engine
    from tessera.protocol.figures import format_time

    try:
        accepted = parse_accepted_stuck(accept_stuck)
    except ValueError as exc:
        fail(str(exc), code=2)
    chain = _chain(network)
    try:
        report = run_audit(chain, make_engine(database), accepted)
    except ChainError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(audit_json(report, show_figures), indent=1))
        if not report.agrees:
            raise typer.Exit(1)
        return
    console.print(f"audited {report.figures} figures from {report.events} events, blocks up to "
                  f"{report.to_block} ({format_time(report.as_of)}; read from the chain in "
                  f"{report.chain_seconds:.2f} s)")
    if show_figures:
        for (name, key), fig in sorted(report.chain_figures.items()):
            console.print(f"  {name}[{key}] = {figure_text(name, fig.value)}  ({len(fig.txs)} txs)",
                          markup=False)
    adding = sum(lease.adds_up for lease in report.ledgers.values())
    console.print(f"money: {adding} of {len(report.ledgers)} leases add up to their budget")
    agents = report.chain_figures
    count, amount = (agents.get((f"agent_payments.total.{p}", ALL)) for p in ("count", "amount"))
    if count is not None:
        console.print(f"agents: {count.value} payments to registered providers, "
                      f"{_money(amount.value)} (self-payments not excluded); every agent payment "
                      "is checked against its Transfer", soft_wrap=True)
    for line in report.bridge.lines() if report.bridge else []:
        console.print(line, markup=False, soft_wrap=True)
    for h in report.holdings:
        if h.held or h.owed:
            show = lambda amount, h=h: show_amount(amount, h.decimals, h.symbol)  # noqa: E731
            parts = ", ".join(f"{kind} {show(v)}" for kind, v in sorted(h.breakdown().items()))
            console.print(f"  {h.contract} holds {show(h.held)}; claimable {show(h.owed)}"
                          + (f" ({parts})" if parts else ""), markup=False, soft_wrap=True)
    if report.agrees:
        console.print("[bold green]agree:[/] the database's figures equal the chain's, to the base "
                      "unit, and every token the contracts hold is claimable by someone")
        return
    count = len(report.problems)
    console.print(f"[bold red]{count} problem{'s' if count > 1 else ''}:[/]")
    for problem in report.problems:
        console.print(f"  {problem}", markup=False, soft_wrap=True)
    raise typer.Exit(1)


def parse_accepted_stuck(specs: list[str]) -> dict[tuple[str, str], int]:
    """['Market:TUSD:0.000001'] -> {('Market', 'TUSD'): 1}; a clear ValueError otherwise."""
    from tessera.chain.compiler import CONTRACT_NAMES
    from tessera.protocol.ledger import TOKENS
    from tessera.protocol.money import parse_amount

    decimals = dict(TOKENS.values())
    out: dict[tuple[str, str], int] = {}
    for spec in specs:
        parts = spec.split(":")
        if len(parts) != 3:
            raise ValueError(f"--accept-stuck {spec!r}: write CONTRACT:TOKEN:AMOUNT, e.g. "
                             "Market:TUSD:0.000001")
        contract, symbol, amount = parts
        if contract not in CONTRACT_NAMES:
            raise ValueError(f"--accept-stuck {spec!r}: unknown contract {contract!r}; known: "
                             f"{', '.join(CONTRACT_NAMES)}")
        if symbol not in decimals:
            raise ValueError(f"--accept-stuck {spec!r}: unknown token {symbol!r}; known: "
                             f"{', '.join(decimals)}")
        if (contract, symbol) in out:
            raise ValueError(f"--accept-stuck names {contract}:{symbol} twice")
        try:
            out[(contract, symbol)] = parse_amount(amount, decimals[symbol], symbol=symbol)
        except ValueError as exc:
            raise ValueError(f"--accept-stuck {spec!r}: {exc}") from None
    return out


def audit_json(report, with_figures: bool = False) -> dict:
    """The audit as JSON: amounts as {"amount": "2.2 TUSD", "base_units": 2200000}."""
    out = {"agrees": report.agrees, "block": report.to_block, "as_of": report.as_of,
           "events": report.events, "figures": report.figures,
           "chain_seconds": round(report.chain_seconds, 3), "problems": report.problems,
           "leases": len(report.ledgers),
           "leases_adding_up": sum(lease.adds_up for lease in report.ledgers.values()),
           "holdings": [{**h.to_json(), "balance_of": _amount_json(
               report.balances.get((h.contract, h.token)), h.token)} for h in report.holdings],
           "lease_ledgers": [lease.to_json() for _, lease in sorted(report.ledgers.items())]}
    if report.bridge is not None:
        out["bridge"] = report.bridge.to_json()
    if with_figures:
        out["figure_values"] = [figure_json(f) for _, f in sorted(report.chain_figures.items())]
    return out


def _amount_json(value: int | None, token: str) -> dict | None:
    from tessera.protocol.ledger import amount_json

    return None if value is None else amount_json(value, token)


# What each figure counts, by its name (protocol/figures.py; docs/explorer.md).
def figure_text(name: str, value: int) -> str:
    unit = figure_unit(name)
    if unit == PAYMENT_SYMBOL:
        return _money(value)
    if unit == STAKE_SYMBOL:
        return _stake(value)
    return f"{value} {unit}" if unit in ("seconds", "GPU-seconds", "bps") else str(value)


def figure_json(f) -> dict:
    """One figure for JSON: money as an exact amount with its symbol and in named base units."""
    from tessera.protocol.ledger import exact_amount

    unit = figure_unit(f.name)
    out = {"name": f.name, "key": f.key, "unit": unit}
    if unit in (PAYMENT_SYMBOL, STAKE_SYMBOL):
        token = "PaymentToken" if unit == PAYMENT_SYMBOL else "StakeToken"
        out.update(value=exact_amount(f.value, token), base_units=f.value)
    else:
        out["value"] = f.value
    out["txs"] = list(f.txs)
    return out


def _money(value: int) -> str:
    return format_amount(value, PAYMENT_DECIMALS, PAYMENT_SYMBOL)


def _stake(value: int) -> str:
    return format_amount(value, STAKE_DECIMALS, STAKE_SYMBOL)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _bps(value: int) -> str:
    return f"{value:,} ({value / 100:.2f}%)"


def _keys(figures: Figures, name: str) -> list[str]:
    return sorted(key for n, key in figures if n == name)


def _value(figures: Figures, name: str, key: str = ALL) -> int:
    fig = figures.get((name, key))
    return fig.value if fig else 0


def render(figures: Figures, to_block: int, as_of: int) -> None:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(as_of, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    v = lambda name, key=ALL: _value(figures, name, key)  # noqa: E731
    overview = Table(title=f"Tessera overview: final block {to_block} ({when})")
    overview.add_column("figure")
    overview.add_column("value", justify="right")
    overview.add_column("txs", justify="right")
    rows = [
        ("providers registered", str(v("providers.total.count")), "providers.total.count"),
        ("orders", str(v("orders.total.count")), "orders.total.count"),
        ("leases", str(v("leases.total.count")), "leases.total.count"),
        ("leases active", str(v("leases.active.count")), "leases.active.count"),
        ("GPUs leased now", str(v("leases.active.gpus")), "leases.active.gpus"),
        ("tenant payments (leases)", _money(v("revenue.total.tenant_paid")), "revenue.total.tenant_paid"),
        ("provider income (leases)", _money(v("revenue.total.provider_income")),
         "revenue.total.provider_income"),
        ("protocol fees", _money(v("revenue.total.protocol_fees")), "revenue.total.protocol_fees"),
        ("agent payments to providers*", f"{v('agent_payments.total.count')} payments, "
         f"{_money(v('agent_payments.total.amount'))}", "agent_payments.total.count"),
        ("utilization", _pct(ratio(figures, "total", ALL)), "utilization.total.leased_gpu_seconds"),
        ("stake (active)", _stake(v("stake.total.active")), "stake.total.active"),
        ("stake (unbonding)", _stake(v("stake.total.unbonding")), "stake.total.unbonding"),
        ("slashed", f"{_stake(v('stake.total.slashed'))} in {v('slashes.total.count')} slashes",
         "slashes.total.count"),
        ("downtime claimed", f"{v('downtime.total.epochs')} epochs, "
         f"{_money(v('downtime.total.forfeited'))} forfeited", "downtime.total.epochs"),
    ]
    for label, value, name in rows:
        fig = figures.get((name, ALL))
        overview.add_row(label, value, str(len(fig.txs)) if fig else "0")
    console.print(overview)
    console.print(f"* {AGENT_NOTE}", soft_wrap=True)

    revenue = Table(title="Revenue per day (UTC)")
    for col in ("day", "tenant payments", "provider income", "protocol fees", "txs"):
        revenue.add_column(col, justify="left" if col == "day" else "right")
    for day in _keys(figures, "revenue.by_day.tenant_paid"):
        revenue.add_row(day, _money(v("revenue.by_day.tenant_paid", day)),
                        _money(v("revenue.by_day.provider_income", day)),
                        _money(v("revenue.by_day.protocol_fees", day)),
                        str(len(figures[("revenue.by_day.tenant_paid", day)].txs)))
    console.print(revenue)

    providers = Table(title="Providers")
    for col in ("provider", "leases", "income", "fees", "stake", "unbonding", "slashed"):
        providers.add_column(col, justify="left" if col == "provider" else "right")
    for address in _keys(figures, "stake.by_provider.active"):
        providers.add_row(address, str(v("leases.by_provider.count", address)),
                          _money(v("revenue.by_provider.provider_income", address)),
                          _money(v("revenue.by_provider.protocol_fees", address)),
                          _stake(v("stake.by_provider.active", address)),
                          _stake(v("stake.by_provider.unbonding", address)),
                          _stake(v("stake.by_provider.slashed", address)))
    console.print(providers)
    _agents_table(figures)

    liveness = Table(title="Probes, outages and downtime (docs/validators.md, docs/uptime.md)")
    for col in ("provider", "probes answered", "probes missed", "outages reported", "outage epochs",
                "downtime epochs", "pay forfeited"):
        liveness.add_column(col, justify="left" if col == "provider" else "right")
    for address in _keys(figures, "reliability.by_provider.bps"):
        liveness.add_row(address, *(str(v(name, address)) for name in (
            "probes.by_provider.answered", "probes.by_provider.missed", "outages.by_provider.count",
            "outages.by_provider.epochs", "downtime.by_provider.epochs")),
            _money(v("downtime.by_provider.forfeited", address)))
    console.print(liveness)

    scores = Table(title="Uptime and reliability (basis points: 10000 = 100%; up = heartbeat tx, "
                         "receipt claim or validators' report; pending = not final yet; "
                         "docs/uptime.md, docs/explorer.md)")
    for col in ("provider", "up / epochs owed", "by heartbeat / claim / report", "pending", "uptime",
                "finished", "failed", "slashes", "jailings", "age (d)", "reliability"):
        scores.add_column(col, justify="left" if col == "provider" else "right")
    rel, up = "reliability.by_provider", "uptime.by_provider"
    for address in _keys(figures, f"{rel}.bps"):
        uptime = figures.get((f"{up}.bps", address))
        revoked = v(f"{up}.revoked", address)
        scores.add_row(address, f"{v(f'{up}.up', address)} / {v(f'{up}.epochs', address)}",
                       f"{v(f'{up}.heartbeats', address)} / {v(f'{up}.claimed', address)} / "
                       f"{v(f'{up}.reported', address)}"
                       + (f" ({revoked} revoked)" if revoked else ""),
                       str(v(f"{up}.pending", address)),
                       _bps(uptime.value) if uptime else "-",
                       *(str(v(f"{rel}.{part}", address)) for part in ("finished", "failed", "slashes",
                                                                      "jails")),
                       f"{v(f'{rel}.age_seconds', address) / 86_400:,.1f}", _bps(v(f"{rel}.bps", address)))
    console.print(scores)

    util = Table(title="GPU utilization (leased / registered GPU-hours)")
    for col in ("day / model", "leased GPU-h", "registered GPU-h", "utilization"):
        util.add_column(col, justify="left" if col == "day / model" else "right")
    for scope in ("by_day", "by_model"):
        for key in _keys(figures, f"utilization.{scope}.registered_gpu_seconds"):
            util.add_row(key, f"{v(f'utilization.{scope}.leased_gpu_seconds', key) / 3600:.2f}",
                         f"{v(f'utilization.{scope}.registered_gpu_seconds', key) / 3600:.2f}",
                         _pct(ratio(figures, scope, key)))
    console.print(util)

    prices = Table(title="Price per GPU-hour by model (accepted bids)")
    for col in ("model", "leases", "min", "p25", "median", "p75", "max"):
        prices.add_column(col, justify="left" if col == "model" else "right")
    for model in _keys(figures, "price.by_model.count"):
        prices.add_row(model or "(any)", str(v("price.by_model.count", model)),
                       *(_money(v(f"price.by_model.{p}", model))
                         for p in ("min", "p25", "median", "p75", "max")))
    console.print(prices)


AGENT_NOTE = ("agent payments: AgentBudget payments and x402 'exact' (EIP-3009) transfers to "
              "registered providers, beside lease revenue, not in it; self-payments not excluded "
              "(docs/explorer.md, \"Agent payments\")")


def _agents_table(figures: Figures) -> None:
    v = lambda name, key=ALL: _value(figures, name, key)  # noqa: E731
    agents = Table(title="Agent payments per provider (beside lease revenue; self-payments not excluded)")
    for col in ("provider", "payments", "amount", "distinct payers", "from its own address", "txs"):
        agents.add_column(col, justify="left" if col == "provider" else "right")
    for address in _keys(figures, "agent_payments.by_provider.count"):
        agents.add_row(address, str(v("agent_payments.by_provider.count", address)),
                       _money(v("agent_payments.by_provider.amount", address)),
                       str(v("agent_payments.by_provider.payers", address)),
                       f"{v('agent_payments.by_provider.self_count', address)} "
                       f"({_money(v('agent_payments.by_provider.self_amount', address))})",
                       str(len(figures[("agent_payments.by_provider.count", address)].txs)))
    console.print(agents)
    if any(name.startswith("agent_budget.") for name, _ in figures):
        console.print(f"AgentBudget: deposits {_money(v('agent_budget.total.deposits'))}, withdrawals "
                      f"{_money(v('agent_budget.total.withdrawals'))}, paid (any payee) "
                      f"{_money(v('agent_budget.total.paid'))} in {v('agent_budget.total.payments')} "
                      f"payments, balance {_money(v('agent_budget.total.balance'))}, "
                      f"{v('agent_budget.total.grants')} grants", soft_wrap=True)


def stats(
    database: str | None = DatabaseOption,
    as_json: bool = typer.Option(False, "--json", help="every figure with its tx hashes, as JSON"),
) -> None:
    """Overview figures from the indexed database: revenue, agent payments, utilization, prices,
    stake, uptime, probes, outages, downtime and reliability per provider."""
    from tessera.errors import IndexerError
    from tessera.explorer.db import make_engine
    from tessera.explorer.indexer import database_figures

    try:
        figures, cursor = database_figures(make_engine(database))
    except IndexerError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps({
            "block": cursor.last_block, "block_hash": cursor.last_hash, "as_of": cursor.last_timestamp,
            "figures": [figure_json(f) for _, f in sorted(figures.items())]}, indent=1))
        return
    render(figures, cursor.last_block, cursor.last_timestamp)


def register(app: typer.Typer) -> None:
    """Add the explorer's commands to the main `tessera` app."""
    app.add_typer(explorer_app, name="explorer")
    app.command("audit")(audit)
    app.command("stats")(stats)


app = typer.Typer(help="Tessera explorer (standalone entry point).", no_args_is_help=True,
                  pretty_exceptions_enable=False)
register(app)

if __name__ == "__main__":
    app()
