"""Fixed changes of channel for the protocol's stress test: what another stethoscope, a filter
mode or a worn membrane does to the sound before the device hears it.

A stethoscope is a frequency response as much as a gain. The withheld ICBHI test showed what
an unknown one does to a network that learnt the training stethoscopes' spectral shape: one
was called wheeze on 284 of 325 normal cycles, and the withheld AKG C417L recordings passed
through a low-pass at 1 kHz (nothing else changed) were called "both" on 731 of 940 normal
cycles. So every held-out stethoscope (and SPRSound's validation folds) is scored again
through each change below, applied to the model-rate audio before the device's own frontend
(`convert.features.recording_events`), and the gate asks the changes that leave the breath band
(100–600 Hz) in place not to flip the model (`convert.protocol`).

The changes are fixed and documented here so that every report means the same thing:

| name | what | breath band kept |
|---|---|---|
| lowpass-1000 | 6th-order Butterworth low-pass at 1 kHz (a bell, a cheaper chest piece) | yes |
| lowpass-500 | the same at 500 Hz | no |
| lowpass-250 | the same at 250 Hz (almost only heart and muscle left) | no |
| highpass-200 | 6th-order Butterworth high-pass at 200 Hz (a diaphragm pressed hard) | no |
| tilt+6 | +6 dB per octave about 500 Hz (treble up: a thin membrane) | yes |
| tilt-6 | −6 dB per octave about 500 Hz (treble down: a bell) | yes |
| peak-250 | one resonance, +10 dB at 250 Hz, Q 1 (a membrane's resonance) | yes |

The filters are causal (what a stethoscope does); the tilts are applied in the frequency
domain with zero phase (a magnitude response; the frontend reads band powers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

BREATH_BAND_HZ = (100.0, 600.0)


@dataclass(frozen=True)
class Channel:
    name: str
    what: str
    kind: Literal["lowpass", "highpass", "tilt", "peak"]
    hz: float  # cut-off, pivot or centre
    amount: float  # Butterworth order; dB per octave; dB of the peak
    keeps_breath_band: bool  # the gate holds the model to it on this change

    def apply(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """The audio as heard through this channel, float32, the same length."""
        import scipy.signal

        x = np.asarray(audio, dtype=np.float64)
        if self.kind in ("lowpass", "highpass"):
            sos = scipy.signal.butter(int(self.amount), self.hz, self.kind, fs=rate,
                                      output="sos")
            return scipy.signal.sosfilt(sos, x).astype(np.float32)
        if self.kind == "peak":
            return scipy.signal.sosfilt(peaking_sos(self.hz, self.amount, 1.0, rate),
                                        x).astype(np.float32)
        spectrum = np.fft.rfft(x)
        hz = np.maximum(np.fft.rfftfreq(len(x), 1 / rate), 20.0)
        gain = (hz / self.hz) ** (self.amount / (20 * np.log10(2)))
        return np.fft.irfft(spectrum * gain, n=len(x)).astype(np.float32)


def peaking_sos(hz: float, db: float, q: float, rate: int) -> np.ndarray:
    """A peaking equaliser biquad (R. Bristow-Johnson's Audio EQ Cookbook) as one SOS row."""
    a = 10 ** (db / 40)
    w = 2 * np.pi * hz / rate
    alpha = np.sin(w) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


CHANNELS: tuple[Channel, ...] = (
    Channel("lowpass-1000", "low-pass at 1 kHz (6th-order Butterworth)", "lowpass", 1000, 6,
            True),
    Channel("lowpass-500", "low-pass at 500 Hz", "lowpass", 500, 6, False),
    Channel("lowpass-250", "low-pass at 250 Hz", "lowpass", 250, 6, False),
    Channel("highpass-200", "high-pass at 200 Hz (6th-order Butterworth)", "highpass", 200, 6,
            False),
    Channel("tilt+6", "+6 dB per octave about 500 Hz", "tilt", 500, 6, True),
    Channel("tilt-6", "−6 dB per octave about 500 Hz", "tilt", 500, -6, True),
    Channel("peak-250", "a resonance of +10 dB at 250 Hz, Q 1", "peak", 250, 10, True),
)
BY_NAME = {c.name: c for c in CHANNELS}
