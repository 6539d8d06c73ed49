"""Streaming breathing-cycle segmentation: cuts continuous audio into cycles as it arrives.

Breath sound is a rise of band energy (about 150–1000 Hz) above the chest's background. The
segmenter follows a smoothed log-energy envelope (10 ms frames), tracks the background as a
running low quantile of the recent envelope, and marks a cycle while the envelope is above the
floor, with hysteresis (`on_db` to start, `off_db` to end). Pieces closer than `merge_gap_s`
join, each cycle is widened by `pad_s` on both sides (annotators mark the audible breath, which
starts before the energy clears a threshold), pieces shorter than `min_cycle_s` are dropped and
a cycle reaching `max_cycle_s` is cut at its quietest point.

Everything is frame-synchronous with filter state carried across blocks, so the cycles do not
depend on how the audio was chunked. A cycle is emitted once no later audio can change it; that
wait is bounded by `latency_s` (smoothing look-ahead + merge gap + padding).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge.config import SegmenterConfig
from edge.dsp.filters import StreamingSos, bandpass_sos


@dataclass(frozen=True)
class Cycle:
    """A breathing cycle on the segmenter's sample timeline."""

    start: int  # first sample (inclusive), at the segmenter's sample rate
    end: int  # last sample (exclusive)
    samples: np.ndarray
    sample_rate: int
    forced_cut: bool = False  # ended by max_cycle_s rather than by the breath going quiet

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end / self.sample_rate

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / self.sample_rate


class _RunningQuantile:
    """A quantile of the last `size` values, refreshed every `every` values (100 ms): the
    background level moves over seconds, so recomputing it per 10 ms frame buys nothing."""

    def __init__(self, size: int, q: float, every: int) -> None:
        self.buf = np.zeros(size)
        self.q, self.every = q, every
        self.n = 0
        self.value = 0.0

    def push(self, x: float) -> float:
        self.buf[self.n % len(self.buf)] = x
        self.n += 1
        if self.n % self.every == 1 or self.every == 1 or self.n <= self.every:
            filled = self.buf[:min(self.n, len(self.buf))]
            k = int(self.q * (len(filled) - 1))
            self.value = float(np.partition(filled, k)[k])
        return self.value


