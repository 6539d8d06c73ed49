"""Store-and-forward spool: every message is on disk before it is published, and leaves the
disk only when the broker has acknowledged it.

SQLite in WAL mode with synchronous=FULL: a message whose `put` returned survives the daemon
being killed and the Pi losing power. The per-kind sequence numbers live in the same database
and are assigned in the same transaction, so `seq` keeps increasing across restarts and a
subscriber can tell a gap from a duplicate. The spool is bounded: when full, the message kinds
with the lowest `keep` rank (stats, then cycle results) are evicted oldest first, and every
eviction is counted.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.payloads import KINDS


class SpoolError(RuntimeError):
    """The spool database cannot be opened or written; the message says where and why."""


@dataclass(frozen=True)
class Spooled:
    id: int
    kind: str
    seq: int
    payload: bytes


class Spool:
    def __init__(self, path: str | Path, max_messages: int) -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), isolation_level=None,
                                      check_same_thread=False, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript("""
                CREATE TABLE IF NOT EXISTS messages (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
                    seq INTEGER NOT NULL, keep INTEGER NOT NULL, payload BLOB NOT NULL);
                CREATE INDEX IF NOT EXISTS messages_keep ON messages (keep, id);
                CREATE TABLE IF NOT EXISTS sequence (kind TEXT PRIMARY KEY, seq INTEGER);
                CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER);
            """)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the spool {self.path}: {exc} (set spool.path to a "
                             "writable location)") from None

    def put(self, kind: str, envelope: Callable[[int], dict[str, Any]],
            body: dict[str, Any]) -> int:
        """Stores a message; assigns and returns its seq (`envelope(seq)` heads it)."""
        keep = KINDS[kind].keep
        with self._lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                seq = self._next_seq(cur, kind)
                payload = json.dumps({**envelope(seq), **body},
                                     separators=(",", ":")).encode()
                (depth,) = cur.execute("SELECT COUNT(*) FROM messages").fetchone()
                if depth >= self.max_messages:
                    self._evict(cur, depth - self.max_messages + 1)
                cur.execute("INSERT INTO messages (kind, seq, keep, payload) VALUES (?,?,?,?)",
                            (kind, seq, keep, payload))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return seq

    @staticmethod
    def _next_seq(cur: sqlite3.Cursor, kind: str) -> int:
        row = cur.execute("SELECT seq FROM sequence WHERE kind=?", (kind,)).fetchone()
        seq = 0 if row is None else row[0] + 1
        cur.execute("INSERT OR REPLACE INTO sequence VALUES (?, ?)", (kind, seq))
        return seq

    def next_seq(self, kind: str) -> int:
        """A seq for a message that is not spooled (the retained status)."""
        with self._lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            seq = self._next_seq(cur, kind)
            cur.execute("COMMIT")
        return seq

    def _evict(self, cur: sqlite3.Cursor, n: int) -> None:
        victims = cur.execute("SELECT id, kind FROM messages ORDER BY keep, id LIMIT ?",
                              (n,)).fetchall()
        for mid, kind in victims:
            cur.execute("DELETE FROM messages WHERE id=?", (mid,))
            cur.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET "
                        "value = value + 1", (f"dropped_{kind}",))

    def peek(self, after_id: int = 0, limit: int = 100) -> list[Spooled]:
        with self._lock:
            rows = self.db.execute("SELECT id, kind, seq, payload FROM messages WHERE id > ? "
                                   "ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
        return [Spooled(*r) for r in rows]

    def delete(self, message_id: int) -> None:
        with self._lock:
            self.db.execute("DELETE FROM messages WHERE id=?", (message_id,))

    def depth(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    def dropped(self) -> dict[str, int]:
        with self._lock:
            rows = self.db.execute("SELECT name, value FROM counters WHERE name LIKE "
                                   "'dropped_%'").fetchall()
        return {name.removeprefix("dropped_"): value for name, value in rows}

    def close(self) -> None:
        with self._lock:
            self.db.close()
