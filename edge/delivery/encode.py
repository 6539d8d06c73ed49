"""Domain events of the analysis path → the typed message bodies the publisher sends.

This is where stream seconds become wall-clock timestamps (edge.clock.StreamClock) and a
classified cycle becomes what a station reads.
"""

from __future__ import annotations

from edge import clock as wall_clock
from edge.clock import StreamClock
from edge.delivery.wire import Alert, Cycle, ModelRef, Summary, iso_ms
from edge.pipeline.analysis import ClassifiedCycle
from edge.pipeline.tracker import AlertChanged, SessionEnded


def cycle_body(c: ClassifiedCycle, clock: StreamClock, model: ModelRef) -> Cycle:
    assert c.prediction is not None and c.session_id is not None and c.good is not None
    p = c.prediction
    end = clock.wall(c.end)
    return Cycle(session_id=c.session_id, start=iso_ms(clock.wall(c.start)), end=iso_ms(end),
                 duration_s=round(c.duration_s, 3), label=p.label, probs=p.probs,
                 confidence=round(p.confidence, 4), quality=c.quality, good=c.good,
                 forced_cut=c.cycle.forced_cut, model=model,
                 latency_ms=round(max(0.0, wall_clock.wall() - end) * 1000, 1))


def alert_body(a: AlertChanged, clock: StreamClock) -> Alert:
    return Alert(
        alert_id=a.alert_id, event=a.event, kind=a.kind, session_id=a.session_id,
        evidence=a.evidence,
        first_cycle=None if a.first_cycle is None else iso_ms(clock.wall(a.first_cycle)),
        last_cycle=None if a.last_cycle is None else iso_ms(clock.wall(a.last_cycle)),
        end_reason=a.end_reason)


def summary_body(s: SessionEnded, clock: StreamClock, model: ModelRef) -> Summary:
    return Summary(
        session_id=s.session_id, start=iso_ms(clock.wall(s.start)),
        end=iso_ms(clock.wall(s.end)), duration_s=round(s.end - s.start, 3), cycles=s.cycles,
        cycles_by_label=s.cycles_by_label, abnormal_burden=s.abnormal_burden,
        poor_quality_fraction=s.poor_quality_fraction, cycles_unjudged=s.cycles_unjudged,
        record_label=s.record_label,
        breathing_rate_per_min=s.breathing_rate_per_min, ended_by=s.ended_by, model=model)
