"""Store-and-forward spool: every message is on disk before it is published, and leaves the
disk only when the broker has acknowledged it.

SQLite in WAL mode with synchronous=FULL: a message whose `put` returned survives the daemon
being killed and the Pi losing power. The per-kind sequence numbers live in the same database
and are assigned in the same transaction, so `seq` keeps increasing across restarts and a
subscriber can tell a gap from a duplicate. The spool is bounded: when full, the message kinds
with the lowest `keep` rank (stats, then cycle results) are evicted oldest first, and every
eviction is counted.

The SD card under it can fail, and a bedside device must not stop because of its own storage.
A full disk, a read-only remount or an I/O error is a state (`fault`), not an exception:
messages then wait in a bounded memory backlog (delivered as usual while the broker is up, lost
only if the process dies too), the seq keeps counting in memory, and every few seconds the disk
is tried again; when it takes writes again the spool is back to normal by itself. A spool file
that is corrupt or not ours is moved aside (never deleted) and a fresh one started; `notice`
says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.delivery.ledger import Ledger, describe
from edge.delivery.wire import KINDS

log = logging.getLogger(__name__)

USER_VERSION = 1  # PRAGMA user_version of a lungedge spool
TABLES = {"messages", "sequence", "counters", "meta", "sqlite_sequence"}
RETRY_S = 5.0  # a failing disk is tried again this often
MEMORY_MESSAGES = 5000  # the backlog kept in memory while the disk refuses writes
WAL_PAGES = 16  # checkpoint the write-ahead log this often (pages of 4 KB)
WAL_BYTES = 64 * 1024  # and keep it no larger than this after a checkpoint


def new_epoch() -> str:
    """A numbering epoch: 64 random bits, so no two spools, or two runs, share one."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Spooled:
    id: int
    kind: str
    seq: int
    payload: bytes


def fault_of(exc: sqlite3.Error) -> str:
    """A storage fault as the status reason names it."""
    text = str(exc).lower()
    if "full" in text:
        return "spool: disk full"
    if "readonly" in text or "read-only" in text:
        return "spool: read-only"
    if "not a database" in text or "malformed" in text:
        return "spool: corrupt"
    if "i/o error" in text:
        return "spool: I/O error"
    if "unable to open" in text:
        return "spool: cannot open the file"
    return f"spool: {text[:80]}"


