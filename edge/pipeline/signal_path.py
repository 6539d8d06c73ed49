"""The signal path, source blocks → resample → segment → features (the frontend), as one object.

The analysis path (edge.pipeline.analysis) drives it. Lost audio (a block's `gap_s`) is filled with
silence when it is short, keeping every later timestamp true; a gap longer than a cycle can last
restarts the segmenter on a new time origin instead of pushing minutes of zeros through it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from edge.dsp.frontend import BandNormaliser, Frontend, FrontendParams
from edge.dsp.resample import StreamingResampler
from edge.dsp.segmenter import Cycle, CycleSegmenter, SegmenterConfig
from edge.sources.base import AudioBlock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CycleFeatures:
    """One breathing cycle, placed on the source's timeline, with its features."""

    start_s: float  # seconds on the source's audio timeline
    end_s: float
    features: np.ndarray  # (n_frames, n_features) float32
    cycle: Cycle  # the samples at the model rate

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(kw_only=True)
class PathStats:
    audio_s: float = 0.0
    cycles: int = 0
    forced_cuts: int = 0
    gaps: int = 0
    gap_s: float = 0.0
    restarts: int = 0
    gap_reasons: dict[str, int] = field(default_factory=dict)


class SignalPath:
    """The audio half of the analysis, kept apart from the model so the trainer and the
    evaluation cut and featurise cycles exactly as the device does."""

    def __init__(self, source_rate: int, frontend: FrontendParams,
                 segmenter: SegmenterConfig) -> None:
        self.source_rate = source_rate
        self.model_rate = frontend.sample_rate
        self.segmenter_cfg = segmenter
        self.frontend = Frontend(frontend)
        self.normaliser = BandNormaliser(frontend)
        self.stats = PathStats()
        self._origin_s = 0.0  # source time of the current segmenter's sample 0
        self._start_chain()

    def _start_chain(self) -> None:
        self.resampler = StreamingResampler(self.source_rate, self.model_rate)
        self.segmenter = CycleSegmenter(self.segmenter_cfg, self.model_rate)
        self.normaliser.reset()  # after a long gap the chest (or the patient) may be another

    @property
    def latency_s(self) -> float:
        """Audio needed after a cycle's end before it is emitted (resampler + segmenter)."""
        return self.resampler.latency_s + self.segmenter.latency_s

    def process(self, block: AudioBlock) -> list[CycleFeatures]:
        if block.sample_rate != self.source_rate:
            raise ValueError(f"block at {block.sample_rate} Hz fed to a path built for "
                             f"{self.source_rate} Hz")
        out: list[CycleFeatures] = []
        if block.gap_s > 0:
            out += self._gap(block)
        self.stats.audio_s += block.duration_s
        out += self._features(self.segmenter.process(self.resampler.process(block.samples)))
        return out

    def flush(self) -> list[CycleFeatures]:
        cycles = self.segmenter.process(self.resampler.flush()) + self.segmenter.flush()
        return self._features(cycles)

    def _gap(self, block: AudioBlock) -> list[CycleFeatures]:
        s = self.stats
        s.gaps += 1
        s.gap_s += block.gap_s
        reason = block.gap_reason or "unspecified"
        s.gap_reasons[reason] = s.gap_reasons.get(reason, 0) + 1
        log.warning("%.3f s of audio lost before %.3f s (%s)", block.gap_s, block.start_s,
                    reason)
        if block.gap_s <= self.segmenter_cfg.max_cycle_s:
            zeros = np.zeros(round(block.gap_s * self.source_rate), dtype=np.float32)
            return self._features(self.segmenter.process(self.resampler.process(zeros)))
        out = self.flush()
        s.restarts += 1
        self._start_chain()
        self._origin_s = block.start_s
        return out

    def _features(self, cycles: list[Cycle]) -> list[CycleFeatures]:
        out = []
        for c in cycles:
            out.append(CycleFeatures(self._origin_s + c.start_s, self._origin_s + c.end_s,
                                     self.normaliser(self.frontend(c.samples)), c))
            self.stats.cycles += 1
            self.stats.forced_cuts += c.forced_cut
        return out


def run_signal_path(blocks: Iterable[AudioBlock], source_rate: int, frontend: FrontendParams,
                    segmenter: SegmenterConfig) -> Iterator[CycleFeatures]:
    path = SignalPath(source_rate, frontend, segmenter)
    for block in blocks:
        yield from path.process(block)
    yield from path.flush()
