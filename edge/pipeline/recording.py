"""A recording (or a live source) → its report: every cycle with its label and judgement, every
session's summary, the alerts, and optionally a plot; through the one analysis path
(`edge.pipeline.analysis.Analysis`), so what `lungedge classify`, the station's "analyse a
recording", the demo and the toolchain report is what a device would publish for the same
audio. Every session of a recording is summarised (a pause longer than
`tracker.session_silence_s`, or a recording longer than `session_max_s`, makes several), and
time rules such as no_audio run on the recording's own timeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge.dsp.frontend import FrontendParams
from edge.dsp.resample import StreamingResampler
from edge.pipeline.analysis import Analysis, ClassifiedCycle, Event
from edge.pipeline.breathing import breathing_rate
from edge.pipeline.model import Classifier
from edge.pipeline.tracker import AlertChanged, SessionEnded, TrackerConfig
from edge.sources.base import AudioBlock, AudioSource, SourceError

# The report's version (classify --json): 2: every session's summary, alerts with their times.
# 3: each cycle says whether it could be judged and why not; a session counts the cycles it
# could not judge, by why. 4: the summary's breathing rate is the device's
# (`breathing_rate_per_min`, edge.pipeline.breathing), not cycles over the recording's length.
JSON_SCHEMA_VERSION = 4
PLOT_RATE = 8000  # Hz: what a plot keeps of the audio (the model hears up to 2 kHz)


def analyse_recording(label: str, source: AudioSource, runner: Classifier | None,
                      tracker: TrackerConfig, *, seconds: float | None = None,
                      plot: Path | None = None,
                      on_cycle: Callable[[dict[str, Any]], None] | None = None
                      ) -> dict[str, Any]:
    """One recording or live source through the analysis path: its report (each cycle,
    every session's summary, the alerts), handing each cycle's row to `on_cycle` as it is
    found (a live source shows them as they happen); stops at the source's end, after
    `seconds` of audio, or at Ctrl-C. `tracker`: the alert and session rules (a device's,
    or their defaults)."""
    analysis = Analysis(source.sample_rate, runner, tracker,
                        None if runner else FrontendParams())
    kept: list[np.ndarray] = []
    audio_s = 0.0
    # what the plot shows is kept at PLOT_RATE (the model's band and more), not the source's
    # rate: an hour at 48 kHz would be 690 MB, at 8 kHz 115 MB
    plotted = StreamingResampler(source.sample_rate, min(PLOT_RATE, source.sample_rate)) \
        if plot else None

    def blocks() -> Iterator[AudioBlock]:
        nonlocal audio_s
        for block in source.blocks():
            audio_s = block.start_s + block.duration_s
            if plotted is not None:
                kept.append(plotted.process(block.samples))
            yield block
            if seconds is not None and audio_s >= seconds:
                return

    rows: list[dict[str, Any]] = []
    sessions: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []

    def take(events: list[Event]) -> None:
        for e in events:
            if isinstance(e, ClassifiedCycle):
                rows.append(cycle_row(e))
                if on_cycle is not None:
                    on_cycle(rows[-1])
            elif isinstance(e, AlertChanged):
                alerts.append({"event": e.event, "kind": e.kind, "session_id": e.session_id,
                               "first_cycle_s": e.first_cycle, "last_cycle_s": e.last_cycle,
                               "evidence": vars(e.evidence)})
            elif isinstance(e, SessionEnded):
                sessions.append(session_summary(e))

    try:
        for block in blocks():
            take(analysis.process(block))
    except KeyboardInterrupt:
        pass
    finally:
        source.close()
    take(analysis.finish())
    if audio_s == 0:
        raise SourceError(f"{label}: no audio arrived (for a pipe: is the recorder writing raw "
                          "s16le to it?)")
    durations = [r["duration_s"] for r in rows]
    report: dict[str, Any] = {
        "file": label, "sample_rate": source.sample_rate, "duration_s": round(audio_s, 3),
        "cycles": rows,
        "summary": {
            "cycles": len(rows),
            "mean_cycle_s": round(sum(durations) / len(durations), 3) if durations else None,
            "breathing_rate_per_min": breathing_rate(
                ((r["start_s"], r["end_s"]) for r in rows), tracker.session_silence_s),
            "covered_fraction": round(sum(durations) / audio_s, 3),
        },
    }
    if runner is not None:
        report |= {"sessions": sessions, "alerts": alerts}
    if plot:
        from edge.pipeline.plot import plot_cycles

        assert plotted is not None
        plot_cycles(np.concatenate([*kept, plotted.flush()]), plotted.rate_out, rows, plot,
                    title=label, labels=runner.manifest.labels if runner else ())
    return report


def cycle_row(c: ClassifiedCycle) -> dict[str, Any]:
    row: dict[str, Any] = {"index": c.index, "start_s": round(c.start, 3),
                           "end_s": round(c.end, 3), "duration_s": round(c.duration_s, 3),
                           "features_shape": list(c.features.shape),
                           "forced_cut": c.cycle.forced_cut, "quality": c.quality}
    if c.prediction is not None:
        row |= {"label": c.prediction.label, "probs": c.prediction.probs,
                "confidence": round(c.prediction.confidence, 4), "session_id": c.session_id}
    if c.judgement is not None:
        row |= {"good": c.judgement.good, "unjudged": c.judgement.why,
                "unjudged_reason": c.judgement.reason}
    return row


def session_summary(s: SessionEnded) -> dict[str, Any]:
    return {"session_id": s.session_id, "start_s": round(s.start, 3), "end_s": round(s.end, 3),
            "cycles": s.cycles, "cycles_by_label": s.cycles_by_label,
            "abnormal_burden": s.abnormal_burden,
            "poor_quality_fraction": s.poor_quality_fraction,
            "cycles_unjudged": s.cycles_unjudged, "record_label": s.record_label,
            "breathing_rate_per_min": s.breathing_rate_per_min, "ended_by": s.ended_by}
