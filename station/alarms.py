"""What each kind of alarm is: clinical (the patient's breath) or technical (the equipment), and
its priority. Central stations keep the two apart, and so does every view of the station:
a nurse must never read a flat battery as a wheeze, nor miss a wheeze among cable alarms.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.vocabulary import AlertKind, Category, Priority, StationKind


@dataclass(frozen=True)
class AlarmKind:
    kind: AlertKind | StationKind
    category: Category
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
              "The device hears sound it cannot judge: noise, rubbing, clipping, a "
              "stethoscope off the chest, or one that passes too little of the sound to hear "
              "crackles (bell mode, a worn membrane). Its reason says which."),
    AlarmKind("spool_backlog", "technical", 3, "messages waiting on the device",
              "The device cannot deliver its results as fast as it makes them: the network "
              "or the broker is slow or down."),
    AlarmKind("seq_gap", "technical", 3, "messages lost",
              "Some of the device's numbered messages never arrived: see Technician."),
)}
# An acknowledged alert stays acknowledged while it lasts, until it escalates: its evidence (the
# share of recent cycles showing it) rises this far above where it was when it last escalated
# (opening counts), e.g. 3 of 8 cycles → 5 of 8 → 7 of 8. A new kind on the bed is a new alert,
# and one that was resolved or ended and is heard again needs someone again too. Anything else
# (a cycle more or less) is more of the same condition: no tone, no "changed since seen".
ESCALATION_STEP = 0.25


def escalates(fraction: float | None, escalated_fraction: float | None) -> bool:
    """Whether new evidence escalates an alert that last escalated at `escalated_fraction`."""
    return fraction is not None and escalated_fraction is not None \
        and fraction >= escalated_fraction + ESCALATION_STEP - 1e-9


PRIORITY: dict[int, Priority] = {1: "high", 2: "medium", 3: "low"}


def of(kind: AlertKind | StationKind) -> AlarmKind:
    return KINDS[kind]
