"""Logging that an SD card can live with: a line that keeps coming (a broker down all night, a
stethoscope unplugged for a day) is written the first time, then held back and summarised at
most once per `interval_s` ("… and 1,234 more like it"), instead of once per retry.

A line is held back when it says the same words as the last line of its kind (the same logger,
level and format string), whatever numbers it holds (a retry delay, the seconds lost). A line
that says something else is written, so every change of state is: keyed on the format string
alone, "status %s" folded seven status changes into two lines for 300 s, and a log's last
spool line said the disk was no longer full while it was.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_KINDS = 500  # distinct kinds of line remembered
NUMBER = re.compile(r"\d+(\.\d+)?")


@dataclass
class _Seen:
    since: float  # when the last line of this kind was written
    held: int  # lines held back since
    record: logging.LogRecord  # the latest held back, for the summary
    says: str  # what it said, numbers aside


class RepeatFilter(logging.Filter):
    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}
        self._due: list[logging.LogRecord] = []  # summaries to write next

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        says = NUMBER.sub("#", record.getMessage())
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and seen.says == says and now - seen.since < self.interval_s:
            seen.held += 1
            seen.record = record
            return False
        if seen is not None and seen.held:
            if seen.says == says:  # the same again, after the interval: counted on it
                record.msg = f"{record.msg} (and {seen.held} more like it in the last " \
                             f"{now - seen.since:.0f} s)"
            else:  # something new: what was held back is told on the next summaries()
                self._due.append(summary(seen, now))
        if len(self._seen) >= MAX_KINDS and key not in self._seen:
            del self._seen[min(self._seen, key=lambda k: self._seen[k].since)]
        self._seen[key] = _Seen(now, 0, record, says)
        return True

    def summaries(self) -> list[logging.LogRecord]:
        """Lines held back for a whole interval with nothing after them, or before a line
        that said something else: their summary is due (the daemon writes these from its
        loop, so a condition that ended is still told)."""
        now = self.clock()
        out, self._due = self._due, []
        for seen in self._seen.values():
            if seen.held and now - seen.since >= self.interval_s:
                out.append(summary(seen, now))
                seen.since, seen.held = now, 0
        return out


def summary(seen: _Seen, now: float) -> logging.LogRecord:
    """The latest line held back, with how many were."""
    r = seen.record
    record = logging.makeLogRecord(r.__dict__ | {"args": r.args})
    if seen.held > 1:
        record.msg = (f"{r.msg} (and {seen.held - 1} more like it in the last "
                      f"{now - seen.since:.0f} s)")
    return record


def install(interval_s: float) -> RepeatFilter:
    """On every handler of the root logger (records of every logger pass through them)."""
    f = RepeatFilter(interval_s)
    for handler in logging.getLogger().handlers:
        handler.addFilter(f)
    return f


def uninstall(f: RepeatFilter) -> None:
    for handler in logging.getLogger().handlers:
        handler.removeFilter(f)


def write(records: list[logging.LogRecord]) -> None:
    """Records past the filter (the summaries it made itself)."""
    for r in records:
        for handler in logging.getLogger().handlers:
            if r.levelno >= handler.level:
                handler.emit(r)  # emit: not through the filter that held them back
