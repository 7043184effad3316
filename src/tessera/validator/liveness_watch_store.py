"""The liveness watch's SQLite (`liveness_watch.db` in the state folder): reports seen,
providers checked, this validator's challenges, and how often each validator answered one of
them (validator/liveness_watch.py; docs/validators.md, "Watching other validators' reports")."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    epoch INTEGER NOT NULL, validator TEXT NOT NULL, words TEXT NOT NULL,
    PRIMARY KEY (epoch, validator)
);
CREATE TABLE IF NOT EXISTS checks (
    epoch INTEGER NOT NULL, provider TEXT NOT NULL, outcome TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (epoch, provider)
);
CREATE TABLE IF NOT EXISTS challenges (
    epoch INTEGER NOT NULL, validator TEXT NOT NULL, provider TEXT NOT NULL,
    status TEXT NOT NULL, challenge_id INTEGER, detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (epoch, validator, provider)
);
CREATE TABLE IF NOT EXISTS answered_by (
    validator TEXT PRIMARY KEY, answered INTEGER NOT NULL, last_epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, next_block INTEGER NOT NULL);
"""
# checks.outcome: held (this validator has the beat), beat (a reporter served a valid one),
# onchain (a heartbeat or claimed receipt), pending (not every reporter answered: ask again),
# unproven (challenged, or capped), unchecked (the window closed before every reporter was
# asked), skipped (no reporter of it could be challenged: not asked).
# challenges.status: sending, open, answered (bond lost), resolved (slashed), taken (someone
# else challenged it first), refused, capped, retry (a 'sending' not found on chain after a
# restart: sent again if still due).
AT_RISK = ("sending", "open", "answered", "resolved")
UNSETTLED = ("sending", "open")


