"""Clinicians' verdicts flow back: a real device's clips stored on SQLite and PostgreSQL,
confirmed or corrected (the latest verdict counts, every one is kept), judged clips outliving
the clip retention, and `lungedge station export-labels` writing a dataset that the toolchain
scores the shipped model on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the station extra: pip install 'lungedge[station]'")

from convert import evaluate
from convert.datasets import iter_icbhi
from station.export import export
from station.store import Store
from tests.test_daemon_wiring import SAMPLES, SHIPPED, run_daemon
from tests.test_station_store import as_messages


@pytest.fixture(scope="module")
def clip_messages(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, dict]]:
    """The real daemon on the crackle sample with clips on: alerts and the audio behind them."""
    tmp = tmp_path_factory.mktemp("daemon")
    return run_daemon(tmp, SAMPLES / "crackle_65121853_1.5_0_p4_4225.wav",
                      extra="clips: {enabled: true}").messages


def test_verdicts_are_kept_counted_and_exported(database_url: str, clip_messages: list,
                                                tmp_path: Path) -> None:
    store = Store(database_url)
    now = time.time()
    store.intake.ingest(as_messages(clip_messages), now=now)
    heard = store.views.clips_of(device_id="bed-1", limit=50)
    assert len(heard) >= 2 and all(c.verdict is None for c in heard)
    first, second = heard[0], heard[1]
    assert first.session_id  # the clip knows its session: the exported "patient"

    assert store.actions.record_verdict(first.clip_id, first.label, "dr.bo", now)
    assert store.actions.record_verdict(second.clip_id, "wheeze", "nurse.ana", now)
    assert store.actions.record_verdict(second.clip_id, "normal", "dr.bo", now + 1)  # thought again
    assert not store.actions.record_verdict("no-such-clip", "normal", "dr.bo", now)

    latest = {c.clip_id: c.verdict for c in store.views.clips_of(device_id="bed-1", limit=50)}
    assert latest[first.clip_id].verdict == first.label
    assert latest[second.clip_id].verdict == "normal"
    assert latest[second.clip_id].by == "dr.bo"
    counts = store.views.verdict_counts("bed-1", since=now - 60)
    said = {first.label, second.label}
    assert sum(sum(v.values()) for v in counts.values()) == 2  # one per clip, the latest
    assert counts[second.label].get("normal", 0) >= 1 and said <= counts.keys()

    # the device records with a stethoscope the site names: the dataset's folder
    before = store.views.latest_change()
    assert store.actions.set_stethoscope("bed-1", "Littmann 3200, ward 4", "dr.bo")
    assert [c.what for c in store.views.changes_since(before)] == ["stethoscope"]
    exported = export(store.views.judged_clips(), tmp_path / "labels")
    assert exported == {"Littmann-3200-ward-4": 2}
    index = json.loads((tmp_path / "labels" / "labels.json").read_text())
    assert {e["clinician_said"] for e in index} == {first.label, "normal"}
    recordings = list(iter_icbhi(tmp_path / "labels" / "Littmann-3200-ward-4"))
    assert {r.device for r in recordings} == {"Littmann-3200-ward-4"}
    assert {r.patient for r in recordings} == {first.session_id.replace("_", "-")}
    assert sorted(e.label for r in recordings for e in r.events) == sorted(
        [first.label, "normal"])

    # the toolchain scores the shipped model on what the clinicians said
    assert evaluate.main([str(SHIPPED), str(tmp_path / "labels" / "Littmann-3200-ward-4"),
                          "--out", str(tmp_path / "report")]) == 0
    (result,) = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert result["events"] == 2

    # past the clip retention, an unjudged clip goes; a judged one is labelled data and stays
    store.retention.purge(now + 3 * 86400, retention_days=30, alert_retention_days=365,
                clip_retention_days=2)
    left = {c.clip_id for c in store.views.clips_of(device_id="bed-1", limit=50)}
    assert left == {first.clip_id, second.clip_id}
    store.retention.purge(now + 400 * 86400, retention_days=30, alert_retention_days=365,
                clip_retention_days=2)
    assert store.views.clips_of(device_id="bed-1", limit=50) == []


def test_a_reexport_is_exactly_todays_verdicts(database_url: str, clip_messages: list,
                                               tmp_path: Path) -> None:
    """Issue 37: after a verdict changed and the bed's stethoscope changed, re-exporting into
    the same folder left 8 recordings for 5 verdicts (the old label, and clips in two
    stethoscope folders). Now an export is a function of the verdicts, each clip under the
    stethoscope that recorded it, and a folder that is not an export is refused untouched."""
    from station.export import ExportError

    store = Store(database_url)
    now = time.time()
    store.actions.set_stethoscope("bed-1", "AKG C417L", "tech")  # before the device is known: no-op
    messages = as_messages(clip_messages)
    store.intake.ingest(messages[:1], now=now)  # the device is known now
    assert store.actions.set_stethoscope("bed-1", "AKG C417L", "tech")
    store.intake.ingest(messages[1:], now=now)
    heard = store.views.clips_of(device_id="bed-1", limit=50)
    assert len(heard) >= 2 and {c.stethoscope for c in heard} == {"AKG C417L"}
    for c in heard:
        store.actions.record_verdict(c.clip_id, "crackle", "dr.bo", now)
    out = tmp_path / "labels"
    assert export(store.views.judged_clips(), out) == {"AKG-C417L": len(heard)}
    # a verdict changes, then the bed gets another stethoscope: the clips stay where they were
    # recorded, and the changed label replaces the old one
    store.actions.record_verdict(heard[0].clip_id, "not_a_breath", "dr.bo", now + 1)
    store.actions.set_stethoscope("bed-1", "Littmann 3200", "tech")
    assert export(store.views.judged_clips(), out) == {"AKG-C417L": len(heard) - 1}
    assert sorted(p.name for p in out.iterdir()) == ["AKG-C417L", "labels.json"]
    assert len(list((out / "AKG-C417L").glob("*.flac"))) == len(heard) - 1
    labels = json.loads((out / "labels.json").read_text())
    assert sorted(e["clinician_said"] for e in labels) == sorted(
        ["not_a_breath"] + ["crackle"] * (len(heard) - 1))
    # anything else in the folder: refused, nothing touched
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an earlier export-labels output"):
        export(store.views.judged_clips(), out)
    assert (out / "notes.txt").read_text() == "mine"
