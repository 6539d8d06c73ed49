"""The daemon's wiring, in process, through the `Publisher` interface: what it publishes, in
what order, and the status it reports. (Delivery through a real Mosquitto: test_daemon.py.)"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge.delivery.publisher import Delivery, envelope
from edge.delivery.wire import Body, RunningModel, body_dict, kind_of, schema
from edge.service.config import parse_config
from edge.service.daemon import Daemon
from edge.vocabulary import DeviceState
from tests.conftest import TEST_EPOCH

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "lungedge-cnnlstm"
SAMPLES = ROOT / "models" / "samples"


class MemoryPublisher:
    """Keeps what the daemon publishes, each message validated against its shipped schema."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.statuses: list[tuple[str, list[str]]] = []
        self.retained: dict[str, bytes] = {}
        self.models: list[RunningModel] = []
        self._seq: Counter[str] = Counter()

    def start(self) -> None:
        pass

    def publish(self, body: Body) -> int:
        kind = kind_of(body)
        seq = self._seq[kind]
        self._seq[kind] += 1
        message = {**envelope("bed-1", seq, TEST_EPOCH), **body_dict(body)}
        jsonschema.validate(message, schema(kind))
        self.messages.append((kind, message))
        return seq

    def set_status(self, state: DeviceState, reasons: list[str]) -> None:
        self.statuses.append((state, reasons))

    def set_model(self, model: RunningModel) -> None:
        self.models.append(model)

    def retain(self, topic: str, payload: bytes) -> None:
        self.retained[topic] = payload

    def unreachable(self) -> str:
        return ""

    def refused(self) -> str:
        return ""

    def flush(self, timeout_s: float) -> bool:
        return True

    def delivery(self) -> Delivery:
        return Delivery()  # everything delivered at once, nothing lost

    def close(self, final_state: DeviceState = "offline", reason: str = "shutdown") -> None:
        self.statuses.append((final_state, [reason]))


def run_daemon(tmp_path: Path, recording: Path, extra: str = "") -> MemoryPublisher:
    cfg = parse_config(f"""device_id: bed-1
source:
  type: file
  file: {{path: {recording}, realtime: false}}
model: {{path: {SHIPPED}}}
spool: {{path: {tmp_path / 'spool.db'}}}
{extra}""")
    publisher = MemoryPublisher()
    assert Daemon(cfg, publisher=publisher).run() == 0
    return publisher


def test_a_recording_through_the_daemon_in_order(tmp_path: Path) -> None:
    crackle = SAMPLES / "crackle_65121853_1.5_0_p4_4225.wav"
    pub = run_daemon(tmp_path, crackle)
    kinds = [k for k, _ in pub.messages]
    cycles = [m for k, m in pub.messages if k == "cycle"]
    (summary,) = [m for k, m in pub.messages if k == "summary"]
    alerts = [m for k, m in pub.messages if k == "alert"]
    assert len(cycles) >= 8 and kinds[-1] == "stats"
    # every cycle of the session comes before its summary, which counts them
    assert kinds.index("summary") > max(i for i, k in enumerate(kinds) if k == "cycle")
    assert summary["cycles"] == len(cycles) and summary["ended_by"] == "end_of_stream"
    assert {c["session_id"] for c in cycles} == {summary["session_id"]}
    assert summary["record_label"] in ("DAS", "CAS & DAS")  # the shipped model hears crackles
    # every alert that opened was ended before the stream ended
    opened = {a["alert_id"] for a in alerts if a["event"] == "new"}
    assert opened and opened == {a["alert_id"] for a in alerts if a["event"] == "end"}
    stats = pub.messages[-1][1]
    assert stats["cycles"] == len(cycles) and stats["inference_ms_p50"] > 0
    assert pub.statuses[0] == ("online", []) and pub.statuses[-1] == ("offline", ["shutdown"])


def test_the_labels_a_cycle_carries_are_the_models(tmp_path: Path) -> None:
    import json

    labels = json.loads((SHIPPED / "manifest.json").read_text())["labels"]
    pub = run_daemon(tmp_path, SAMPLES / "normal_41209060_4.4_1_p4_4143.wav")
    for kind, m in pub.messages:
        if kind == "cycle":
            assert list(m["probs"]) == labels and m["label"] in labels
        if kind == "summary":
            assert list(m["cycles_by_label"]) == labels


def test_clips_carry_the_audio_behind_an_alert_within_a_budget(tmp_path: Path) -> None:
    import base64
    import io

    import soundfile

    pub = run_daemon(tmp_path, SAMPLES / "crackle_65121853_1.5_0_p4_4225.wav",
                     "clips: {enabled: true, max_per_hour: 3, reserved_for_new: 1}")
    clips = [m for k, m in pub.messages if k == "clip"]
    alerts = {m["alert_id"]: m for k, m in pub.messages if k == "alert"}
    # the budget: the alert's opening clip, then updates up to the reserve kept for new
    # alerts; the rest were counted, not sent
    assert len(clips) == 2
    stats = pub.messages[-1][1]
    assert stats["clips_sent"] == 2 and stats["clips_dropped"] >= 1
    for clip in clips:
        assert alerts[clip["alert_id"]]["kind"] == clip["alert_kind"] == "crackle"
        audio, rate = soundfile.read(io.BytesIO(base64.b64decode(clip["audio_b64"])))
        assert rate == clip["sample_rate"] == 4000 and clip["encoding"] == "flac"
        cycle = next(m for k, m in pub.messages if k == "cycle"
                     and m["start"] == clip["cycle_start"])
        assert len(audio) / rate == pytest.approx(cycle["duration_s"], abs=0.02)
        assert clip["label"] == cycle["label"]
