"""The project's words, defined once: every kind, event, state and label that crosses a
boundary, from the tracker through the wire and the station's store to its templates.

Each is a `Literal`, so mypy checks a misspelt word wherever it is written, and `words()` gives
the values for the places that must list them (JSON Schemas, database checks, tests). A word
is added here first, then wherever mypy says it is not handled.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

__all__ = ["AlertEvent", "AlertKind", "AlertState", "Category", "DeviceKind", "DeviceState",
           "EndReason", "LogEvent", "MessageKind", "Priority", "RecordLabel", "SessionEnd",
           "StationKind", "Unjudged", "words"]

# -- the device ---------------------------------------------------------------------------
MessageKind = Literal["status", "cycle", "alert", "summary", "stats", "clip"]
DeviceState = Literal["online", "degraded", "offline"]
# what a device's tracker raises: clinical findings, and its own technical conditions
DeviceKind = Literal["wheeze", "crackle", "poor_signal", "no_audio"]
AlertKind = DeviceKind
AlertEvent = Literal["new", "update", "end"]
# why an alert ended: its evidence cleared, nobody hears the patient any more (the
# auscultation ended), the device stopped, the recording ended
EndReason = Literal["cleared", "auscultation_ended", "shutdown", "end_of_stream"]
# why a session ended
SessionEnd = Literal["silence", "max_length", "shutdown", "end_of_stream"]
# a session's record-level label: ICBHI/SPRSound Task 2-1's words
RecordLabel = Literal["normal", "CAS", "DAS", "CAS & DAS", "poor quality"]
# why a cycle could not be judged (edge.pipeline.signal_judgement)
Unjudged = Literal["clipping", "band_limited", "noise", "poor_quality"]

# -- the station --------------------------------------------------------------------------
# alarms the station raises itself, beside the devices' alerts
StationKind = Literal["offline", "spool_backlog", "seq_gap"]
Category = Literal["clinical", "technical"]
AlertState = Literal["open", "ended", "resolved"]
Priority = Literal["high", "medium", "low"]
# a line of an alert's history: the device's events and people's
LogEvent = Literal["new", "update", "end", "ack", "resolve"]


def words(vocabulary: Any) -> tuple[str, ...]:
    """The values of one of the Literals above (of a union of them, all of theirs)."""
    out: list[str] = []
    for arg in get_args(vocabulary):
        out.extend(words(arg) if get_args(arg) else [arg])
    return tuple(out)
