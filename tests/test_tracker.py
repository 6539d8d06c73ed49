"""The tracker's alert and session rules: what decides a label is the model's; alerts with
debounce and hysteresis; sessions and their summary, valid on the wire."""

from __future__ import annotations

import jsonschema
import pytest

from edge.clock import StreamClock
from edge.delivery.encode import alert_body, summary_body
from edge.delivery.publisher import envelope
from edge.delivery.wire import ModelRef, body_dict, schema
from edge.dsp.quality import signal_quality
from edge.pipeline.model import POOR_QUALITY_BELOW
from edge.pipeline.signal_judgement import Judgement, Unjudged
from edge.pipeline.tracker import (
    AlertChanged,
    CycleResult,
    PoorSignalEvidence,
    SessionEnded,
    Tracker,
    TrackerConfig,
    TrackerEvent,
    record_label,
)
from edge.service.config import parse_config

LABELS = ("normal", "crackle", "wheeze", "both")


def ENVELOPE(seq: int, epoch: str) -> dict[str, object]:
    return envelope("bed-1", seq, epoch)


def cycle(t: float, label: str, conf: float = 0.9, quality: float = 1.0,
          why: Unjudged | None = None) -> CycleResult:
    """A cycle judged as the default cut (0.3) judges it alone, or not judged for `why`."""
    good = quality >= POOR_QUALITY_BELOW and why is None
    why = why or (None if good else "poor_quality")
    return CycleResult(start=t, end=t + 1.5, label=label, confidence=conf, quality=quality,
                       judgement=Judgement(good, why, None if good else f"{why} here"))


def alerts(events: list[TrackerEvent]) -> list[AlertChanged]:
    return [e for e in events if isinstance(e, AlertChanged)]


def summaries(events: list[TrackerEvent]) -> list[SessionEnded]:
    return [e for e in events if isinstance(e, SessionEnded)]


def validate(events: list[TrackerEvent]) -> None:
    """As published: stream seconds on a wall clock, then the shipped JSON Schemas."""
    clock = StreamClock()
    clock.anchor(0.0, 1.79e9)
    for e in events:
        kind, body = (("alert", alert_body(e, clock)) if isinstance(e, AlertChanged)
                      else ("summary", summary_body(e, clock, ModelRef("m", "1"))))
        jsonschema.validate({**ENVELOPE(0, "0123456789abcdef"), **body_dict(body)}, schema(kind))


def test_wheeze_alert_lifecycle_with_debounce_and_hysteresis() -> None:
    cfg = parse_config("tracker:\n  window_cycles: 6\n  wheeze:\n    on_fraction: 0.5\n"
                       "    off_fraction: 0.2\n    min_cycles: 3\n").tracker
    tr = Tracker(cfg, LABELS)
    labels = ["normal", "wheeze", "wheeze", "normal", "wheeze", "wheeze", "both", "normal",
              "normal", "normal", "normal", "normal", "normal"]
    events = []
    for i, label in enumerate(labels):
        before, after = tr.on_cycle(cycle(100 + 2 * i, label))
        validate(before + after)
        events += [(i, a.event, a.evidence.cycles) for a in alerts(after)]  # type: ignore
    # no alert at 2 of 3 (debounce: min 3 cycles); raised at the 3rd wheeze
    assert events[0] == (4, "new", 3)
    assert [e[1] for e in events].count("new") == 1
    assert events[-1][1] == "end"
    end_at = events[-1][0]
    assert sum(lab in ("wheeze", "both") for lab in labels[end_at - 5:end_at + 1]) <= 1


def test_every_cycle_the_model_calls_adventitious_counts_but_poor_ones_do_not() -> None:
    """The model's decision (with its manifest's threshold) is the only one: a crackle called
    at confidence 0.3 counts (a second filter, tracker.min_confidence, kept 4 of the shipped
    samples' 20 abnormal cycles from ever counting); a cycle of poor quality does not count as
    a finding, and raises poor_signal."""
    tr = Tracker(TrackerConfig(), LABELS)
    events: list[TrackerEvent] = []
    for i in range(8):
        events += tr.on_cycle(cycle(10 * i, "crackle", conf=0.3))[1]
        events += tr.on_cycle(cycle(10 * i + 5, "wheeze", quality=0.1))[1]
    kinds = {a.kind for a in alerts(events)}
    assert kinds == {"crackle", "poor_signal"}  # the poor cycles raise poor_signal, not wheeze


