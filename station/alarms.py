"""What each kind of alarm is: clinical (the patient's breath) or technical (the equipment), and
its priority. Central stations keep the two apart, and so does every view of the station:
a nurse must never read a flat battery as a wheeze, nor miss a wheeze among cable alarms.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlarmKind:
    kind: str
    category: str  # "clinical" or "technical"
    priority: int  # 1 high, 2 medium, 3 low
    title: str  # what a person reads


KINDS = {k.kind: k for k in (
    AlarmKind("wheeze", "clinical", 1, "wheeze (CAS)"),
    AlarmKind("crackle", "clinical", 1, "crackles (DAS)"),
    AlarmKind("offline", "technical", 2, "device offline"),
    AlarmKind("no_audio", "technical", 2, "no audio"),
    AlarmKind("poor_signal", "technical", 3, "poor signal"),
    AlarmKind("spool_backlog", "technical", 3, "messages waiting on the device"),
    AlarmKind("seq_gap", "technical", 3, "messages lost"),
)}
PRIORITY = {1: "high", 2: "medium", 3: "low"}


def of(kind: str) -> AlarmKind:
    return KINDS.get(kind) or AlarmKind(kind, "technical", 3, kind)
