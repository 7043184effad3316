"""The explorer's database: raw events, a cursor, checkpoint block hashes and derived tables.

SQLAlchemy 2; SQLite by default, any SQLAlchemy URL (PostgreSQL included) accepted. Amounts can
exceed 64 bits (stake has 18 decimals), so every money column is a `BigAmount`: decimal text in
the database, a Python int in code.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tessera.chain.accounts import tessera_home


class BigAmount(TypeDecorator):
    """Unbounded integer stored as decimal text (portable across SQLite and PostgreSQL)."""

    impl = String(80)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else str(int(value))

    def process_result_value(self, value, dialect):
        return None if value is None else int(value)


class Base(DeclarativeBase):
    pass


class Cursor(Base):
    __tablename__ = "explorer_cursor"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    market: Mapped[str] = mapped_column(String(42))
    registry_address: Mapped[str] = mapped_column("registry", String(42))
    first_block: Mapped[int] = mapped_column(BigInteger)
    last_block: Mapped[int] = mapped_column(BigInteger)          # last block indexed as final
    last_hash: Mapped[str | None] = mapped_column(String(66))
    last_timestamp: Mapped[int | None] = mapped_column(BigInteger)


class Block(Base):
    """Hashes of indexed blocks that hold events, and of every batch's last block (checkpoints)."""

    __tablename__ = "explorer_blocks"
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[int] = mapped_column(BigInteger)


class Event(Base):
    __tablename__ = "explorer_events"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_event_tx_log"),
                      Index("ix_event_block_log", "block_number", "log_index"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    contract: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(64))
    args: Mapped[str] = mapped_column(Text)


class Provider(Base):
    __tablename__ = "explorer_providers"
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    gpu_model: Mapped[str] = mapped_column(String(64))
    gpu_count: Mapped[int] = mapped_column(Integer)
    gpu_memory_mb: Mapped[int] = mapped_column(Integer)
    endpoint: Mapped[str] = mapped_column(String(256))
    price_floor: Mapped[int] = mapped_column(BigAmount)
    registered_at: Mapped[int] = mapped_column(BigInteger)
    registered_tx: Mapped[str] = mapped_column(String(66))
    stake: Mapped[int] = mapped_column(BigAmount, default=0)
    unbonding: Mapped[int] = mapped_column(BigAmount, default=0)
    slashed: Mapped[int] = mapped_column(BigAmount, default=0)
    withdrawn: Mapped[int] = mapped_column(BigAmount, default=0)
    jailed_until: Mapped[int] = mapped_column(BigInteger, default=0)


class Lease(Base):
    __tablename__ = "explorer_leases"
    lease_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    order_id: Mapped[int] = mapped_column(BigInteger)
    tenant: Mapped[str] = mapped_column(String(42))
    provider: Mapped[str] = mapped_column(String(42), index=True)
    gpu_model: Mapped[str] = mapped_column(String(64))
    price_per_gpu_hour: Mapped[int] = mapped_column(BigAmount)
    gpus: Mapped[int] = mapped_column(Integer)
    budget: Mapped[int] = mapped_column(BigAmount)
    start: Mapped[int] = mapped_column(BigInteger)
    closed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    earned: Mapped[int] = mapped_column(BigAmount, default=0)            # gross paid out so far
    provider_income: Mapped[int] = mapped_column(BigAmount, default=0)
    fees: Mapped[int] = mapped_column(BigAmount, default=0)
    refund: Mapped[int] = mapped_column(BigAmount, default=0)
    result_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    created_tx: Mapped[str] = mapped_column(String(66))
    closed_tx: Mapped[str | None] = mapped_column(String(66), nullable=True)


class Payment(Base):
    """One payout from escrow: a Withdrawn or a LeaseClosed that moved money to the provider."""

    __tablename__ = "explorer_payments"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_payment_tx_log"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    lease_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("explorer_leases.lease_id"))
    provider: Mapped[str] = mapped_column(String(42), index=True)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    day: Mapped[str] = mapped_column(String(10), index=True)
    kind: Mapped[str] = mapped_column(String(8))          # "withdraw" | "close"
    provider_amount: Mapped[int] = mapped_column(BigAmount)
    fee: Mapped[int] = mapped_column(BigAmount)


DERIVED = (Payment, Lease, Provider)


def default_url() -> str:
    return f"sqlite:///{tessera_home() / 'explorer.db'}"


def make_engine(url: str | None = None) -> Engine:
    url = url or os.environ.get("TESSERA_EXPLORER_DB") or default_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    Base.metadata.create_all(engine)
    return engine
