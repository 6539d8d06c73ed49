"""A device's message numbers are never reused: four ways its counters used to go back, each
driven end to end (the real daemon, a real Mosquitto, the real station on SQLite and
PostgreSQL), and every message of both runs stored.

Before numbering epochs, the station keyed messages on (device, kind, seq) and dropped the
second run's as repeats, silently: a new spool restarts seq at 0, and a card that failed
during a run leaves counters on it that lag what was sent from memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy", reason="the station extra: pip install 'lungedge[station]'")

from sqlalchemy import select

from station.ingest import Ingest
from station.schema import cycles, devices, summaries
from station.store import Store
from tests.test_daemon import ROOT, finish, write_config
from tests.test_faults import Feeder, exits, sd_card, stdin_daemon
from tests.test_station_ingest import config, wait


class Station:
    def __init__(self, tmp: Path, port: int, url: str) -> None:
        self.store = Store(url)
        self.ingest = Ingest(config(tmp, port, url), self.store)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.ingest.run, args=(self.stop,), daemon=True)
        self.thread.start()
        wait(self.ingest.connected.is_set, 10, "the station connects")

    def cycles(self) -> list[tuple[str, int]]:
        """(epoch of the device then, seq) of every stored cycle."""
        with self.store.engine.connect() as conn:
            return list(conn.execute(select(cycles.c.seq, cycles.c.id).order_by(cycles.c.id)))

    def count(self, table: Any) -> int:
        with self.store.engine.connect() as conn:
            return len(conn.execute(select(table)).all())

    def epoch(self) -> str:
        with self.store.engine.connect() as conn:
            return str(conn.execute(select(devices.c.epoch)).scalar())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def station(tmp_path: Path, broker: Any, database_url: str) -> Iterator[Station]:
    s = Station(tmp_path, broker.port, database_url)
    yield s
    s.close()


def run(tmp: Path, port: int, spool: Path) -> str:
    """The daemon on the wheeze sample, as fast as it goes, with its spool at `spool`."""
    cfg = write_config(tmp, port)
    cfg.write_text(cfg.read_text().replace(f"path: {tmp / 'spool.db'}", f"path: {spool}"))
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = finish(proc)
    assert proc.returncode == 0, out
    return out


def stored_after_two_runs(station: Station, before_second: Any, tmp: Path, port: int,
                          spool: Path, second_spool: Path | None = None) -> str:
    runs = station.count(summaries)  # runs before these two
    run(tmp, port, spool)
    wait(lambda: station.count(summaries) == runs + 1, 20, "the first run stored")
    first, epoch = len(station.cycles()), station.epoch()
    before_second()
    out = run(tmp, port, second_spool or spool)
    wait(lambda: station.count(summaries) == runs + 2, 20, "the second run's summary stored")
    per_run = first // (runs + 1)
    wait(lambda: len(station.cycles()) == first + per_run, 20,
         f"both runs' cycles stored (got {len(station.cycles())})")
    assert station.epoch() != epoch
    return out


def test_a_replaced_card_starts_a_new_epoch(tmp_path: Path, broker: Any,
                                            station: Station) -> None:
    spool = tmp_path / "spool.db"

    def new_card() -> None:
        for part in tmp_path.glob("spool.db*"):
            part.unlink()

    out = stored_after_two_runs(station, new_card, tmp_path, broker.port, spool)
    assert "numbering epoch" in out and "a new spool" in out
    seqs = [seq for seq, _ in station.cycles()]
    assert seqs[:3] == [0, 1, 2] and seqs[len(seqs) // 2:][:3] == [0, 1, 2]  # numbered anew


def test_a_restored_spool_never_repeats_a_number(tmp_path: Path, broker: Any,
                                                 station: Station) -> None:
    """An older, cleanly closed copy of the spool put back (a backup, a re-imaged card): it
    brought back its epoch, and the next run reissued numbers already delivered, which the
    station dropped as repeats. Every run now numbers in a new epoch: both runs stored."""
    import shutil

    spool = tmp_path / "spool.db"
    backup = tmp_path / "backup"

    def restore() -> None:
        for part in tmp_path.glob("spool.db*"):
            part.unlink()
        for part in backup.iterdir():
            shutil.copy(part, tmp_path / part.name)

    run(tmp_path, broker.port, spool)  # a first run, its spool closed cleanly: the backup
    backup.mkdir()
    for part in tmp_path.glob("spool.db*"):
        shutil.copy(part, backup / part.name)
    wait(lambda: station.count(summaries) == 1, 20, "the first run stored")
    first = len(station.cycles())
    out = stored_after_two_runs(station, restore, tmp_path, broker.port, spool)
    assert "a new run (every run numbers anew" in out
    assert len(station.cycles()) == 3 * first


def test_a_damaged_spool_moved_aside_starts_a_new_epoch(tmp_path: Path, broker: Any,
                                                        station: Station) -> None:
    spool = tmp_path / "spool.db"

    def damage() -> None:
        spool.write_bytes(os.urandom(5000))
        for part in tmp_path.glob("spool.db-*"):
            part.unlink()

    out = stored_after_two_runs(station, damage, tmp_path, broker.port, spool)
    assert "moved aside" in out


def test_a_spool_that_cannot_be_opened_starts_a_new_epoch(tmp_path: Path, broker: Any,
                                                          station: Station) -> None:
    """The second run cannot open any spool (its folder is a file): it runs on memory and
    numbers from 0 again, in an epoch of its own."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the spool's folder should be\n")
    out = stored_after_two_runs(station, lambda: None, tmp_path, broker.port,
                                tmp_path / "spool.db", blocked / "spool.db")
    assert "the spool file cannot be opened" in out


def test_counters_that_advanced_in_memory_start_a_new_epoch(tmp_path: Path, broker: Any,
                                                            station: Station) -> None:
    """The card fails mid-run (ext4 remounted read-only): the counters advance in memory only,
    and the file keeps older ones. After fsck the next run reads that file: it must not trust
    its counters, and starts a new epoch."""
    with sd_card(tmp_path) as (card, sysfs):
        spool = card / "spool.db"
        proc = stdin_daemon(tmp_path, broker.port, spool)
        feeder = Feeder(proc, speed=6)
        wait(lambda: len(station.cycles()) >= 3, 30, "the first cycles stored")
        (sysfs / "trigger_fs_error").write_text("lungedge test: the card failed\n")
        wait(lambda: "spool: I/O error" in (tmp_path / "daemon.log").read_text()
             or "spool: read-only" in (tmp_path / "daemon.log").read_text(), 30,
             "the card fails")
        during = len(station.cycles())
        wait(lambda: len(station.cycles()) >= during + 6, 40, "cycles sent from memory")
        feeder.close()
        exits(proc, tmp_path)
        first, epoch = len(station.cycles()), station.epoch()
        image = tmp_path / "card.img"
        subprocess.run(["umount", str(card)], check=True)
        subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True)
        subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(card)],
                       check=True)
        (tmp_path / "daemon.log").unlink()
        proc = stdin_daemon(tmp_path, broker.port, spool)
        feeder = Feeder(proc, speed=6)
        wait(lambda: len(station.cycles()) >= first + 6, 40, "the second run's cycles stored")
        feeder.close()
        exits(proc, tmp_path)
    assert station.epoch() != epoch
    log = (tmp_path / "daemon.log").read_text()
    assert "did not close the spool cleanly" in log
    assert len(station.cycles()) >= first + 6
