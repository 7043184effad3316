"""`tessera explorer index`: copy final chain events into a database, with derived tables.

Rules (docs/explorer.md):
- only blocks at depth >= confirmations are indexed: never past head - confirmations;
- each batch of blocks is written in one database transaction together with the cursor, so a
  killed indexer resumes exactly where the last committed batch ended;
- the hash of every indexed block that holds events, and of each batch's last block, is kept;
  before each run the cursor block's hash is compared with the chain's, and on a difference
  the indexer rolls back to the newest stored block whose hash still matches and re-indexes;
- a rollback costs what it removes, not the history (see `Indexer._rollback`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, delete, event, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from web3 import Web3

from tessera.chain.client import Chain
from tessera.chain.events import EventReader
from tessera.errors import IndexerError, ReorgDuringFetch
from tessera.explorer import db
from tessera.explorer.derive import (
    RECORD_COLUMNS,
    Replay,
    apply_event,
    entities_of,
    entity_key,
    event_columns,
    record_of,
)
from tessera.protocol.events import EventRecord, args_json
from tessera.protocol.figures import ALL, Figure, Figures, compute_figures

__all__ = ["Indexer", "RollbackStats", "SyncReport", "apply_event", "database_figures", "indexed_state",
           "record_of", "rollback_to", "stored_records", "table_figures"]

CHUNK = 500     # keys per IN (...) list: far below SQLite's and PostgreSQL's parameter limits


@dataclass
class RollbackStats:
    """What one rollback did: the events it removed, the entity rows they had changed, and the kept
    events it re-applied to rebuild those rows (the old rollback re-applied every kept event)."""

    keep: int
    removed_events: int = 0
    touched_rows: int = 0
    replayed_events: int = 0
    seconds: float = 0.0


@dataclass
class SyncReport:
    batches: int = 0
    events: int = 0
    from_block: int = 0
    to_block: int = 0
    reorg_rolled_back_to: int | None = None
    rollback: RollbackStats | None = None
    head: int = 0
    safe_head: int = 0


def stored_records(session: Session) -> list[EventRecord]:
    rows = session.execute(select(*RECORD_COLUMNS).order_by(db.Event.block_number, db.Event.log_index)
                           .execution_options(yield_per=10_000))
    return [record_of(row) for row in rows]


class Indexer:
    def __init__(self, chain: Chain, engine: Engine, confirmations: int = 12, batch_blocks: int = 500):
        if confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        if batch_blocks < 1:
            raise ValueError("batch_blocks must be >= 1")
        self.chain = chain
        self.engine = engine
        self.confirmations = confirmations
        self.batch_blocks = batch_blocks
        self.reader = self._reader(chain)
        # Test hook: called inside each batch's transaction just before commit.
        self.before_commit: Callable[[Session, int], None] | None = None
        self.last_rollback: RollbackStats | None = None

    def _reader(self, chain: Chain) -> EventReader:
        return EventReader(chain)

    # -- cursor ----------------------------------------------------------------------------
    def _cursor(self, session: Session) -> db.Cursor:
        cursor = session.get(db.Cursor, 1)
        market = Web3.to_checksum_address(self.chain.network.address("Market"))
        registry = Web3.to_checksum_address(self.chain.network.address("ProviderRegistry"))
        if cursor is None:
            first = self.chain.network.deploy_block
            cursor = db.Cursor(id=1, chain_id=self.chain.network.chain_id, market=market,
                               registry_address=registry, first_block=first, last_block=first - 1,
                               last_hash=None, last_timestamp=None)
            session.add(cursor)
            session.flush()
        elif (cursor.chain_id, cursor.market) != (self.chain.network.chain_id, market):
            raise IndexerError(
                f"this database indexes Market {cursor.market} on chain {cursor.chain_id}, not "
                f"{market} on chain {self.chain.network.chain_id}: use another --database")
        return cursor

    # -- reorgs ----------------------------------------------------------------------------
    def check_reorg(self) -> int | None:
        """Roll back to the newest stored block whose hash the chain still has; return it (or None)."""
        with Session(self.engine) as session, session.begin():
            cursor = self._cursor(session)
            if cursor.last_hash is None:
                return None
            now = self.reader.block(cursor.last_block)
            if now is not None and now[0] == cursor.last_hash:
                return None
            keep, keep_hash, keep_ts = cursor.first_block - 1, None, None
            below = cursor.last_block + 1
            while True:     # newest stored blocks first, 200 at a time
                part = self._stored_blocks(session, below)
                if not part:
                    break
                chain_blocks = self.reader.blocks(n for n, _ in part)
                match = next(((n, h) for n, h in part if chain_blocks.get(n, (None,))[0] == h), None)
                if match:
                    keep, keep_hash, keep_ts = match[0], match[1], chain_blocks[match[0]][1]
                    break
                below = part[-1][0]
            self._rollback(session, cursor, keep, keep_hash, keep_ts)
            return keep

    def _rollback(self, session: Session, cursor: db.Cursor, keep: int, keep_hash: str | None,
                  keep_ts: int | None) -> RollbackStats:
        """Roll the database back to block `keep` (`_rollback_rows`) and point the cursor at it."""
        self.last_rollback = self._rollback_rows(session, keep)
        cursor.last_block, cursor.last_hash, cursor.last_timestamp = keep, keep_hash, keep_ts
        return self.last_rollback

    # -- storage (what a subclass indexing other events of a chain replaces: bridge_index.py) --
    def _stored_blocks(self, session: Session, below: int) -> list[tuple[int, str]]:
        """The newest 200 stored (number, hash) below block `below`, newest first."""
        return [tuple(row) for row in session.execute(
            select(db.Block.number, db.Block.hash).where(db.Block.number < below)
            .order_by(db.Block.number.desc()).limit(200)).all()]

    def _rollback_rows(self, session: Session, keep: int) -> RollbackStats:
        return rollback_to(session, keep)

    def _store(self, session: Session, records: list[EventRecord]) -> None:
        """Write one batch's events and the derived rows they change."""
        for r in records:
            session.add(db.Event(
                block_number=r.block_number, block_hash=r.block_hash, timestamp=r.timestamp,
                tx_hash=r.tx_hash, log_index=r.log_index, contract=r.contract,
                event=r.event, args=args_json(r.args), **event_columns(session, r)))
            apply_event(session, r)

    def _put_blocks(self, session: Session, blocks: dict[int, tuple[str, int]]) -> None:
        _put_blocks(session, blocks)

    # -- syncing ---------------------------------------------------------------------------
    def sync(self, max_batches: int | None = None,
             progress: Callable[[SyncReport], None] | None = None) -> SyncReport:
        report = SyncReport()
        self.last_rollback = None
        report.reorg_rolled_back_to = self.check_reorg()
        report.rollback = self.last_rollback
        report.head = self.reader.head()
        report.safe_head = report.head - self.confirmations
        with Session(self.engine) as session:
            report.from_block = self._cursor(session).last_block + 1
            session.commit()
        retries = 0
        while max_batches is None or report.batches < max_batches:
            with Session(self.engine) as session, session.begin():
                _hold_rows(session)
                cursor = self._cursor(session)
                start = cursor.last_block + 1
                if start > report.safe_head:
                    break
                end = min(start + self.batch_blocks - 1, report.safe_head)
                try:
                    records = self.reader.events(start, end)
                except ReorgDuringFetch:
                    retries += 1
                    if retries > 5:
                        raise
                    continue
                blocks = self.reader.blocks([end, *([cursor.last_block] if cursor.last_hash else [])])
                if cursor.last_hash and blocks.get(cursor.last_block, (None,))[0] != cursor.last_hash:
                    break  # the chain moved below us: the next run's reorg check handles it
                self._store(session, records)
                seen = {r.block_number: (r.block_hash, r.timestamp) for r in records}
                seen[end] = blocks[end]
                self._put_blocks(session, seen)
                cursor.last_block, (cursor.last_hash, cursor.last_timestamp) = end, blocks[end]
                if self.before_commit:
                    self.before_commit(session, report.batches)
            report.batches += 1
            report.events += len(records)
            report.to_block = end
            if progress:
                progress(report)
        return report