class CycleSegmenter:
    def __init__(self, cfg: SegmenterConfig, sample_rate: int) -> None:
        if cfg.band_high_hz >= sample_rate / 2:
            raise ValueError(f"segmenter.band_high_hz ({cfg.band_high_hz} Hz) must be below half"
                             f" the model sample rate ({sample_rate} Hz)")
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.frame_len = max(1, round(sample_rate * cfg.frame_ms / 1000))
        fps = sample_rate / self.frame_len
        self.half_smooth = round(cfg.smooth_ms / 1000 * fps / 2)
        self.floor_frames = max(1, round(cfg.floor_window_s * fps))
        self.pad = round(cfg.pad_s * fps)
        self.merge_gap = round(cfg.merge_gap_s * fps)
        self.min_len = max(1, round(cfg.min_cycle_s * fps))
        self.max_len = max(2 * self.min_len, round(cfg.max_cycle_s * fps))
        self.latency_s = (self.half_smooth + self.merge_gap + self.pad + 1) / fps
        self._filter = StreamingSos(bandpass_sos(cfg.band_low_hz, cfg.band_high_hz, sample_rate))
        self._partial = np.zeros(0)  # filtered samples not yet filling a frame
        self._raw: deque[float] = deque()  # envelope dB frames awaiting smoothing
        self._raw_start = 0  # frame index of _raw[0]
        self._sum = 0.0
        self._n_frames = 0  # raw frames seen
        self._n_smooth = 0  # smoothed frames decided
        self._floor = _RunningQuantile(self.floor_frames, cfg.floor_quantile,
                                       every=max(1, round(0.1 * fps)))
        # Smoothed envelope back to the oldest frame a cut or split may still need.
        self._recent: deque[float] = deque(
            maxlen=self.max_len + self.merge_gap + 2 * self.pad + 2)
        self._active_start: int | None = None
        self._quiet_since: int | None = None  # frame where the envelope fell below off
        self._pending: tuple[int, int, bool] | None = None  # piece waiting for a merge
        self._last_end = 0  # frame at which the previous emitted cycle ended
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_start = 0  # sample index of _audio[0]

    # -- input ----------------------------------------------------------------------------
    def process(self, samples: np.ndarray) -> list[Cycle]:
        """Feed model-rate samples; returns the cycles that became final."""
        samples = np.asarray(samples, dtype=np.float32)
        if len(samples) == 0:
            return []
        self._audio = np.concatenate([self._audio, samples])
        filtered = np.concatenate([self._partial, self._filter.process(samples)])
        n = len(filtered) // self.frame_len
        self._partial = filtered[n * self.frame_len:]
        energy = np.mean(filtered[:n * self.frame_len].reshape(n, self.frame_len) ** 2, axis=1)
        out: list[Cycle] = []
        for value in 10 * np.log10(energy + 1e-12):
            self._push_raw(float(value), out)
        self._trim_audio()
        return out

    def flush(self) -> list[Cycle]:
        """End of stream: decide the remaining frames and emit what is left."""
        out: list[Cycle] = []
        while self._n_smooth < self._n_frames:
            self._smooth_next(out)
        if self._active_start is not None:
            end = self._quiet_since if self._quiet_since is not None else self._n_frames
            self._piece(self._active_start, end, False, out)
            self._active_start = None
        if self._pending is not None:
            self._emit(*self._pending, out)
            self._pending = None
        return out

    # -- envelope -------------------------------------------------------------------------
    def _push_raw(self, value: float, out: list[Cycle]) -> None:
        self._raw.append(value)
        self._sum += value
        self._n_frames += 1
        while self._n_frames - self._n_smooth > self.half_smooth:
            self._smooth_next(out)

    def _smooth_next(self, out: list[Cycle]) -> None:
        """Centred moving average for frame _n_smooth (window cut at the stream's ends)."""
        k = self._n_smooth
        while self._raw_start < k - self.half_smooth:
            self._sum -= self._raw.popleft()
            self._raw_start += 1
        hi = min(k + self.half_smooth, self._n_frames - 1)
        count = hi - self._raw_start + 1
        if count == len(self._raw):
            smoothed = self._sum / count
        else:  # the last frames of the stream: the window is cut short
            smoothed = sum(list(self._raw)[:count]) / count
        self._recent.append(smoothed)
        floor = self._floor.push(smoothed)
        self._decide(k, smoothed, floor, out)
        self._n_smooth += 1

    # -- decisions ------------------------------------------------------------------------
    def _decide(self, k: int, value: float, floor: float, out: list[Cycle]) -> None:
        cfg = self.cfg
        if self._active_start is None:
            if value > floor + cfg.on_db:
                self._active_start = k
                self._quiet_since = None
        else:
            if value < floor + cfg.off_db:
                if self._quiet_since is None:
                    self._quiet_since = k
            else:
                self._quiet_since = None
            if self._quiet_since is not None and k - self._quiet_since >= self.merge_gap:
                self._piece(self._active_start, self._quiet_since, False, out)
                self._active_start = None
            elif k - self._active_start >= self.max_len:
                cut = self._quietest(self._active_start + self.min_len, k)
                self._piece(self._active_start, cut, True, out)
                self._active_start = cut
                self._quiet_since = None
        if self._pending is not None and k - self._pending[1] > self.merge_gap + 2 * self.pad:
            self._emit(*self._pending, out)
            self._pending = None

    def _quietest(self, lo: int, hi: int) -> int:
        first = self._n_smooth + 1 - len(self._recent)  # frame index of _recent[0]
        window = list(self._recent)[max(lo - first, 0):hi - first + 1]
        return max(lo, first) + int(np.argmin(window)) if window else hi

    def _piece(self, start: int, end: int, forced: bool, out: list[Cycle]) -> None:
        if self._pending is not None:
            p_start, p_end, p_forced = self._pending
            if start - p_end <= self.merge_gap and end - p_start <= self.max_len:
                self._pending = (p_start, end, forced)
                return
            self._emit(p_start, p_end, p_forced, out)
        self._pending = (start, end, forced)

    def _emit(self, start: int, end: int, forced: bool, out: list[Cycle]) -> None:
        if end - start < self.min_len:
            return
        bounds = self._split(start, end)
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            # Pad only the outer ends: split parts meet at their valley.
            a = max(a - self.pad if i == 0 else a, self._last_end, 0)
            b = min(b + self.pad if i == len(bounds) - 2 else b, self._n_frames)
            if b <= a:
                continue
            self._last_end = b
            s0, s1 = a * self.frame_len, b * self.frame_len
            audio = self._audio[s0 - self._audio_start:s1 - self._audio_start].copy()
            out.append(Cycle(s0, s0 + len(audio), audio, self.sample_rate,
                             forced and i == len(bounds) - 2))

    def _split(self, start: int, end: int) -> list[int]:
        """Boundaries of a piece cut at every valley at least split_db deep (e.g. between
        inspiration and expiration) that leaves both sides at least min_cycle_s long."""
        if self.cfg.split_db <= 0 or end - start < 2 * self.min_len:
            return [start, end]
        first = self._n_smooth + 1 - len(self._recent)
        env = np.array(list(self._recent)[max(start - first, 0):end - first])
        if len(env) < end - start:
            return [start, end]
        lo, hi = self.min_len, len(env) - self.min_len
        best, best_depth = -1, self.cfg.split_db
        for v in range(lo, hi):
            if env[v] > env[v - 1] or env[v] > env[v + 1]:
                continue  # not a local minimum
            depth = min(env[:v].max(), env[v:].max()) - env[v]
            if depth >= best_depth:
                best, best_depth = v, depth
        if best < 0:
            return [start, end]
        return self._split(start, start + best)[:-1] + self._split(start + best, end)

    def _trim_audio(self) -> None:
        """Keep only audio a future cycle can still include."""
        starts = [self._n_smooth]
        if self._active_start is not None:
            starts.append(self._active_start)
        if self._pending is not None:
            starts.append(self._pending[0])
        keep_frame = max(self._last_end, min(starts) - self.pad)
        keep = keep_frame * self.frame_len - self._audio_start
        if keep > 0:
            self._audio = self._audio[keep:]
            self._audio_start += keep

    def iter_cycles(self, blocks: Iterator[np.ndarray]) -> Iterator[Cycle]:
        for block in blocks:
            yield from self.process(block)
        yield from self.flush()
