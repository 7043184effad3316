"""`tessera audit`: recompute every figure straight from the chain's logs and compare; and check
that every token each contract holds has a way out.

No database is trusted: the events are read again over JSON-RPC from the deploy block up to the
block the database calls final, the figures are computed with the same pure functions, and the
result is compared with (1) the figures from the database's stored events and (2) the figures
its derived tables hold. Agreement is exact, to the base unit and to the tx hash.

Money (protocol/ledger.py): every lease's budget must add up to what went out and what its
claims still hold (a closed lease holds nothing in escrow; what it holds for Settlement is
claimable); every contract must hold, by its tokens' Transfer logs, exactly what parties can
still claim by its own events (no surplus: money with no way out; no shortfall); and what the
Transfer logs say it holds must equal the token's `balanceOf` at the audited block, an
independent reading. The AgentBudget must hold exactly its owners' unspent deposits (deposits less
withdrawals and payments: each owner's way out is `withdraw`), and every agent payment must have
moved what its event says (an `AgentPaid` its Transfer from the AgentBudget, an EIP-3009
`AuthorizationUsed` its Transfer from the payer).

Bridge (a network with peer chains, audit_bridge.py): every chain's bridge logs are read again,
the cross-chain transfers recomputed and compared with the derived table, and conservation
checked per direction (locked = received + in flight + refunded; no delivery without its send).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from web3 import Web3

from tessera.chain.client import Chain
from tessera.chain.eth_calls import balance_of_call, calls_at
from tessera.chain.events import EventReader
from tessera.errors import IndexerError
from tessera.explorer import db
from tessera.explorer.audit_bridge import BridgeAudit, bridge_audit
from tessera.explorer.indexer import database_figures, table_figures
from tessera.protocol.events import EventRecord
from tessera.protocol.figures import Figures, compare, compute_figures
from tessera.protocol.holdings import Holding, agent_payment_problems, holding_problems, holdings
from tessera.protocol.ledger import TOKENS, LeaseLedger, lease_ledgers, lease_problems


@dataclass
class AuditReport:
    to_block: int
    as_of: int
    events: int
    figures: int
    problems: list[str] = field(default_factory=list)
    chain_seconds: float = 0.0
    chain_figures: Figures = field(default_factory=dict)
    ledgers: dict[int, LeaseLedger] = field(default_factory=dict)
    holdings: list[Holding] = field(default_factory=list)
    # (contract, token) -> the token's balanceOf(contract) at `to_block`
    balances: dict[tuple[str, str], int] = field(default_factory=dict)
    bridge: BridgeAudit | None = None     # a network with peer chains (audit_bridge.py)

    @property
    def agrees(self) -> bool:
        return not self.problems


def money_audit(chain: Chain, reader: EventReader, records: list[EventRecord], block: int,
                as_of: int, accepted_stuck: dict[tuple[str, str], int] | None = None,
                ) -> tuple[dict[int, LeaseLedger], list[Holding], dict[tuple[str, str], int],
                           list[str]]:
    """The money checks of the audit over `records` (every event up to `block`): lease
    ledgers, holdings, balanceOf at `block`, and a line per problem (`accepted_stuck`: see
    `ledger.holding_problems`)."""
    addresses = {name: Web3.to_checksum_address(address)
                 for address, name in reader.addresses.items()}
    ledgers = lease_ledgers(records, as_of)
    rows = holdings(records, addresses, as_of, ledgers)
    problems = (lease_problems(ledgers) + holding_problems(rows, accepted_stuck)
                + agent_payment_problems(records, addresses))
    balances = balances_at(chain, [(h.token, h.address) for h in rows], block)
    for h in rows:
        balance = balances[(h.token, h.address)]
        if balance != h.held:
            problems.append(
                f"{h.contract} ({h.address}): {TOKENS[h.token][0]} balanceOf at block {block} is "
                f"{h.show(balance)} but its Transfer logs add up to {h.show(h.held)}: "
                f"{h.show(balance - h.held)} unaccounted by the logs")
    balances = {(h.contract, h.token): balances[(h.token, h.address)] for h in rows}
    return ledgers, rows, balances, problems


def balances_at(chain: Chain, pairs: list[tuple[str, str]], block: int) -> dict[tuple[str, str], int]:
    """{(token contract name, holder): token.balanceOf(holder) at `block`}, in JSON-RPC batches
    (eth_call at that block: an independent reading of what the logs add up to)."""
    calls = [balance_of_call(chain.contract(token).address, holder) for token, holder in pairs]
    return dict(zip(pairs, calls_at(chain, calls, block, what="balanceOf"), strict=True))


def audit(chain: Chain, engine: Engine,
          accepted_stuck: dict[tuple[str, str], int] | None = None) -> AuditReport:
    """Every check of `tessera audit`; `accepted_stuck` {(contract, token symbol): base units}
    is stuck money a person has accepted (see `ledger.holding_problems`)."""
    db_figs, cursor = database_figures(engine)
    started = time.perf_counter()
    reader = EventReader(chain)
    block = reader.block(cursor.last_block)
    problems: list[str] = []
    if block is None or block[0] != cursor.last_hash:
        problems.append(f"block {cursor.last_block} on chain is not the one the database indexed "
                        f"({cursor.last_hash}): a reorg; run `tessera explorer index` again")
    records = reader.events(cursor.first_block, cursor.last_block)
    as_of = cursor.last_timestamp
    chain_figs = compute_figures(records, as_of)
    ledgers, rows, balances, money = money_audit(chain, reader, records, cursor.last_block, as_of,
                                                   accepted_stuck)
    elapsed = time.perf_counter() - started
    problems += [f"events vs database: {p}" for p in compare(chain_figs, db_figs)]
    tables = table_figures(engine)
    names = {name for name, _ in tables}
    subset = {k: v for k, v in chain_figs.items() if k[0] in names}
    problems += [f"events vs derived tables: {p}"
                 for p in compare(subset, tables, check_txs=False)]
    with Session(engine) as session:
        stored = session.scalar(select(func.count()).select_from(db.Event)) or 0
    if stored != len(records):
        problems.append(f"event count: chain has {len(records)}, database has {stored}")
    problems += [f"money: {p}" for p in money]
    bridge = bridge_audit(chain.network, engine) if chain.network.peers else None
    problems += [f"bridge: {p}" for p in (bridge.problems if bridge else [])]
    return AuditReport(to_block=cursor.last_block, as_of=as_of, events=len(records),
                       figures=len(chain_figs), problems=problems, chain_seconds=elapsed,
                       chain_figures=chain_figs, ledgers=ledgers, holdings=rows, balances=balances,
                       bridge=bridge)


__all__ = ["AuditReport", "IndexerError", "audit", "money_audit"]
