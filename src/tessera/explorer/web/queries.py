"""The explorer's reads of the indexed database: figures kept per indexed cursor (updated from
the new events only), and the rows behind the provider, lease, transaction and figure pages.

Lookups that find nothing raise `HTTPException` (404, or 503 before anything is indexed), so the
API and the pages answer a junk path with 4xx, never a 500.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from fastapi import HTTPException
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from web3 import Web3

from tessera.explorer import db
from tessera.explorer.derive import record_of
from tessera.explorer.web.models import OutageOut
from tessera.protocol.figure_book import FigureBook
from tessera.protocol.figures import Figures

PAGE_SIZE = 50          # rows per page of the list pages
MAX_ID = 2**63 - 1      # the database's integers: a larger id names nothing


@dataclass
class LeaseView:
    """Everything the lease page shows: the lease row, its events (one indexed query on
    `Event.lease_id`), payouts, its job's round roots, settlement, challenges and their votes."""

    lease: db.Lease
    events: list[db.Event]
    payments: list[db.Payment]
    rounds: list[db.Round]
    settlements: list[db.Settlement]
    challenges: list[db.Challenge]
    votes: dict[int, list[db.Vote]]
    slashes: dict[int, list[db.Slash]]     # challenge id -> the slashes it caused
    order: db.Order | None
    order_event: db.Event | None           # its OrderCreated: says whether the lease is verified


@dataclass
class ChallengeView:
    challenge: db.Challenge
    votes: list[db.Vote]
    slashes: list[db.Slash]
    events: list[db.Event]
    lease: db.Lease | None


@dataclass
class Snapshot:
    """Every figure as of one indexed block (number, hash, timestamp)."""

    figures: Figures
    block: int
    block_hash: str | None
    as_of: int


