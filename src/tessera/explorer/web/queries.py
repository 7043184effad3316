"""The explorer's reads of the indexed database: figures kept per indexed cursor (updated from
the new events only), and the rows behind the provider, lease, transaction and figure pages.

Lookups that find nothing raise `HTTPException` (404, or 503 before anything is indexed), so the
API and the pages answer a junk path with 4xx, never a 500.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from fastapi import HTTPException
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from web3 import Web3

from tessera.explorer import db
from tessera.explorer.derive import RECORD_COLUMNS, entity_key, record_of
from tessera.explorer.web.paging import EventLists, Paged
from tessera.protocol.figure_book import FigureBook
from tessera.protocol.figures import Figures, epoch_at
from tessera.protocol.uptime_book import EpochState

PAGE_SIZE = 50          # rows per page of the list pages and of every list on a detail page
# The events a lease's ledger adds up (protocol.ledger.lease_ledgers): fetched in full, by name, so
# the money adds up however many other events (ResultCommitted, ...) the lease has.
MONEY_EVENTS = ("LeaseCreated", "LeaseToppedUp", "Withdrawn", "LeaseClosed", "DowntimeClaimed",
                "PayReleased", "RoundRefunded")
MAX_ID = 2**63 - 1      # the database's integers: a larger id names nothing


@dataclass
class LeaseView:
    """Everything the lease page shows: the lease row, one page of its events (`Event.lease_id`
    in chain order), its money events (every one: the ledger adds them up), payouts, its job's
    round roots, settlement, challenges and the first page of each one's votes."""

    lease: db.Lease
    events: Paged
    money_events: list[db.Event]           # MONEY_EVENTS of the lease, chain order, all of them
    payments: Paged
    rounds: list[db.Round]
    settlements: list[db.Settlement]       # refunds and releases that walked rounds: each round's fate
    settlement_page: Paged                 # one page of every Settlement event of the lease
    challenges: Paged
    votes: dict[int, Paged]                # challenge id -> the first page of its votes
    slashes: dict[int, list[db.Slash]]     # challenge id -> the slashes it caused
    order: db.Order | None
    order_event: db.Event | None           # its OrderCreated: says whether the lease is verified


@dataclass
class ChallengeView:
    challenge: db.Challenge
    votes: Paged
    slashes: list[db.Slash]
    events: Paged                          # its own Verification events (`Event.entity`)
    verdict_events: list[db.Event]         # the registry's slash and jail in the verdict's tx
    lease: db.Lease | None


@dataclass
class Snapshot:
    """Every figure as of one indexed block (number, hash, timestamp)."""

    figures: Figures
    block: int
    block_hash: str | None
    as_of: int


