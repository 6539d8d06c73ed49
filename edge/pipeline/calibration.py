"""A stethoscope's calibration: the statistics of its features, learnt from its own unlabelled
audio, that a model trained with `normalise: stethoscope` standardises its input with.

Why: a stethoscope's gain and frequency response move every band of the log mel features, and a
network that sees absolute levels learns which stethoscope (and so which dataset) it hears
instead of the sound (issue 24: recordings at SPRSound's level were all called normal). A
model trained on features standardised per stethoscope never sees that; on a stethoscope it has
never met, a few minutes of chest audio recorded with it give the same standardisation
(`lungedge calibrate`), without a single label. The trainer computes its stethoscopes'
statistics with `feature_statistics` too, so the device and the training use one definition.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.dsp.frontend import FrontendParams
from edge.loader import ValidationError, build, complete

CALIBRATION_SCHEMA_VERSION = 1
MIN_CYCLES = 20  # fewer breathing cycles than this make a noisy estimate: record longer


class CalibrationError(ValueError):
    """A calibration that cannot be made or used; the message says which file and why."""


def feature_statistics(feats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every feature's mean and standard deviation over all frames of these cycles (the
    standard deviation at least 1e-3, so a silent band cannot blow up)."""
    frames = np.concatenate(feats)
    return frames.mean(axis=0), np.maximum(frames.std(axis=0), 1e-3)


@dataclass(frozen=True, kw_only=True)
class Calibration:
    stethoscope: str  # what the operator calls it, e.g. "Littmann 3200, ward 4"
    frontend: FrontendParams = field(metadata=complete(
        "the features it was computed on: the model's, every parameter pinned"))
    feature_mean: tuple[float, ...]
    feature_std: tuple[float, ...]
    cycles: int
    audio_s: float
    made_with: str  # the model package it was made with ("name version")
    created: str  # UTC, ISO 8601
    schema_version: int = CALIBRATION_SCHEMA_VERSION
    kind: str = field(default="lungedge-calibration")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["feature_mean"], d["feature_std"] = list(self.feature_mean), list(self.feature_std)
        return d


def calibrate(feats: list[np.ndarray], frontend: FrontendParams, stethoscope: str,
              audio_s: float, made_with: str) -> Calibration:
    """The calibration from the features of a stethoscope's breathing cycles."""
    if len(feats) < MIN_CYCLES:
        raise CalibrationError(f"{len(feats)} breathing cycle(s) in {audio_s:.0f} s of audio; a "
                               f"calibration needs at least {MIN_CYCLES}: record longer (a few "
                               "minutes, from several patients if you can)")
    mean, std = feature_statistics(feats)
    return Calibration(stethoscope=stethoscope, frontend=frontend,
                       feature_mean=tuple(float(v) for v in mean),
                       feature_std=tuple(float(v) for v in std), cycles=len(feats),
                       audio_s=round(audio_s, 1), made_with=made_with,
                       created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def save(calibration: Calibration, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(calibration.to_dict(), indent=1) + "\n")
    partial.replace(path)


def load(path: Path, frontend: FrontendParams) -> Calibration:
    """A calibration file for a model with this frontend: every problem names the file and
    the key, and says what to do."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"{path}: not found: make it with `lungedge calibrate` (see "
                               "README, 'A new stethoscope')") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != "lungedge-calibration":
        raise CalibrationError(f"{path}: not a lungedge calibration (no \"kind\": "
                               "\"lungedge-calibration\")")
    if data.get("schema_version") != CALIBRATION_SCHEMA_VERSION:
        raise CalibrationError(f"{path}: schema_version {data.get('schema_version')!r}; this "
                               f"lungedge reads {CALIBRATION_SCHEMA_VERSION}: calibrate again")
    try:
        cal = build(Calibration, data, source=str(path))
    except (ValidationError, ValueError) as exc:
        raise CalibrationError(str(exc)) from None
    if cal.frontend != frontend:
        differ = sorted(k for k, v in frontend.to_dict().items()
                        if cal.frontend.to_dict().get(k) != v)
        raise CalibrationError(f"{path}: made for other features (frontend {', '.join(differ)} "
                               "differ from this model's): calibrate again with this model")
    n = frontend.n_features
    if len(cal.feature_mean) != n or len(cal.feature_std) != n:
        raise CalibrationError(f"{path}: feature_mean/feature_std need {n} values each")
    if not all(np.isfinite(cal.feature_mean)) or not all(s > 0 for s in cal.feature_std):
        raise CalibrationError(f"{path}: feature_mean must be finite and feature_std > 0")
    return cal
