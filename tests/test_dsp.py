"""Resampler, filters and the frontend against independent references."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.fft
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.dsp.filters import MEMOISED, StreamingSos, bandpass_sos
from edge.dsp.frontend import Frontend, FrontendParams, FrontendParamsError, mel_filterbank
from edge.dsp.resample import StreamingResampler

ROOT = Path(__file__).resolve().parents[1]


def chunked(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    out, i = [], 0
    for n in sizes:
        out.append(x[i:i + n])
        i += n
    out.append(x[i:])
    return out


@pytest.mark.parametrize(("rate_in", "rate_out"), [
    (48000, 4000), (44100, 4000), (16000, 4000), (8000, 4000), (44100, 8000), (8000, 8000)])
def test_streaming_resampler_keeps_the_passband_and_stops_aliases(rate_in: int,
                                                                   rate_out: int) -> None:
    """Against the analytic signal: a tone inside the model's band comes out at its amplitude
    and in time (no delay left over), a tone above the new Nyquist does not fold back, and the
    length is what the rates say."""
    rng = np.random.default_rng(rate_in)
    n = rate_in * 2 + 321
    t_in = np.arange(n) / rate_in
    inside, above = 0.37 * rate_out, 0.62 * rate_out
    r = StreamingResampler(rate_in, rate_out)
    sizes = list(rng.integers(1, 2000, size=60))
    x = 0.5 * np.sin(2 * np.pi * inside * t_in)
    y = np.concatenate([r.process(b) for b in chunked(x, sizes)] + [r.flush()])
    assert len(y) == int(n * rate_out / rate_in + 0.5)
    t_out = np.arange(len(y)) / rate_out
    middle = slice(rate_out // 4, -rate_out // 4)  # away from the stream's two ends
    assert np.abs(y - 0.5 * np.sin(2 * np.pi * inside * t_out))[middle].max() < 2e-3
    if rate_in != rate_out:
        r = StreamingResampler(rate_in, rate_out)
        z = np.concatenate([r.process(0.5 * np.sin(2 * np.pi * above * t_in)), r.flush()])
        assert np.sqrt(np.mean(z[middle] ** 2)) < 0.5 * 10 ** (-80 / 20)  # below -80 dB


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=30))
def test_resampler_output_does_not_depend_on_block_sizes(sizes: list[int]) -> None:
    x = np.random.default_rng(0).standard_normal(44100) * 0.2
    whole = StreamingResampler(44100, 4000)
    ref = np.concatenate([whole.process(x), whole.flush()])
    r = StreamingResampler(44100, 4000)
    y = np.concatenate([r.process(b) for b in chunked(x, sizes)] + [r.flush()])
    assert np.array_equal(y, ref)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_streaming_sos_equals_one_shot(use_kernel: bool) -> None:
    """Block by block, through scipy's kernel or its public function, the output is what
    the public `sosfilt` gives for the whole signal at once."""
    x = np.random.default_rng(1).standard_normal(10000)
    sos = bandpass_sos(100, 1000, 4000)
    f = StreamingSos(sos, use_kernel=use_kernel)
    if use_kernel:
        assert f._kernel is not None, "scipy moved its sosfilt kernel: update edge/dsp/filters.py"
    y = np.concatenate([f.process(b) for b in chunked(x, [1, 7, 500, 3000, 13])])
    assert np.allclose(y, scipy.signal.sosfilt(sos, x), atol=1e-12)


def test_memoised_designs_are_scipys() -> None:
    """filter_designs.json is exactly what scipy designs (regenerate: python -m
    edge.dsp.filters), and a band not in it is designed by scipy."""
    for low, high, rate, order in MEMOISED:
        assert np.array_equal(bandpass_sos(low, high, rate, order), scipy.signal.butter(
            order, [low, high], btype="bandpass", fs=rate, output="sos"))
    assert np.array_equal(bandpass_sos(150, 900, 4000), scipy.signal.butter(
        4, [150, 900], btype="bandpass", fs=4000, output="sos"))


def test_the_device_path_does_not_import_scipy_signal() -> None:
    """It costs ≈ 1 s of start-up and ≈ 40 MB (edge/dsp/filters.py)."""
    code = ("import sys, numpy as np, edge.service.daemon, edge.cli.main\n"
            "from edge.pipeline.analysis import Analysis\n"
            "from edge.service.config import Config\n"
            "from edge.pipeline.model import ModelRunner\n"
            "from edge.sources.base import AudioBlock\n"
            "c = Config()\n"
            "a = Analysis(44100, ModelRunner('models/lungedge-cnnlstm'), c.tracker)\n"
            "a.process(AudioBlock(np.zeros(44100, np.float32), 44100, 0.0, 0.0))\n"
            "print(sorted(m for m in sys.modules if m.startswith('scipy.signal')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "['scipy.signal._sosfilt']"
    with pytest.raises(ValueError, match="Nyquist"):
        bandpass_sos(100, 2500, 4000)


@pytest.mark.parametrize("deltas", [0, 1, 2])
def test_mfcc_matches_librosa(deltas: int) -> None:
    p = FrontendParams(features="mfcc", deltas=deltas)
    x = np.random.default_rng(2).standard_normal(6000) * 0.1
    mel = librosa.feature.melspectrogram(
        y=x, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, window=p.window,
        center=False, power=2.0, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax)
    mfcc = librosa.feature.mfcc(S=np.log(np.maximum(mel, p.log_floor)), n_mfcc=p.n_mfcc)
    parts = [mfcc]
    if deltas:
        parts.append(librosa.feature.delta(mfcc, width=p.delta_width, mode="nearest"))
    if deltas == 2:
        parts.append(librosa.feature.delta(parts[1], width=p.delta_width, mode="nearest"))
    ref = np.concatenate(parts).T
    ours = Frontend(p)(x)
    assert ours.shape == ref.shape == (p.n_frames(len(x)), p.n_features)
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize("deltas", [0, 1])
def test_log_mel_matches_librosa(deltas: int) -> None:
    """features="log_mel": the same spectrum and filterbank, logged, without the DCT."""
    p = FrontendParams(n_fft=128, hop_length=64, features="log_mel", deltas=deltas)
    x = np.random.default_rng(3).standard_normal(6000) * 0.1
    mel = librosa.feature.melspectrogram(
        y=x, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, window=p.window,
        center=False, power=2.0, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax)
    log_mel = np.log(np.maximum(mel, p.log_floor))
    parts = [log_mel] + ([librosa.feature.delta(log_mel, width=p.delta_width, mode="nearest")]
                         if deltas else [])
    ref = np.concatenate(parts).T
    ours = Frontend(p)(x)
    assert ours.shape == ref.shape == (p.n_frames(len(x)), p.n_mels * (1 + deltas))
    assert p.n_static == p.n_mels and p.n_features == p.n_mels * (1 + deltas)
    assert np.abs(ours - ref).max() < 1e-4


def test_mel_filterbank_matches_librosa_at_other_settings() -> None:
    ours = mel_filterbank(8000, 512, 64, 50, 4000)
    ref = librosa.filters.mel(sr=8000, n_fft=512, n_mels=64, fmin=50, fmax=4000)
    assert np.abs(ours - ref).max() < 1e-7


def test_numpy_window_and_dct_equal_scipys() -> None:
    from edge.dsp.frontend import dct_matrix, periodic_window

    for kind in ("hann", "hamming"):
        for n in (64, 256):
            assert np.allclose(periodic_window(kind, n),
                               scipy.signal.get_window(kind, n, fftbins=True), atol=1e-12)
    x = np.random.default_rng(0).normal(size=(5, 40))
    assert np.allclose(x @ dct_matrix(40).T, scipy.fft.dct(x, type=2, norm="ortho", axis=1))


def test_short_audio_is_padded_to_one_frame() -> None:
    p = FrontendParams(features="mfcc")
    assert Frontend(p)(np.ones(10)).shape == (1, p.n_mfcc)
    p = FrontendParams()
    assert p.features == "log_mel"  # what the shipped model takes
    assert Frontend(p)(np.ones(10)).shape == (1, p.n_mels)


def test_frontend_params_round_trip_and_errors() -> None:
    p = FrontendParams(n_mels=32, deltas=1, window="hamming")
    assert FrontendParams.from_dict(p.to_dict()) == p
    with pytest.raises(FrontendParamsError,
                       match=r"manifest\.frontend: nfft: unknown key \(did you mean .n_fft.\?\)"):
        FrontendParams.from_dict({**p.to_dict(), "nfft": 3}, where="manifest.frontend")
    with pytest.raises(FrontendParamsError, match="missing key"):
        FrontendParams.from_dict({"sample_rate": 4000})
    with pytest.raises(FrontendParamsError, match=r"frontend: n_fft: expected an integer, got "
                                                  r"'256'"):
        FrontendParams.from_dict({**p.to_dict(), "n_fft": "256"})
    with pytest.raises(FrontendParamsError, match=r"frontend: features: expected one of "
                                                  r"'mfcc', 'log_mel', got 'mel'"):
        FrontendParams.from_dict({**p.to_dict(), "features": "mel"})
    with pytest.raises(FrontendParamsError, match="features must be 'mfcc' or 'log_mel'"):
        FrontendParams(features="mel")  # type: ignore[arg-type]
    with pytest.raises(FrontendParamsError, match="fmax"):
        FrontendParams(fmax=3000)
    with pytest.raises(FrontendParamsError, match="power of two"):
        FrontendParams(n_fft=300)


def test_gain_normalisation_removes_a_gain_and_keeps_the_spectral_shape() -> None:
    """band_norm "gain": the same chest heard 12 dB louder (or through a stethoscope with more
    gain) gives the same features, cycle after cycle, while the difference between bands (the
    spectral shape the per-band normalisations take away) is what it was."""
    from edge.dsp.frontend import BandNormaliser

    rng = np.random.default_rng(0)
    fe = Frontend(FrontendParams(band_norm="gain", band_norm_s=3.0))
    params = fe.params
    audio = rng.normal(size=4000 * 6) * np.linspace(0.2, 1.0, 4000 * 6)
    cycles = [audio[i:i + 6000] for i in range(0, len(audio), 6000)]
    quiet, loud = BandNormaliser(params), BandNormaliser(params)
    for cycle in cycles:
        raw = fe(cycle)
        a, b = quiet(raw), loud(fe(cycle * 4.0))  # 4× amplitude: +12 dB in every band
        assert np.abs(a - b).max() < 1e-3
        shape = raw - raw.mean(axis=1, keepdims=True)
        assert np.abs((a - a.mean(axis=1, keepdims=True)) - shape).max() < 1e-3
    with pytest.raises(FrontendParamsError, match="band_norm 'gain' needs features 'log_mel'"):
        FrontendParams(band_norm="gain", features="mfcc")