def rollback_to(session: Session, keep: int) -> RollbackStats:
    """Make the database what indexing up to block `keep` made, in time that grows with the
    events above `keep` and the rows they changed, not with the history (derive.py's docstring):

    1. read the removed events (block > keep) and the entity rows they changed (`entities_of`);
    2. delete them, their blocks, and the per-event rows of their transactions;
    3. delete those entity rows (a challenge with its votes), except a lease whose LeaseCreated
       is kept: its row stays, to be reset by that event (its GPU model is its provider's then);
    4. re-apply, in chain order, only the kept events of those entities (`Event.entity` and
       `Event.validator`: indexed), scoped to those rows (`derive.Replay`): an event also
       changes other rows (a vote counts on its validator), which are right already.
    """
    started = time.perf_counter()
    above = select(db.Event).where(db.Event.block_number > keep)
    removed = [record_of(row) for row in session.scalars(above)]
    touched = {entity for r in removed for entity in entities_of(r)}
    new_leases = [key for r in removed for kind, key in entities_of(r)
                  if kind == "lease" and (r.contract, r.event) == ("Market", "LeaseCreated")]
    txs = sorted({r.tx_hash for r in removed})
    session.execute(delete(db.Event).where(db.Event.block_number > keep))
    session.execute(delete(db.Block).where(db.Block.number > keep))
    for table in db.PER_EVENT:
        for part in _chunks(txs):
            session.execute(delete(table).where(table.tx_hash.in_(part)))
    by_kind: dict[str, list] = {}
    for kind, key in touched:
        by_kind.setdefault(kind, []).append(key)
    by_kind["lease"] = new_leases
    for kind, keys in by_kind.items():
        _delete_rows(session, kind, keys)
    session.flush()

    keys = sorted(entity_key(e) for e in touched if e[0] != "validator")
    validators = sorted(key for kind, key in touched if kind == "validator")
    rows: dict[int, db.Event] = {}
    for column, values in ((db.Event.entity, keys), (db.Event.validator, validators)):
        for part in _chunks(values):
            found = session.scalars(select(db.Event).where(column.in_(part)))
            rows.update((row.id, row) for row in found)
    scope = Replay(touched)
    for row in sorted(rows.values(), key=lambda row: (row.block_number, row.log_index)):
        record = record_of(row)
        if not touched.isdisjoint(entities_of(record)):   # not an unrelated event of a validator
            apply_event(session, record, scope)
    session.flush()
    return RollbackStats(keep=keep, removed_events=len(removed), touched_rows=len(touched),
                         replayed_events=scope.applied, seconds=round(time.perf_counter() - started, 6))


