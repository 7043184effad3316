"""The validator's liveness database (`liveness.db` in the state folder; the duty:
validator/liveness.py): the beats it receipted, its reports, the challenges of its reports
(answers: `open` while there is work left, then their outcome: liveness_answers.py) and its
place in the chain's InclusionsChallenged logs.

Pruned (`prune`) once per epoch: an epoch's beats, report and answers are kept until
PRUNE_MARGIN_EPOCHS after the last epoch in which an inclusion challenge on it can be answered
(protocol.liveness.answer_end; a receipt claim, a report and a challenge all come before), so
that 10,000 providers' beats do not pile up epoch after epoch."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

PRUNE_MARGIN_EPOCHS = 2   # epochs kept past answer_end: a lagging RPC, an operator reading them
PRUNE_BATCH = 20_000      # rows per DELETE: a beat waits at most one batch for the lock

SCHEMA = """
CREATE TABLE IF NOT EXISTS beats (
    epoch INTEGER NOT NULL,
    provider TEXT NOT NULL,
    signature TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (epoch, provider)
);
CREATE TABLE IF NOT EXISTS reports (
    epoch INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    words TEXT NOT NULL,
    tx TEXT,
    gas_used INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS answers (
    challenge_id INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    epoch INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, next_block INTEGER NOT NULL);
"""
# Report statuses: posted (ours on chain), skipped (no beats), refused (the chain said no),
# missed (its window closed before it was sent). All final.


def prune_before(current: int, report_delay: int, answer_epochs: int) -> int:
    """The first epoch whose liveness data is still kept in epoch `current`: every earlier one
    ended its answer window (protocol.liveness.answer_end) more than PRUNE_MARGIN_EPOCHS ago."""
    return current - (report_delay + 1 + answer_epochs) - PRUNE_MARGIN_EPOCHS


class LivenessStore:
    """The beats this validator receipted, its reports and its answers to challenges."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")   # a receipted beat survives a power cut
        self._db.executescript(SCHEMA)
        columns = [r[1] for r in self._db.execute("PRAGMA table_info(answers)")]
        if "epoch" not in columns:   # a database from before pruning: its answers go first
            self._db.execute("ALTER TABLE answers ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
        self._lock = threading.Lock()

    def _all(self, query: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(query, args).fetchall()

    def _do(self, query: str, args: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(query, args).rowcount

    def add_beat(self, epoch: int, provider: str, signature: str) -> str:
        """Keep the first beat of (epoch, provider); the signature kept."""
        self._do("INSERT OR IGNORE INTO beats VALUES (?,?,?,?)",
                 (epoch, provider, signature, time.time()))
        return self.beat(epoch, provider)

    def beat(self, epoch: int, provider: str) -> str | None:
        """The signature of `provider`'s beat of `epoch` (checksummed address), or None."""
        rows = self._all("SELECT signature FROM beats WHERE epoch=? AND provider=?",
                         (epoch, provider))
        return rows[0][0] if rows else None

    def providers(self, epoch: int, after: str = "", limit: int | None = None) -> list[str]:
        """The providers whose beats of `epoch` it holds, in address order (as stored:
        checksummed), those after `after` only, at most `limit` of them."""
        return [r[0] for r in self._all(
            "SELECT provider FROM beats WHERE epoch=? AND provider>? ORDER BY provider LIMIT ?",
            (epoch, after, -1 if limit is None else limit))]

    def beat_count(self, epoch: int) -> int:
        return self._all("SELECT COUNT(*) FROM beats WHERE epoch=?", (epoch,))[0][0]

    def unreported(self, before: int) -> list[int]:
        """Epochs before `before` that hold beats and no final report status."""
        return [r[0] for r in self._all(
            "SELECT DISTINCT b.epoch FROM beats b LEFT JOIN reports r ON r.epoch = b.epoch "
            "WHERE b.epoch < ? AND r.epoch IS NULL ORDER BY b.epoch", (before,))]

    def save_report(self, epoch: int, status: str, words: list[int], tx: str | None = None,
                    gas_used: int | None = None, detail: str = "") -> None:
        self._do("INSERT OR REPLACE INTO reports VALUES (?,?,?,?,?,?)",
                 (epoch, status, json.dumps([str(w) for w in words]), tx, gas_used, detail))

    def report(self, epoch: int) -> dict | None:
        rows = self._all("SELECT status, words, tx, gas_used, detail FROM reports WHERE epoch=?",
                         (epoch,))
        if not rows:
            return None
        status, words, tx, gas_used, detail = rows[0]
        return {"status": status, "words": [int(w) for w in json.loads(words)], "tx": tx,
                "gas_used": gas_used, "detail": detail}

    def last_reported(self) -> int | None:
        return self._all("SELECT MAX(epoch) FROM reports WHERE status='posted'")[0][0]

    def answer_status(self, challenge_id: int) -> str | None:
        rows = self._all("SELECT status FROM answers WHERE challenge_id=?", (challenge_id,))
        return rows[0][0] if rows else None

    def answered(self, challenge_id: int) -> bool:
        return self.answer_status(challenge_id) is not None

    def open_answers(self) -> list[tuple[int, int]]:
        """(challenge id, epoch) of each challenge of its reports still being worked on."""
        return [(r[0], r[1]) for r in self._all(
            "SELECT challenge_id, epoch FROM answers WHERE status='open' ORDER BY challenge_id")]

    def save_answer(self, challenge_id: int, status: str, detail: str = "", *,
                    epoch: int) -> None:
        """The outcome of a challenge of `epoch` (pruned with that epoch)."""
        self._do("INSERT OR REPLACE INTO answers VALUES (?,?,?,?)",
                 (challenge_id, status, detail, epoch))

    def next_block(self, default: int) -> int:
        rows = self._all("SELECT next_block FROM cursor WHERE name='challenges'")
        return rows[0][0] if rows else default

    def set_next_block(self, block: int) -> None:
        self._do("INSERT OR REPLACE INTO cursor VALUES ('challenges', ?)", (block,))

    def prune(self, before: int) -> int:
        """Delete the beats, reports and answers of epochs before `before` (prune_before says
        which); the beats deleted. Beats go first, in batches found through the primary key's
        epoch order (each batch holds the lock briefly): an epoch's report is never deleted
        while it still holds beats, which would make it look unreported. The last posted
        report is kept, for `last_reported`."""
        deleted = 0
        while True:
            n = self._do("DELETE FROM beats WHERE rowid IN (SELECT rowid FROM beats "
                         "WHERE epoch < ? LIMIT ?)", (before, PRUNE_BATCH))
            deleted += n
            if n < PRUNE_BATCH:
                break
        self._do("DELETE FROM reports WHERE epoch < ? AND epoch IS NOT (SELECT MAX(epoch) "
                 "FROM reports WHERE status='posted')", (before,))
        self._do("DELETE FROM answers WHERE epoch < ?", (before,))
        return deleted

    def oldest_epoch(self) -> int | None:
        return self._all("SELECT MIN(epoch) FROM beats")[0][0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
