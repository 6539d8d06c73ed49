"""The one analysis path: source blocks → features → classification → tracker, as one object.

The daemon, `lungedge classify`, the toolchain's streaming evaluation and the benchmarks all
drive this, so a recording gives the same cycles, labels, alerts and sessions whichever of them
reads it. It runs on the stream's own timeline (seconds of audio, lost audio included): the
tracker's time rules (no audio, a session gone quiet) tick after every block with the block's
end, and a caller whose source has gone silent (a live device that delivers nothing) lets time
pass with `idle()`. `clock` maps stream seconds to wall-clock time for whoever publishes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge.clock import StreamClock
from edge.dsp.frontend import FrontendParams
from edge.dsp.quality import signal_quality
from edge.dsp.segmenter import Cycle, SegmenterConfig
from edge.pipeline.model import Classifier, Prediction
from edge.pipeline.signal_judgement import Judgement, SignalJudge
from edge.pipeline.signal_path import CycleFeatures, PathStats, SignalPath
from edge.pipeline.tracker import AlertChanged, CycleResult, SessionEnded, Tracker, TrackerConfig
from edge.sources.base import AudioBlock

SILENCE_RMS = 10 ** (-70 / 20)  # a block this quiet counts as no audio


@dataclass(frozen=True, kw_only=True)
class ClassifiedCycle:
    index: int  # since the stream started
    start: float  # stream seconds
    end: float
    cycle: Cycle  # its samples at the model rate
    features: np.ndarray
    quality: float
    judgement: Judgement | None  # whether it counts as evidence, and why not; None: no model
    prediction: Prediction | None  # None: segmentation only, no model
    inference_ms: float
    session_id: str | None

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def good(self) -> bool | None:
        """Whether it counts as evidence (None: segmentation only)."""
        return self.judgement.good if self.judgement else None


Event = ClassifiedCycle | AlertChanged | SessionEnded


class Analysis:
    """One stream's analysis, from audio blocks to cycle results, alerts and sessions: the
    only place those are made, so every caller (daemon, classify, evaluation) agrees."""

    def __init__(self, source_rate: int, runner: Classifier | None, tracker: TrackerConfig,
                 frontend: FrontendParams | None = None) -> None:
        """What decides the cycles and their labels is the model's (its manifest: frontend,
        segmenter, thresholds, quality cut); `tracker` holds the deployment's alert and session
        rules. With no runner, cycles are only segmented, with today's segmenter (and
        `frontend` says which features)."""
        m = runner.manifest if runner else None
        params = m.frontend if m else frontend
        if params is None:
            raise ValueError("segmentation only needs the frontend parameters")
        self.runner = runner
        self.path = SignalPath(source_rate, params, m.segmenter if m else SegmenterConfig())
        self.tracker = Tracker(tracker, m.labels, record_fraction=m.record_fraction,
                               poor_record_fraction=m.poor_record_fraction,
                               findings=m.findings) if m else None
        self.judge = SignalJudge(params.sample_rate, m.poor_quality_below,
                                 m.min_upper_edge_hz) if m else None
        self.clock = StreamClock()
        self.position = 0.0  # stream seconds heard so far
        self.last_audio = 0.0  # stream second at which the latest non-silent block ended
        self._index = 0
        self._restarts = 0

    @property
    def stats(self) -> PathStats:
        return self.path.stats

    def swap(self, runner: Classifier) -> str | None:
        """The next cycle is classified by `runner`, with its decisions, keeping the stream,
        its open alerts and its session: possible when the new model hears the same cycles
        the same way (frontend, segmenter, labels, findings). Else the reason it is not."""
        old, new = self.runner.manifest if self.runner else None, runner.manifest
        if old is None or self.tracker is None or self.judge is None:
            return "this analysis only segments"
        differs = [what for what, a, b in (
            ("frontend", old.frontend, new.frontend), ("segmenter", old.segmenter, new.segmenter),
            ("labels", old.labels, new.labels), ("findings", old.findings, new.findings))
            if a != b]
        if differs:
            return f"the new model's {', '.join(differs)} differ from the running one's"
        self.runner = runner
        self.tracker.record_fraction = new.record_fraction
        self.tracker.poor_record_fraction = new.poor_record_fraction
        self.judge.poor_quality_below = new.poor_quality_below
        self.judge.min_upper_edge_hz = new.min_upper_edge_hz
        return None

    def process(self, block: AudioBlock) -> list[Event]:
        self.clock.anchor(block.start_s, block.wall_time)
        if self.judge is not None:
            self.judge.hear(block.samples, block.sample_rate)
        events: list[Event] = []
        for c in self.path.process(block):
            events += self._classify(c)
        end = block.start_s + block.duration_s
        if len(block.samples) and float(np.sqrt(np.mean(block.samples ** 2))) > SILENCE_RMS:
            self.last_audio = end
        self.position = end
        return events + self._tick(end)

    def idle(self, seconds: float) -> list[Event]:
        """No block for `seconds` (a live source that went quiet): the time rules still run."""
        return self._tick(self.position + seconds)

    def finish(self, reason: Literal["shutdown", "end_of_stream"] = "end_of_stream"
               ) -> list[Event]:
        """The stream ends: the cycles in flight, then every open alert and the session end."""
        events: list[Event] = []
        for c in self.path.flush():
            events += self._classify(c)
        if self.tracker is not None:
            events += self.tracker.close(reason)
        return events

    def _tick(self, now: float) -> list[Event]:
        if self.tracker is None:
            return []
        return list(self.tracker.on_tick(now, self.last_audio))

    def _classify(self, c: CycleFeatures) -> list[Event]:
        quality = signal_quality(c.cycle.samples, c.cycle.sample_rate)
        if self.judge is not None and self.path.stats.restarts != self._restarts:
            self._restarts = self.path.stats.restarts  # a long gap: perhaps another stethoscope
            self.judge.reset()
        judgement = self.judge(c.cycle.samples, quality) if self.judge else None
        prediction, ms = None, 0.0
        if self.runner is not None:
            t = time.perf_counter()
            prediction = self.runner.predict(c.features)
            ms = (time.perf_counter() - t) * 1000
        before: list[Event] = []
        after: list[Event] = []
        if self.tracker is not None and prediction is not None and judgement is not None:
            b, a = self.tracker.on_cycle(CycleResult(
                start=c.start_s, end=c.end_s, label=prediction.label,
                confidence=prediction.confidence, quality=quality, judgement=judgement))
            before, after = list(b), list(a)
        cycle = ClassifiedCycle(index=self._index, start=c.start_s, end=c.end_s, cycle=c.cycle,
                                features=c.features, quality=quality, judgement=judgement,
                                prediction=prediction, inference_ms=ms,
                                session_id=self.tracker.session_id if self.tracker else None)
        self._index += 1
        return [*before, cycle, *after]

