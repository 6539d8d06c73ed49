"""Logging that an SD card can live with: a line that keeps coming (a broker down all night, a
stethoscope unplugged for a day) is written the first time, then held back and summarised at
most once per `interval_s` ("… and 1,234 more like it"), instead of once per retry.

Lines are alike when they come from the same logger at the same level with the same format
string, whatever their arguments (the retry delay, the seconds lost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_KINDS = 500  # distinct kinds of line remembered


@dataclass
class _Seen:
    since: float  # when the last line of this kind was written
    held: int  # lines held back since
    record: logging.LogRecord  # the latest held back, for the summary


class RepeatFilter(logging.Filter):
    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.since < self.interval_s:
            seen.held += 1
            seen.record = record
            return False
        if seen is not None and seen.held:
            record.msg = f"{record.msg} (and {seen.held} more like it in the last " \
                         f"{now - seen.since:.0f} s)"
        if len(self._seen) >= MAX_KINDS and key not in self._seen:
            del self._seen[min(self._seen, key=lambda k: self._seen[k].since)]
        self._seen[key] = _Seen(now, 0, record)
        return True

    def summaries(self) -> list[logging.LogRecord]:
        """Lines held back for a whole interval with nothing after them: their summary is due
        (the daemon writes these from its loop, so a condition that ended is still told)."""
        now = self.clock()
        out = []
        for seen in self._seen.values():
            if seen.held and now - seen.since >= self.interval_s:
                r = seen.record
                summary = logging.makeLogRecord(r.__dict__ | {
                    "msg": f"{r.msg} (and {seen.held - 1} more like it in the last "
                           f"{now - seen.since:.0f} s)", "args": r.args})
                if seen.held == 1:
                    summary.msg = r.msg
                seen.since, seen.held = now, 0
                out.append(summary)
        return out


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
