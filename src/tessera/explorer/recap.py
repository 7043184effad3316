"""The explorer's view of one chain, indexed and audited in one call: what `tessera demo` ends with.

The demo's chain is thrown away when the demo ends, but its explorer database is kept, so the run
can still be browsed with `tessera explorer serve` afterwards."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tessera.chain.client import Chain
from tessera.explorer import db
from tessera.explorer.audit import audit
from tessera.explorer.bridge_index import bridge_indexers, sync_bridge
from tessera.explorer.db import make_engine
from tessera.explorer.derive_orders import FUNDING_COLUMNS
from tessera.explorer.indexer import Indexer
from tessera.protocol.figures import ALL, ratio
from tessera.protocol.ledger import exact_amount
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL

UPTIME_PARTS = ("heartbeats", "claimed", "reported", "revoked", "pending")


def index_and_audit(chain: Chain, database: Path) -> dict:
    """Index every event of `chain` into SQLite at `database` (a devnet: no confirmations to
    wait for), audit it against the chain's logs, and return the headline figures."""
    engine = make_engine(f"sqlite:///{database}")
    sync = Indexer(chain, engine, confirmations=0).sync()
    if chain.network.peers:   # every chain's bridge events, and the cross-chain transfers
        sync_bridge(bridge_indexers(chain.network, engine, confirmations=0), engine)
    report = audit(chain, engine)
    figures = report.chain_figures

    def value(name: str, key: str = ALL) -> int:
        figure = figures.get((name, key))
        return figure.value if figure else 0

    # Up epochs by their evidence (heartbeat tx, receipt claim, validators' report), those a
    # resolved challenge revoked, and those not final yet (protocol/uptime_book.py).
    uptime = {key: {part: value(f"uptime.by_provider.{part}", key)
                    for part in ("bps", "up", "epochs", *UPTIME_PARTS)}
              for (name, key) in figures if name == "uptime.by_provider.epochs"}
    utilization = ratio(figures, "total", ALL)
    money = {name: value(f"revenue.total.{name}") for name in ("tenant_paid", "provider_income",
                                                               "protocol_fees")}
    return {
        "database": str(database), "events": sync.events, "to_block": report.to_block,
        "figures": report.figures, "audit_agrees": report.agrees, "audit_problems": report.problems,
        # tenant_paid, provider_income, protocol_fees: TUSD base units (named in "units"; the
        # same amounts, exact with their symbol, in "amounts")
        **money,
        "units": {name: f"{PAYMENT_SYMBOL} base units (10^-{PAYMENT_DECIMALS} {PAYMENT_SYMBOL})"
                  for name in money},
        "amounts": {name: exact_amount(v) for name, v in money.items()},
        "leases": len(report.ledgers),
        "leases_adding_up": sum(lease.adds_up for lease in report.ledgers.values()),
        # Agent payments to registered providers, beside lease revenue (self-payments not
        # excluded): amounts in TUSD base units, exact with their symbol in "amount".
        "agent_payments": {
            "count": value("agent_payments.total.count"),
            "amount_base_units": value("agent_payments.total.amount"),
            "amount": exact_amount(value("agent_payments.total.amount")),
            "by_scheme": {s: {"count": value("agent_payments.by_scheme.count", s),
                              "amount_base_units": value("agent_payments.by_scheme.amount", s)}
                          for s in ("budget", "exact")},
            "by_provider": {key: {"count": value("agent_payments.by_provider.count", key),
                                  "amount_base_units": value("agent_payments.by_provider.amount", key),
                                  "self_count": value("agent_payments.by_provider.self_count", key),
                                  "txs": list(figures[(name, key)].txs)}
                            for (name, key) in figures if name == "agent_payments.by_provider.count"},
            "unit": f"{PAYMENT_SYMBOL} base units (10^-{PAYMENT_DECIMALS} {PAYMENT_SYMBOL})",
            "includes": "AgentBudget payments and x402 exact (EIP-3009) transfers to registered "
                        "providers; not in tenant_paid/provider_income; self-payments not excluded",
        },
        "holdings": [h.to_json() for h in report.holdings if h.held or h.owed],
        "utilization": utilization,
        "uptime": uptime,
        # every chain's bridge: the audit's JSON (directions per source, destination and token;
        # lock sides per lock-mode token bridge; BridgeOrders' holding under "orders"), its lines,
        # each transfer with its token, and each funding BridgeOrders recorded
        **({"bridge": {**report.bridge.to_json(), "lines": report.bridge.lines(),
                       "transfers": cross_chain_transfers(engine),
                       "fundings": bridge_fundings(engine)}} if report.bridge else {}),
    }


def cross_chain_transfers(engine) -> list[dict]:
    """Each cross-chain message as indexed: its route, token ("TUSD" by a TokenBridge, "TSTK" by
    a StakeBridge, None: neither), amount and refunded (that token's base units), state and the
    transactions on both chains."""
    columns = ("message_id", "source_chain", "destination_chain", "sender", "recipient", "token",
               "amount", "state", "source_tx", "delivery_chain", "delivery_tx", "bounce_tx", "refunded")
    with Session(engine) as session:
        rows = session.scalars(select(db.CrossChainTransfer)
                               .order_by(db.CrossChainTransfer.source_timestamp))
        return [{c: getattr(row, c) for c in columns} for row in rows]


def bridge_fundings(engine) -> list[dict]:
    """Each message BridgeOrders recorded (derive_orders.FundingRow's columns: amounts in TUSD
    base units), in delivery order."""
    with Session(engine) as session:
        rows = session.scalars(select(db.BridgeFunding).order_by(db.BridgeFunding.delivered_at,
                                                                 db.BridgeFunding.message_id))
        return [{c: getattr(row, c) for c in FUNDING_COLUMNS} for row in rows]
