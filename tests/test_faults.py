"""The daemon against its own environment, for real: a full disk, a read-only remount, a corrupt
spool at start, the wall clock jumping, an audio source that fails for a long time. Each runs
the real daemon against a real Mosquitto and checks: no exit, the status says why, what was
delivered and what was counted as lost, and recovery afterwards.

Mounting a tmpfs needs root (CI has it); elsewhere those tests skip and say so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.sources.audio_file import read_audio
from tests.test_daemon import ROOT, SAMPLE, Subscriber, finish, write_config

SPEECH = np.concatenate([read_audio(p)[0] for p in sorted(
    (ROOT / "models" / "samples").glob("*.wav"))])  # 46 s of the shipped samples, 8 kHz


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def stdin_daemon(tmp: Path, port: int, spool: Path, extra: str = "",
                 spool_extra: str = "") -> subprocess.Popen[bytes]:
    cfg = write_config(tmp, port, extra=extra).read_text()
    cfg = cfg.replace("  type: file\n", "  type: stdin\n").replace(
        f"path: {tmp / 'spool.db'}", f"path: {spool}\n  memory_messages: 300{spool_extra}")
    (tmp / "stdin.yaml").write_text(cfg + "log_repeat_s: 20\n")
    return subprocess.Popen([sys.executable, "-m", "edge", "run", "--config",
                             str(tmp / "stdin.yaml")], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=(tmp / "daemon.log").open("w"), stderr=subprocess.STDOUT)


class Feeder:
    """Raw 8 kHz s16le to the daemon's standard input, at `speed` × real time, looping the
    samples; `speed` may be changed while it runs."""

    def __init__(self, proc: subprocess.Popen[bytes], speed: float) -> None:
        self.proc, self.speed = proc, speed
        self.pcm = np.clip(SPEECH * 32768, -32768, 32767).astype("<i2").tobytes()
        self.stop = threading.Event()
        self.fed_s = 0.0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        chunk, i = 1600, 0  # 0.1 s
        assert self.proc.stdin is not None
        while not self.stop.is_set():
            try:
                self.proc.stdin.write(self.pcm[i:i + chunk])
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                return
            i = (i + chunk) % len(self.pcm)
            self.fed_s += 0.1
            time.sleep(0.1 / self.speed)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        with contextlib.suppress(BrokenPipeError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()


def exits(proc: subprocess.Popen[bytes], tmp: Path, timeout: float = 60) -> None:
    """The daemon ended by itself (its standard input closed), cleanly."""
    proc.wait(timeout)
    assert proc.returncode == 0, log_of(tmp)[-3000:]


def statuses(sub: Subscriber) -> list[list[str]]:
    return [p["reasons"] for p in sub.of("status")]


def log_of(tmp: Path) -> str:
    return (tmp / "daemon.log").read_text()


def test_disk_full_keeps_classifying_and_delivers_after(tmp_path: Path, broker: Any) -> None:
    """The spool on a nearly full tmpfs, the broker down: the disk fills, the daemon keeps
    going on its memory backlog (bounded, drops counted), and once the broker is back it
    delivers what it kept, says `spool: disk full`, and writes to the disk again as it drains."""
    with tmpfs(tmp_path / "card", "256k") as card:
        (card / "filler").write_bytes(b"\0" * 150_000)  # what the rest of the card holds
        sub = Subscriber(broker.port)  # its session outlives the broker's restart
        broker.stop()
        proc = stdin_daemon(tmp_path, broker.port, card / "spool.db")
        feeder = Feeder(proc, speed=60)
        deadline = time.monotonic() + 60
        while "spool: disk full" not in log_of(tmp_path):
            assert proc.poll() is None, log_of(tmp_path)[-3000:]
            assert time.monotonic() < deadline, "the disk never filled"
            time.sleep(0.2)
        time.sleep(3)  # full for a while, still classifying
        assert proc.poll() is None
        broker.start()
        feeder.speed = 2
        sub.wait_for(lambda: any("spool: disk full" in r for r in statuses(sub)), timeout=30)
        (card / "filler").unlink()  # the technician makes room
        sub.wait_for(lambda: statuses(sub) and "spool: disk full" not in statuses(sub)[-1],
                     timeout=40)
        feeder.close()
        exits(proc, tmp_path)
    sub.wait_for(lambda: sub.of("status")[-1]["state"] == "offline")  # the last message
    assert "Traceback" not in log_of(tmp_path)
    stats = sub.of("stats")[-1]
    seqs = sorted({c["seq"] for c in sub.of("cycle")})
    missing = seqs[-1] + 1 - len(seqs)
    assert len(seqs) > 50 and missing <= stats["spool_dropped"]  # every loss counted
    assert stats["spool_fault"] is None and stats["spool_in_memory"] == 0
    sub.close()


@contextlib.contextmanager
def sd_card(tmp: Path) -> Iterator[tuple[Path, Path]]:
    """An ext4 file system on a loop device, mounted errors=remount-ro as Raspberry Pi OS
    mounts its card; yields (mount point, the file system's sysfs folder)."""
    if os.geteuid() != 0 or not (shutil.which("losetup") and shutil.which("mkfs.ext4")):
        pytest.skip("an ext4 loop mount needs root, losetup and mkfs.ext4 (CI has them)")
    image, where = tmp / "card.img", tmp / "card"
    where.mkdir()
    with image.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    done = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(where)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot loop-mount here: {done.stderr.strip()}")
    try:
        device = next(line.split()[0] for line in Path("/proc/mounts").read_text()
                      .splitlines() if line.split()[1] == str(where))
        yield where, Path("/sys/fs/ext4") / Path(device).name
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_failing_card_going_read_only_mid_stream_loses_nothing(tmp_path: Path,
                                                                  broker: Any) -> None:
    """The card fails while the broker is up: ext4 (errors=remount-ro, as on a Pi) turns
    read-only after an error, which the kernel's own test hook raises. Messages go straight
    from memory, the status says why, nothing is lost. (Writes come back only after fsck or a
    new card: the daemon keeps running on memory until someone comes.)"""
    with sd_card(tmp_path) as (card, sysfs):
        sub = Subscriber(broker.port)
        proc = stdin_daemon(tmp_path, broker.port, card / "spool.db")
        feeder = Feeder(proc, speed=4)
        sub.wait_for(lambda: len(sub.of("cycle")) >= 3, timeout=30)
        (sysfs / "trigger_fs_error").write_text("lungedge test: the card failed\n")
        sub.wait_for(lambda: any(r and r[0] in ("spool: I/O error", "spool: read-only")
                                 for r in statuses(sub)), timeout=40)
        during = len(sub.of("cycle"))
        sub.wait_for(lambda: len(sub.of("cycle")) >= during + 6, timeout=40)
        assert proc.poll() is None
        feeder.close()
        exits(proc, tmp_path)
    sub.wait_for(lambda: sub.of("status")[-1]["state"] == "offline")
    seqs = sorted({c["seq"] for c in sub.of("cycle")})
    assert seqs == list(range(len(seqs))) and len(seqs) > 10  # nothing lost
    stats = sub.of("stats")[-1]
    assert stats["spool_dropped"] == 0 and stats["spool_fault"] in ("spool: I/O error",
                                                                     "spool: read-only")
    assert "Traceback" not in log_of(tmp_path)
    sub.close()


def test_a_spool_that_overflowed_once_is_healthy_again_once_drained(tmp_path: Path,
                                                                     broker: Any) -> None:
    """The broker away long enough for the bounded spool to drop messages: degraded, with the
    count. Once it has drained and nothing was dropped for spool.drops_window_s, the status is
    online again (the drop count was a lifetime one: "degraded" for good)."""
    sub = Subscriber(broker.port)
    broker.stop()
    proc = stdin_daemon(tmp_path, broker.port, tmp_path / "spool.db",
                        spool_extra="\n  max_messages: 100\n  drops_window_s: 4")
    feeder = Feeder(proc, speed=40)
    deadline = time.monotonic() + 60
    while "spool full:" not in log_of(tmp_path):
        assert time.monotonic() < deadline and proc.poll() is None, log_of(tmp_path)[-2000:]
        time.sleep(0.2)
    feeder.speed = 1
    broker.start()
    sub.wait_for(lambda: any(r and r[0].startswith("spool full:") for r in statuses(sub)),
                 timeout=30)
    sub.wait_for(lambda: statuses(sub)[-1] == [] and sub.of("status")[-1]["state"] == "online",
                 timeout=40)
    feeder.close()
    exits(proc, tmp_path)
    assert sub.of("stats")[-1]["spool_dropped"] > 0  # the lifetime count stays in stats
    sub.close()


def test_a_card_failing_while_the_broker_is_down_strands_nothing(tmp_path: Path,
                                                                  broker: Any) -> None:
    """The broker is down, so messages wait on the card; then the card fails. The spool lost
    its handle with the I/O error and found the card read-only on retry: what was on it stayed
    there for the rest of the run. Now the spool opens the card read-only and delivers it, and
    the newer messages from memory after it, in order."""
    with sd_card(tmp_path) as (card, sysfs):
        sub = Subscriber(broker.port)
        broker.stop()
        proc = stdin_daemon(tmp_path, broker.port, card / "spool.db")
        feeder = Feeder(proc, speed=6)
        deadline = time.monotonic() + 60
        while feeder.fed_s < 20:  # cycles wait on the card
            assert time.monotonic() < deadline and proc.poll() is None, log_of(tmp_path)
            time.sleep(0.2)
        (sysfs / "trigger_fs_error").write_text("lungedge test: the card failed\n")
        time.sleep(8)  # the spool retries, finds the card read-only, keeps new ones in memory
        broker.start()
        sub.wait_for(lambda: len(sub.of("cycle")) >= 12, timeout=60)
        feeder.close()
        exits(proc, tmp_path)
    sub.wait_for(lambda: sub.of("status")[-1]["state"] == "offline")
    seqs = sorted({c["seq"] for c in sub.of("cycle")})
    assert seqs == list(range(len(seqs))), seqs  # the card's, then memory's: nothing lost
    log = log_of(tmp_path)
    assert "opened read-only: delivering what it holds" in log and "Traceback" not in log
    assert sub.of("stats")[-1]["spool_dropped"] == 0
    sub.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_a_damaged_spool_at_start_is_moved_aside(tmp_path: Path, broker: Any,
                                                 damage: str) -> None:
    spool = tmp_path / "spool.db"
    if damage == "garbage":
        spool.write_bytes(os.urandom(5000))
    elif damage == "truncated":  # a real spool, cut by a power cut
        from edge.delivery.publisher import envelope
        from edge.delivery.spool import Spool

        s = Spool(spool, 1000)
        for i in range(200):
            s.put("cycle", lambda seq, epoch: envelope("bed-7", seq, epoch),
                  {"n": i, "pad": "x" * 200})
        s.close()
        spool.write_bytes(spool.read_bytes()[:len(spool.read_bytes()) // 2])
    else:
        with sqlite3.connect(spool) as db:
            db.execute("CREATE TABLE notes (text TEXT)")
    sub = Subscriber(broker.port)
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config",
                             str(write_config(tmp_path, broker.port))], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = finish(proc)
    assert proc.returncode == 0, out
    assert "moved aside" in out
    sub.wait_for(lambda: any(p["state"] == "offline" for p in sub.of("status")))
    assert any(r and r[0].startswith("spool: corrupt or not a lungedge spool, moved aside")
               for r in statuses(sub))
    seqs = [c["seq"] for c in sub.of("cycle")]
    assert seqs == list(range(len(seqs))) and len(seqs) >= 8
    assert len(list(tmp_path.glob("spool.db.corrupt-*"))) == 1  # kept, not deleted
    sub.close()


def test_wall_clock_jumps_break_nothing(tmp_path: Path, broker: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Pi without a real-time clock: NTP sets the wall clock while the daemon runs, back by
    three months, then forward again (the daemon in process, its one wall-clock reader moved;
    the monotonic clock untouched, as NTP leaves it). Classifying, sessions and delivery go
    on; timestamps follow the wall clock; nothing floods; no alert from the jump itself.
    (libfaketime would do this from outside, but its clock_nanosleep breaks Python 3.11's
    time.sleep when the monotonic clock is excluded: wolfcw/libfaketime#426.)"""
    from edge import clock
    from edge.service.config import load_config
    from edge.service.daemon import Daemon

    offset = [0.0]
    real = time.time
    monkeypatch.setattr(clock, "wall", lambda: real() + offset[0])
    sub = Subscriber(broker.port)
    cfg = load_config(write_config(tmp_path, broker.port, realtime=True))
    daemon = Daemon(cfg)

    def ntp() -> None:
        time.sleep(4)
        offset[0] = -90 * 86400.0
        time.sleep(5)
        offset[0] = 0.0

    threading.Thread(target=ntp, daemon=True).start()
    assert daemon.run() == 0  # the 15 s recording, in real time
    sub.wait_for(lambda: sub.of("status") and sub.of("status")[-1]["state"] == "offline")
    cycles = sub.of("cycle")
    assert [c["seq"] for c in cycles] == list(range(len(cycles))) and len(cycles) >= 6
    stamps = [c["ts"][:7] for c in cycles]
    assert "2026-09" in stamps and stamps[-1] > "2026-11"  # back three months, then forward
    assert len({c["session_id"] for c in cycles}) == 1  # the session did not break
    assert not [a for a in sub.of("alert") if a["kind"] == "no_audio"]
    (summary,) = sub.of("summary")
    assert summary["cycles"] == len(cycles)
    sub.close()


def test_an_audio_source_failing_for_long_is_a_state(tmp_path: Path, broker: Any) -> None:
    """The stethoscope is not there when the daemon starts, comes, is unplugged for 30 s and
    comes back: the daemon never exits, the status says why it hears nothing, the log holds a
    bounded number of lines about it, and it recovers each time."""
    link = tmp_path / "steth"
    sim = None
    try:
        sub = Subscriber(broker.port)
        cfg = write_config(tmp_path, broker.port, serial_port=link,
                           extra="  no_audio_s: 5\n").read_text()
        cfg = cfg.replace("  serial:\n", "  serial:\n    reopen_backoff_max_s: 1\n"
                          "    stall_timeout_s: 1\n")
        (tmp_path / "serial.yaml").write_text(cfg + "log_repeat_s: 15\n")
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config",
                                 str(tmp_path / "serial.yaml")], cwd=ROOT,
                                stdout=(tmp_path / "daemon.log").open("w"),
                                stderr=subprocess.STDOUT)
        sub.wait_for(lambda: any(r and "does not exist: is the stethoscope plugged in" in r[0]
                                 for r in statuses(sub)), timeout=40)
        sim = subprocess.Popen([sys.executable, "-m", "firmware_bridge.simulate", str(SAMPLE),
                                "--link", str(link), "--loop", "--unplug-after", "6",
                                "--replug-after", "30"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
        sub.wait_for(lambda: len(sub.of("cycle")) >= 1, timeout=40)  # it came: classifying
        sub.wait_for(lambda: any("no audio" in r for r in statuses(sub)), timeout=40)
        sub.wait_for(lambda: len(sub.of("status")) > 1 and statuses(sub)[-1] == [], timeout=60)
        proc.send_signal(signal.SIGTERM)
        out = finish(proc, timeout=60)
        assert proc.returncode == 0, out
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(10)
    assert proc.poll() == 0
    retries = [line for line in log_of(tmp_path).splitlines() if "still unavailable" in line]
    assert 1 <= len(retries) <= 4, retries  # about 25 retries held back to a few lines
    assert any("more like it" in line for line in retries)
    sub.close()


@pytest.mark.parametrize("card_fails", ["full", "read-only"])
def test_what_an_exit_loses_is_counted_by_the_next_run(tmp_path: Path, broker: Any,
                                                       card_fails: str) -> None:
    """The card full (or gone read-only) and the broker down, then the daemon exits: what
    was only in memory was lost uncounted (2,512 of 19,219 cycles reached the station, every
    stats message said spool_dropped 0). Now the ledger (beside the spool, allocated at start,
    and in the runtime directory) counts it, and the next run says how many of which kinds
    the previous epoch lost, and why: in its status and in its drop counts."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    os.environ["RUNTIME_DIRECTORY"] = str(runtime)
    try:
        with contextlib.ExitStack() as stack:
            if card_fails == "full":
                card = stack.enter_context(tmpfs(tmp_path / "card", "256k"))
                (card / "filler").write_bytes(b"\0" * 150_000)
            else:
                card, sysfs = stack.enter_context(sd_card(tmp_path))
            broker.stop()
            proc = stdin_daemon(tmp_path, broker.port, card / "spool.db")
            feeder = Feeder(proc, speed=60 if card_fails == "full" else 20)
            if card_fails == "read-only":
                time.sleep(4)
                (sysfs / "trigger_fs_error").write_text("lungedge test: the card failed\n")
            deadline = time.monotonic() + 90
            while "held in memory" not in log_of(tmp_path) and feeder.fed_s < 400:
                assert time.monotonic() < deadline and proc.poll() is None, \
                    log_of(tmp_path)[-2000:]
                time.sleep(0.2)
            feeder.close()
            exits(proc, tmp_path)
            first = log_of(tmp_path)
            assert "message(s) held in memory are lost with this exit" in first, first[-2000:]
            lost = int(first.split(" message(s) held in memory are lost")[0].rsplit(" ", 1)[1])
            if card_fails == "full":
                (card / "filler").unlink()  # a technician makes room
            broker.start()
            sub = Subscriber(broker.port)
            proc = stdin_daemon(tmp_path, broker.port, card / "spool.db")
            feeder = Feeder(proc, speed=4)
            sub.wait_for(lambda: any("the previous run lost" in r
                                     for s in statuses(sub) for r in s), timeout=40)
            told = next(r for s in statuses(sub) for r in s if "the previous run lost" in r)
            told = told[told.index("the previous run lost"):]
            total = int(told.split("lost ")[1].split(" ")[0])
            assert total >= lost and "cycle" in told, (told, lost)
            sub.wait_for(lambda: sub.of("stats") and sub.of("stats")[-1]["spool_dropped"]
                         >= lost, timeout=30)
            feeder.close()
            exits(proc, tmp_path)
            sub.close()
    finally:
        del os.environ["RUNTIME_DIRECTORY"]
