"""Speed of the frontend (MFCC, and the shipped model's features) against librosa on the same
audio, and of the streaming resampler.

Both compute the same features (tests/test_dsp.py checks they agree to 1e-4); this measures what
the device pays per breathing cycle. Ratios are taken in one run, so a noisy machine affects both
sides alike. Needs librosa (the `test` extra); it is never a runtime dependency.

    python bench/frontend_speed.py
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.dsp.frontend import Frontend, FrontendParams
from edge.dsp.resample import StreamingResampler
from edge.pipeline.model import load_manifest
from edge.sources.audio_file import read_audio

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "models" / "samples"
SHIPPED = ROOT / "models" / "lungedge-cnnlstm"


def best_of(fn, repeat: int = 5, number: int = 20) -> float:
    """Seconds per call, best of `repeat` runs of `number` calls (least disturbed by noise)."""
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t) / number)
    return min(runs)


def librosa_features(y: np.ndarray, p: FrontendParams) -> np.ndarray:
    """What Frontend(p) computes, the librosa way (features × frames)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=p.sample_rate, n_fft=p.n_fft,
                                         hop_length=p.hop_length, window=p.window, center=False,
                                         power=2.0, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax)
    f = np.log(np.maximum(mel, p.log_floor))
    if p.features == "mfcc":
        f = librosa.feature.mfcc(S=f, n_mfcc=p.n_mfcc)
    parts = [f]
    for _ in range(p.deltas):
        parts.append(librosa.feature.delta(parts[-1], width=p.delta_width, mode="nearest"))
    return np.concatenate(parts)


def main() -> int:
    x8k, rate = read_audio(sorted(SAMPLE.glob("*.wav"))[0])
    p = FrontendParams()
    rs = StreamingResampler(rate, p.sample_rate)
    audio = np.concatenate([rs.process(x8k), rs.flush()]).astype(np.float32)

    rows = []
    shipped = load_manifest(SHIPPED).frontend
    for name, params, seconds in [
            (f"shipped ({shipped.features}) one cycle", shipped, 1.5),
            (f"shipped ({shipped.features}) long cycle", shipped, 4.0),
            (f"shipped ({shipped.features}) whole sample", shipped, 15.36),
            ("MFCC one cycle", p, 1.5), ("MFCC+Δ+ΔΔ one cycle", replace(p, deltas=2), 1.5)]:
        y = audio[:int(seconds * p.sample_rate)]
        ours = Frontend(params)
        t_ours = best_of(lambda y=y, ours=ours: ours(y))
        t_lib = best_of(lambda y=y, params=params: librosa_features(y, params), number=5)
        rows.append((f"{name} ({seconds:g} s)", t_ours, t_lib, seconds))

    print(f"shipped frontend: {shipped}\nMFCC rows: {p}\n")
    print(f"{'what':<44} {'lungedge ms':>12} {'librosa ms':>11} {'speed-up':>9} "
          f"{'x-real-time':>12}")
    for name, a, b, seconds in rows:
        print(f"{name:<44} {a * 1e3:>12.3f} {b * 1e3:>11.3f} {b / a:>8.1f}× "
              f"{seconds / a:>11,.0f}×")

    print(f"\n{'streaming resampler':<44} {'ms / 100 ms block':>18} {'x-real-time':>12}")
    rng = np.random.default_rng(0)
    for rate_in in (48000, 44100, 16000, 8000):
        block = rng.standard_normal(rate_in // 10).astype(np.float32)
        r = StreamingResampler(rate_in, p.sample_rate)
        t = best_of(lambda r=r, block=block: r.process(block), number=50)
        print(f"{f'{rate_in} → {p.sample_rate} Hz':<44} {t * 1e3:>18.3f} {0.1 / t:>11,.0f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