def _hold_rows(session: Session) -> None:
    """Keep every row the batch loads or adds referenced until the batch ends. The session's
    identity map holds rows weakly: a provider's row, dropped between two of its events, was
    read again, with a flush of every pending row before each read (half of indexing a
    market of a thousand providers went there)."""
    held: list = []
    event.listen(session, "loaded_as_persistent", lambda _s, row: held.append(row))
    event.listen(session, "pending_to_persistent", lambda _s, row: held.append(row))


def _chunks(values: list) -> list[list]:
    return [values[i:i + CHUNK] for i in range(0, len(values), CHUNK)]


def _delete_rows(session: Session, kind: str, keys: list) -> None:
    """Delete the entity rows of one kind (derive.entities_of's keys); a challenge's votes go too."""
    table = db.ENTITY_TABLES[kind]
    columns = table.__mapper__.primary_key
    for part in _chunks(keys):
        if len(columns) == 1:
            session.execute(delete(table).where(columns[0].in_(part)))
        else:
            match = (and_(*(c == v for c, v in zip(columns, key, strict=True))) for key in part)
            session.execute(delete(table).where(or_(*match)))
        if kind == "challenge":
            session.execute(delete(db.Vote).where(db.Vote.challenge_id.in_(part)))


def _put_blocks(session: Session, blocks: dict[int, tuple[str, int]], table=db.Block,
                **key: int) -> None:
    """A batch's block hashes in one INSERT .. ON CONFLICT statement (SQLite and PostgreSQL);
    `table` keyed by its `key` columns (a bridge block's chain id) and `number`."""
    rows = [{**key, "number": n, "hash": h, "timestamp": t} for n, (h, t) in sorted(blocks.items())]
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(session.get_bind().dialect.name)
    if dialect is None:     # another backend: one merge a block
        for row in rows:
            session.merge(table(**row))
        return
    for part in [rows[i:i + 5000] for i in range(0, len(rows), 5000)]:
        stmt = dialect.insert(table).values(part)
        session.execute(stmt.on_conflict_do_update(
            index_elements=[*(getattr(table, k) for k in key), table.number],
            set_={"hash": stmt.excluded.hash, "timestamp": stmt.excluded.timestamp}))


