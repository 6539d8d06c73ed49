"""Time: the stream's own timeline, the wall clock, and whether the wall clock can be trusted.

Everything that measures durations (sessions, no-audio, backoff, stats intervals) runs on the
stream's timeline or the monotonic clock. Wall-clock time is only for timestamps a person or a
station reads, and a Raspberry Pi has no real-time clock: until NTP has set it, its wall clock
can be months behind. So every message says whether the clock was synchronised.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time

TIME_ERROR = 5  # adjtimex(2): "the clock is not synchronised"


def wall() -> float:
    """The wall clock (UNIX time): the one place lungedge reads it, so that a test can move it
    as NTP would."""
    return time.time()


class StreamClock:
    """Stream seconds → UNIX time, anchored on the latest block (its first sample's capture
    time), so a long-running stream follows the wall clock's corrections."""

    def __init__(self) -> None:
        self._stream, self._wall = 0.0, 0.0

    def anchor(self, stream_s: float, wall_s: float) -> None:
        self._stream, self._wall = stream_s, wall_s

    def wall(self, stream_s: float) -> float:
        return self._wall + (stream_s - self._stream)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def wall_clock_synced() -> bool:
    """The kernel's own answer (adjtimex, read-only): has something (NTP, chrony,
    systemd-timesyncd) set and disciplined the wall clock? Unknown counts as not."""
    libc = _libc()
    if libc is None:
        return False
    timex = ctypes.create_string_buffer(256)  # struct timex, modes = 0: only read
    try:
        return libc.adjtimex(timex) not in (-1, TIME_ERROR)
    except (AttributeError, OSError):
        return False
