"""Helpers for the explorer's tests."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tessera.explorer import db


def dump(engine) -> dict[str, list[tuple]]:
    """Every row of every explorer table (autoincrement ids left out), sorted."""
    out = {}
    with Session(engine) as session:
        for table in db.Base.metadata.sorted_tables:
            columns = [c for c in table.columns if c.name != "id"]
            rows = session.execute(select(*columns)).all()
            out[table.name] = sorted(tuple(r) for r in rows)
    return out
