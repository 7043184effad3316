"""Paging of the lists anyone can grow (`Paged`), and the explorer's reads of raw events: a
transaction's events, a figure's transactions, a provider's outage reports. (A provider's epochs,
with their heartbeats, reports and claims, come from the figures' book: `Explorer.uptime_strip`.)

`EventLists` is a part of `queries.Explorer` (it needs `engine` and `page_size`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import HTTPException
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tessera.explorer import db
from tessera.explorer.web.models import OutageOut


@dataclass
class Paged:
    """One page of a list that anyone can grow: `rows` (at most a page size), the page number,
    how many pages and rows there are. Paged in SQL (LIMIT/OFFSET on an indexed order)."""

    rows: list
    page: int
    pages: int
    total: int
    size: int          # rows per page


class EventLists:
    """Paging, and the raw-event reads of the pages."""

    engine: Engine
    page_size: int

    def pages(self, total: int, page_no: int, what: str) -> int:
        """How many pages `total` rows make; a 404 for a page past the last (page 1 always exists)."""
        pages = max(1, -(-total // self.page_size))
        if page_no > pages:
            raise HTTPException(404, f"no page {page_no} of {what}: there are {pages}")
        return pages

    def paged(self, session: Session, query, page_no: int, what: str) -> Paged:
        """Page `page_no` of `query` (ordered on indexed columns): a COUNT and one LIMIT/OFFSET
        query, never every row; a 404 past the last page (page 1 always exists)."""
        total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
        pages = self.pages(total, page_no, what)
        rows = list(session.scalars(query.offset((page_no - 1) * self.page_size).limit(self.page_size)))
        return Paged(rows, page_no, pages, total, self.page_size)

    def outages(self, address: str) -> list[OutageOut]:
        """The provider's latest indexed `OutageReported` events (a page size of them), oldest first.
        Uptime takes one report per stretch of `jail_after` silent epochs, so there are few; they
        are sorted here, as an ORDER BY would draw SQLite to walk every event in chain order."""
        with Session(self.engine) as session:
            rows = sorted(session.scalars(select(db.Event).where(
                db.Event.provider == address, db.Event.contract == "Uptime",
                db.Event.event == "OutageReported")), key=lambda ev: (ev.block_number, ev.log_index))
            rows = rows[-self.page_size:]
            out = []
            for row in rows:
                args = json.loads(row.args)
                if args["provider"] == address:
                    out.append(OutageOut(first_epoch=args["first_epoch"], last_epoch=args["last_epoch"],
                                         jailed_until=args["jailed_until"], reporter=args["reporter"],
                                         tx_hash=row.tx_hash, timestamp=row.timestamp))
        return out

    def tx(self, tx_hash: str, page_no: int = 1) -> Paged:
        """One page of the transaction's indexed events in log order (the index on
        (tx_hash, log_index)); a 404 if it has none."""
        with Session(self.engine) as session:
            rows = self.paged(session, select(db.Event).where(db.Event.tx_hash == tx_hash)
                              .order_by(db.Event.log_index), page_no, "its events")
            session.expunge_all()
        if not rows.total:
            raise HTTPException(404, f"no indexed event in transaction {tx_hash}")
        return rows

    def figure_txs(self, txs: tuple[str, ...], page_no: int) -> Paged:
        """One page of a figure's transactions (in memory, sorted by hash) with their summaries
        queried for that page only: a figure may have a transaction per payment."""
        pages = self.pages(len(txs), page_no, "its transactions")
        start = (page_no - 1) * self.page_size
        return Paged(list(txs[start:start + self.page_size]), page_no, pages, len(txs), self.page_size)

    def tx_summaries(self, txs: tuple[str, ...]) -> dict[str, list]:
        """{tx: [block, timestamp, distinct event names in log order]} for the indexed ones of `txs`
        (queried 500 hashes at a time: a figure may have thousands)."""
        rows = []
        with Session(self.engine) as session:
            for i in range(0, len(txs), 500):
                rows += session.execute(
                    select(db.Event.tx_hash, db.Event.block_number, db.Event.timestamp, db.Event.event)
                    .where(db.Event.tx_hash.in_(txs[i:i + 500]))
                    .order_by(db.Event.block_number, db.Event.log_index)).all()
        by_tx: dict[str, list] = {}
        for tx, block, ts, event in rows:
            slot = by_tx.setdefault(tx, [block, ts, []])
            if event not in slot[2]:
                slot[2].append(event)
        return by_tx
