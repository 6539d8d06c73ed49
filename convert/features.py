"""Annotated events → model-rate audio → MFCC features → windows, with the device's own code.

Everything here calls `edge`: the resampler, the frontend and `cycle_windows`, so what the
trainer learns from is exactly what the device will compute (tests/test_convert.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from convert.datasets import LABELS, Recording
from edge.dsp.mfcc import FrontendParams, MfccFrontend
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
    fe = MfccFrontend(frontend)
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
