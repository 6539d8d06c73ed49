"""`lungedge station export-labels DIR`: what clinicians said of the audio behind alerts, as a
dataset the toolchain reads, one folder per stethoscope (or site).

Each judged clip (its latest verdict) becomes one recording in ICBHI's format: NAME.flac, the
cycle the device heard, beside NAME.txt, one line `0.000 END crackle wheeze` with the
clinician's label. NAME is `SESSION_CLIP_Xx_sc_STETHOSCOPE`, so `convert.evaluate` scores a
model on the folder, patients grouped by session, and `convert.crossval --sites FOLDER` adds
it to the protocol: a site's own recordings become its validation data (and the calibration
of a new stethoscope's adaptation data). Clips judged "not a breath" are listed in
labels.json but left out of the dataset. Each clip goes under the stethoscope that recorded
it (as its device was named when the clip arrived), not the device's stethoscope today.

The folder is a function of the verdicts: an export is written whole beside the folder, then
takes its place, so re-exporting into the same folder gives exactly today's verdicts (an old
label, or a clip under a stethoscope it no longer belongs to, would otherwise stay on disk and
be scored). A folder that holds anything but an earlier export is refused, untouched.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from station.store.read_models import JudgedClip

FLAGS = {"normal": (0, 0), "crackle": (1, 0), "wheeze": (0, 1), "both": (1, 1)}


def slug(text: str | None) -> str:
    """A name safe as one field of an ICBHI file name (no underscores, no slashes)."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", text or "").strip("-")
    return cleaned[:60] or "unnamed-stethoscope"


class ExportError(ValueError):
    """A folder export-labels must not write into."""


def replaceable(out: Path) -> None:
    """Refuses a folder that is neither empty nor an earlier export (its labels.json, and
    only stethoscope folders of FLAC and TXT files beside it)."""
    if not out.exists() or not any(out.iterdir()):
        return
    ours = (out / "labels.json").is_file() and all(
        p.name == "labels.json" or (p.is_dir() and all(
            f.is_file() and f.suffix in (".flac", ".txt") for f in p.iterdir()))
        for p in out.iterdir())
    if not ours:
        raise ExportError(f"{out} holds files that are not an earlier export-labels output: "
                          "give an empty (or new) folder, or one this command wrote")


def export(clips: Iterable[JudgedClip], out: Path) -> dict[str, int]:
    """Writes the judged clips as `out`, replacing an earlier export there; returns how many
    recordings per folder."""
    replaceable(out)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    counts = write(clips, staging)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return counts


def write(clips: Iterable[JudgedClip], out: Path) -> dict[str, int]:
    import soundfile

    counts: dict[str, int] = {}
    index: list[dict[str, Any]] = []
    for clip in clips:
        verdict = clip.verdict
        folder = slug(clip.stethoscope)
        entry = {"clip_id": clip.clip_id, "device_id": clip.device_id,
                 "stethoscope": clip.stethoscope, "device_said": clip.label,
                 "clinician_said": verdict.verdict, "by": verdict.by,
                 "at": verdict.at, "folder": folder}
        index.append(entry)
        if verdict.verdict not in FLAGS:
            continue
        samples, rate = soundfile.read(io.BytesIO(clip.audio), dtype="int16")
        session = slug(clip.session_id or clip.device_id)
        name = f"{session}_{slug(clip.clip_id)}_Xx_sc_{folder}"
        target = out / folder
        target.mkdir(parents=True, exist_ok=True)
        crackle, wheeze = FLAGS[verdict.verdict]
        soundfile.write(target / f"{name}.flac", samples, rate)
        (target / f"{name}.txt").write_text(
            f"0.000\t{len(samples) / rate:.3f}\t{crackle}\t{wheeze}\n")
        counts[folder] = counts.get(folder, 0) + 1
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels.json").write_text(json.dumps(index, indent=1) + "\n")
    return counts
