"""Speed of the MFCC frontend against librosa on the same audio (and of the streaming resampler).

Both compute the same features (tests/test_dsp.py checks they agree to 1e-4); this measures what
the device pays per breathing cycle. Ratios are taken in one run, so a noisy machine affects both
sides alike. Needs librosa (the `test` extra); it is never a runtime dependency.

    python bench/mfcc_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.dsp.mfcc import FrontendParams, MfccFrontend
from edge.dsp.resample import StreamingResampler
from edge.sources.audio_file import read_audio

SAMPLE = Path(__file__).resolve().parents[1] / "models" / "samples"


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


def main() -> int:
    import librosa

    x8k, rate = read_audio(sorted(SAMPLE.glob("*.wav"))[0])
    p = FrontendParams()
    rs = StreamingResampler(rate, p.sample_rate)
    audio = np.concatenate([rs.process(x8k), rs.flush()]).astype(np.float32)
    ours = MfccFrontend(p)

    def theirs(y: np.ndarray) -> np.ndarray:
        return librosa.feature.mfcc(y=y, sr=p.sample_rate, n_mfcc=p.n_mfcc, n_fft=p.n_fft,
                                    hop_length=p.hop_length, n_mels=p.n_mels, fmin=p.fmin,
                                    fmax=p.fmax, window=p.window, center=False)

    rows = []
    for name, seconds in [("one cycle", 1.5), ("long cycle", 4.0), ("whole sample", 15.36)]:
        y = audio[:int(seconds * p.sample_rate)]
        t_ours = best_of(lambda y=y: ours(y))
        t_lib = best_of(lambda y=y: theirs(y), number=5)
        rows.append((f"MFCC {name} ({seconds:g} s)", t_ours, t_lib, seconds))
    dp = FrontendParams(deltas=2)
    ours_d = MfccFrontend(dp)
    y = audio[:6000]
    t_ours = best_of(lambda: ours_d(y))
    t_lib = best_of(lambda: librosa.feature.delta(
        librosa.feature.delta(theirs(y), mode="nearest"), mode="nearest"), number=5)
    rows.append(("MFCC+Δ+ΔΔ one cycle (1.5 s)", t_ours, t_lib, 1.5))

    print(f"frontend: {p}\n")
    print(f"{'what':<32} {'lungedge ms':>12} {'librosa ms':>11} {'speed-up':>9} "
          f"{'x-real-time':>12}")
    for name, a, b, seconds in rows:
        print(f"{name:<32} {a * 1e3:>12.3f} {b * 1e3:>11.3f} {b / a:>8.1f}× "
              f"{seconds / a:>11,.0f}×")

    print(f"\n{'streaming resampler':<32} {'ms / 100 ms block':>18} {'x-real-time':>12}")
    rng = np.random.default_rng(0)
    for rate_in in (48000, 44100, 16000, 8000):
        block = rng.standard_normal(rate_in // 10).astype(np.float32)
        r = StreamingResampler(rate_in, p.sample_rate)
        t = best_of(lambda r=r, block=block: r.process(block), number=50)
        print(f"{f'{rate_in} → {p.sample_rate} Hz':<32} {t * 1e3:>18.3f} {0.1 / t:>11,.0f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
