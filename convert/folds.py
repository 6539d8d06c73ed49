"""The validation protocol's folds: which events train and which validate, by patient (cv) and by
stethoscope (loso), over the two training corpora; and where a run keeps each member's
predictions. The protocol's runner (`convert.crossval`), its scorer (`convert.protocol`) and
the trainer all take their folds from here, so they agree on every event.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.channels import Channel
from convert.datasets import Recording, iter_annotated
from convert.features import Events, cached_events
from convert.recipe import Recipe

ICBHI, SPRSOUND = "icbhi/train", "sprsound/train"
HELD_OUT_STETHOSCOPES = ("AKGC417L", "LittC2SE", "Meditron")
# The quiet-stethoscope check: held-out stethoscopes this much quieter. The withheld recordings
# that were all called normal sat about 2 units of normalised level (~35 dB) below ICBHI's
# AKG C417L, at SPRSound's level.
QUIET_DB = -30.0


@dataclass(frozen=True)
class Fold:
    name: str  # "cv1" … "cvK", "loso-AKGC417L" …
    kind: str  # "cv" or "loso"
    train: np.ndarray  # event indices
    val: np.ndarray


def recipe_recordings(data: Path, recipe: Recipe, limit: int | None = None
                      ) -> list[tuple[str, list[Recording], bool]]:
    """The recipe's corpora, then its sites (folders `lungedge station export-labels` wrote,
    each a dataset "site/NAME" of its own): (dataset, its recordings, whether its labels may
    change), in the order the events are joined."""
    parts = [(split, list(iter_annotated(data / split))[:limit], False)
             for split in (ICBHI, SPRSOUND) if split.split("/")[0] in recipe.datasets]
    return parts + [(site_name(site), list(iter_annotated(Path(site)))[:limit], True)
                    for site in recipe.sites]


def load_corpus(data: Path, recipe: Recipe, cache: Path | None,
                limit: int | None = None, channel: Channel | None = None) -> Events:
    """The recipe's recordings' events; heard through `channel` if given (the same events in
    the same order)."""
    return Events.join([cached_events(name, recordings, recipe.frontend, cache,
                                      labels_change=labels_change, channel=channel)
                        for name, recordings, labels_change in recipe_recordings(data, recipe,
                                                                                 limit)])


def site_name(folder: str) -> str:
    return f"site/{Path(folder).name}"


def folds(events: Events, k: int = 5, seed: int = 0) -> list[Fold]:
    """The cv folds, then the loso folds."""
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    sites = sorted(set(events.datasets) - {ICBHI, SPRSOUND})  # dealt after the two corpora,
    for dataset in (ICBHI, SPRSOUND, *sites):                   # whose folds they leave alone
        inside = events.datasets == dataset
        # deal each stethoscope's patients round the folds, continuing where the last left off
        dealt = 0
        for device in sorted(set(events.devices[inside])):
            patients = sorted(set(events.patients[inside & (events.devices == device)])
                              - set(fold_of))
            for p in rng.permutation(patients):
                fold_of[str(p)] = dealt % k
                dealt += 1
    which = np.array([fold_of[p] for p in events.patients])
    out = [Fold(f"cv{i + 1}", "cv", np.flatnonzero(which != i), np.flatnonzero(which == i))
           for i in range(k) if (which == i).any()]
    for device in HELD_OUT_STETHOSCOPES:
        held = events.devices == device
        if not held.any():
            continue
        recorded = sorted(set(events.patients[held]))
        out.append(Fold(f"loso-{device}", "loso",
                        np.flatnonzero(~np.isin(events.patients, recorded)),
                        np.flatnonzero(held)))
    return out


def member_path(out: Path, fold: str, seed: int, what: str = "") -> Path:
    """A member's saved predictions (or weights, or int8 predictions) in a protocol run."""
    return out / f"{fold}-s{seed}{'-' + what if what else ''}.npz"

