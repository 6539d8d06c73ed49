"""The daemon's log on an SD card: a line that keeps coming is folded, and every change of
state is still written."""

from __future__ import annotations

import logging

from edge.service.logs import RepeatFilter


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("edge.service.daemon", logging.WARNING, __file__, 1, msg, args,
                             None)


def test_every_status_change_is_written_and_retries_are_folded() -> None:
    """Seven status changes in five minutes were two lines ("status %s" was one kind of line
    whatever it said): now each is written; a retry whose delay alone changes is folded."""
    now = [0.0]
    f = RepeatFilter(300.0, clock=lambda: now[0])
    statuses = ["degraded: spool: I/O error", "degraded: spool: read-only", "online",
                "degraded: spool: disk full", "online", "degraded: no audio", "online"]
    written = []
    for s in statuses:
        now[0] += 10
        written.append(f.filter(record("status %s", s)))
    assert all(written)
    again = [f.filter(record("status %s", "online")) for _ in range(3)]  # said already
    assert again == [False, False, False]
    retries = [f.filter(record("broker unreachable; retrying in %.1f s", d))
               for d in (0.6, 1.3, 2.2, 4.9)]
    assert retries == [True, False, False, False]


def test_what_was_held_back_is_told_before_it_is_forgotten() -> None:
    now = [0.0]
    f = RepeatFilter(300.0, clock=lambda: now[0])
    assert f.filter(record("spool: %s", "disk full"))
    for _ in range(4):
        now[0] += 5
        assert not f.filter(record("spool: %s", "disk full"))
    assert f.filter(record("spool: %s", "I/O error"))  # something new: written at once
    (told,) = f.summaries()  # and the four held back are counted
    assert told.getMessage().startswith("spool: disk full (and 3 more like it")
