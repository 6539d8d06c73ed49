"""How high the stethoscope's channel reaches: the upper edge of what it passes, measured on the
breathing cycles themselves.

A stethoscope in bell mode, a cheap chest piece or a worn membrane can pass nothing above a
few hundred hertz. Breath sounds still come through, so cycles are found and classified, but
crackles (short broadband transients) and most wheezes live above that: a model then calls
the cycles normal with confidence, and reassures where it cannot hear. The device measures the
channel instead and says so (`edge.pipeline.signal_judgement`).

The measure: each cycle's mean power spectrum (Hann frames of 64 ms at the model rate), in
sixth-octave bands from 100 Hz to the Nyquist frequency, averaged over the recent cycles with a
time constant of `time_constant_s` of cycle audio. The breath band's level is its loudest band
between 100 and 600 Hz; the upper edge is the top of the highest band within `drop_db` of it.
Breath sound itself falls with frequency (about 10–20 dB from 300 Hz to 1 kHz on the chest),
so 30 dB below the breath band's peak is well above the floor of any open channel: measured on
the training stethoscopes, AKG C417L passes to about 1.5–2 kHz, Meditron to 2 kHz, Littmann
Classic II SE to 1–1.5 kHz, SPRSound's Yunting II to about 600–800 Hz, while a low-pass at 250
Hz leaves about 300 Hz (tests/test_signal_judgement.py).
"""

from __future__ import annotations

import numpy as np

BREATH_BAND_HZ = (100.0, 600.0)
FRAME_S = 0.064


class ChannelBandwidth:
    """The running spectrum of the recent cycles and the upper edge it shows; one per stream."""

    def __init__(self, sample_rate: int, *, drop_db: float = 30.0,
                 time_constant_s: float = 20.0) -> None:
        self.sample_rate = sample_rate
        self.drop_db = drop_db
        self.time_constant_s = time_constant_s
        n = 1 << int(np.ceil(np.log2(FRAME_S * sample_rate)))
        self.n_fft = n
        self.window = np.hanning(n).astype(np.float32)
        hz = np.fft.rfftfreq(n, 1 / sample_rate)
        top = sample_rate / 2
        edges = 100.0 * 2 ** (np.arange(0, np.log2(top / 100) * 6 + 1) / 6)
        self.band_edges = edges[edges <= top]
        self.bands = [(hz >= lo) & (hz < hi) for lo, hi in zip(self.band_edges[:-1],
                                                               self.band_edges[1:],
                                                               strict=True)]
        self.bands = [b for b in self.bands if b.any()]
        self.upper = np.array([hi for lo, hi in zip(self.band_edges[:-1], self.band_edges[1:],
                                                    strict=True)
                               if ((hz >= lo) & (hz < hi)).any()])
        self.lower = self.upper / 2 ** (1 / 6)
        self.breath = (self.upper > BREATH_BAND_HZ[0]) & (self.lower < BREATH_BAND_HZ[1])
        self.level: np.ndarray | None = None  # band powers, the running average
        self.heard_s = 0.0  # cycle audio in the average

    def add(self, samples: np.ndarray) -> None:
        """One cycle's samples at the model rate."""
        x = np.asarray(samples, dtype=np.float32)
        if len(x) < self.n_fft:
            return
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[::self.n_fft // 2]
        spectrum = np.fft.rfft(frames * self.window, axis=1)
        power = (spectrum.real ** 2 + spectrum.imag ** 2).mean(axis=0)
        bands = np.array([power[b].mean() for b in self.bands])
        seconds = len(x) / self.sample_rate
        if self.level is None:
            self.level = bands
        else:
            a = float(np.exp(-seconds / self.time_constant_s))
            self.level = a * self.level + (1 - a) * bands
        self.heard_s += seconds

    def reset(self) -> None:
        self.level, self.heard_s = None, 0.0

    @property
    def upper_edge_hz(self) -> float | None:
        """The top of the highest band within drop_db of the breath band's peak (None before
        any cycle, or when the breath band is silent)."""
        if self.level is None:
            return None
        db = 10 * np.log10(self.level + 1e-20)
        peak = db[self.breath].max()
        if peak < -180:
            return None
        above = np.flatnonzero(db >= peak - self.drop_db)
        return float(round(self.upper[above.max()]))
