"""What `convert.train` records of a shipping run (report/training.json), typed: what was
trained, for how long, how its int8 members verified, and the protocol's gate and prediction
it was trained under. `convert.report` reads it back through the validating loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convert.protocol_report import Gate, Prediction, read


@dataclass(frozen=True, kw_only=True)
class TrainingReport:
    recipe: dict[str, Any]  # Recipe.to_dict()
    epochs: int  # what the protocol's rule chose, on every cv fold
    members: list[int]  # their seeds
    verify: dict[str, Any]  # convert.verify's checks: ops, size, latency, int8 ≈ float
    histories: dict[str, list[dict[str, float]]]  # by seed: loss (and numbers) per epoch
    choice: dict[str, Any]  # convert.choice.Choice.to_dict()
    record_threshold: dict[str, Any]  # the record rule's fraction and how it was chosen
    floor_gate: Gate
    protocol_prediction: Prediction


def load(path: Path) -> TrainingReport:
    return read(TrainingReport, path, "train the package again (python -m convert.train)")
