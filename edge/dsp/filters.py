"""Streaming IIR filters: scipy `sosfilt` with its state carried from block to block.

Filtering block by block with carried state gives the same output as filtering the whole signal
at once, which is what makes segmentation independent of how audio happened to be chunked.
"""

from __future__ import annotations

import numpy as np
import scipy.signal


def bandpass_sos(low_hz: float, high_hz: float, sample_rate: int, order: int = 4) -> np.ndarray:
    nyquist = sample_rate / 2
    if not 0 < low_hz < high_hz < nyquist:
        raise ValueError(f"band {low_hz}–{high_hz} Hz does not fit below the Nyquist frequency "
                         f"{nyquist} Hz of {sample_rate} Hz audio")
    return scipy.signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=sample_rate,
                               output="sos")


class StreamingSos:
    def __init__(self, sos: np.ndarray) -> None:
        self.sos = np.asarray(sos, dtype=np.float64)
        self.zi = np.zeros((self.sos.shape[0], 2))

    def process(self, x: np.ndarray) -> np.ndarray:
        y, self.zi = scipy.signal.sosfilt(self.sos, np.asarray(x, dtype=np.float64), zi=self.zi)
        return y
