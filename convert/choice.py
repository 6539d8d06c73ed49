"""The rule that picks a recipe's epochs and its decision thresholds from out-of-fold predictions.

One rule, two callers: the trainer applies it to every cross-validation fold's predictions to
choose what ships, and the validation protocol applies it nested, to the other folds'
predictions only, before scoring a fold with what it chose. So the protocol scores the choice
the way the shipped model makes it, and never on the events that judge it (choosing on the
same folds that score the choice is one of the ways 0.5.0's protocol flattered it).

The objective is the mean over ICBHI and SPRSound (those present) of the 4-class ICBHI score
and the binary SPRSound score: the alerts need the class, screening needs normal-or-not. A
recipe may count ICBHI alone (`objective` "icbhi"): with both, SPRSound's one stethoscope (62%
of the events, still improving when ICBHI's four had peaked) chose the epoch for all of them.
The epoch is the one with the best objective at its own best threshold (the earliest of
equals); the threshold the best point of a fixed grid, or none (the argmax) if that does as
well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from convert.datasets import LABELS
from convert.folds import ICBHI, SPRSOUND
from convert.metrics import icbhi_score, sprsound_score
from convert.recipe import Counted
from edge.pipeline.model import ADVENTITIOUS, decide

THRESHOLD_GRID = tuple(float(t) for t in np.round(np.arange(0.10, 0.91, 0.02), 2))


@dataclass(frozen=True, kw_only=True)
class Choice:
    epoch: int  # 1-based: train this many epochs
    thresholds: dict[str, float] = field(default_factory=dict)  # {} = the argmax
    value: float  # the objective at the choice, on the predictions it was chosen on
    at_argmax: float  # the objective at that epoch without a threshold
    events: int  # how many predictions it was chosen on

    def to_dict(self) -> dict[str, object]:
        return {"epoch": self.epoch, "thresholds": self.thresholds, "value": self.value,
                "at_argmax": self.at_argmax, "events": self.events}


COUNTED: dict[Counted, tuple[str, ...]] = {"both": (ICBHI, SPRSOUND), "icbhi": (ICBHI,)}


def objective(labels: np.ndarray, datasets: np.ndarray, probs: np.ndarray,
              thresholds: dict[str, float], counted: Counted = "both") -> float:
    total = []
    for dataset in COUNTED[counted]:
        inside = datasets == dataset
        if not inside.any():
            continue
        pred = decide(probs[inside], LABELS, thresholds)
        total += [icbhi_score(labels[inside], pred)["score"],
                  sprsound_score((labels[inside] != 0).astype(int),
                                 (pred != 0).astype(int))["score"]]
    return float(np.mean(total)) if total else 0.0


def best_threshold(labels: np.ndarray, datasets: np.ndarray, probs: np.ndarray,
                   counted: Counted = "both") -> tuple[dict[str, float], float, float]:
    """(thresholds, objective there, objective at the argmax) for one set of predictions."""
    at_argmax = objective(labels, datasets, probs, {}, counted)
    values = [objective(labels, datasets, probs, {ADVENTITIOUS: t}, counted)
              for t in THRESHOLD_GRID]
    best = int(np.argmax(values))
    if values[best] > at_argmax:
        return {ADVENTITIOUS: THRESHOLD_GRID[best]}, values[best], at_argmax
    return {}, at_argmax, at_argmax


def choose(labels: np.ndarray, datasets: np.ndarray, probs_by_epoch: np.ndarray,
           epochs: bool = True, threshold: bool = True, counted: Counted = "both"
           ) -> Choice:
    """The choice on these predictions: `probs_by_epoch` is (epochs, events, labels); with
    `epochs=False` only the last epoch is considered (a model already trained), with
    `threshold=False` the argmax decides (only the epoch is chosen); `counted` says which
    corpora's scores the objective counts."""
    if len(labels) == 0:
        raise ValueError("no predictions to choose on")
    candidates = range(len(probs_by_epoch)) if epochs else [len(probs_by_epoch) - 1]
    best: Choice | None = None
    for e in candidates:
        if threshold:
            thresholds, value, at_argmax = best_threshold(labels, datasets, probs_by_epoch[e],
                                                          counted)
        else:
            thresholds, value = {}, objective(labels, datasets, probs_by_epoch[e], {}, counted)
            at_argmax = value
        if best is None or value > best.value:
            best = Choice(epoch=e + 1, thresholds=thresholds, value=round(value, 4),
                          at_argmax=round(at_argmax, 4), events=len(labels))
    assert best is not None
    return best