class WatchStore:
    """Reports seen, providers checked, and this validator's challenges."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")   # 'sending' is saved before a bond goes
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def _all(self, query: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(query, args).fetchall()

    def _do(self, query: str, args: tuple = ()) -> None:
        with self._lock:
            self._db.execute(query, args)

    # -- reports and checks ----------------------------------------------------------------
    def add_report(self, epoch: int, validator: str, words: list[int]) -> None:
        """Saved again when read again (the last blocks are rescanned for reorgs)."""
        self._do("INSERT OR REPLACE INTO reports VALUES (?,?,?)",
                 (epoch, validator, json.dumps([str(w) for w in words])))

    def reports(self, epoch: int) -> dict[str, list[int]]:
        return {v: [int(w) for w in json.loads(words)] for v, words in self._all(
            "SELECT validator, words FROM reports WHERE epoch=?", (epoch,))}

    def check(self, epoch: int, provider: str) -> tuple[str, int] | None:
        rows = self._all("SELECT outcome, attempts FROM checks WHERE epoch=? AND provider=?",
                         (epoch, provider))
        return rows[0] if rows else None

    def checks(self, epoch: int) -> dict[str, tuple[str, int]]:
        """provider -> (outcome, attempts) of every provider of `epoch` checked so far."""
        return {p: (o, a) for p, o, a in self._all(
            "SELECT provider, outcome, attempts FROM checks WHERE epoch=?", (epoch,))}

    def settled(self, epoch: int) -> int:
        """Providers of `epoch` checked to the end (not waiting to be asked again)."""
        return self._all("SELECT COUNT(*) FROM checks WHERE epoch=? AND outcome != 'pending'",
                         (epoch,))[0][0]

    def save_check(self, epoch: int, provider: str, outcome: str, detail: str = "",
                   attempts: int = 0) -> None:
        self._do("INSERT OR REPLACE INTO checks VALUES (?,?,?,?,?)",
                 (epoch, provider, outcome, detail[:500], attempts))

    # -- challenges ------------------------------------------------------------------------
    def challenge(self, epoch: int, validator: str, provider: str) -> tuple[str, int | None] | None:
        rows = self._all("SELECT status, challenge_id FROM challenges WHERE epoch=? AND "
                         "validator=? AND provider=?", (epoch, validator, provider))
        return rows[0] if rows else None

    def save_challenge(self, epoch: int, validator: str, provider: str, status: str,
                       challenge_id: int | None = None, detail: str = "") -> None:
        self._do("INSERT OR REPLACE INTO challenges VALUES (?,?,?,?,?,?)",
                 (epoch, validator, provider, status, challenge_id, detail[:500]))

    def mark_answered(self, epoch: int, validator: str, provider: str, challenge_id: int) -> bool:
        """Record that a beat answered this challenge (the bond is lost) and count it against
        `validator` (the back-off), in one transaction; False if it was recorded before."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute("SELECT status FROM challenges WHERE epoch=? AND "
                                        "validator=? AND provider=?",
                                        (epoch, validator, provider)).fetchall()
                if rows and rows[0][0] == "answered":
                    self._db.execute("ROLLBACK")
                    return False
                self._db.execute("INSERT OR REPLACE INTO challenges VALUES (?,?,?,?,?,?)",
                                 (epoch, validator, provider, "answered", challenge_id, ""))
                self._db.execute(
                    "INSERT INTO answered_by VALUES (?,1,?) ON CONFLICT(validator) DO UPDATE "
                    "SET answered=answered+(excluded.last_epoch > last_epoch), "
                    "last_epoch=MAX(last_epoch, excluded.last_epoch)",
                    (validator, epoch))
                self._db.execute("COMMIT")
                return True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def answered_by(self, validator: str) -> tuple[int, int]:
        """(reported epochs on which a beat answered a challenge of ours of `validator`'s
        inclusions, the last of them); (0, -1) if none. An answer on an epoch before the last
        one counted (noticed late) is not counted again."""
        rows = self._all("SELECT answered, last_epoch FROM answered_by WHERE validator=?",
                         (validator,))
        return rows[0] if rows else (0, -1)

    def at_risk(self, epoch: int, validator: str | None = None) -> int:
        """Bonds this validator put (or is putting) on `epoch`'s inclusions."""
        query = (f"SELECT COUNT(*) FROM challenges WHERE epoch=? AND status IN "
                 f"({','.join('?' * len(AT_RISK))})")
        args: tuple = (epoch, *AT_RISK)
        if validator is not None:
            query, args = query + " AND validator=?", (*args, validator)
        return self._all(query, args)[0][0]

    def unsettled(self, validator: str | None = None) -> int:
        """Bonds out now: challenges sent (or being sent) that no answer or resolve settled."""
        query, args = "SELECT COUNT(*) FROM challenges WHERE status IN (?,?)", UNSETTLED
        if validator is not None:
            query, args = query + " AND validator=?", (*args, validator)
        return self._all(query, args)[0][0]

    def lost_since(self, epoch: int) -> int:
        """Bonds lost to answers on challenges of reported epochs from `epoch` on."""
        return self._all("SELECT COUNT(*) FROM challenges WHERE status='answered' AND epoch>=?",
                         (epoch,))[0][0]

    def sending(self) -> list[tuple[int, str, str]]:
        return self._all("SELECT epoch, validator, provider FROM challenges "
                         "WHERE status='sending'")

    def open_challenges(self) -> list[tuple[int, str, str, int]]:
        return self._all("SELECT epoch, validator, provider, challenge_id FROM challenges "
                         "WHERE status='open' ORDER BY challenge_id")

    def tally(self) -> dict[str, int]:
        return dict(self._all("SELECT status, COUNT(*) FROM challenges GROUP BY status"))

    # -- the block cursor, pruning ---------------------------------------------------------
    def next_block(self) -> int | None:
        rows = self._all("SELECT next_block FROM cursor WHERE name='reports'")
        return rows[0][0] if rows else None

    def set_next_block(self, block: int) -> None:
        self._do("INSERT OR REPLACE INTO cursor VALUES ('reports', ?)", (block,))

    def prune(self, checks_before: int, challenges_before: int) -> None:
        """Forget reports and checks of epochs that can no longer be challenged, and settled
        challenges of epochs before `challenges_before` (the daily loss budget's window; the
        back-off counts live on in `answered_by`)."""
        with self._lock:
            self._db.execute("DELETE FROM reports WHERE epoch < ?", (checks_before,))
            self._db.execute("DELETE FROM checks WHERE epoch < ?", (checks_before,))
            self._db.execute("DELETE FROM challenges WHERE epoch < ? AND status NOT IN (?,?)",
                             (challenges_before, *UNSETTLED))

    def close(self) -> None:
        with self._lock:
            self._db.close()
