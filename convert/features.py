"""Annotated events → model-rate audio → features → windows, with the device's own code.

Everything here calls `edge`: the resampler, the frontend and `cycle_windows`, so what the
trainer learns from is exactly what the device will compute (tests/test_convert.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from convert.datasets import LABELS, Recording
from edge.dsp.frontend import Frontend, FrontendParams
from edge.dsp.resample import StreamingResampler
from edge.model import WindowSpec, cycle_windows
from edge.sources.audio_file import read_audio


def at_model_rate(path: str, rate: int) -> np.ndarray:
    x, sr = read_audio(path)
    rs = StreamingResampler(sr, rate)
    return np.concatenate([rs.process(x), rs.flush()])


def event_features(recordings: Iterable[Recording], frontend: FrontendParams
                   ) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Per annotated event: its (frames, features) matrix, label index and patient."""
    fe = Frontend(frontend)
    feats, labels, patients = [], [], []
    for rec in recordings:
        audio = at_model_rate(str(rec.audio), frontend.sample_rate)
        for ev in rec.events:
            a, b = (round(t * frontend.sample_rate) for t in (ev.start_s, ev.end_s))
            if b - a < frontend.n_fft:
                continue
            feats.append(fe(audio[a:b]))
            labels.append(LABELS.index(ev.label))
            patients.append(rec.patient)
    return feats, np.asarray(labels), patients


def normalisation(feats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    allf = np.concatenate(feats)
    return allf.mean(axis=0), np.maximum(allf.std(axis=0), 1e-3)


def windows_of(feats: list[np.ndarray], labels: np.ndarray, window: WindowSpec,
               mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training windows, their labels and the index of the event each came from."""
    xs, ys, owner = [], [], []
    for i, (f, y) in enumerate(zip(feats, labels, strict=True)):
        w = cycle_windows(f, window, mean, std)
        xs.append(w)
        ys += [y] * len(w)
        owner += [i] * len(w)
    return np.concatenate(xs), np.asarray(ys), np.asarray(owner)


def cached_event_features(name: str, recordings: list[Recording], frontend: FrontendParams,
                          cache_dir: Path | None) -> tuple[list[np.ndarray], np.ndarray,
                                                           list[str], list[int]]:
    """event_features for a dataset split, cached on disk keyed by the frontend parameters
    (features, labels, patients, index of each event's recording)."""
    import hashlib
    import json
    import pickle

    key = hashlib.sha256(json.dumps([name, frontend.to_dict(), [str(r.audio) for r in
                                                                 recordings]]).encode())
    path = cache_dir / f"{name.replace('/', '_')}-{key.hexdigest()[:12]}.pkl" if cache_dir \
        else None
    if path is not None and path.exists():
        with path.open("rb") as f:
            return pickle.load(f)
    feats, labels, patients, owners = [], [], [], []
    for i, rec in enumerate(recordings):
        f, y, p = event_features([rec], frontend)
        feats += f
        labels += list(y)
        patients += p
        owners += [i] * len(f)
    result = (feats, np.asarray(labels, dtype=int), patients, owners)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            pickle.dump(result, f)
    return result