def test_an_older_config_with_the_models_decisions_still_loads(
        caplog: pytest.LogCaptureFixture) -> None:
    """Settings that decided what the model hears or what counts moved to the manifest: a
    config that still holds them loads, and says, line by line, that they are ignored."""
    old = ("segmenter:\n  on_db: 6\n  tail_s: 2\ntracker:\n  min_confidence: 0.5\n"
           "  poor_quality_below: 0.4\n  window_cycles: 6\n")
    with caplog.at_level("WARNING"):
        cfg = parse_config(old, source="old.yaml")
    assert cfg.tracker == TrackerConfig(window_cycles=6)
    assert "old.yaml:1: segmenter: ignored: the segmenter's settings decide which cycles " \
        "the model hears" in caplog.text
    assert "old.yaml:5: tracker.min_confidence: ignored: every cycle the model calls " \
        "adventitious counts" in caplog.text
    assert "old.yaml:6: tracker.poor_quality_below: ignored: which cycles are good enough " \
        "to count travels with the model" in caplog.text


def test_cycles_not_judged_are_poor_signal_with_their_reason_and_counted() -> None:
    """Cycles the signal judgement could not judge are never evidence: they raise poor_signal
    with the latest one's reason in words, the session counts them by why, and a session of
    mostly such cycles is "poor quality", never "normal"."""
    tr = Tracker(TrackerConfig(), LABELS)
    events: list[TrackerEvent] = []
    for i in range(8):
        before, after = tr.on_cycle(cycle(2 * i, "normal", why="band_limited"))
        events += before + after
    new, *updates = alerts(events)
    assert (new.kind, new.event) == ("poor_signal", "new")
    assert {(a.kind, a.event) for a in updates} <= {("poor_signal", "update")}
    assert isinstance(new.evidence, PoorSignalEvidence)
    assert new.evidence.reason == "band_limited here" == tr.poor_signal
    validate(events)
    (summary,) = summaries(tr.close("end_of_stream"))
    assert summary.cycles_unjudged == {"band_limited": 8}
    assert summary.record_label == "poor quality" and summary.abnormal_burden == 0.0


def test_no_audio_alert_and_sessions_end_on_silence_with_a_summary() -> None:
    cfg = parse_config("tracker:\n  no_audio_s: 5\n  session_silence_s: 20\n").tracker
    tr = Tracker(cfg, LABELS)
    for i in range(10):
        tr.on_cycle(cycle(1000 + 2 * i, "normal" if i % 3 else "crackle"))
    new = tr.on_tick(now=1030, last_audio=1020)  # 10 s without audio; the session waits
    assert [(a.kind, a.event) for a in alerts(new)] == [("no_audio", "new")]
    assert not summaries(new)
    ended = tr.on_tick(now=1045, last_audio=1020)  # 25.5 s after the last cycle ended
    (summary,) = summaries(ended)
    assert summary.cycles == 10 and summary.ended_by == "silence"
    assert summary.cycles_by_label == {"normal": 6, "crackle": 4, "wheeze": 0, "both": 0}
    assert summary.record_label == "DAS" and summary.breathing_rate_per_min == 30.8
    validate(new + ended)
    back = [e for t in range(1046, 1052) for e in tr.on_tick(now=t, last_audio=t)]
    assert [(a.kind, a.event) for a in alerts(back)] == [("no_audio", "end")]


def test_a_gain_hovering_at_silence_is_one_no_audio_alarm() -> None:
    """Audio that comes and goes around the silence threshold (a second now and then) opened
    and closed no_audio four times while a crackle alert stayed open: now it ends only after
    audio_back_s of audio without a break."""
    tr = Tracker(TrackerConfig(), LABELS)
    events: list[TrackerEvent] = []
    heard = 0.0
    for step in range(600):  # 60 s in 100 ms blocks: mostly silent, a blip every 12 s
        now = step / 10
        if step % 120 in (0, 1, 2):
            heard = now
        events += tr.on_tick(now=now, last_audio=heard)
    assert [(a.kind, a.event) for a in alerts(events)] == [("no_audio", "new")]
    for step in range(600, 640):  # 4 s of audio without a break: it ends
        events += tr.on_tick(now=step / 10, last_audio=step / 10)
    assert [(a.kind, a.event) for a in alerts(events)][-1] == ("no_audio", "end")


def test_sound_without_breathing_is_poor_signal_until_breathing_returns() -> None:
    """Hiss, rubbing or a stethoscope off the chest: audio all along, no cycle found in it.
    After no_breathing_s that is poor_signal (silence stays no_audio's), and the first cycle
    found ends it."""
    cfg = parse_config("tracker:\n  no_breathing_s: 15\n").tracker
    tr = Tracker(cfg, LABELS)
    events: list[TrackerEvent] = []
    for t in range(0, 30):
        events += tr.on_tick(now=float(t), last_audio=float(t))  # sound every second
    (new,) = alerts(events)
    assert (new.kind, new.event) == ("poor_signal", "new") and tr.active("poor_signal")
    assert body_dict(new.evidence) == {"no_cycle_s": 15.0}
    assert new.first_cycle is None
    validate(events)
    before, after = tr.on_cycle(cycle(30, "normal"))
    (end,) = alerts(before)
    assert (end.kind, end.event, end.alert_id) == ("poor_signal", "end", new.alert_id)
    assert body_dict(end.evidence) == {"no_cycle_s": 0.0} and not tr.active("poor_signal")
    validate(before + after)
    # silence is not this: no_audio, and no poor_signal however long it lasts
    quiet = Tracker(cfg, LABELS)
    events = [e for t in range(60) for e in quiet.on_tick(now=float(t), last_audio=0.0)]
    assert [a.kind for a in alerts(events)] == ["no_audio"]


