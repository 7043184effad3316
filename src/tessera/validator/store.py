"""The validator's durable memory (SQLite): every probe it made and every report it posted."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS probes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch INTEGER NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    challenge TEXT NOT NULL,
    deadline INTEGER NOT NULL,
    answered INTEGER NOT NULL,
    signature TEXT NOT NULL,
    reason TEXT NOT NULL,
    latency_ms REAL,
    probed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS probes_epoch ON probes (epoch, id);
CREATE TABLE IF NOT EXISTS reports (
    epoch INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    root TEXT,
    receipt_count INTEGER,
    tx TEXT,
    gas_used INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);
"""

# Report statuses: posted (on chain), refused (the chain said no; not retried).
FINAL_STATUSES = ("posted", "refused")


@dataclass(frozen=True)
class ProbeRecord:
    """One probe, answered (with the provider's signature) or missed (with the reason)."""

    id: int
    epoch: int
    provider: str
    endpoint: str
    challenge: str
    deadline: int
    answered: bool
    signature: str
    reason: str
    latency_ms: float | None
    probed_at: float


@dataclass(frozen=True)
class ReportRecord:
    epoch: int
    status: str
    root: str | None
    receipt_count: int | None
    tx: str | None
    gas_used: int | None
    detail: str


class ValidatorStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def add_probe(self, epoch: int, provider: str, endpoint: str, challenge: str, deadline: int,
                  answered: bool, signature: str, reason: str, latency_ms: float | None,
                  probed_at: float) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO probes (epoch, provider, endpoint, challenge, deadline, answered, "
                "signature, reason, latency_ms, probed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (epoch, provider, endpoint, challenge, deadline, int(answered), signature, reason,
                 latency_ms, probed_at))
            return int(cur.lastrowid)

    def probes(self, epoch: int) -> list[ProbeRecord]:
        """The epoch's probes in the order they were recorded (the order of the Merkle leaves)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, epoch, provider, endpoint, challenge, deadline, answered, signature, "
                "reason, latency_ms, probed_at FROM probes WHERE epoch=? ORDER BY id", (epoch,)
            ).fetchall()
        return [ProbeRecord(*row[:6], bool(row[6]), *row[7:]) for row in rows]

    def has_probes(self, epoch: int) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM probes WHERE epoch=? LIMIT 1",
                                    (epoch,)).fetchone() is not None

    def unreported_epochs(self, before: int) -> list[int]:
        """Epochs earlier than `before` that have probes and no final report."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT p.epoch FROM probes p LEFT JOIN reports r ON r.epoch = p.epoch "
                "WHERE p.epoch < ? AND (r.status IS NULL OR r.status NOT IN (?, ?)) "
                "ORDER BY p.epoch", (before, *FINAL_STATUSES)).fetchall()
        return [row[0] for row in rows]

    def save_report(self, epoch: int, status: str, root: str | None = None,
                    receipt_count: int | None = None, tx: str | None = None,
                    gas_used: int | None = None, detail: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO reports VALUES (?,?,?,?,?,?,?)",
                             (epoch, status, root, receipt_count, tx, gas_used, detail))

    def report(self, epoch: int) -> ReportRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM reports WHERE epoch=?", (epoch,)).fetchone()
        return ReportRecord(*row) if row else None

    def last_probed_epoch(self) -> int | None:
        with self._lock:
            return self._db.execute("SELECT MAX(epoch) FROM probes").fetchone()[0]

    def last_posted_epoch(self) -> int | None:
        with self._lock:
            return self._db.execute("SELECT MAX(epoch) FROM reports WHERE status='posted'"
                                    ).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
