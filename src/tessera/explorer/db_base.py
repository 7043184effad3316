"""The explorer database's declarative base and column types (db.py's tables and
db_liveness.py's share them; db.py re-exports them)."""

from __future__ import annotations

from sqlalchemy import String, TypeDecorator
from sqlalchemy.orm import DeclarativeBase


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
