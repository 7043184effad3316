"""Helpers for the explorer's tests."""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.orm import Session

from tessera.explorer import db
from tessera.explorer.simulate import Workload


def dump(engine) -> dict[str, list[tuple]]:
    """Every row of every explorer table (autoincrement ids left out), sorted."""
    out = {}
    with Session(engine) as session:
        for table in db.Base.metadata.sorted_tables:
            columns = [c for c in table.columns if c.name != "id"]
            rows = session.execute(select(*columns)).all()
            out[table.name] = sorted(tuple(r) for r in rows)
    return out


@contextmanager
def snapshot(work: Workload):
    """Whatever the block does, the chain (and the workload's clock) is as before afterwards."""
    snap = work._rpc("evm_snapshot", [])
    try:
        yield
    finally:
        work._rpc("evm_revert", [snap])
        work.now = int(work._rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