class Explorer(EventLists):
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
        query = select(*RECORD_COLUMNS).where(db.Event.block_number <= last_block)
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
        rows = session.execute(query.order_by(db.Event.block_number, db.Event.log_index)
                               .execution_options(yield_per=10_000))
        book.apply(record_of(row) for row in rows)
        self._book = book
        return book

    def uptime_strip(self, address: str, as_of: int, limit: int
                     ) -> tuple[tuple[int, int], int, int, list[EpochState]] | None:
        """((genesis, epoch length), the registration's epoch, the last final epoch, each of the
        provider's last `limit` epochs up to `as_of`'s with its state and evidence), read from the
        figures' own book (protocol/uptime_book.py: the same fold as the uptime figures, so the
        strip and the figures agree); None without the Uptime clock or the provider. Call after
        `snapshot()` (which brings the book up to the indexed cursor)."""
        with self._lock:
            log = self._book.uptime if self._book is not None else None
            if log is None or log.clock is None or address not in log.registered:
                return None
            now = epoch_at(as_of, *log.clock)
            first = epoch_at(log.registered[address][0], *log.clock)
            states = log.epoch_states(address, max(first, now - limit + 1), now, as_of)
            return log.clock, first, now - log.lag - 1, states

    def providers_page(self, page_no: int) -> Paged:
        """Providers in registration order, one page (anyone may register: a thousand
        providers on one page was 4 MB of HTML and 0.7 s)."""
        with Session(self.engine) as session:
            found = self.paged(session, select(db.Provider).order_by(db.Provider.registered_at,
                                                                     db.Provider.address),
                               page_no, "providers")
            session.expunge_all()
            return found

    def provider(self, address: str, leases_page: int = 1, payments_page: int = 1) -> tuple[
            db.Provider, Paged, Paged]:
        """The provider, a page of its leases (newest first) and of its payouts (newest first)."""
        with Session(self.engine) as session:
            row = session.get(db.Provider, address)
            if row is None:
                raise HTTPException(404, f"no provider {address} in the explorer database")
            leases = self.paged(session, select(db.Lease).where(db.Lease.provider == address)
                                .order_by(db.Lease.lease_id.desc()), leases_page, "its leases")
            payments = self.paged(session, select(db.Payment).where(db.Payment.provider == address)
                                  .order_by(db.Payment.block_number.desc(), db.Payment.log_index.desc()),
                                  payments_page, "its payouts")
            session.expunge_all()
            return row, leases, payments

    def lease(self, lease_id: int, page_no: int = 1, payments_page: int = 1,
              settlements_page: int = 1, challenges_page: int = 1) -> LeaseView:
        if not 0 <= lease_id <= MAX_ID:  # SQLite's integers: a larger id cannot be a lease
            raise HTTPException(404, f"no lease {lease_id} in the explorer database")
        chain_order = (db.Event.block_number, db.Event.log_index)
        with Session(self.engine) as session:
            row = session.get(db.Lease, lease_id)
            if row is None:
                raise HTTPException(404, f"no lease {lease_id} in the explorer database")
            events = self.paged(session, select(db.Event).where(db.Event.lease_id == lease_id)
                                .order_by(*chain_order), page_no, "its events")
            # No ORDER BY: it would draw SQLite to walk every event of the lease in chain order
            # rather than look up the money events by name (they are few; sorted here).
            money = sorted(session.scalars(select(db.Event).where(
                db.Event.lease_id == lease_id, db.Event.event.in_(MONEY_EVENTS),
                db.Event.contract.in_(("Market", "Settlement")))),
                key=lambda ev: (ev.block_number, ev.log_index))
            payments = self.paged(session, select(db.Payment).where(db.Payment.lease_id == lease_id)
                                  .order_by(db.Payment.block_number, db.Payment.log_index),
                                  payments_page, "its payouts")
            rounds = sorted(session.scalars(select(db.Round).where(db.Round.job == row.order_id)),
                            key=lambda r: r.round_index)
            # What each round's pay became: refunds and the releases that walked rounds (an
            # empty release, anyone's to call, walks none); the table of every settlement is paged.
            settled = list(session.scalars(select(db.Settlement).where(
                db.Settlement.lease_id == lease_id,
                (db.Settlement.kind == "refund") | (db.Settlement.from_round != db.Settlement.to_round))
                .order_by(db.Settlement.block_number, db.Settlement.log_index)))
            settlements = self.paged(session, select(db.Settlement).where(db.Settlement.lease_id == lease_id)
                                     .order_by(db.Settlement.block_number, db.Settlement.log_index),
                                     settlements_page, "its settlement events")
            challenges = self.paged(session, select(db.Challenge).where(db.Challenge.lease_id == lease_id)
                                    .order_by(db.Challenge.challenge_id), challenges_page,
                                    "its challenges")
            ids = [c.challenge_id for c in challenges.rows]
            votes = {i: self.paged(session, self._votes(i), 1, "votes") for i in ids}
            slashes: dict[int, list[db.Slash]] = {i: [] for i in ids}
            for slash in session.scalars(select(db.Slash).where(
                    db.Slash.cause == "challenge", db.Slash.cause_ref.in_([str(i) for i in ids]))):
                slashes[int(slash.cause_ref)].append(slash)
            order = session.get(db.Order, row.order_id)
            order_event = session.scalars(select(db.Event).where(
                db.Event.tx_hash == order.created_tx, db.Event.log_index == order.created_log_index)
            ).first() if order else None
            session.expunge_all()
        return LeaseView(row, events, money, payments, rounds, settled, settlements, challenges, votes,
                         slashes, order, order_event)

    @staticmethod
    def _votes(challenge_id: int):
        return (select(db.Vote).where(db.Vote.challenge_id == challenge_id)
                .order_by(db.Vote.voted_at, db.Vote.validator))

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

    def challenge(self, challenge_id: int, page_no: int = 1, votes_page: int = 1) -> ChallengeView:
        """The challenge, a page of its votes, a page of its own events (chain order) and the
        registry's events of its verdict's transaction (the slash and the jailing)."""
        if not 0 <= challenge_id <= MAX_ID:
            raise HTTPException(404, f"no challenge {challenge_id} in the explorer database")
        with Session(self.engine) as session:
            row = session.get(db.Challenge, challenge_id)
            if row is None:
                raise HTTPException(404, f"no challenge {challenge_id} in the explorer database")
            votes = self.paged(session, self._votes(challenge_id), votes_page, "its votes")
            slashes = list(session.scalars(select(db.Slash).where(db.Slash.cause == "challenge",
                                                                  db.Slash.cause_ref == str(challenge_id))
                                           .order_by(db.Slash.block_number, db.Slash.log_index)
                                           .limit(self.page_size)))
            events = self.paged(session, select(db.Event).where(
                db.Event.entity == entity_key(("challenge", challenge_id)))
                .order_by(db.Event.block_number, db.Event.log_index), page_no, "its events")
            verdict = list(session.scalars(select(db.Event).where(
                db.Event.tx_hash == row.resolved_tx, db.Event.contract == "ProviderRegistry")
                .order_by(db.Event.log_index).limit(self.page_size))) if row.resolved_tx else []
            lease = session.get(db.Lease, row.lease_id)
            session.expunge_all()
        return ChallengeView(row, votes, slashes, events, verdict, lease)

    def validators(self) -> list[db.Validator]:
        with Session(self.engine) as session:
            rows = list(session.scalars(select(db.Validator).order_by(db.Validator.registered_at,
                                                                      db.Validator.address)))
            session.expunge_all()
            return rows

    def validator(self, address: str, votes_page: int = 1, entries_page: int = 1,
                  slashes_page: int = 1) -> tuple[db.Validator, Paged, Paged, Paged]:
        """The validator and a page each of its votes, hardware entries and slashes, newest first."""
        with Session(self.engine) as session:
            row = session.get(db.Validator, address)
            if row is None:
                raise HTTPException(404, f"no validator {address} in the explorer database")
            votes = self.paged(session, select(db.Vote).where(db.Vote.validator == address)
                               .order_by(db.Vote.voted_at.desc(), db.Vote.challenge_id.desc()),
                               votes_page, "its votes")
            entries = self.paged(session, select(db.HardwareEntry)
                                 .where(db.HardwareEntry.validator == address)
                                 .order_by(db.HardwareEntry.timestamp.desc(), db.HardwareEntry.id.desc()),
                                 entries_page, "its hardware entries")
            slashes = self.paged(session, select(db.Slash).where(db.Slash.kind == "validator",
                                                                 db.Slash.address == address)
                                 .order_by(db.Slash.block_number.desc(), db.Slash.log_index.desc()),
                                 slashes_page, "its slashes")
            session.expunge_all()
            return row, votes, entries, slashes

    def provider_cases(self, address: str, slashes_page: int = 1, challenges_page: int = 1,
                       cases_page: int = 1) -> tuple[Paged, Paged, Paged]:
        """A page each of the provider's slashes (each with its cause), the challenges against it
        and its hardware cases, newest first."""
        with Session(self.engine) as session:
            slashes = self.paged(session, select(db.Slash).where(db.Slash.kind == "provider",
                                                                 db.Slash.address == address)
                                 .order_by(db.Slash.block_number.desc(), db.Slash.log_index.desc()),
                                 slashes_page, "its slashes")
            challenges = self.paged(session, select(db.Challenge).where(db.Challenge.provider == address)
                                    .order_by(db.Challenge.challenge_id.desc()), challenges_page,
                                    "challenges against it")
            cases = self.paged(session, select(db.HardwareCase).where(db.HardwareCase.provider == address)
                               .order_by(db.HardwareCase.epoch.desc()), cases_page, "its hardware cases")
            session.expunge_all()
            return slashes, challenges, cases

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