class Explorer:
    """Figures per indexed cursor (block number and hash), kept up to date incrementally: one
    `FigureBook` in memory takes only the events after the block it last applied (one indexed
    query, `block_number > last`), and is rebuilt from every stored event only when the cursor
    moved back or the stored hash of that block changed (a reorg rolled it back)."""

    def __init__(self, engine: Engine, page_size: int = PAGE_SIZE):
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.engine = engine
        self.page_size = page_size
        self._lock = threading.Lock()
        self._cache: tuple[tuple, Snapshot] | None = None
        self._book: FigureBook | None = None
        self._book_at: tuple[int, str | None] | None = None   # (block, hash) the book is up to
        self.rebuilds = 0          # how many times the book was built from the first event

    def snapshot(self) -> Snapshot:
        with Session(self.engine) as session:
            cursor = session.get(db.Cursor, 1)
            if cursor is None or cursor.last_timestamp is None:
                raise HTTPException(503, "nothing indexed yet: run `tessera explorer index` first")
            mark = (cursor.last_block, cursor.last_hash, cursor.last_timestamp)
            with self._lock:
                if self._cache and self._cache[0] == mark:
                    return self._cache[1]
                book = self._advance(session, cursor.last_block)
                self._book_at = (cursor.last_block, cursor.last_hash)
                snap = Snapshot(book.figures(cursor.last_timestamp), cursor.last_block, cursor.last_hash,
                                cursor.last_timestamp)
                self._cache = (mark, snap)
                return snap

    def _advance(self, session: Session, last_block: int) -> FigureBook:
        """The book up to `last_block`: the new events only, or every event after a reorg."""
        query = select(db.Event).where(db.Event.block_number <= last_block)
        book = self._book
        if book is not None and self._book_at is not None:
            at_block, at_hash = self._book_at
            stored = session.get(db.Block, at_block)
            if at_block <= last_block and stored is not None and stored.hash == at_hash:
                query = query.where(db.Event.block_number > at_block)
            else:
                book = None
        if book is None:
            book = FigureBook()
            self.rebuilds += 1
        self._book = None     # half-applied books are never kept
        rows = session.scalars(query.order_by(db.Event.block_number, db.Event.log_index))
        book.apply(record_of(row) for row in rows)
        self._book = book
        return book

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

    def lease(self, lease_id: int) -> LeaseView:
        if not 0 <= lease_id <= MAX_ID:  # SQLite's integers: a larger id cannot be a lease
            raise HTTPException(404, f"no lease {lease_id} in the explorer database")
        with Session(self.engine) as session:
            row = session.get(db.Lease, lease_id)
            if row is None:
                raise HTTPException(404, f"no lease {lease_id} in the explorer database")
            events = list(session.scalars(select(db.Event).where(db.Event.lease_id == lease_id)
                                          .order_by(db.Event.block_number, db.Event.log_index)))
            payments = list(session.scalars(select(db.Payment).where(db.Payment.lease_id == lease_id)
                                            .order_by(db.Payment.block_number, db.Payment.log_index)))
            rounds = sorted(session.scalars(select(db.Round).where(db.Round.job == row.order_id)),
                            key=lambda r: r.round_index)
            settlements = list(session.scalars(
                select(db.Settlement).where(db.Settlement.lease_id == lease_id)
                .order_by(db.Settlement.block_number, db.Settlement.log_index)))
            challenges = list(session.scalars(select(db.Challenge).where(db.Challenge.lease_id == lease_id)
                                              .order_by(db.Challenge.challenge_id)))
            ids = [c.challenge_id for c in challenges]
            votes: dict[int, list[db.Vote]] = {i: [] for i in ids}
            for vote in session.scalars(select(db.Vote).where(db.Vote.challenge_id.in_(ids))
                                        .order_by(db.Vote.voted_at, db.Vote.validator)):
                votes[vote.challenge_id].append(vote)
            slashes: dict[int, list[db.Slash]] = {i: [] for i in ids}
            for slash in session.scalars(select(db.Slash).where(
                    db.Slash.cause == "challenge", db.Slash.cause_ref.in_([str(i) for i in ids]))):
                slashes[int(slash.cause_ref)].append(slash)
            order = session.get(db.Order, row.order_id)
            order_event = session.scalars(select(db.Event).where(
                db.Event.tx_hash == order.created_tx, db.Event.log_index == order.created_log_index)
            ).first() if order else None
            session.expunge_all()
        return LeaseView(row, events, payments, rounds, settlements, challenges, votes, slashes, order,
                         order_event)

    def pages(self, total: int, page_no: int, what: str) -> int:
        """How many pages `total` rows make; a 404 for a page past the last (page 1 always exists)."""
        pages = max(1, -(-total // self.page_size))
        if page_no > pages:
            raise HTTPException(404, f"no page {page_no} of {what}: there are {pages}")
        return pages

    def leases_page(self, page_no: int) -> tuple[list[db.Lease], int]:
        """Leases newest first, one page; and how many there are."""
        size = self.page_size
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(db.Lease)) or 0
            rows = list(session.scalars(select(db.Lease).order_by(db.Lease.lease_id.desc())
                                        .offset((page_no - 1) * size).limit(size)))
            session.expunge_all()
        return rows, total

    def challenges_page(self, page_no: int) -> tuple[list[db.Challenge], int]:
        """Challenges newest first, one page; and how many there are."""
        size = self.page_size
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(db.Challenge)) or 0
            rows = list(session.scalars(select(db.Challenge).order_by(db.Challenge.challenge_id.desc())
                                        .offset((page_no - 1) * size).limit(size)))
            session.expunge_all()
        return rows, total

    def challenge(self, challenge_id: int) -> ChallengeView:
        if not 0 <= challenge_id <= MAX_ID:
            raise HTTPException(404, f"no challenge {challenge_id} in the explorer database")
        with Session(self.engine) as session:
            row = session.get(db.Challenge, challenge_id)
            if row is None:
                raise HTTPException(404, f"no challenge {challenge_id} in the explorer database")
            votes = list(session.scalars(select(db.Vote).where(db.Vote.challenge_id == challenge_id)
                                         .order_by(db.Vote.voted_at, db.Vote.validator)))
            slashes = list(session.scalars(select(db.Slash).where(db.Slash.cause == "challenge",
                                                                  db.Slash.cause_ref == str(challenge_id))))
            candidates = session.scalars(select(db.Event).where(
                db.Event.lease_id == row.lease_id, db.Event.contract == "Verification")
                .order_by(db.Event.block_number, db.Event.log_index))
            events = [ev for ev in candidates if json.loads(ev.args).get("challenge_id") == challenge_id]
            if row.resolved_tx:   # the slash and the jailing happen in the verdict's transaction
                events += session.scalars(select(db.Event).where(
                    db.Event.tx_hash == row.resolved_tx, db.Event.contract == "ProviderRegistry")
                    .order_by(db.Event.log_index))
                events.sort(key=lambda ev: (ev.block_number, ev.log_index))
            lease = session.get(db.Lease, row.lease_id)
            session.expunge_all()
        return ChallengeView(row, votes, slashes, events, lease)

    def validators(self) -> list[db.Validator]:
        with Session(self.engine) as session:
            rows = list(session.scalars(select(db.Validator).order_by(db.Validator.registered_at,
                                                                      db.Validator.address)))
            session.expunge_all()
            return rows

    def validator(self, address: str) -> tuple[db.Validator, list[db.Vote], list[db.HardwareEntry],
                                                list[db.Slash]]:
        with Session(self.engine) as session:
            row = session.get(db.Validator, address)
            if row is None:
                raise HTTPException(404, f"no validator {address} in the explorer database")
            votes = list(session.scalars(select(db.Vote).where(db.Vote.validator == address)
                                         .order_by(db.Vote.voted_at.desc())))
            entries = list(session.scalars(
                select(db.HardwareEntry).where(db.HardwareEntry.validator == address)
                .order_by(db.HardwareEntry.timestamp.desc())))
            slashes = list(session.scalars(select(db.Slash).where(db.Slash.kind == "validator",
                                                                  db.Slash.address == address)
                                           .order_by(db.Slash.block_number, db.Slash.log_index)))
            session.expunge_all()
            return row, votes, entries, slashes

    def provider_cases(self, address: str) -> tuple[list[db.Slash], list[db.Challenge],
                                                     list[db.HardwareCase]]:
        """A provider's slashes (each with its cause), the challenges against it and its hardware cases."""
        with Session(self.engine) as session:
            slashes = list(session.scalars(select(db.Slash).where(db.Slash.kind == "provider",
                                                                  db.Slash.address == address)
                                           .order_by(db.Slash.block_number, db.Slash.log_index)))
            challenges = list(session.scalars(select(db.Challenge).where(db.Challenge.provider == address)
                                              .order_by(db.Challenge.challenge_id)))
            cases = list(session.scalars(select(db.HardwareCase).where(db.HardwareCase.provider == address)
                                         .order_by(db.HardwareCase.epoch)))
            session.expunge_all()
            return slashes, challenges, cases

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
                db.Event.provider == address, db.Event.contract == "Uptime", db.Event.event == "Heartbeat",
                db.Event.timestamp >= since))
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
                db.Event.provider == address, db.Event.contract == "Uptime",
                db.Event.event == "OutageReported")
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


def parse_address(text: str, what: str = "provider") -> str:
    """An address from a path, checksummed (any letter case); 404 if it is not one."""
    try:
        return Web3.to_checksum_address(text)
    except (ValueError, TypeError) as exc:
        raise HTTPException(404, f"no {what} {text[:100]!r}: not an address") from exc


def parse_tx_hash(text: str) -> str:
    """A transaction hash from a path, lower-cased; 404 if it is not 32 bytes of hex."""
    value = text.lower()
    if len(value) != 66 or not value.startswith("0x") or any(c not in "0123456789abcdef" for c in value[2:]):
        raise HTTPException(404, f"no transaction {text[:100]!r}: not a 32-byte hex hash")
    return value