class Spool:
    """The device's memory of what it still owes the broker: every message is numbered and on
    disk before it is sent, so a crash, a power cut or a broker outage loses nothing, and a
    failing card degrades delivery instead of stopping the device."""

    def __init__(self, path: str | Path, max_messages: int,
                 memory_messages: int = MEMORY_MESSAGES) -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self.memory_messages = memory_messages
        self._lock = threading.Lock()
        self.fault = ""  # "" while the disk takes writes
        self.notice = ""  # something a technician must hear of once (a file moved aside)
        self._memory: list[tuple[Spooled, int]] = []  # (message, keep), in id order
        self._memory_dropped: dict[str, int] = {}
        self._delivered: set[int] = set()  # acknowledged, but the disk refused the delete
        self._seq: dict[str, int] = {}
        self._next_id = 1
        self._retry_at = 0.0
        self.db: sqlite3.Connection | None = None
        # +1 each time the file is (re)opened: what it holds may reappear below ids the
        # publisher has passed, so the publisher starts from the oldest again
        self.generation = 0
        # The numbering epoch every message carries: a subscriber keys repeats on (epoch,
        # kind, seq). Every run starts a new one: a file that vouched for its counters was
        # trusted once, and an older clean copy of the spool (a backup, a re-imaged card)
        # then reissued numbers already delivered, which the station dropped as repeats. The
        # log says why it is new (a new spool, an unclean stop …), for a technician.
        self.epoch = ""
        self.epoch_reason = ""
        self.read_only = False  # the file is open only to read what it holds (a failing card)
        self._on_disk = 0  # messages on the disk, as last counted
        self.ledger = Ledger(self.path)
        self._open()
        if not self.epoch:  # the file could not be opened at all: a memory-only run
            self._new_epoch("the spool file cannot be opened")
        self._previous_losses()

    # -- opening ----------------------------------------------------------------------------
    def _open(self) -> None:
        """Open (or create) the file; a corrupt or foreign one is moved aside first. If the
        disk refuses even that, run on memory (`fault` says why)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._connect()
        except sqlite3.DatabaseError as exc:
            if fault_of(exc) != "spool: corrupt" and "not ours" not in str(exc):
                self._failed(exc)
                return self._open_to_read()
            moved = self._move_aside()
            self.notice = (f"spool: corrupt or not a lungedge spool, moved aside to "
                           f"{moved.name}")
            log.error("%s; starting a fresh spool", self.notice)
            try:
                self.db = self._connect()
            except sqlite3.Error as again:
                return self._failed(again)
        except OSError as exc:
            return self._failed(sqlite3.OperationalError(str(exc)))
        self.fault = ""
        self.generation += 1
        assert self.db is not None
        self._seq = dict(self.db.execute("SELECT kind, seq FROM sequence").fetchall()) | {
            k: v for k, v in self._seq.items() if v > self._seq_in_db(k)}
        self._start_epoch()
        try:
            self._save_counters(clean=False)
        except sqlite3.Error as exc:
            return self._failed(exc)
        (max_id,) = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
        self._next_id = max(self._next_id, max_id + 1,
                            max((m.id for m, _ in self._memory), default=0) + 1)

    def _open_to_read(self) -> None:
        """A card that fails turns read-only: what it holds can still be read and delivered
        (acknowledgements are remembered in memory until it takes writes again)."""
        if self.db is not None or not self.path.is_file():
            return
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                 check_same_thread=False, timeout=10)
            db.execute("SELECT COUNT(*) FROM messages").fetchone()
        except sqlite3.Error as exc:
            log.error("the spool on %s cannot even be read (%s): what it holds waits there",
                      self.path, exc)
            return
        self.db, self.read_only = db, True
        self.generation += 1  # what it holds is new to the publisher
        self._seq = dict(db.execute("SELECT kind, seq FROM sequence").fetchall()) | {
            k: v for k, v in self._seq.items() if v > self._seq_in_db(k)}
        log.warning("spool %s opened read-only: delivering what it holds", self.path)

    def stranded(self) -> int:
        """Messages on the card that cannot be read now (the file will not open); 0 while it
        can be read. The last count seen, as no newer one can be."""
        with self._lock:
            return self._on_disk if self.db is None and self.path.is_file() else 0

    def _start_epoch(self) -> None:
        """This run's epoch, new whatever the file says (see `epoch`), and why, as the file
        tells it (once per run: a file reopened later keeps it). The caller then marks the
        file in use (unclean until close())."""
        assert self.db is not None
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if self.epoch:
            return
        if not meta.get("epoch"):
            self._new_epoch("a new spool", unexpected=bool(self.notice))
        elif meta.get("clean") != "1":
            self._new_epoch("the last run did not close the spool cleanly (a kill, a power cut "
                            "or a failing card: its counters may lag)")
        else:
            self._new_epoch("a new run (every run numbers anew: a restored copy of the spool "
                            "cannot repeat a number)", unexpected=False)

    def _new_epoch(self, why: str, unexpected: bool = True) -> None:
        self.epoch, self.epoch_reason = new_epoch(), why
        log.log(logging.WARNING if unexpected else logging.INFO, "numbering epoch %s: %s",
                self.epoch, why)

    def _save_counters(self, clean: bool) -> None:
        """This run's epoch, every counter it holds (some may have advanced in memory only)
        and whether the file now vouches for them."""
        assert self.db is not None
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO sequence VALUES (?, ?)",
                                list(self._seq.items()))
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [("epoch", self.epoch), ("clean", "1" if clean else "0")])

    def _seq_in_db(self, kind: str) -> int:
        assert self.db is not None
        row = self.db.execute("SELECT seq FROM sequence WHERE kind=?", (kind,)).fetchone()
        return -1 if row is None else row[0]

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                             timeout=10)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE "
                                               "type='table'")}
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if tables and (version != USER_VERSION or not tables <= TABLES):
                raise sqlite3.DatabaseError(f"{self.path} is not ours (tables {sorted(tables)}"
                                            f", user_version {version})")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            # the WAL is checkpointed every WAL_PAGES pages and cut back to WAL_BYTES after:
            # by default it grows to 4 MB before a checkpoint and keeps its size after,
            # which alone filled a 512 KB tmpfs at 20× real time
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_BYTES}")
            db.executescript(f"""
                CREATE TABLE IF NOT EXISTS messages (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
                    seq INTEGER NOT NULL, keep INTEGER NOT NULL, payload BLOB NOT NULL);
                CREATE INDEX IF NOT EXISTS messages_keep ON messages (keep, id);
                CREATE TABLE IF NOT EXISTS sequence (kind TEXT PRIMARY KEY, seq INTEGER);
                CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER);
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
                PRAGMA user_version = {USER_VERSION};
            """)
            db.execute("PRAGMA quick_check").fetchall()  # a damaged page says so now
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.rename(Path(f"{target}{suffix}"))
        return target

    def _failed(self, exc: sqlite3.Error) -> None:
        fault = fault_of(exc)
        if fault != self.fault:
            log.error("%s (%s): keeping messages in memory (up to %d) until it works again",
                      fault, exc, self.memory_messages)
        self.fault = fault
        self._retry_at = time.monotonic() + RETRY_S
        if fault in ("spool: disk full", "spool: read-only"):
            return  # what is on the disk can still be read, and delivered in order
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None

    def _previous_losses(self) -> None:
        """What the previous run's ledger says it lost: told (`notice`), counted with this
        spool's drops (what stats report as spool_dropped), and a new ledger for this run."""
        previous = self.ledger.previous()
        if previous is not None and previous.epoch != self.epoch and previous.gone:
            told = describe(previous.gone, previous.why)
            log.error("%s (numbering epoch %s)", told, previous.epoch)
            self.notice = f"{self.notice}; {told}" if self.notice else told
            for kind, n in previous.gone.items():
                self._memory_dropped[kind] = self._memory_dropped.get(kind, 0) + n
            if self.db is not None and not self.fault:
                try:
                    with self.db:
                        for kind, n in self._memory_dropped.items():
                            self._count(self.db.cursor(), kind, n)
                    self._memory_dropped.clear()
                except sqlite3.Error as exc:
                    self._failed(exc)
        self.ledger.start(self.epoch, previous.written if previous else 0)
        self._account(force=True)

    def _account(self, force: bool = False) -> None:
        """The ledger, as this run now stands: what it dropped uncounted on the card, and what
        waits in memory only."""
        in_memory: dict[str, int] = {}
        for m, _ in self._memory:
            in_memory[m.kind] = in_memory.get(m.kind, 0) + 1
        self.ledger.update(self._memory_dropped, in_memory, self.fault, force)

    # -- the daemon's side ------------------------------------------------------------------
    def put(self, kind: str, envelope: Callable[[int, str], dict[str, Any]],
            body: dict[str, Any]) -> int:
        """Stores a message and returns its seq (`envelope(seq, epoch)` heads it). Never
        raises for the disk's sake: if the disk refuses, the message waits in memory."""
        keep = KINDS[kind].keep
        with self._lock:
            self._retry()
            seq = self._seq.get(kind, -1) + 1
            payload = json.dumps({**envelope(seq, self.epoch), **body},
                                 separators=(",", ":")).encode()
            message = Spooled(self._next_id, kind, seq, payload)
            written = False
            if self.db is not None and not self.fault:
                try:
                    self._write(message, keep)
                    written = True
                except sqlite3.Error as exc:
                    self._failed(exc)
            if not written:
                self._remember(message, keep)
            self._seq[kind] = seq
            self._next_id += 1
            if self._memory or not written or self.ledger.entry.lost:
                self._account()
        return seq

    def _write(self, m: Spooled, keep: int) -> None:
        assert self.db is not None
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute("INSERT OR REPLACE INTO sequence VALUES (?, ?)", (m.kind, m.seq))
            (depth,) = cur.execute("SELECT COUNT(*) FROM messages").fetchone()
            if depth >= self.max_messages:
                self._evict(cur, depth - self.max_messages + 1)
            cur.execute("INSERT INTO messages (id, kind, seq, keep, payload) VALUES "
                        "(?,?,?,?,?)", (m.id, m.kind, m.seq, keep, m.payload))
            for kind, n in self._memory_dropped.items():  # counted while the disk failed
                self._count(cur, kind, n)
            cur.execute("COMMIT")
            self._memory_dropped.clear()
        except BaseException:
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
            raise

    def _remember(self, m: Spooled, keep: int) -> None:
        """Into the memory backlog; when it is full, the lowest `keep` goes first."""
        if len(self._memory) >= self.memory_messages:
            victim = min(range(len(self._memory)), key=lambda i: self._memory[i][1])
            dropped = self._memory.pop(victim)[0]
            self._memory_dropped[dropped.kind] = self._memory_dropped.get(dropped.kind, 0) + 1
        self._memory.append((m, keep))

    def _retry(self) -> None:
        """While failing, try the disk again every RETRY_S."""
        if not self.fault or time.monotonic() < self._retry_at:
            return
        self._retry_at = time.monotonic() + RETRY_S
        fault = self.fault
        if self.read_only:  # try for writes again: the card may have been repaired
            assert self.db is not None
            self.db.close()
            self.db, self.read_only = None, False
        if self.db is None:
            self._open()
            if self.db is None or self.read_only:
                return
        try:  # a write that costs nothing: is the disk taking them again?
            self.db.execute("INSERT OR REPLACE INTO counters VALUES ('probe', 0)")
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        log.warning("%s is over: the spool writes to %s again", fault, self.path)
        self.fault = ""
        try:  # the counters that advanced in memory meanwhile
            self._save_counters(clean=False)
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        for message_id in list(self._delivered):
            self._forget(message_id)

    def _evict(self, cur: sqlite3.Cursor, n: int) -> None:
        victims = cur.execute("SELECT id, kind FROM messages ORDER BY keep, id LIMIT ?",
                              (n,)).fetchall()
        for mid, kind in victims:
            cur.execute("DELETE FROM messages WHERE id=?", (mid,))
            self._count(cur, kind, 1)

    @staticmethod
    def _count(cur: sqlite3.Cursor, kind: str, n: int) -> None:
        cur.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                    "value = value + ?", (f"dropped_{kind}", n, n))

    def next_seq(self, kind: str) -> int:
        """A seq for a message that is not spooled (the retained status)."""
        with self._lock:
            seq = self._seq.get(kind, -1) + 1
            self._seq[kind] = seq
            if self.db is not None and not self.fault:
                try:
                    self.db.execute("INSERT OR REPLACE INTO sequence VALUES (?, ?)",
                                    (kind, seq))
                except sqlite3.Error as exc:
                    self._failed(exc)
        return seq

    # -- the publisher's side -----------------------------------------------------------------
    def peek(self, after_id: int = 0, limit: int = 100) -> list[Spooled]:
        """The oldest messages after `after_id`, from the disk and the memory backlog alike
        (ids are one sequence over both, so the order is the order they were put in)."""
        with self._lock:
            rows: list[Spooled] = []
            if self.db is not None:
                try:
                    rows = [Spooled(*r) for r in self.db.execute(
                        "SELECT id, kind, seq, payload FROM messages WHERE id > ? ORDER BY id "
                        "LIMIT ?", (after_id, limit + len(self._delivered)))
                        if r[0] not in self._delivered]
                except sqlite3.Error as exc:
                    self._failed(exc)
            rows += [m for m, _ in self._memory if m.id > after_id][:limit]
        return sorted(rows, key=lambda m: m.id)[:limit]

    def delete(self, message_id: int) -> None:
        """The broker has it: forget it (a disk that refuses the delete is asked again when it
        takes writes; meanwhile the message is not sent again)."""
        with self._lock:
            for i, (m, _) in enumerate(self._memory):
                if m.id == message_id:
                    del self._memory[i]
                    self._account()
                    return
            self._forget(message_id)

    def _forget(self, message_id: int) -> None:
        self._delivered.add(message_id)
        if self.db is not None and not self.fault:
            try:
                self.db.execute("DELETE FROM messages WHERE id=?", (message_id,))
                self._delivered.discard(message_id)
            except sqlite3.Error as exc:
                self._failed(exc)

    def depth(self) -> int:
        with self._lock:
            on_disk = 0
            if self.db is not None:
                try:
                    on_disk = self.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
                    self._on_disk = on_disk - len(self._delivered)
                except sqlite3.Error as exc:
                    self._failed(exc)
                    return self._on_disk + len(self._memory)
            elif self.path.is_file():  # what the card held when it could last be read
                return self._on_disk + len(self._memory)
            return on_disk - len(self._delivered) + len(self._memory)

    def in_memory(self) -> int:
        with self._lock:
            return len(self._memory)

    def dropped(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self._memory_dropped)
            if self.db is not None:
                try:
                    for name, value in self.db.execute(
                            "SELECT name, value FROM counters WHERE name LIKE 'dropped_%'"):
                        kind = name.removeprefix("dropped_")
                        counts[kind] = counts.get(kind, 0) + value
                except sqlite3.Error as exc:
                    self._failed(exc)
            return counts

    def close(self) -> None:
        with self._lock:
            if self._memory:
                log.warning("%d message(s) held in memory are lost with this exit (%s); the "
                            "next run reports them", len(self._memory),
                            self.fault or "not yet delivered")
            self._account(force=True)
            if self.db is not None:
                if not self.fault and not self._memory:  # the file holds every counter
                    with contextlib.suppress(sqlite3.Error):
                        self._save_counters(clean=True)
                self.db.close()
                self.db = None
