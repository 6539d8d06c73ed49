"""Annotated events → model-rate audio → features → windows, with the device's own code.

Everything here calls `edge`: the resampler, the frontend, the band normaliser and
`cycle_windows`, so what the trainer learns from is exactly what the device will compute
(tests/test_convert.py checks it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from convert.channels import Channel
from convert.datasets import LABELS, Recording
from edge.dsp import resample
from edge.dsp.frontend import BandNormaliser, Frontend, FrontendParams
from edge.dsp.resample import StreamingResampler
from edge.pipeline.calibration import feature_statistics
from edge.pipeline.model import WindowSpec, cycle_windows
from edge.sources.audio_file import read_audio


def at_model_rate(path: str, rate: int) -> np.ndarray:
    x, sr = read_audio(path)
    rs = StreamingResampler(sr, rate)
    return np.concatenate([rs.process(x), rs.flush()])


@dataclass(frozen=True)
class Events:
    """Annotated events of one or more folders, one row each, in recording order and, within a
    recording, in time order (the order a band normaliser must see them in)."""

    feats: list[np.ndarray]  # (frames, features): the frontend's output, before band_norm
    labels: np.ndarray  # index into LABELS
    patients: np.ndarray  # "icbhi:101", "sprsound:65121853": unique across datasets
    devices: np.ndarray  # the stethoscope
    datasets: np.ndarray  # the folder each came from, e.g. "icbhi/train"
    recordings: np.ndarray  # index of the recording in its folder's (sorted) recordings

    def __len__(self) -> int:
        return len(self.feats)

    def take(self, index: np.ndarray | list[int]) -> Events:
        index = np.asarray(index, dtype=int)
        return Events([self.feats[i] for i in index], self.labels[index], self.patients[index],
                      self.devices[index], self.datasets[index], self.recordings[index])

    @staticmethod
    def join(parts: list[Events]) -> Events:
        return Events([f for p in parts for f in p.feats],
                      *(np.concatenate([getattr(p, f.name) for p in parts])
                        for f in fields(Events)[1:]))


def event_features(recordings: Iterable[Recording], frontend: FrontendParams
                   ) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Per annotated event: the features the model sees (band-normalised over the events of its
    recording, in order, as the device normalises a stream's cycles), label and patient."""
    events = recording_events("", list(recordings), frontend)
    return band_normalised(events, frontend)[0], events.labels, list(events.patients)


def band_normalised(events: Events, frontend: FrontendParams
                    ) -> tuple[list[np.ndarray], np.ndarray]:
    """Each event's features after the frontend's band normalisation, and the level that was
    subtracted from its static features: a BandNormaliser per recording, fed its events in
    order, as the device feeds one its cycles."""
    norm = BandNormaliser(frontend)
    out, levels = [], np.zeros((len(events), frontend.n_static), dtype=np.float32)
    previous = None
    for i, (f, *rec) in enumerate(zip(events.feats, events.datasets, events.recordings,
                                      strict=True)):
        if rec != previous:
            norm.reset()
            previous = rec
        g = norm(f)
        out.append(g)
        levels[i] = (f[:1, :frontend.n_static] - g[:1, :frontend.n_static])[0]
    return out, levels


def recording_events(name: str, recordings: list[Recording], frontend: FrontendParams,
                     channel: Channel | None = None) -> Events:
    """Every annotated event's features, each recording heard through `channel` if given (the
    protocol's stress test: the same events, another stethoscope)."""
    fe = Frontend(frontend)
    feats, labels, patients, devices, owners = [], [], [], [], []
    for i, rec in enumerate(recordings):
        audio = at_model_rate(str(rec.audio), frontend.sample_rate)
        if channel is not None:
            audio = channel.apply(audio, frontend.sample_rate)
        for ev in rec.events:
            a, b = (round(t * frontend.sample_rate) for t in (ev.start_s, ev.end_s))
            if b - a < frontend.n_fft:
                continue
            feats.append(fe(audio[a:b]))
            labels.append(LABELS.index(ev.label))
            patients.append(f"{name.split('/')[0]}:{rec.patient}" if name else rec.patient)
            devices.append(rec.device)
            owners.append(i)
    return Events(feats, np.asarray(labels, dtype=int), np.asarray(patients, dtype=str),
                  np.asarray(devices, dtype=str), np.full(len(feats), name, dtype=object)
                  .astype(str), np.asarray(owners, dtype=int))


def cached_events(name: str, recordings: list[Recording], frontend: FrontendParams,
                  cache_dir: Path | None, *, labels_change: bool = False,
                  channel: Channel | None = None) -> Events:
    """recording_events for a dataset folder, cached on disk keyed by everything that decides
    the features: the frontend parameters (band normalisation comes after), the resampler,
    the recordings and the channel they are heard through; with `labels_change` (a site's
    folder, whose clinicians may change a verdict), their labels too."""
    params = {k: v for k, v in frontend.to_dict().items() if not k.startswith("band_norm")}
    what: list[Any] = [name, params, f"soxr-{resample.soxr.__version__}-{resample.QUALITY}",
            [(Path(r.audio).name, Path(r.audio).stat().st_size) for r in recordings]]
    if channel is not None:
        what.append(dataclasses.asdict(channel))
    if labels_change:
        what.append([[r.record_label, *((e.start_s, e.end_s, e.label) for e in r.events)]
                     for r in recordings])
    key = hashlib.sha256(json.dumps(what).encode())
    path = cache_dir / f"{name.replace('/', '_')}-{key.hexdigest()[:12]}.pkl" if cache_dir \
        else None
    if path is not None and path.exists():
        with path.open("rb") as f:
            return pickle.load(f)
    events = recording_events(name, recordings, frontend, channel)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")  # two runs may share a cache
        with partial.open("wb") as f:
            pickle.dump(events, f)
        partial.replace(path)
    return events


# the statistics the trainer normalises with are the ones a device calibrates with
normalisation = feature_statistics


def windows_of(feats: list[np.ndarray], labels: np.ndarray, window: WindowSpec,
               mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model windows, their labels and the index of the event each came from."""
    xs, ys, owner = [], [], []
    for i, (f, y) in enumerate(zip(feats, labels, strict=True)):
        w = cycle_windows(f, window, mean, std)
        xs.append(w)
        ys += [y] * len(w)
        owner += [i] * len(w)
    return np.concatenate(xs), np.asarray(ys), np.asarray(owner)
