"""What a run could not keep, counted where the next run finds it.

The spool keeps every message on the card; when the card refuses writes (full, failing) the
messages wait in memory, and a memory backlog that overflows drops the least important first.
Those drops, and whatever is still in memory when the process ends (a stop, a crash, a kill),
were counted only in memory: the next start began a new numbering epoch, and 2,512 of 19,219
cycles reached the station with every stats message saying nothing was dropped. So the counts
go to a small ledger as they change (at most once a second, and at exit), in two places that
fail apart: a file beside the spool, allocated in full when the run starts so that a card that
fills up later can still take its overwrites in place, and one in the runtime directory (RAM:
systemd's RuntimeDirectory, kept across restarts of the service), which a card gone read-only
cannot take away. The next run reads the newer of the two, says what the previous epoch lost
(a status reason, and the spool's drop counters its stats report), and starts its own.

A process killed at once (SIGKILL, a power cut) may have changed its counts in the second
before: the next run reports what was counted up to then.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SIZE = 4096  # bytes the ledger file is allocated and written at, always
EVERY_S = 1.0  # the ledger is written at most this often (and at exit)


@dataclass
class Entry:
    epoch: str
    lost: dict[str, int] = field(default_factory=dict)  # dropped from the memory backlog
    in_memory: dict[str, int] = field(default_factory=dict)  # held in memory only, by kind
    why: str = ""  # the storage fault meanwhile
    written: int = 0  # a counter: which of the two copies is newer

    @property
    def gone(self) -> dict[str, int]:
        """What the run lost if it ended with this entry: its drops, and what was in memory."""
        return dict(Counter(self.lost) + Counter(self.in_memory))


def runtime_path(spool: Path) -> Path | None:
    """The ledger's copy in RAM: systemd's RuntimeDirectory (RUNTIME_DIRECTORY), else
    /run/lungedge where it exists; None where there is neither (a run by hand)."""
    folder = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    base = Path(folder) if folder else Path("/run/lungedge")
    return base / f"{spool.name}.ledger" if base.is_dir() and os.access(base, os.W_OK) \
        else None


class Ledger:
    def __init__(self, spool: Path) -> None:
        self.paths = [p for p in (spool.with_name(spool.name + ".ledger"), runtime_path(spool))
                      if p is not None]
        self.entry = Entry("")
        self._due = 0.0
        self._last: tuple[object, ...] = ()

    def previous(self) -> Entry | None:
        """The newer of the copies a previous run left, if any can be read."""
        found = []
        for p in self.paths:
            try:
                data = json.loads(p.read_bytes().rstrip(b"\0 ") or b"{}")
                found.append(Entry(**data))
            except (OSError, ValueError, TypeError):
                continue
        return max(found, key=lambda e: e.written, default=None)

    def start(self, epoch: str, written_after: int) -> None:
        """This run's entry, allocated in full in every place that takes it now."""
        self.entry = Entry(epoch, written=written_after)
        self.write(force=True)

    def update(self, lost: dict[str, int], in_memory: dict[str, int], why: str,
               force: bool = False) -> None:
        state = (tuple(sorted(lost.items())), tuple(sorted(in_memory.items())), why)
        if state == self._last and not force:
            return
        self.entry.lost, self.entry.in_memory, self.entry.why = dict(lost), dict(in_memory), why
        self._last = state
        self.write(force)

    def write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._due:
            return
        self._due = now + EVERY_S
        self.entry.written += 1
        data = json.dumps(self.entry.__dict__).encode()
        if len(data) > SIZE:  # (a handful of kinds: never in practice)
            data = json.dumps(self.entry.__dict__ | {"why": ""}).encode()[:SIZE]
        for p in self.paths:
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    os.pwrite(fd, data.ljust(SIZE, b" "), 0)  # in place: no new blocks
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.debug("ledger %s not written (%s)", p, exc)


def describe(gone: dict[str, int], why: str) -> str:
    """A status reason for what a previous run lost."""
    total = sum(gone.values())
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(gone.items()) if n)
    return (f"the previous run lost {total} message(s) ({kinds})"
            + (f": {why}, and the broker could not take them" if why else
               ": held in memory when it ended"))
