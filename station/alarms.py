"""What each kind of alarm is: clinical (the patient's breath) or technical (the equipment), and
its priority. Central stations keep the two apart, and so does every view of the station:
a nurse must never read a flat battery as a wheeze, nor miss a wheeze among cable alarms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class AlarmKind:
    kind: str
    category: str  # "clinical" or "technical"
    priority: int  # 1 high, 2 medium, 3 low
    title: str  # what a person reads
    explain: str = ""  # what it means, on the alert's page


KINDS = {k.kind: k for k in (
    AlarmKind("wheeze", "clinical", 1, "wheeze (CAS)",
              "CAS: a continuous adventitious sound. A wheeze is a whistling, musical sound "
              "lasting a quarter of a second or more, often on breathing out (narrowed "
              "airways)."),
    AlarmKind("crackle", "clinical", 1, "crackles (DAS)",
              "DAS: a discontinuous adventitious sound. Crackles are brief popping clicks, "
              "often on breathing in (fluid or secretions, airways opening)."),
    AlarmKind("offline", "technical", 2, "device offline",
              "The station has heard nothing from the device (or the broker said it went "
              "away): check its power, network and the stethoscope."),
    AlarmKind("no_audio", "technical", 2, "no audio",
              "The device hears silence: the stethoscope is unplugged, muted or off the "
              "chest."),
    AlarmKind("poor_signal", "technical", 3, "poor signal",
              "The device hears sound but no breathing it can trust: noise, rubbing, or the "
              "stethoscope off the chest."),
    AlarmKind("spool_backlog", "technical", 3, "messages waiting on the device",
              "The device cannot deliver its results as fast as it makes them: the network "
              "or the broker is slow or down."),
    AlarmKind("seq_gap", "technical", 3, "messages lost",
              "Some of the device's numbered messages never arrived: see Technician."),
)}
Priority = Literal["high", "medium", "low"]
PRIORITY: dict[int, Priority] = {1: "high", 2: "medium", 3: "low"}


def of(kind: str) -> AlarmKind:
    return KINDS.get(kind) or AlarmKind(kind, "technical", 3, kind)