def test_labels_and_findings_come_from_the_model() -> None:
    """A model with other labels: the summary counts its labels, and its manifest's findings
    say which of them raise a crackle alert."""
    labels = ("normal", "fine crackle", "coarse crackle")
    tr = Tracker(TrackerConfig(), labels,
                 findings={"crackle": ("fine crackle", "coarse crackle")})
    events: list[TrackerEvent] = []
    for i in range(6):
        before, after = tr.on_cycle(cycle(2 * i, labels[1 + i % 2]))
        events += before + after
    assert next((a.kind, a.event) for a in alerts(events)) == ("crackle", "new")
    (summary,) = summaries(tr.close("end_of_stream"))
    assert summary.cycles_by_label == {"normal": 0, "fine crackle": 3, "coarse crackle": 3}
    assert summary.record_label == "DAS" and summary.ended_by == "end_of_stream"


def test_quality_measure_separates_breathing_from_flat_noise() -> None:
    import numpy as np

    from tests.conftest import breathing

    rng = np.random.default_rng(0)
    assert signal_quality(breathing(4000, 3, [(0.5, 2.0)]), 4000) > 0.8
    assert signal_quality((rng.standard_normal(12000) * 0.05).astype(np.float32), 4000) < 0.2
    clipped = np.clip(breathing(4000, 3, [(0.5, 2.0)]) * 100, -1, 1)
    assert signal_quality(clipped, 4000) < signal_quality(breathing(4000, 3, [(0.5, 2.0)]),
                                                          4000)


@pytest.mark.parametrize(("counts", "poor", "expected"), [
    ({}, 0, "poor quality"),
    ({"normal": 4}, 6, "poor quality"),  # most cycles poor
    ({"normal": 18, "wheeze": 2}, 10, "normal"),  # 10% of the good cycles: under 20%
    ({"normal": 15, "wheeze": 3, "crackle": 2}, 0, "CAS & DAS"),  # 25%: each kind ≥ 10%
    ({"normal": 16, "wheeze": 3, "crackle": 1}, 0, "CAS"),  # neither kind alone reaches 20%
    ({"normal": 16, "both": 4}, 0, "CAS & DAS"),
    ({"normal": 15, "crackle": 5}, 2, "DAS"),  # the poor cycles do not count
])


def test_record_label_counts_good_cycles_of_any_adventitious_kind(
        counts: dict[str, int], poor: int, expected: str) -> None:
    labels = [lab for lab, n in counts.items() for _ in range(n)] + ["wheeze"] * poor
    good = [True] * (len(labels) - poor) + [False] * poor
    assert record_label(labels, good) == expected


def test_one_alert_for_as_long_as_the_condition_lasts() -> None:
    """A 25-minute wheeze with the default rules (sessions cut at 10 minutes) is one alert: a
    session cut at its longest is a report, not an end. Its end says why: the evidence
    fell ("cleared"), or the auscultation ended (no breathing for session_silence_s)."""
    tr = Tracker(TrackerConfig(), LABELS)
    events: list[TrackerEvent] = []
    t = 0.0
    while t < 25 * 60:  # a breath every 4 s, three in four wheezing
        before, after = tr.on_cycle(cycle(t, "wheeze" if int(t / 4) % 4 else "normal"))
        events += before + after
        t += 4
    wheeze = [a for a in alerts(events) if a.kind == "wheeze"]
    assert [a.event for a in wheeze].count("new") == 1
    assert not any(a.event == "end" for a in wheeze)
    assert len(summaries(events)) == 2  # two sessions reported at 10 and 20 minutes
    validate(events)
    # the patient breathes normally again: the same alert ends, cleared
    for _ in range(8):
        before, after = tr.on_cycle(cycle(t, "normal"))
        events += before + after
        t += 4
    (end,) = [a for a in alerts(events) if a.kind == "wheeze" and a.event == "end"]
    assert end.alert_id == wheeze[0].alert_id and end.end_reason == "cleared"
    # a crackle alert open when the stethoscope comes off ends with the auscultation
    for _ in range(6):
        tr.on_cycle(cycle(t, "crackle"))
        t += 4
    assert tr.active("crackle")
    gone = tr.on_tick(now=t + 60, last_audio=t + 60)
    (crackle_end,) = [a for a in alerts(gone) if a.kind == "crackle"]
    assert crackle_end.event == "end" and crackle_end.end_reason == "auscultation_ended"
    validate(gone)
