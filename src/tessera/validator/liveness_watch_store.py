"""The liveness watch's SQLite (`liveness_watch.db` in the state folder): reports seen,
providers checked, and this validator's challenges, one per (reported epoch, validator, part),
with the set it named (a part: the registry words one challenge may name,
liveness_watch_bonds.WORDS_PER_CHALLENGE; a report of fewer than 65,536 providers is one part;
validator/liveness_watch.py; docs/validators.md, "Watching other validators' reports").

Everything here can be read again from the chain (reports, our InclusionsChallenged) except
the losses of challenges settled more than the scan's reach ago, which only the daily budget
uses. A database written before the set challenges (SCHEMA_VERSION) is therefore dropped and
rebuilt, not migrated: its per-provider challenge rows named another contract's challenges."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

SCHEMA_VERSION = 3   # 1 (user_version 0): per-(epoch, validator, provider); 2: no part
TABLES = ("reports", "checks", "challenges", "answered_by", "cursor")
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
    epoch INTEGER NOT NULL, validator TEXT NOT NULL, part INTEGER NOT NULL, status TEXT NOT NULL,
    challenge_id INTEGER, named TEXT NOT NULL DEFAULT '[]', bond TEXT NOT NULL DEFAULT '0',
    lost TEXT NOT NULL DEFAULT '0', detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (epoch, validator, part)
);
CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, next_block INTEGER NOT NULL);
"""
# checks.outcome: beat (a reporter served a valid one), onchain (a heartbeat or claimed
# receipt), pending (not every reporter answered: ask again), unproven (no beat anywhere: named
# in the reporters' challenges).
# challenges.status: sending, open, answered (every named beat shown: the answer fees lost),
# resolved (some named beat never shown: slashed; lost: the fees less the slash share, never
# below zero), taken (every unproven inclusion was already named by someone else's challenge,
# or its beat shown), refused, capped (the daily budget or the balance left no bond: tried
# again), retry (a 'sending' not found on chain after a restart, or an 'open' one a reorg
# removed: sent again). `named`: what the challenge names on chain (those another named first
# are left out). Token amounts (bond, lost) are decimal TEXT: 10**19 does not fit SQLite's
# INTEGER.
UNSETTLED = ("sending", "open")
SETTLED = ("answered", "resolved")


class WatchStore:
    """Reports seen, providers checked, and this validator's challenges."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")   # 'sending' is saved before a bond goes
        if self._db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            for table in TABLES:   # an older layout: a cache of the chain, read again
                self._db.execute(f"DROP TABLE IF EXISTS {table}")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
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
    def challenge(self, epoch: int, validator: str, part: int = 0) -> dict | None:
        """Our challenge of `validator`'s report on `epoch` (of that part of the registry):
        status, challenge_id, named (registry indices), bond, lost, detail; None if none."""
        rows = self._all("SELECT status, challenge_id, named, bond, lost, detail FROM "
                         "challenges WHERE epoch=? AND validator=? AND part=?",
                         (epoch, validator, part))
        if not rows:
            return None
        status, cid, named, bond, lost, detail = rows[0]
        return {"status": status, "challenge_id": cid, "named": json.loads(named),
                "bond": int(bond), "lost": int(lost), "detail": detail}

    def save_challenge(self, epoch: int, validator: str, status: str,
                       challenge_id: int | None = None, named: list[int] | None = None,
                       bond: int = 0, lost: int = 0, detail: str = "", *,
                       part: int = 0) -> None:
        self._do("INSERT OR REPLACE INTO challenges VALUES (?,?,?,?,?,?,?,?,?)",
                 (epoch, validator, part, status, challenge_id,
                  json.dumps(sorted(named or [])), str(bond), str(lost), detail[:500]))

    def settle_challenge(self, epoch: int, validator: str, status: str, lost: int,
                         part: int = 0) -> bool:
        """Mark an open challenge settled (answered or resolved) with what it lost, once:
        False if it was not open any more."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE challenges SET status=?, lost=? WHERE epoch=? AND validator=? AND "
                "part=? AND status='open'", (status, str(lost), epoch, validator, part))
            return cursor.rowcount == 1

    def unsent(self, epoch: int) -> int:
        """Challenges of `epoch` still to be sent (or to be found on chain)."""
        return self._all("SELECT COUNT(*) FROM challenges WHERE epoch=? AND status IN "
                         "('sending','retry')", (epoch,))[0][0]

    def named_out(self) -> int:
        """Providers named by the challenges sent, or being sent, not yet settled (each may
        still cost one answer fee)."""
        return sum(len(json.loads(named)) for (named,) in self._all(
            "SELECT named FROM challenges WHERE status IN (?,?)", UNSETTLED))

    def lost_since(self, epoch: int) -> int:
        """Base units lost on settled challenges of reported epochs from `epoch` on."""
        return sum(int(lost) for (lost,) in self._all(
            "SELECT lost FROM challenges WHERE status IN (?,?) AND epoch>=?",
            (*SETTLED, epoch)))

    def sending(self) -> list[tuple[int, str, int]]:
        """(epoch, validator, part) of every challenge saved as being sent."""
        return self._all("SELECT epoch, validator, part FROM challenges WHERE status='sending'")

    def open_challenges(self) -> list[tuple[int, str, int, int, int]]:
        """(epoch, validator, part, challenge_id, bond) of every challenge still open."""
        return [(e, v, part, cid, int(bond)) for e, v, part, cid, bond in self._all(
            "SELECT epoch, validator, part, challenge_id, bond FROM challenges WHERE "
            "status='open' ORDER BY challenge_id")]

    def tally(self, epoch: int | None = None) -> dict[str, int]:
        """Our challenges by status (of one reported epoch, or all)."""
        if epoch is None:
            return dict(self._all("SELECT status, COUNT(*) FROM challenges GROUP BY status"))
        return dict(self._all("SELECT status, COUNT(*) FROM challenges WHERE epoch=? "
                              "GROUP BY status", (epoch,)))

    # -- the block cursor, pruning ---------------------------------------------------------
    def next_block(self) -> int | None:
        rows = self._all("SELECT next_block FROM cursor WHERE name='reports'")
        return rows[0][0] if rows else None

    def set_next_block(self, block: int) -> None:
        self._do("INSERT OR REPLACE INTO cursor VALUES ('reports', ?)", (block,))

    def prune(self, checks_before: int, challenges_before: int) -> None:
        """Forget reports and checks of epochs that can no longer be challenged, and challenges
        of epochs before `challenges_before` (the daily loss budget's window) unless still
        out."""
        with self._lock:
            self._db.execute("DELETE FROM reports WHERE epoch < ?", (checks_before,))
            self._db.execute("DELETE FROM checks WHERE epoch < ?", (checks_before,))
            self._db.execute("DELETE FROM challenges WHERE epoch < ? AND status NOT IN (?,?)",
                             (challenges_before, *UNSETTLED))

    def close(self) -> None:
        with self._lock:
            self._db.close()
