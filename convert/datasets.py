"""Annotated recordings of the two datasets (ICBHI 2017 and SPRSound) as one event type.

Shared by the segmentation bench and the training toolchain. Paths are always arguments: the data
lives outside the repository (`../shared/data` on CI, anywhere on a workstation).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LABELS = ("normal", "crackle", "wheeze", "both")

SPRSOUND_CLASSES = {
    "Normal": "normal",
    "Fine Crackle": "crackle",
    "Coarse Crackle": "crackle",
    "Wheeze": "wheeze",
    "Rhonchi": "wheeze",
    "Stridor": "wheeze",
    "Wheeze+Crackle": "both",
}


class DatasetError(ValueError):
    """An annotation file that does not follow its dataset's format."""


@dataclass(frozen=True)
class Event:
    start_s: float
    end_s: float
    label: str  # one of LABELS


@dataclass(frozen=True)
class Recording:
    audio: Path
    patient: str
    events: tuple[Event, ...]
    record_label: str  # SPRSound record annotation, or "" for ICBHI


def read_sprsound_json(path: Path) -> tuple[str, tuple[Event, ...]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        events = []
        for i, e in enumerate(data["event_annotation"]):
            if e["type"] not in SPRSOUND_CLASSES:
                raise DatasetError(f"{path}: event {i} has unknown type {e['type']!r}; known: "
                                   f"{sorted(SPRSOUND_CLASSES)}")
            events.append(Event(int(e["start"]) / 1000, int(e["end"]) / 1000,
                                SPRSOUND_CLASSES[e["type"]]))
        return str(data["record_annotation"]), tuple(sorted(events, key=lambda e: e.start_s))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: not a SPRSound annotation ({exc!r})") from None


def iter_sprsound(folder: str | Path) -> Iterator[Recording]:
    """Recordings of a SPRSound folder (NAME.flac or NAME.wav beside NAME.json), sorted."""
    folder = Path(folder)
    jsons = sorted(folder.glob("*.json"))
    if not jsons:
        raise DatasetError(f"{folder}: no SPRSound *.json annotations here")
    for j in jsons:
        audio = next((j.with_suffix(s) for s in (".flac", ".wav") if j.with_suffix(s).exists()),
                     None)
        if audio is None:
            raise DatasetError(f"{j}: no NAME.flac or NAME.wav beside it")
        record, events = read_sprsound_json(j)
        yield Recording(audio, j.stem.split("_")[0], events, record)
