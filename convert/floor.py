"""The floor every recipe must beat: gradient boosting on a cycle's band statistics.

Per annotated cycle, the mean, standard deviation, 90th percentile and mean absolute
frame-to-frame difference of each log mel band of the recipe's frontend (4 × 40 numbers), then
scikit-learn's `HistGradientBoostingClassifier` (300 iterations, learning rate 0.05, classes
weighted), trained on the fold's ICBHI cycles only. Two variants: the features as they are
("raw"), and normalised per recording (each band's mean and standard deviation over the
recording's annotated cycles, "per_recording").

Why it is here: a small model on summary statistics cannot memorise much of a recording
campaign, and its cross-validation predicted its withheld ICBHI test score within 0.04, where
the network's protocol over-predicted the network by 0.15 (issue 24). A recipe whose protocol
numbers do not clear this floor on every stethoscope has not shown that it hears the sound
rather than the campaign, so the protocol runs the floor on the same folds, beside every
recipe, and the trainer refuses to package a recipe that does not beat it (`convert.gate`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from convert.channels import CHANNELS, Channel
from convert.datasets import LABELS
from convert.features import Events
from convert.folds import ICBHI, Fold

Variant = Literal["raw", "per_recording"]
VARIANTS: tuple[Variant, ...] = ("raw", "per_recording")


def cycle_statistics(feats: np.ndarray) -> np.ndarray:
    """(frames, bands) → 4 × bands: mean, sd, 90th percentile, mean |frame-to-frame change|."""
    change = np.abs(np.diff(feats, axis=0)).mean(axis=0) if len(feats) > 1 \
        else np.zeros(feats.shape[1], dtype=feats.dtype)
    return np.concatenate([feats.mean(axis=0), feats.std(axis=0),
                           np.percentile(feats, 90, axis=0), change])


def per_recording(events: Events) -> list[np.ndarray]:
    """Each cycle's features standardised by its recording's (all its annotated cycles)."""
    out: list[np.ndarray] = [np.empty(0)] * len(events)
    groups: dict[tuple[str, int], list[int]] = {}
    for i, key in enumerate(zip(events.datasets, events.recordings, strict=True)):
        groups.setdefault((str(key[0]), int(key[1])), []).append(i)
    for index in groups.values():
        every = np.concatenate([events.feats[i] for i in index])
        mean, sd = every.mean(axis=0), np.maximum(every.std(axis=0), 1e-3)
        for i in index:
            out[i] = (events.feats[i] - mean) / sd
    return out


def statistics(events: Events, variant: Variant) -> np.ndarray:
    feats = events.feats if variant == "raw" else per_recording(events)
    return np.stack([cycle_statistics(f) for f in feats]).astype(np.float32)


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_val: list[np.ndarray],
                seed: int = 0) -> list[np.ndarray]:
    """The floor's class probabilities for each of x_val (every label, even one absent in
    training)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05,
                                           class_weight="balanced", random_state=seed)
    model.fit(x_train, y_train)
    out = []
    for x in x_val:
        probs = np.zeros((len(x), len(LABELS)))
        probs[:, model.classes_] = model.predict_proba(x)
        out.append(probs)
    return out


def run(events: Events, fold_list: list[Fold], variant: Variant, out: Path,
        log: Callable[[str], None], heard: Callable[[Channel], Events] | None = None
        ) -> dict[str, np.ndarray]:
    """The floor's probabilities for each fold's validation events (OUT/floor-VARIANT.npz,
    read back on a rerun), and with `heard` (the corpus through a change of channel) for the
    same events through every channel of the stress test ("FOLD@channel-NAME"). Trained on
    the fold's ICBHI training events; the SPRSound events of a cv fold are predicted too, but
    the floor is an ICBHI baseline and the report shows only its ICBHI numbers."""
    path = out / f"floor-{variant}.npz"
    keys = [f.name for f in fold_list] + ([f"{f.name}@channel-{c.name}" for f in fold_list
                                            for c in CHANNELS] if heard else [])
    if path.exists():
        saved = dict(np.load(path))
        if all(k in saved and len(saved[k]) == len(fold_by_key(fold_list, k).val)
               for k in keys):
            return {k: saved[k] for k in keys}
    x = statistics(events, variant)
    through = {f"channel-{c.name}": statistics(heard(c), variant) for c in CHANNELS} \
        if heard else {}
    icbhi = events.datasets == ICBHI
    result: dict[str, np.ndarray] = {}
    for f in fold_list:
        train = f.train[icbhi[f.train]]
        names = [f.name] + [f"{f.name}@{what}" for what in through]
        probs = fit_predict(x[train], events.labels[train],
                            [x[f.val]] + [xc[f.val] for xc in through.values()])
        result.update(zip(names, probs, strict=True))
        log(f"floor {variant} {f.name}: trained on {len(train)} ICBHI cycles")
    arrays: dict[str, Any] = result
    np.savez_compressed(path, **arrays)
    return result


def fold_by_key(fold_list: list[Fold], key: str) -> Fold:
    """The fold a saved key belongs to ("cv1", or "cv1@channel-lowpass-1000")."""
    return next(f for f in fold_list if f.name == key.split("@")[0])
