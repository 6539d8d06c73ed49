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


# SPRSound was recorded with one stethoscope (its README); ICBHI names it in each file name.
SPRSOUND_DEVICE = "Yunting II"


@dataclass(kw_only=True, frozen=True)
class Recording:
    audio: Path
    patient: str
    events: tuple[Event, ...]
    record_label: str  # SPRSound record annotation, or "" for ICBHI
    device: str = ""  # the stethoscope, where the dataset says


ICBHI_CLASSES = {(0, 0): "normal", (1, 0): "crackle", (0, 1): "wheeze", (1, 1): "both"}


def read_icbhi_txt(path: Path) -> tuple[Event, ...]:
    """ICBHI cycles: one `start end crackle wheeze` line each (tab-separated, seconds)."""
    events = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            start, end = float(parts[0]), float(parts[1])
            flags = (int(parts[2]), int(parts[3]))
            label = ICBHI_CLASSES[flags]
        except (IndexError, ValueError, KeyError):
            raise DatasetError(f"{path}:{n}: expected 'start end crackle wheeze' with 0/1 "
                               f"flags, got {line!r}") from None
        if end <= start:
            raise DatasetError(f"{path}:{n}: cycle ends ({end}) before it starts ({start})")
        events.append(Event(start, end, label))
    return tuple(sorted(events, key=lambda e: e.start_s))


def _annotation_files(folder: Path, suffix: str, dataset: str) -> list[Path]:
    files = sorted(folder.glob(f"*{suffix}"))
    if not files:
        raise DatasetError(f"{folder}: no {dataset} *{suffix} annotations here")
    return files


def iter_icbhi(folder: str | Path) -> Iterator[Recording]:
    """Recordings of an ICBHI-format folder (NAME.flac or NAME.wav beside NAME.txt), sorted.
    The patient is the first field of NAME, the stethoscope the fifth (when there is one)."""
    for t in _annotation_files(Path(folder), ".txt", "ICBHI"):
        fields = t.stem.split("_")
        yield Recording(audio=_audio_beside(t), patient=fields[0], events=read_icbhi_txt(t),
                        record_label="", device=fields[4] if len(fields) > 4 else "")


def iter_annotated(folder: str | Path) -> Iterator[Recording]:
    """Either format, told apart by its annotation files (SPRSound .json, ICBHI .txt)."""
    folder = Path(folder)
    if any(folder.glob("*.json")):
        return iter_sprsound(folder)
    if any(folder.glob("*.txt")):
        return iter_icbhi(folder)
    raise DatasetError(f"{folder}: neither SPRSound (*.json) nor ICBHI (*.txt) annotations "
                       "here")


def _audio_beside(annotation: Path) -> Path:
    for suffix in (".flac", ".wav"):
        if annotation.with_suffix(suffix).exists():
            return annotation.with_suffix(suffix)
    raise DatasetError(f"{annotation}: no NAME.flac or NAME.wav beside it")


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
    """Recordings of a SPRSound folder (NAME.flac or NAME.wav beside NAME.json), sorted.
    The patient is the first field of NAME."""
    for j in _annotation_files(Path(folder), ".json", "SPRSound"):
        record, events = read_sprsound_json(j)
        yield Recording(audio=_audio_beside(j), patient=j.stem.split("_")[0], events=events,
                        record_label=record, device=SPRSOUND_DEVICE)
