"""The one feature implementation (log mel bands, or MFCCs computed from them): used by the
device, the tests and the training toolchain.

A model is only as good as the agreement between the features it was trained on and the ones it
sees on the device, so the parameters are one frozen object that travels inside every model's
manifest (`FrontendParams.to_dict` / `from_dict`), and `convert/` imports this module instead of
computing features its own way.

Definitions (textbook, and what librosa computes with `center=False`): periodic window, power
spectrum, Slaney-style mel filterbank with Slaney area normalisation, natural log with a floor,
orthonormal DCT-II (skipped for `features="log_mel"`); deltas by linear regression over
±`delta_width // 2` frames, edges repeated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


class FrontendParamsError(ValueError):
    """Frontend parameters (e.g. from a model manifest) that cannot describe a frontend."""


@dataclass(kw_only=True, frozen=True)
class FrontendParams:
    sample_rate: int = 4000
    n_fft: int = 256
    hop_length: int = 64
    window: Literal["hann", "hamming"] = "hann"
    n_mels: int = 40
    fmin: float = 80.0
    fmax: float = 2000.0
    n_mfcc: int = 20
    log_floor: float = 1e-10
    deltas: int = 0  # 0: the static features only; 1: + delta; 2: + delta and delta-delta
    delta_width: int = 9
    # "log_mel": the n_mels log band energies themselves, without the DCT (n_mfcc unused). A
    # convolution over neighbouring bands sees a local spectral shape, where one over
    # neighbouring cepstral coefficients sees little; measured on validation, the log mel bands
    # train a clearly better CNN-LSTM (models/lungedge-cnnlstm/MODEL_CARD.md).
    features: Literal["mfcc", "log_mel"] = "log_mel"
    # Each band's level over the recent past of the stream is subtracted from it (the static
    # features only): a stethoscope's frequency response and gain are a fixed gain per band,
    # which this removes, so the model sees how a cycle differs from the chest's own recent
    # sound. "cycle": the cycle's own mean; "running": an exponential moving average over the
    # cycles so far (time constant band_norm_s of cycle audio), causal, so the device does it
    # live (BandNormaliser). "gain": one number for all bands, the running level of the
    # stream's total band power (same time constant), so a stethoscope's gain and the
    # patient's loudness go and the spectral shape stays. "none": the features as they are.
    band_norm: Literal["none", "cycle", "running", "gain"] = "none"
    band_norm_s: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate < 1000:
            problems.append(f"sample_rate must be ≥ 1000 Hz, got {self.sample_rate}")
        if self.n_fft < 16 or self.n_fft & (self.n_fft - 1):
            problems.append(f"n_fft must be a power of two ≥ 16, got {self.n_fft}")
        if not 0 < self.hop_length <= self.n_fft:
            problems.append(f"hop_length must be in 1…n_fft ({self.n_fft}), got "
                            f"{self.hop_length}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            problems.append(f"need 0 ≤ fmin < fmax ≤ sample_rate/2 ({self.sample_rate / 2}), "
                            f"got fmin={self.fmin}, fmax={self.fmax}")
        if self.features == "mfcc" and not 1 <= self.n_mfcc <= self.n_mels:
            problems.append(f"n_mfcc must be in 1…n_mels ({self.n_mels}), got {self.n_mfcc}")
        if self.n_mels > self.n_fft // 2:
            problems.append(f"n_mels ({self.n_mels}) must not exceed n_fft/2 "
                            f"({self.n_fft // 2}): some mel bands would be empty")
        if not self.log_floor > 0:
            problems.append(f"log_floor must be > 0, got {self.log_floor}")
        if self.features not in ("mfcc", "log_mel"):
            problems.append(f"features must be 'mfcc' or 'log_mel', got {self.features!r}")
        if self.band_norm not in ("none", "cycle", "running", "gain"):
            problems.append(f"band_norm must be 'none', 'cycle', 'running' or 'gain', got "
                            f"{self.band_norm!r}")
        if self.band_norm == "gain" and self.features != "log_mel":
            problems.append("band_norm 'gain' needs features 'log_mel' (it is a level in log "
                            "band power)")
        if not self.band_norm_s > 0:
            problems.append(f"band_norm_s must be > 0, got {self.band_norm_s}")
        if self.deltas not in (0, 1, 2):
            problems.append(f"deltas must be 0, 1 or 2, got {self.deltas}")
        if self.delta_width < 3 or self.delta_width % 2 == 0:
            problems.append(f"delta_width must be odd and ≥ 3, got {self.delta_width}")
        if problems:
            raise FrontendParamsError("; ".join(problems))

    @property
    def n_static(self) -> int:
        """Features per frame before any deltas: cepstral coefficients or mel bands."""
        return self.n_mfcc if self.features == "mfcc" else self.n_mels

    @property
    def n_features(self) -> int:
        return self.n_static * (1 + self.deltas)

    def n_frames(self, n_samples: int) -> int:
        """Frames for a signal of n_samples (a short one is zero-padded to one frame)."""
        return 1 + max(0, n_samples - self.n_fft) // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "frontend") -> FrontendParams:
        """Parameters from a manifest section: every key must be given (a default would
        silently describe another model), and every problem names its key under `where`."""
        from edge.loader import ValidationError, build

        try:
            return build(cls, data, source=where, complete=True)
        except ValidationError as exc:
            raise FrontendParamsError(str(exc)) from None


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
                   fmax: float) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) triangular filters, each scaled to unit area (Slaney)."""
    fft_hz = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower = (fft_hz[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    upper = (edges[2:, None] - fft_hz[None, :]) / np.diff(edges)[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def deltas(features: np.ndarray, width: int = 9) -> np.ndarray:
    """Regression deltas along time (axis 0), edge frames repeated."""
    half = width // 2
    padded = np.pad(features, ((half, half), (0, 0)), mode="edge")
    n = len(features)
    out = np.zeros_like(features)
    for k in range(1, half + 1):
        out += k * (padded[half + k:half + k + n] - padded[half - k:half - k + n])
    return out / (2 * sum(k * k for k in range(1, half + 1)))


def periodic_window(kind: str, n: int) -> np.ndarray:
    """The periodic ("DFT-even") Hann or Hamming window, as scipy.signal.get_window(kind, n)
    computes it (tests/test_dsp.py checks): numpy alone, so that the device does not pay for
    importing scipy.signal twice over."""
    a = 0.5 if kind == "hann" else 0.54
    return a - (1 - a) * np.cos(2 * np.pi * np.arange(n) / n)


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II as a matrix: row k · x is scipy.fft.dct(x, norm='ortho')[k]."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.sqrt(2 / n) * np.cos(np.pi * k * (2 * i + 1) / (2 * n))
    m[0] /= np.sqrt(2)
    return m


class Frontend:
    """Features of one stretch of audio (a breathing cycle) at the model's sample rate."""

    def __init__(self, params: FrontendParams) -> None:
        self.params = params
        p = params
        # float32 throughout: half the memory traffic of float64, and what NEON does fastest
        # on the Pi; features stay within 1e-4 of a float64 reference (tests/test_dsp.py).
        self.window = periodic_window(p.window, p.n_fft).astype(np.float32)
        self.mel_basis_t = np.ascontiguousarray(
            mel_filterbank(p.sample_rate, p.n_fft, p.n_mels, p.fmin, p.fmax).T, dtype=np.float32)
        # DCT-II (orthonormal) as a matrix: cheaper than an FFT-based DCT for 40 bands.
        self.dct_t = np.ascontiguousarray(
            dct_matrix(p.n_mels)[:p.n_mfcc].T,
            dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """(n_frames, n_features) float32; audio shorter than n_fft is zero-padded."""
        p = self.params
        x = np.asarray(samples, dtype=np.float32)
        if len(x) < p.n_fft:
            x = np.pad(x, (0, p.n_fft - len(x)))
        frames = np.lib.stride_tricks.sliding_window_view(x, p.n_fft)[::p.hop_length]
        spectrum = np.fft.rfft(frames * self.window, axis=1)
        power = spectrum.real ** 2 + spectrum.imag ** 2
        feats = np.log(np.maximum(power @ self.mel_basis_t, np.float32(p.log_floor)))
        if p.features == "mfcc":
            feats = feats @ self.dct_t
        if p.deltas:
            d1 = deltas(feats, p.delta_width)
            parts = [feats, d1] if p.deltas == 1 else [feats, d1, deltas(d1, p.delta_width)]
            feats = np.concatenate(parts, axis=1)
        return feats.astype(np.float32)


class BandNormaliser:
    """The band normalisation of FrontendParams.band_norm, with its state: one per stream.

    The device feeds it every cycle in order; the trainer feeds it the annotated events of one
    recording in order, after `reset()`. The level subtracted includes the cycle itself, so the
    first cycle of a stream is normalised by its own mean."""

    def __init__(self, params: FrontendParams) -> None:
        self.mode = params.band_norm
        self.n = params.n_static
        # per-frame decay of the running level: its time constant is band_norm_s of frames
        self.decay = float(np.exp(-params.hop_length / (params.band_norm_s * params.sample_rate)))
        self.level: np.ndarray | None = None

    def reset(self) -> None:
        self.level = None

    def __call__(self, features: np.ndarray) -> np.ndarray:
        if self.mode == "none" or len(features) == 0:
            return features
        static = features[:, :self.n].astype(np.float64)
        if self.mode == "gain":
            # per frame, the log of the mean band power: a gain g moves it by log g² exactly,
            # and bands at the log floor (a stethoscope that hears nothing up there) barely
            # count, where a mean of the log bands would be pulled down by them
            top = static.max(axis=1, keepdims=True)
            static = top + np.log(np.exp(static - top).mean(axis=1, keepdims=True))
        level = static.mean(axis=0) if self.mode == "cycle" or self.level is None \
            else self.level
        if self.mode in ("running", "gain"):
            # the EMA after this cycle's frames, in closed form: a^n·L + (1 − a)·Σ a^(n−1−i)·x_i
            n = len(static)
            weights = (1 - self.decay) * self.decay ** np.arange(n - 1, -1, -1)
            level = self.decay ** n * level + weights @ static
            self.level = level
        out = features.copy()
        out[:, :self.n] -= level.astype(np.float32)
        return out