# -- figures from the database ------------------------------------------------------------
def indexed_state(engine: Engine) -> db.Cursor | None:
    with Session(engine) as session:
        cursor = session.get(db.Cursor, 1)
        if cursor is not None:
            session.expunge(cursor)
        return cursor


def database_figures(engine: Engine) -> tuple[Figures, db.Cursor]:
    """The figures from the database's raw events, as of the last indexed (final) block."""
    with Session(engine) as session:
        cursor = session.get(db.Cursor, 1)
        if cursor is None or cursor.last_timestamp is None:
            raise IndexerError("nothing indexed yet: run `tessera explorer index` first")
        figures = compute_figures(stored_records(session), cursor.last_timestamp)
        session.expunge(cursor)
        return figures, cursor


def table_figures(engine: Engine) -> Figures:
    """The figures that the derived tables hold (payments, providers, leases, agent payments,
    owners and grants), same names."""
    out: dict[tuple[str, str], list] = {}

    def put(name: str, key: str, value: int, txs) -> None:
        slot = out.setdefault((name, key), [0, set()])
        slot[0] += value
        slot[1].update(t for t in txs if t)

    with Session(engine) as session:
        for pay in session.scalars(select(db.Payment)):
            for scope, key in (("by_day", pay.day), ("by_provider", pay.provider), ("total", ALL)):
                put(f"revenue.{scope}.tenant_paid", key, pay.provider_amount + pay.fee, [pay.tx_hash])
                put(f"revenue.{scope}.provider_income", key, pay.provider_amount, [pay.tx_hash])
                put(f"revenue.{scope}.protocol_fees", key, pay.fee, [pay.tx_hash])
        for p in session.scalars(select(db.Provider)):
            put("stake.by_provider.slashed", p.address, p.slashed, [])
            put("stake.by_provider.active", p.address, p.stake, [])
            put("stake.by_provider.unbonding", p.address, p.unbonding, [])
            put("stake.by_provider.withdrawn", p.address, p.withdrawn, [])
        for lease in session.scalars(select(db.Lease)):
            put("leases.total.count", ALL, 1, [lease.created_tx])
            put("leases.by_provider.count", lease.provider, 1, [lease.created_tx])
            if lease.closed_at is not None:
                put("leases.closed.count", ALL, 1, [lease.closed_tx])
                put("leases.closed.refunds", ALL, lease.refund, [lease.closed_tx])
        _agent_table_figures(session, put)
    return {k: Figure(k[0], k[1], v, tuple(sorted(t))) for k, (v, t) in out.items()}


def _agent_table_figures(session: Session, put) -> None:
    """Agent payments to providers (count, amount, self-payments) and the AgentBudget's
    deposits, withdrawals, payments and grants, from the agents' derived tables."""
    for pay in session.scalars(select(db.AgentPayment)):
        if pay.scheme == "budget":
            put("agent_budget.total.paid", ALL, pay.amount, [pay.tx_hash])
            put("agent_budget.total.payments", ALL, 1, [pay.tx_hash])
        if not pay.to_provider:
            continue
        for scope, key in (("total", ALL), ("by_provider", pay.payee), ("by_scheme", pay.scheme),
                           ("by_day", pay.day)):
            put(f"agent_payments.{scope}.count", key, 1, [pay.tx_hash])
            put(f"agent_payments.{scope}.amount", key, pay.amount, [pay.tx_hash])
        for scope, key in (("total", ALL), ("by_provider", pay.payee)):
            put(f"agent_payments.{scope}.self_count", key, int(pay.self_paid), [pay.tx_hash])
            put(f"agent_payments.{scope}.self_amount", key, pay.amount if pay.self_paid else 0,
                [pay.tx_hash])
    for owner in session.scalars(select(db.AgentOwner)):
        if owner.deposited:
            put("agent_budget.total.deposits", ALL, owner.deposited, [])
        if owner.withdrawn:
            put("agent_budget.total.withdrawals", ALL, owner.withdrawn, [])
    for grant in session.scalars(select(db.AgentGrant)):
        put("agent_budget.total.grants", ALL, 1, [grant.granted_tx])
