"""The explorer's reads of the indexed database: figures cached per indexed cursor, and the rows
behind the provider, lease, transaction and figure pages.

Lookups that find nothing raise `HTTPException` (404, or 503 before anything is indexed), so the
API and the pages answer a junk path with 4xx, never a 500.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from web3 import Web3

from tessera.errors import IndexerError
from tessera.explorer import db
from tessera.explorer.indexer import database_figures
from tessera.explorer.web.models import OutageOut
from tessera.protocol.figures import Figures

LEASE_EVENTS = ("LeaseCreated", "LeaseToppedUp", "Withdrawn", "LeaseClosed", "ResultCommitted")


@dataclass
class Snapshot:
    """Every figure as of one indexed block (number, hash, timestamp)."""

    figures: Figures
    block: int
    block_hash: str | None
    as_of: int


class Explorer:
    """Figures cached per indexed cursor (block number and hash): recomputed once per new batch."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._cache: tuple[tuple, Snapshot] | None = None

    def snapshot(self) -> Snapshot:
        with Session(self.engine) as session:
            cursor = session.get(db.Cursor, 1)
            if cursor is None or cursor.last_timestamp is None:
                raise HTTPException(503, "nothing indexed yet: run `tessera explorer index` first")
            mark = (cursor.last_block, cursor.last_hash, cursor.last_timestamp)
        with self._lock:
            if self._cache and self._cache[0] == mark:
                return self._cache[1]
            try:
                figures, cursor = database_figures(self.engine)
            except IndexerError as exc:
                raise HTTPException(503, str(exc)) from exc
            snap = Snapshot(figures, cursor.last_block, cursor.last_hash, cursor.last_timestamp)
            self._cache = ((cursor.last_block, cursor.last_hash, cursor.last_timestamp), snap)
            return snap

    def providers(self) -> list[db.Provider]:
        with Session(self.engine) as session:
            rows = list(session.scalars(select(db.Provider).order_by(db.Provider.registered_at,
                                                                     db.Provider.address)))
            session.expunge_all()
            return rows

    def provider(self, address: str) -> tuple[db.Provider, list[db.Lease], list[db.Payment]]:
        with Session(self.engine) as session:
            row = session.get(db.Provider, address)
            if row is None:
                raise HTTPException(404, f"no provider {address} in the explorer database")
            leases = list(session.scalars(select(db.Lease).where(db.Lease.provider == address)
                                          .order_by(db.Lease.lease_id)))
            payments = list(session.scalars(select(db.Payment).where(db.Payment.provider == address)
                                            .order_by(db.Payment.block_number, db.Payment.log_index)))
            session.expunge_all()
            return row, leases, payments

    def lease(self, lease_id: int) -> tuple[db.Lease, list[db.Event], list[db.Payment]]:
        if not 0 <= lease_id < 2**63:  # SQLite's integers: a larger id cannot be a lease
            raise HTTPException(404, f"no lease {lease_id} in the explorer database")
        with Session(self.engine) as session:
            row = session.get(db.Lease, lease_id)
            if row is None:
                raise HTTPException(404, f"no lease {lease_id} in the explorer database")
            candidates = session.scalars(
                select(db.Event).where(db.Event.contract == "Market", db.Event.event.in_(LEASE_EVENTS),
                                       db.Event.args.like(f'%"lease_id":{lease_id}%'))
                .order_by(db.Event.block_number, db.Event.log_index))
            events = [e for e in candidates if json.loads(e.args).get("lease_id") == lease_id]
            payments = list(session.scalars(select(db.Payment).where(db.Payment.lease_id == lease_id)
                                            .order_by(db.Payment.block_number, db.Payment.log_index)))
            session.expunge_all()
            return row, events, payments

    def uptime_clock(self) -> tuple[int, int] | None:
        """(genesis, epoch length) from the indexed `UptimeStarted` log; None without one."""
        with Session(self.engine) as session:
            row = session.scalars(select(db.Event).where(db.Event.contract == "Uptime",
                                                         db.Event.event == "UptimeStarted")
                                  .order_by(db.Event.block_number, db.Event.log_index)).first()
        if row is None:
            return None
        args = json.loads(row.args)
        return args["genesis"], args["epoch_length"]

    def heartbeats(self, address: str, since: int) -> dict[int, str]:
        """{epoch: tx} of the provider's indexed heartbeats in blocks at or after `since`."""
        with Session(self.engine) as session:
            rows = session.scalars(select(db.Event).where(
                db.Event.contract == "Uptime", db.Event.event == "Heartbeat",
                db.Event.timestamp >= since, db.Event.args.like(f'%"provider":"{address}"%')))
            beats = {}
            for row in rows:
                args = json.loads(row.args)
                if args["provider"] == address:
                    beats.setdefault(args["epoch"], row.tx_hash)
        return beats

    def outages(self, address: str) -> list[OutageOut]:
        """The provider's indexed `OutageReported` events, oldest first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(db.Event).where(
                db.Event.contract == "Uptime", db.Event.event == "OutageReported",
                db.Event.args.like(f'%"provider":"{address}"%'))
                .order_by(db.Event.block_number, db.Event.log_index))
            out = []
            for row in rows:
                args = json.loads(row.args)
                if args["provider"] == address:
                    out.append(OutageOut(first_epoch=args["first_epoch"], last_epoch=args["last_epoch"],
                                         jailed_until=args["jailed_until"], reporter=args["reporter"],
                                         tx_hash=row.tx_hash, timestamp=row.timestamp))
        return out

    def tx(self, tx_hash: str) -> list[db.Event]:
        with Session(self.engine) as session:
            rows = list(session.scalars(select(db.Event).where(db.Event.tx_hash == tx_hash)
                                        .order_by(db.Event.log_index)))
            session.expunge_all()
        if not rows:
            raise HTTPException(404, f"no indexed event in transaction {tx_hash}")
        return rows

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


def parse_address(text: str) -> str:
    """A provider address from a path, checksummed (any letter case); 404 if it is not one."""
    try:
        return Web3.to_checksum_address(text)
    except (ValueError, TypeError) as exc:
        raise HTTPException(404, f"no provider {text!r}: not an address") from exc


def parse_tx_hash(text: str) -> str:
    """A transaction hash from a path, lower-cased; 404 if it is not 32 bytes of hex."""
    value = text.lower()
    if len(value) != 66 or not value.startswith("0x") or any(c not in "0123456789abcdef" for c in value[2:]):
        raise HTTPException(404, f"no transaction {text!r}: not a 32-byte hex hash")
    return value

