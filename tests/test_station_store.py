"""The station's storage on SQLite and PostgreSQL: migrations, ingest of real device messages,
deduplication, gaps, the alarm lifecycle with acknowledgements, and refusals."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy", reason="the station extra: pip install 'lungedge[station]'")

from edge.delivery.wire import body_dict
from station.store import Refusal, Store
from station.validate import Message, Refused, parse
from tests.conftest import TEST_EPOCH, status_fields
from tests.test_daemon_wiring import SAMPLES, run_daemon

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def device_messages(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, dict]]:
    """What the real daemon publishes for the crackle sample (shipped model)."""
    tmp = tmp_path_factory.mktemp("daemon")
    return run_daemon(tmp, SAMPLES / "crackle_65121853_1.5_0_p4_4225.wav").messages


def as_messages(raw: list[tuple[str, dict]], device: str = "bed-1") -> list[Message]:
    out = []
    for kind, body in raw:
        body = copy.deepcopy(body) | {"device_id": device}
        out.append(parse(f"lungedge/{device}/{kind}", json.dumps(body).encode(), "lungedge"))
    return out


def test_migrations_build_exactly_the_declared_schema(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from station.schema import metadata

    store = Store(database_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    Store(database_url)  # a second start finds it current and changes nothing


def test_real_messages_stored_once_with_their_numbers(database_url: str,
                                                      device_messages: list) -> None:
    store = Store(database_url)
    messages = as_messages(device_messages)
    now = time.time()
    assert store.intake.ingest(messages, now=now) == len(messages)
    assert store.intake.ingest(messages, now=now) == 0  # redelivered after a restart: nothing twice
    (tile,) = store.views.overview(now)
    n_cycles = sum(k == "cycle" for k, _ in device_messages)
    assert store.views.counts()["messages"] == len(messages)
    device = store.views.device("bed-1", now + 60)
    assert device is not None and len(device.timeline) == n_cycles
    assert len(device.sessions) == 1 and device.sessions[0].cycles == n_cycles
    # the alert ended with the recording, before anyone saw it: still on the ward, as ended
    assert [(a.state, a.attention) for a in tile.clinical] == [("ended", True)]
    assert tile.burden is not None
    history = device.alerts
    assert {a.kind for a in history} >= {"crackle"} and all(a.state == "ended"
                                                                for a in history)


def test_a_gap_in_seq_is_recorded_and_raises_a_technical_alarm(database_url: str,
                                                               device_messages: list) -> None:
    store = Store(database_url)
    messages = [m for m in as_messages(device_messages)
                if not (m.kind == "cycle" and m.seq in (3, 4))]
    now = time.time()
    store.intake.ingest(messages[::-1], now=now)  # in any order: a gap is what never arrives
    store.alarms.sweep(now + 10, offline_after_s=1e9, spool_backlog=10**6)
    assert store.views.overview(now + 10)[0].technical == ()  # not yet settled
    store.alarms.sweep(now + 60, offline_after_s=1e9, spool_backlog=10**6)
    store.alarms.sweep(now + 65, offline_after_s=1e9, spool_backlog=10**6)  # recorded once
    (tile,) = store.views.overview(now + 65)
    assert tile.gaps_last_hour == 1
    assert [a.kind for a in tile.technical] == ["seq_gap"]
    assert tile.technical[0].evidence == {"kind": "cycle", "first_missing": 3,
                                                "last_missing": 4}


def alert_message(device: str, seq: int, event: str, alert_id: str = "a1",
                  kind: str = "wheeze", cycles: int = 4) -> Message:
    from edge.delivery.publisher import envelope

    body: dict[str, Any] = envelope(device, seq, TEST_EPOCH) | {
        "alert_id": alert_id, "event": event, "kind": kind, "session_id": "s1",
        "evidence": {"cycles": cycles, "window_cycles": 8, "fraction": cycles / 8,
                     "total_cycles": 3 + seq},
        "first_cycle": "2026-12-03T10:00:00.000Z", "last_cycle": "2026-12-03T10:00:09.000Z",
        "end_reason": "cleared" if event == "end" else None}
    return parse(f"lungedge/{device}/alert", json.dumps(body).encode(), "lungedge")


def test_an_acknowledgement_holds_until_the_alert_escalates(database_url: str) -> None:
    """Acknowledged, an alert stays acknowledged through more of the same evidence (a cycle
    more or less: no "changed since seen", no tone); it needs someone again only when it
    escalates (its share of cycles up by alarms.ESCALATION_STEP since it last did), and its
    history keeps one line per stretch of updates, with their count and the latest."""
    store = Store(database_url)
    store.intake.ingest([alert_message("bed-2", 0, "new", cycles=3)])
    (inbox,) = store.views.inbox()
    assert inbox.attention and inbox.category == "clinical" and inbox.priority == 1
    assert store.actions.acknowledge("a1", "nurse.ana", "listened again")
    for seq, cycles in enumerate((4, 3, 4, 4), 1):  # more of the same
        store.intake.ingest([alert_message("bed-2", seq, "update", cycles=cycles)])
        (inbox,) = store.views.inbox()
        assert not inbox.attention and inbox.acked_by == "nurse.ana"
    store.intake.ingest([alert_message("bed-2", 5, "update", cycles=5)])  # 3 → 5 of 8: escalated
    (inbox,) = store.views.inbox()
    assert inbox.attention and inbox.ack_note == "listened again"
    assert store.actions.acknowledge("a1", "nurse.ana", "")
    store.intake.ingest([alert_message("bed-2", 6, "update", cycles=6)])  # 5 → 6: not again
    assert not store.views.inbox()[0].attention
    store.intake.ingest([alert_message("bed-2", 7, "end")])
    ended = store.views.alert("a1")
    assert ended is not None and ended.state == "ended" and not ended.attention
    assert store.actions.resolve("a1", "dr.bo", "reviewed")
    assert store.views.inbox() == []
    history = store.views.alert("a1").history  # type: ignore[union-attr]
    assert [h.event for h in history] == ["new", "ack", "update", "escalate", "ack", "update",
                                         "end", "resolve"]
    assert history[2].detail is not None and history[2].detail["updates"] == 4
    assert history[2].detail["cycles"] == 4  # the latest of the stretch
    assert history[6].detail is not None and history[6].detail["end_reason"] == "cleared"
    assert not store.actions.acknowledge("no-such-alert", "x", "")


def test_a_device_cannot_touch_another_devices_alert(database_url: str) -> None:
    """bed-8, publishing on its own topics, ended bed-7's open crackle alert and added a
    "normal 0.99" clip to its evidence (alerts and clips were looked up by id alone). Now
    both are refused, kept as refusals saying whose they were, and bed-7's alert is as it
    was."""
    from edge.delivery.publisher import envelope
    from edge.delivery.wire import Clip

    store = Store(database_url)
    store.intake.ingest([alert_message("bed-7", 0, "new", kind="crackle")])
    store.intake.ingest([alert_message("bed-8", 0, "end", kind="crackle")])
    clip = envelope("bed-8", 0, TEST_EPOCH) | body_dict(Clip(
        clip_id="c0ffee", alert_id="a1", alert_kind="crackle", session_id="s1",
        cycle_start="2026-12-03T10:00:00.000Z", cycle_end="2026-12-03T10:00:02.000Z",
        label="normal", confidence=0.99, sample_rate=4000, encoding="flac", audio_b64="AAAA"))
    store.intake.ingest([parse("lungedge/bed-8/clip", json.dumps(clip).encode(), "lungedge")])
    alert = store.views.alert("a1")
    assert alert is not None and alert.state == "open" and alert.device_id == "bed-7"
    assert [h.actor for h in alert.history] == ["bed-7"]
    assert store.views.clips_of(alert_id="a1") == []
    assert store.views.counts()["invalid"] == 2
    assert store.intake.last_foreign == 1
    # the same in one batch: bed-6 opens a2 while bed-5 ends it and adds a clip to it (the
    # ownership check read committed rows only, and bed-5 sorts first)
    forged = envelope("bed-5", 1, TEST_EPOCH) | body_dict(Clip(
        clip_id="c0ffee2", alert_id="a2", alert_kind="crackle", session_id="s1",
        cycle_start="2026-12-03T10:00:00.000Z", cycle_end="2026-12-03T10:00:02.000Z",
        label="normal", confidence=0.99, sample_rate=4000, encoding="flac", audio_b64="AAAA"))
    store.intake.ingest([alert_message("bed-5", 0, "end", alert_id="a2", kind="crackle"),
                  parse("lungedge/bed-5/clip", json.dumps(forged).encode(), "lungedge"),
                  alert_message("bed-6", 0, "new", alert_id="a2", kind="crackle")])
    assert store.intake.last_foreign == 2
    alert = store.views.alert("a2")
    assert alert is not None and alert.state == "open" and alert.device_id == "bed-6"
    assert [h.actor for h in alert.history] == ["bed-6"]
    assert store.views.clips_of(alert_id="a2") == []


def test_offline_and_spool_backlog_are_station_alarms(database_url: str,
                                                      device_messages: list) -> None:
    store = Store(database_url)
    now = time.time()
    store.intake.ingest(as_messages(device_messages), now=now)
    store.alarms.sweep(now + 10, offline_after_s=180, spool_backlog=1)  # stats said spool_depth ≥ 0
    store.alarms.sweep(now + 400, offline_after_s=180, spool_backlog=10**6)
    (tile,) = store.views.overview(now + 400)
    assert tile.state == "offline"
    assert [a.kind for a in tile.technical] == ["offline"]
    store.intake.ingest(as_messages(device_messages[:1]), now=now + 401)  # a repeat: still offline
    next_alert = sum(k == "alert" for k, _ in device_messages)
    store.intake.ingest([alert_message("bed-1", next_alert, "new", "a9")], now=now + 402)  # back
    (tile,) = store.views.overview(now + 402)
    assert tile.state == "online" and tile.technical == ()
    assert [a.alert_id for a in tile.clinical if a.state == "open"] == ["a9"]


HOSTILE = "<img src=x onerror=\"window.pwned=1\">&amp;<b>bed"  # no '/': a topic level


@pytest.mark.parametrize(("topic", "payload", "why"), [
    ("lungedge/bed-1/cycle", b"\xff\xfe\x00garbage", "not JSON"),
    ("lungedge/bed-1/cycle", b'{"schema_version": 2}', "cycle schema"),
    ("lungedge/bed-1/telemetry", b"{}", "unknown message kind"),
    ("lungedge/bed-1/cycle/extra", b"{}", "not a lungedge/DEVICE/KIND topic"),
    ("lungedge/bed-1/cycle", b"x" * 70000, "over"),
    ("lungedge/bed-1/status", json.dumps({
        "schema_version": 3, "device_id": "bed-2", "seq": 1, "ts": "2026-12-03T10:00:00.000Z",
        "clock_synced": True, "state": "online", "reason": None, "reasons": [],
        "model": None}).encode(),
     "is not the topic's"),
    ("lungedge/bed-1/status", json.dumps({
        "schema_version": 3, "device_id": "bed-1", "seq": "1", "ts": "now",
        "clock_synced": True, "state": "online", "reason": None, "reasons": []}).encode(),
     "status schema"),
])
def test_malformed_messages_are_refused_with_a_reason(topic: str, payload: bytes,
                                                      why: str) -> None:
    with pytest.raises(Refused, match=why):
        parse(topic, payload, "lungedge")


def test_hostile_strings_are_stored_as_text_and_refusals_counted(database_url: str) -> None:
    from edge.delivery.publisher import envelope

    store = Store(database_url)
    script = "<script>window.pwned=1</script>"
    status = envelope(HOSTILE, 0, TEST_EPOCH) | {"state": "degraded", "reason": script,
                                     "reasons": [script, "x" * 5000], "model": None} \
        | status_fields()
    m = parse(f"lungedge/{HOSTILE}/status", json.dumps(status).encode(), "lungedge")
    store.intake.ingest([m], [Refusal("lungedge/x/cycle", "not JSON", "\\xff")])
    (tile,) = store.views.overview(time.time())
    assert tile.device_id == HOSTILE and tile.reasons[0] == script
    assert store.views.counts()["invalid"] == 1 and store.views.refused()[0].reason == "not JSON"


def test_a_cycle_counts_as_its_device_judged_it(database_url: str) -> None:
    """The station keeps no copy of a device's quality cut: a cycle counts (minute sums, burden)
    when its device said `good`; a schema-4 device's cycle is judged with that schema's cut."""
    from sqlalchemy import func, select

    from edge.delivery.publisher import envelope
    from edge.delivery.wire import Cycle, ModelRef, iso_ms
    from station.schema import minutes

    store = Store(database_url)
    t = 1_800_000_000.0  # one minute for all three

    def cycle(seq: int, quality: float, good: bool | None, label: str) -> Message:
        body = envelope("bed-1", seq, TEST_EPOCH) | body_dict(Cycle(
            session_id="s1", start=iso_ms(t + seq), end=iso_ms(t + seq + 2), duration_s=2.0,
            label=label, probs={label: 0.9}, confidence=0.9, quality=quality, good=bool(good),
            forced_cut=False, model=ModelRef("m", "1"), latency_ms=400.0))
        if good is None:  # as a device of schema 4 sent it
            body = {k: v for k, v in body.items() if k != "good"} | {"schema_version": 4}
        return parse("lungedge/bed-1/cycle", json.dumps(body).encode(), "lungedge")

    store.intake.ingest([cycle(0, 0.9, False, "crackle"),  # a stricter device: not evidence
                  cycle(1, 0.2, True, "crackle"),  # a laxer one: evidence
                  cycle(2, 0.2, None, "crackle"),  # schema 4, under 0.3: not evidence
                  cycle(3, 0.8, None, "normal")], now=t + 10)  # schema 4: good
    with store.engine.connect() as conn:
        good, abnormal, n = conn.execute(select(
            func.sum(minutes.c.good), func.sum(minutes.c.abnormal),
            func.sum(minutes.c.cycles))).one()
    assert (n, good, abnormal) == (4, 2, 1)


def test_the_breathing_rate_trend_is_the_rate_of_what_was_heard() -> None:
    """A quarter of an hour with a short auscultation says the rate of that auscultation:
    cycles × 60 / the time they span, per stretch of breathing (a pause over 30 s or the
    bucket's edge ends one), as the device counts a session. It said 6/min for a device heard
    for 24 s at 15/min (six cycles in the one minute that had any)."""
    from edge.pipeline.breathing import breathing_rate
    from station.store import rates_by_bucket

    breaths = [(100.0 + 4 * i, 103.9 + 4 * i) for i in range(6)]  # 15/min for 24 s
    assert rates_by_bucket(breaths, 900.0, 30.0) == {0: round(60 * 6 / 23.9, 1)}
    # two auscultations in one bucket, ten minutes apart: the pause is not breathing
    later = [(700.0 + 3 * i, 702.9 + 3 * i) for i in range(10)]  # 20/min
    both = rates_by_bucket(breaths + later, 900.0, 30.0)[0]
    assert both == round(60 * 16 / (23.9 + 29.9), 1)
    # a stretch across a bucket's edge counts in each bucket for its own cycles (three each
    # here); one cycle alone says nothing
    edge = [(890.0 + 4 * i, 893.9 + 4 * i) for i in range(6)]
    assert rates_by_bucket(edge, 900.0, 30.0) == {0: round(60 * 3 / 11.9, 1),
                                            1: round(60 * 3 / 11.9, 1)}
    assert rates_by_bucket([(10.0, 14.0)], 900.0, 30.0) == {}
    # "now" (the last two minutes) follows the same rule: two auscultations 40 s apart
    again = [(163.9 + 4 * i, 167.8 + 4 * i) for i in range(6)]
    assert breathing_rate(breaths + again, 30.0) == round(60 * 12 / (2 * 23.9), 1)


def test_the_station_shows_the_devices_breathing_rate(tmp_path: Path) -> None:
    """One definition of breaths per minute, the device's: a device whose sessions end after
    60 s of silence hears two stretches of breathing 45 s apart as one session, and the ward,
    the device's summary and `classify` all give its rate (with the station's own 30 s pause,
    the ward said another number)."""
    import numpy as np
    import soundfile as sf

    from edge.delivery.publisher import envelope
    from edge.pipeline.breathing import breathing_rate
    from edge.pipeline.recording import analyse_recording
    from edge.pipeline.tracker import TrackerConfig
    from edge.sources.audio_file import read_audio
    from edge.sources.file import FileSource

    x, rate = read_audio(str(SAMPLES / "wheeze_65121853_1.5_0_p1_4228.wav"))
    wav = tmp_path / "two-stretches.wav"
    sf.write(wav, np.concatenate([x, np.zeros(45 * rate, np.float32), x]), rate)
    raw = run_daemon(tmp_path, wav, "tracker: {session_silence_s: 60}").messages
    (summary,) = [m for k, m in raw if k == "summary"]
    device_rate = summary["breathing_rate_per_min"]
    assert device_rate is not None and summary["ended_by"] == "end_of_stream"
    starts = [(m["start"], m["end"]) for k, m in raw if k == "cycle"]

    store = Store(f"sqlite:///{tmp_path / 'station.db'}")
    status = envelope("bed-1", 0, TEST_EPOCH) | {
        "state": "online", "reason": None, "reasons": [], "model": None,
        } | status_fields(breathing_pause_s=60.0)
    store.intake.ingest(as_messages([("status", status), *raw]), now=time.time())
    cycles = store.views.device("bed-1", time.time())
    assert cycles is not None
    last_end = max(c.end for c in cycles.timeline)
    (tile,) = store.views.overview(last_end + 1)
    assert tile.rate == device_rate, (tile.rate, device_rate)
    times = [(c.start, c.end) for c in cycles.timeline]
    assert breathing_rate(times, 30.0) != device_rate  # the station's old pause said otherwise
    report = analyse_recording(str(wav), FileSource(wav), None,
                               TrackerConfig(session_silence_s=60))
    assert report["summary"]["breathing_rate_per_min"] == device_rate
    assert len(starts) == len(times)


def test_read_models_have_their_tables_columns() -> None:
    """Each read model names every column of its table (the clip's audio aside, which only a
    judged clip carries): a column added to the schema reaches the pages by name."""
    import dataclasses

    from station import schema
    from station.store import read_models as rm

    for model, table, apart in ((rm.Device, schema.devices, set()),
                                (rm.Alert, schema.alerts, set()),
                                (rm.LogEntry, schema.alert_log, set()),
                                (rm.Session, schema.summaries, set()),
                                (rm.Clip, schema.clips, {"audio"}),
                                (rm.JudgedClip, schema.clips, set()),
                                (rm.Verdict, schema.verdicts, set()),
                                (rm.Change, schema.changes, set()),
                                (rm.Gap, schema.gaps, set()),
                                (rm.Refused, schema.invalid, set())):
        names = {f.name for f in dataclasses.fields(model)}
        missing = {c.name for c in table.c} - apart - names
        assert not missing, f"{model.__name__} lacks {sorted(missing)} of {table.name}"


def test_the_station_shows_which_package_runs_and_a_rollback(database_url: str) -> None:
    """A status of schema 7 says which package exactly the device runs and how it came to;
    a device that went back from a package by itself is on the technician's list, with why;
    a device of schema 6 still reads, without them."""
    from edge.delivery.publisher import envelope
    from station.web.technician import needs_technician

    store = Store(database_url)
    sha = "ab" * 32
    note = "rolled back: lungedge-cnnlstm-0.7.0-0123: processing fell behind on it"
    new = envelope("bed-1", 0, TEST_EPOCH) | {
        "clock_synced": True, "state": "online", "reason": None, "reasons": [],
        "model": {"name": "lungedge-cnnlstm", "version": "0.6.0", "sha256": sha, "note": note},
        } | status_fields()
    old = envelope("bed-2", 0, TEST_EPOCH) | {
        "schema_version": 6, "clock_synced": True, "state": "online", "reason": None, "reasons": [],
        "model": {"name": "lungedge-cnnlstm", "version": "0.5.0"}} | status_fields()
    store.intake.ingest([parse("lungedge/bed-1/status", json.dumps(new).encode(), "lungedge"),
                         parse("lungedge/bed-2/status", json.dumps(old).encode(), "lungedge")],
                        now=time.time())
    page = store.views.device("bed-1", time.time())
    assert page is not None
    assert (page.device.model_sha256, page.device.model_note) == (sha, note)
    older = store.views.device("bed-2", time.time())
    assert older is not None and older.device.model == "lungedge-cnnlstm 0.5.0"
    assert (older.device.model_sha256, older.device.model_note) == (None, None)
    listed = {t.device_id: why for t, why, _ in needs_technician(
        store.views.overview(time.time()))}
    assert listed == {"bed-1": [f"model lungedge-cnnlstm 0.6.0: {note}"]}
