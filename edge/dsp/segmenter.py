"""Streaming breathing-cycle segmentation: cuts continuous audio into cycles as it arrives.

A breath is heard as a rise of band energy (`band_low_hz`–`band_high_hz`, 195–1010 Hz by
default) above the chest's background. The segmenter follows a smoothed log-energy envelope
(10 ms frames), tracks the background as a running quantile of the recent envelope, and
detects breath sound when the envelope rises `on_db` above the floor and ends it once it stays
below floor + `off_db` for `merge_gap_s`. `off_db` may be set below `on_db` for hysteresis; by
default the two are equal and `merge_gap_s` alone keeps a breath from flickering.

A cycle starts `pad_s` before a breath's onset (the sound begins before the energy clears a
threshold) and ends `tail_s` after the sound stops, or earlier where the next breath begins:
with a long tail, cycles tile the signal from one inspiration onset to the next, the ICBHI
definition of a respiratory cycle. Sounds shorter than `min_cycle_s` are ignored, and a cycle
never exceeds `max_cycle_s` (sound that does not stop is cut at its quietest point).

Everything is frame-synchronous with filter state carried across blocks, so the cycles do not
depend on how the audio was chunked. A cycle is emitted once no later audio can change it, at
most `latency_s` after its end (`forced_cut_latency_s` for a forced cut).

The envelope of a block is computed at once with numpy (prefix sums for the smoothing, a
partial sort of the recent window for the floor, refreshed every few frames); only the
hysteresis decision runs frame by frame. The per-frame Python work was most of the device's
CPU time outside the model (bench/pipeline.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.dsp.filters import StreamingSos, bandpass_sos
from edge.loader import Invalid, setting


@dataclass(kw_only=True, frozen=True)
class SegmenterConfig:
    """Breathing-cycle segmentation; defaults were tuned on SPRSound train (bench/)."""

    band_low_hz: float = setting(195.0, "Low edge of the band whose energy marks breath "
                                        "sound, Hz.", gt=0)
    band_high_hz: float = setting(1010.0, "High edge of that band, Hz.", gt=0)
    frame_ms: float = setting(10.0, "Envelope frame length, ms.", ge=2, le=50)
    smooth_ms: float = setting(300.0, "Envelope smoothing (moving average), ms.", ge=0, le=1000)
    floor_window_s: float = setting(6.6, "Window of the running noise-floor estimate, s.",
                                    ge=0.5, le=60)
    floor_quantile: float = setting(0.34, "Quantile of the recent envelope taken as the noise "
                                         "floor.", gt=0, le=0.9)
    on_db: float = setting(4.9, "A cycle starts when the envelope rises this far above the "
                                "floor, dB.", gt=0, le=40)
    off_db: float = setting(4.9, "…and ends when it falls back below floor + this, dB.",
                            ge=0, le=40)
    min_cycle_s: float = setting(0.1, "Breath sounds shorter than this are ignored, "
                                      "s.", gt=0, le=5)
    max_cycle_s: float = setting(3.35, "Longer cycles are cut here (forced cut), s.",
                                 gt=0, le=30)
    merge_gap_s: float = setting(0.48, "Breath sound must stay quiet this long to end, s.",
                                 ge=0, le=2)
    pad_s: float = setting(0.22, "A cycle starts this long before its breath's onset, s.",
                           ge=0, le=1)
    tail_s: float = setting(2.57, "A cycle ends this long after its breath's sound (or at "
                                  "the next breath, if sooner), s.", ge=0, le=5)

    def validate(self) -> None:
        if self.band_high_hz <= self.band_low_hz:
            raise Invalid("band_high_hz", f"must be above band_low_hz "
                                           f"({self.band_low_hz}), got {self.band_high_hz}")
        if self.off_db > self.on_db:
            raise Invalid("off_db", f"must not exceed on_db ({self.on_db}), got "
                                     f"{self.off_db}")
        if self.max_cycle_s < 2 * self.min_cycle_s:
            raise Invalid("max_cycle_s", f"must be at least twice min_cycle_s "
                                          f"({self.min_cycle_s}), got {self.max_cycle_s}")


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
        # The background moves over seconds: its quantile is refreshed every 100 ms, not per
        # 10 ms frame (and on every frame of the first 100 ms).
        self.floor_every = max(1, round(0.1 * fps))
        self.pad = round(cfg.pad_s * fps)
        self.tail = round(cfg.tail_s * fps)
        self.merge_gap = round(cfg.merge_gap_s * fps)
        self.min_len = max(1, round(cfg.min_cycle_s * fps))
        self.max_len = max(2 * self.min_len, round(cfg.max_cycle_s * fps))
        self.max_active = max(self.min_len, self.max_len - self.pad)
        # Audio after a cycle's end before it is emitted: the smoothing look-ahead plus the
        # wait for the next onset (pad) or for quiet to last merge_gap; a forced cut can lie up
        # to half a maximal cycle back.
        self.latency_s = (self.half_smooth + max(self.pad, self.merge_gap - self.tail) + 1) / fps
        self.forced_cut_latency_s = (self.half_smooth + self.max_active // 2 + 1) / fps
        self._filter = StreamingSos(bandpass_sos(cfg.band_low_hz, cfg.band_high_hz, sample_rate))
        self._partial = np.zeros(0)  # filtered samples not yet filling a frame
        # Prefix sums of the raw envelope (dB per frame), sequential from the stream's start so
        # a frame's smoothed value does not depend on how the audio was chunked.
        self._csum = np.zeros(1)  # prefix sums S[j] for j = _csum_start … _n_frames
        self._csum_start = 0
        self._n_frames = 0  # raw frames seen
        self._n_smooth = 0  # smoothed frames decided
        self._deciding = 0  # the frame being decided: raw frames up to its look-ahead exist
        # Smoothed envelope back to what the noise floor and a forced cut may still need.
        self._keep = max(self.floor_frames, self.max_active + 2)
        self._hist = np.zeros(0)  # smoothed frames from _hist_start on
        self._hist_start = 0
        self._floor_value = 0.0
        self._active_start: int | None = None
        self._quiet_since: int | None = None  # frame where the envelope fell below off
        self._pending: tuple[int, int] | None = None  # breath sound waiting for its cycle end
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
        framed = filtered[:n * self.frame_len].reshape(n, self.frame_len)
        energy = (framed * framed).sum(axis=1) / self.frame_len  # np.mean's arithmetic
        # appending to the prefix sums one by one, in order: np.cumsum is sequential
        sums = np.cumsum(np.concatenate([self._csum[-1:], 10 * np.log10(energy + 1e-12)]))
        self._csum = np.concatenate([self._csum, sums[1:]])
        self._n_frames += n
        out: list[Cycle] = []
        # a frame is decided as soon as its smoothing look-ahead is in
        self._decide_frames(self._n_frames - self.half_smooth, out)
        self._trim_audio()
        return out

    def flush(self) -> list[Cycle]:
        """End of stream: decide the remaining frames and emit what is left."""
        out: list[Cycle] = []
        self._decide_frames(self._n_frames, out)  # the look-ahead is cut at the end
        self._deciding = self._n_frames
        if self._active_start is not None:
            end = self._quiet_since if self._quiet_since is not None else self._n_frames
            self._close(self._active_start, end)
        if self._pending is not None:
            self._emit(self._pending[0], self._pending[1] + self.tail, False, out)
            self._pending = None
        return out

    # -- envelope -------------------------------------------------------------------------
    def _envelope(self, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed envelope and noise floor of frames _n_smooth … stop - 1: a centred moving
        average (window cut at the stream's ends), and the floor_quantile of the last
        floor_frames smoothed values."""
        h, total = self.half_smooth, self._n_frames
        k = np.arange(self._n_smooth, stop)
        lo, hi = np.maximum(k - h, 0), np.minimum(k + h + 1, total)
        sums = self._csum[hi - self._csum_start] - self._csum[lo - self._csum_start]
        smoothed = sums / (hi - lo)
        hist = np.concatenate([self._hist, smoothed])
        every, size, q = self.floor_every, self.floor_frames, self.cfg.floor_quantile
        base = len(self._hist)
        # the floor is refreshed where the count of values it has seen, this one included,
        # is 1 more than a multiple of `every` (and on each of the first `every` frames)
        pushed = k + 1
        due = np.flatnonzero((pushed % every == 1) | (every == 1) | (pushed <= every))
        values, refreshed = [self._floor_value], np.zeros(len(k), dtype=np.intp)
        for j in due.tolist():
            seen = self._n_smooth + j + 1
            window = hist[base + j + 1 - min(seen, size):base + j + 1]
            kth = int(q * (len(window) - 1))
            values.append(float(np.partition(window, kth)[kth]))
            refreshed[j] = len(values) - 1
        floor = np.asarray(values)[np.maximum.accumulate(refreshed)]
        self._floor_value = values[-1]
        self._hist, self._hist_start = hist, stop - len(hist)
        return smoothed, floor

    # -- decisions ------------------------------------------------------------------------
    def _decide_frames(self, stop: int, out: list[Cycle]) -> None:
        if stop <= self._n_smooth:
            return
        first = self._n_smooth
        smoothed, floor = self._envelope(stop)
        cfg = self.cfg
        on = (smoothed > floor + cfg.on_db).tolist()
        loud = (smoothed >= floor + cfg.off_db).tolist()
        for j in range(stop - first):
            k = first + j
            self._deciding = k
            if self._active_start is None:
                if on[j]:
                    self._onset(k, out)
            else:
                if loud[j]:
                    self._quiet_since = None
                elif self._quiet_since is None:
                    self._quiet_since = k
                if self._quiet_since is not None and k - self._quiet_since >= self.merge_gap:
                    self._close(self._active_start, self._quiet_since)
                elif k - self._active_start >= self.max_active:
                    # Sound that does not stop (a cough fit, a rubbing lead): cut at the
                    # quietest point of the second half, so the cut stays near a real breath
                    # boundary.
                    cut = self._quietest(self._active_start + self.max_active // 2, k)
                    self._emit(self._active_start, cut, True, out)
                    self._active_start = cut
                    self._quiet_since = None
            if self._pending is not None:
                start, end = self._pending
                longest = max(start - self.pad, self._last_end) + self.max_len
                if k >= min(end + self.tail + self.pad, longest):
                    # No new breath within the tail (or the cycle is as long as it may be): it
                    # ends `tail` after its sound.
                    self._emit(start, end + self.tail, False, out)
                    self._pending = None
        self._n_smooth = stop
        self._hist = self._hist[-self._keep:]
        self._hist_start = stop - len(self._hist)
        drop = max(0, stop - self.half_smooth) - self._csum_start  # prefix sums no longer read
        if drop > 0:
            self._csum = self._csum[drop:]
            self._csum_start += drop

    def _onset(self, k: int, out: list[Cycle]) -> None:
        """A breath starts: it also ends the previous cycle (if its tail reaches this far)."""
        if self._pending is not None:
            start, end = self._pending
            self._emit(start, min(end + self.tail, k - self.pad), False, out)
            self._pending = None
        self._active_start = k
        self._quiet_since = None

    def _close(self, start: int, end: int) -> None:
        """The sound of a breath has ended; its cycle waits for the next onset or its tail."""
        self._active_start = None
        if end - start >= self.min_len:
            self._pending = (start, end)

    def _quietest(self, lo: int, hi: int) -> int:
        """The quietest smoothed frame in lo…hi (hi: the frame being decided, _n_smooth + j)."""
        first = max(self._hist_start, hi + 1 - (self.max_active + 2))
        window = self._hist[max(lo, first) - self._hist_start:hi - self._hist_start + 1]
        return max(lo, first) + int(np.argmin(window)) if len(window) else hi

    def _emit(self, start: int, end: int, forced: bool, out: list[Cycle]) -> None:
        start = max(start - self.pad, self._last_end, 0)
        end = min(end, start + self.max_len, self._deciding + self.half_smooth + 1,
                  self._n_frames)
        if end - start < self.min_len:
            return
        self._last_end = end
        s0, s1 = start * self.frame_len, end * self.frame_len
        audio = self._audio[s0 - self._audio_start:s1 - self._audio_start].copy()
        out.append(Cycle(s0, s0 + len(audio), audio, self.sample_rate, forced))

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
