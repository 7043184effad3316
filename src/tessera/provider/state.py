"""The provider's durable memory (SQLite): what it bid, which leases it holds, how far it has read."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bids (
    order_id INTEGER PRIMARY KEY, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    lease_id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    manifest TEXT,
    manifest_nonce TEXT,
    result_hash TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS beats (
    epoch INTEGER PRIMARY KEY,
    signature TEXT NOT NULL,
    how TEXT NOT NULL DEFAULT '',
    settled TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS beat_receipts (
    epoch INTEGER NOT NULL,
    validator TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (epoch, validator)
);
CREATE TABLE IF NOT EXISTS inclusion_challenges (
    challenge_id INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,
    validator TEXT NOT NULL,
    answer_by INTEGER NOT NULL,
    outcome TEXT NOT NULL DEFAULT ''
);
"""

# Lease lifecycle on the provider: awaiting-manifest -> awaiting-inputs -> running
#   -> succeeded | failed; any state -> closed when the lease closes on chain.
ACTIVE_STATUSES = ("awaiting-manifest", "awaiting-inputs", "running")


@dataclass
class LeaseRecord:
    lease_id: int
    order_id: int
    tenant: str
    status: str
    manifest: dict | None
    manifest_nonce: str | None
    result_hash: str | None
    detail: str


class ProviderState:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def get(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def save_bid(self, order_id: int, body: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO bids VALUES (?, ?)", (order_id, json.dumps(body)))

    def bid(self, order_id: int) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM bids WHERE order_id=?", (order_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def add_lease(self, lease_id: int, order_id: int, tenant: str) -> bool:
        """Record a new lease; False when it was already known (events are re-read on restart)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO leases (lease_id, order_id, tenant, status) VALUES (?,?,?,?)",
                (lease_id, order_id, tenant, "awaiting-manifest"),
            )
        return cursor.rowcount == 1

    def update_lease(self, lease_id: int, **fields) -> None:
        if "manifest" in fields and fields["manifest"] is not None:
            fields["manifest"] = json.dumps(fields["manifest"])
        columns = ", ".join(f"{name}=?" for name in fields)
        with self._lock:
            self._db.execute(f"UPDATE leases SET {columns} WHERE lease_id=?",
                             (*fields.values(), lease_id))

    def lease(self, lease_id: int) -> LeaseRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT lease_id, order_id, tenant, status, manifest, manifest_nonce, result_hash,"
                " detail FROM leases WHERE lease_id=?", (lease_id,)).fetchone()
        return self._record(row) if row else None

    def leases(self, statuses: tuple[str, ...] | None = None) -> list[LeaseRecord]:
        query = ("SELECT lease_id, order_id, tenant, status, manifest, manifest_nonce, result_hash,"
                 " detail FROM leases")
        args: tuple = ()
        if statuses:
            query += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args = statuses
        with self._lock:
            rows = self._db.execute(query + " ORDER BY lease_id", args).fetchall()
        return [self._record(row) for row in rows]

    @staticmethod
    def _record(row) -> LeaseRecord:
        lease_id, order_id, tenant, status, manifest, nonce, result_hash, detail = row
        return LeaseRecord(lease_id, order_id, tenant, status,
                           json.loads(manifest) if manifest else None, nonce, result_hash, detail)

    # -- liveness (provider/heartbeats.py) --------------------------------------------------
    # beats: this node's signed Beat of an epoch; `how` the epoch was proven ('' not yet,
    # 'receipts' or 'heartbeat'); `settled` once nothing is left to do for it ('' while a
    # receipted epoch may still need a claim_beat). beat_receipts: validators' receipts.
    # Never deleted: a beat's signature answers challenges of its inclusion in a report
    # (inclusion_challenges below), which may come until the epoch's answer window ends.
    def save_beat(self, epoch: int, signature: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO beats (epoch, signature) VALUES (?, ?)",
                             (epoch, signature))

    def beat(self, epoch: int) -> tuple[str, str, str] | None:
        """(signature, how, settled) of this node's beat of `epoch`, or None."""
        with self._lock:
            row = self._db.execute("SELECT signature, how, settled FROM beats WHERE epoch=?",
                                   (epoch,)).fetchone()
        return tuple(row) if row else None

    def set_beat(self, epoch: int, *, how: str | None = None, settled: str | None = None) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO beats (epoch, signature) VALUES (?, '')",
                             (epoch,))
            if how is not None:
                self._db.execute("UPDATE beats SET how=? WHERE epoch=?", (how, epoch))
            if settled is not None:
                self._db.execute("UPDATE beats SET settled=? WHERE epoch=?", (settled, epoch))

    def add_receipt(self, epoch: int, validator: str, signature: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO beat_receipts VALUES (?, ?, ?)",
                             (epoch, validator, signature))

    def receipts(self, epoch: int) -> dict[str, str]:
        """{validator: its receipt signature} for this node's beat of `epoch`."""
        with self._lock:
            rows = self._db.execute("SELECT validator, signature FROM beat_receipts WHERE epoch=?",
                                    (epoch,)).fetchall()
        return dict(rows)

    # inclusion_challenges: Uptime.InclusionsChallenged events whose `named` bitmap holds this
    # node's registry index (one row per challenge: the node answers for itself alone), kept
    # from the moment the watcher reads them (before it moves last_block past them) until
    # answered or past `answer_by` (the last epoch an answer is accepted in); `outcome` '' while
    # open.
    def add_challenge(self, challenge_id: int, epoch: int, validator: str,
                      answer_by: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO inclusion_challenges (challenge_id, epoch, "
                             "validator, answer_by) VALUES (?, ?, ?, ?)",
                             (challenge_id, epoch, validator, answer_by))

    def open_challenges(self) -> list[tuple[int, int, str, int]]:
        """(challenge id, epoch, validator, answer_by) of each challenge not yet dealt with."""
        with self._lock:
            rows = self._db.execute("SELECT challenge_id, epoch, validator, answer_by FROM "
                                    "inclusion_challenges WHERE outcome='' ORDER BY challenge_id"
                                    ).fetchall()
        return [tuple(row) for row in rows]

    def set_challenge(self, challenge_id: int, outcome: str) -> None:
        with self._lock:
            self._db.execute("UPDATE inclusion_challenges SET outcome=? WHERE challenge_id=?",
                             (outcome, challenge_id))

    def challenge_outcome(self, challenge_id: int) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT outcome FROM inclusion_challenges WHERE "
                                   "challenge_id=?", (challenge_id,)).fetchone()
        return row[0] if row else None

    def unsettled_beats(self) -> list[int]:
        """Receipted epochs that may still need a claim, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT epoch FROM beats WHERE how='receipts' AND settled='' "
                                    "ORDER BY epoch").fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
