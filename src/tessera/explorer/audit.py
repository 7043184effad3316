"""`tessera audit`: recompute every figure straight from the chain's logs and compare.

No database is trusted: the events are read again over JSON-RPC from the deploy block up to the
block the database calls final, the figures are computed with the same pure functions, and the
result is compared with (1) the figures from the database's stored events and (2) the figures
its derived tables hold. Agreement is exact, to the base unit and to the tx hash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tessera.chain.client import Chain
from tessera.chain.events import EventReader
from tessera.errors import IndexerError
from tessera.explorer import db
from tessera.explorer.indexer import database_figures, table_figures
from tessera.protocol.figures import Figures, compare, compute_figures


@dataclass
class AuditReport:
    to_block: int
    as_of: int
    events: int
    figures: int
    problems: list[str] = field(default_factory=list)
    chain_seconds: float = 0.0
    chain_figures: Figures = field(default_factory=dict)

    @property
    def agrees(self) -> bool:
        return not self.problems


def audit(chain: Chain, engine: Engine) -> AuditReport:
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
    return AuditReport(to_block=cursor.last_block, as_of=as_of, events=len(records),
                       figures=len(chain_figs), problems=problems, chain_seconds=elapsed,
                       chain_figures=chain_figs)


__all__ = ["AuditReport", "IndexerError", "audit"]
