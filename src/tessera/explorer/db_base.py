"""The explorer database's declarative base, column types and the columns every stored log has
(db.py's tables, db_liveness.py's and db_bridge.py's share them; db.py re-exports them)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class BigAmount(TypeDecorator):
    """Unbounded integer stored as decimal text (portable across SQLite and PostgreSQL)."""

    impl = String(80)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else str(int(value))

    def process_result_value(self, value, dialect):
        return None if value is None else int(value)


class ChainText(TypeDecorator):
    """A string someone put on chain (a GPU model, an endpoint): NUL, which PostgreSQL's text
    refuses, is stored as U+FFFD on every backend, so both hold the same rows."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else str(value).replace("\x00", "\ufffd")


class Base(DeclarativeBase):
    pass


class LogColumns:
    """The columns of one stored log: where it is (block, hash, time, transaction, index) and
    what it says (contract name, event name, its arguments as JSON). db.Event (the home
    chain's) and db_bridge.BridgeEvent (every chain's bridge) add their own, after these
    (`sort_order`: the tables keep the column order they had before this mixin)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True,
                                    sort_order=-2)
    block_number: Mapped[int] = mapped_column(BigInteger, sort_order=-1)
    block_hash: Mapped[str] = mapped_column(String(66), sort_order=-1)
    timestamp: Mapped[int] = mapped_column(BigInteger, sort_order=-1)
    tx_hash: Mapped[str] = mapped_column(String(66), sort_order=-1)
    log_index: Mapped[int] = mapped_column(Integer, sort_order=-1)
    contract: Mapped[str] = mapped_column(String(32), sort_order=-1)
    event: Mapped[str] = mapped_column(String(64), sort_order=-1)
    args: Mapped[str] = mapped_column(Text, sort_order=-1)
