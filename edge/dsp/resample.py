"""Streaming rational resampler (device rate → model rate) with state carried across blocks.

It computes exactly what `scipy.signal.resample_poly(x, up, down)` computes on the whole
signal — same Kaiser-windowed FIR, same delay compensation — but block by block, so the daemon
and offline classification of the same audio see the same samples whatever the block sizes.
The price of delay compensation is look-ahead: an output sample waits for `latency_s` of input.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal


class StreamingResampler:
    def __init__(self, rate_in: int, rate_out: int) -> None:
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in} → {rate_out}")
        g = math.gcd(rate_in, rate_out)
        self.rate_in, self.rate_out = rate_in, rate_out
        self.up, self.down = rate_out // g, rate_in // g
        self.identity = self.up == self.down == 1
        self.latency_s = 0.0
        self._n_in = self._n_out = 0
        if self.identity:
            return
        max_rate = max(self.up, self.down)
        self.half_len = 10 * max_rate  # resample_poly's default filter
        h = scipy.signal.firwin(2 * self.half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0))
        h = h * self.up
        self.taps = math.ceil(len(h) / self.up)  # taps per polyphase branch
        bank = np.zeros(self.taps * self.up)
        bank[:len(h)] = h
        # bank[p, m] = h[p + m*up]: branch p weights input x[j - m].
        self.bank = bank.reshape(self.taps, self.up).T.copy()
        self.latency_s = (self.half_len / self.up) / rate_in
        # Keep `taps` zeros before the first input so early outputs see zeros, as resample_poly.
        self._buf = np.zeros(self.taps, dtype=np.float64)
        self._buf_start = -self.taps  # input index of _buf[0]

    def _emit(self, n_stop: int) -> np.ndarray:
        """Outputs n_out … n_stop-1 (their inputs are in the buffer)."""
        n = np.arange(self._n_out, n_stop, dtype=np.int64)
        if len(n) == 0:
            return np.zeros(0, dtype=np.float32)
        t = n * self.down + self.half_len
        j = t // self.up  # newest input each output needs
        rows = (j - self._buf_start)[:, None] - np.arange(self.taps)[None, :]
        y = np.einsum("ij,ij->i", self._buf[rows], self.bank[t % self.up])
        self._n_out = n_stop
        # Drop inputs no future output can reach.
        keep_from = (self._n_out * self.down + self.half_len) // self.up - self.taps + 1
        cut = max(0, min(keep_from - self._buf_start, len(self._buf)))
        self._buf = self._buf[cut:]
        self._buf_start += cut
        return y.astype(np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        if self.identity:
            return np.asarray(x, dtype=np.float32)
        self._buf = np.concatenate([self._buf, np.asarray(x, dtype=np.float64)])
        self._n_in += len(x)
        # Output n is ready once input (n*down + half_len) // up has arrived.
        n_stop = (self._n_in * self.up - 1 - self.half_len) // self.down + 1
        return self._emit(max(n_stop, self._n_out))

    def flush(self) -> np.ndarray:
        """The outputs still owed at end of stream, as if zeros followed (as resample_poly)."""
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        total = -(-self._n_in * self.up // self.down)
        self._buf = np.concatenate([self._buf, np.zeros(self.taps + self.half_len // self.up + 1)])
        return self._emit(max(total, self._n_out))
