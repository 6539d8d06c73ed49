"""The spool's guarantees, on real SQLite: bounded, ordered, surviving reopen, never deleting
what it cannot read."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from edge.delivery.publisher import envelope
from edge.delivery.spool import Spool


def ENVELOPE(seq: int, epoch: str) -> dict[str, object]:
    return envelope("bed-1", seq, epoch)


def test_spool_evicts_stats_then_oldest_cycles_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_messages=100)
    spool.put("alert", ENVELOPE, {"n": 0})
    for i in range(5):
        spool.put("stats", ENVELOPE, {"n": i})
    for i in range(150):
        spool.put("cycle", ENVELOPE, {"n": i})
    spool.put("summary", ENVELOPE, {"n": 0})
    assert spool.depth() == 100
    kinds = [r.kind for r in spool.peek(limit=1000)]
    assert kinds.count("alert") == 1 and kinds.count("summary") == 1 and "stats" not in kinds
    cycles = [json.loads(r.payload)["n"] for r in spool.peek(limit=1000) if r.kind == "cycle"]
    assert cycles == list(range(52, 150))  # the oldest went first, order kept
    assert spool.dropped() == {"stats": 5, "cycle": 52}


def test_spool_survives_reopen_with_seq_continuing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_messages=1000)
    assert [spool.put("cycle", ENVELOPE, {}) for _ in range(3)] == [0, 1, 2]
    first = spool.peek()[0]
    spool.delete(first.id)
    spool.close()
    again = Spool(tmp_path / "s.db", max_messages=1000)  # as after a crash or restart
    assert [r.seq for r in again.peek()] == [1, 2]
    assert again.put("cycle", ENVELOPE, {}) == 3
    assert again.next_seq("status") == 0 and again.next_seq("status") == 1
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_write_ahead_log_stays_small(tmp_path: Path) -> None:
    """A spool taking messages faster than a device ever sends them, each acknowledged soon
    after: its WAL is checkpointed and cut back, never the 4 MB SQLite lets it grow to by
    default (which filled a 512 KB tmpfs by itself)."""
    from edge.delivery.spool import WAL_BYTES, WAL_PAGES

    spool = Spool(tmp_path / "s.db", max_messages=100_000)
    wal = tmp_path / "s.db-wal"
    largest = 0
    for i in range(3000):
        spool.put("cycle", ENVELOPE, {"n": i, "pad": "x" * 400})
        if i % 2:
            for r in spool.peek(limit=2):
                spool.delete(r.id)
        largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    assert largest < 2 * WAL_BYTES + WAL_PAGES * 4096


def test_spool_in_an_unwritable_place_keeps_messages_in_memory(tmp_path: Path) -> None:
    """Nowhere to write is a state: messages wait in memory (bounded, lowest `keep` dropped
    first and counted), seq keeps counting, and delivery from memory works."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    spool = Spool(blocker / "spool.db", 100, memory_messages=100)
    assert spool.fault.startswith("spool:")
    assert [spool.put("cycle", ENVELOPE, {"n": i}) for i in range(3)] == [0, 1, 2]
    for i in range(120):
        spool.put("stats", ENVELOPE, {"n": i})
    spool.put("alert", ENVELOPE, {})
    assert spool.depth() == spool.in_memory() == 100
    assert spool.dropped() == {"stats": 24}  # the stats went first; the cycles stayed
    first = spool.peek(limit=1)[0]
    assert (first.kind, first.seq) == ("cycle", 0)
    spool.delete(first.id)
    assert spool.depth() == 99


def test_corrupt_and_foreign_spools_are_moved_aside_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)  # a power cut's garbage
    spool = Spool(path, 100)
    assert spool.fault == "" and "moved aside" in spool.notice
    (aside,) = tmp_path.glob("spool.db.corrupt-*")
    assert aside.read_bytes().startswith(b"SQLite format 3")
    assert spool.put("cycle", ENVELOPE, {}) == 0
    spool.close()
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE patients (name TEXT)")
    spool = Spool(foreign, 100)
    assert "moved aside" in spool.notice and spool.put("cycle", ENVELOPE, {}) == 0
    spool.close()
    assert len(list(tmp_path.glob("other.db.corrupt-*"))) == 1
