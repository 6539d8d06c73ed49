"""The signal path as one function, and `lungedge classify` on real recordings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.cli.main import main
from edge.dsp.frontend import FrontendParams
from edge.dsp.segmenter import SegmenterConfig
from edge.pipeline.analysis import Analysis, ClassifiedCycle
from edge.pipeline.model import load_manifest
from edge.pipeline.signal_path import SignalPath, run_signal_path
from edge.pipeline.tracker import TrackerConfig
from edge.sources.audio_file import read_audio
from edge.sources.base import AudioBlock
from edge.sources.file import FileSource
from tests.conftest import breathing

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "sample_cycles.json"


def test_short_gap_becomes_silence_and_keeps_the_timeline() -> None:
    x = breathing(8000, 14, [(1.0, 2.2), (3.4, 4.4), (8.6, 9.5), (11.0, 12.4)])
    whole = list(run_signal_path([AudioBlock(x, 8000, 0.0, 100.0)], 8000, FrontendParams(),
                                 SegmenterConfig()))
    # The same audio with 0.5 s (6.0–6.5 s) lost: reported as a gap, not closed up.
    lost = slice(48000, 52000)
    y = x.copy()
    y[lost] = 0
    blocks = [AudioBlock(x[:48000], 8000, 0.0, 100.0),
              AudioBlock(x[52000:], 8000, 6.5, 106.5, gap_s=0.5, gap_reason="input overflowed")]
    path = SignalPath(8000, FrontendParams(), SegmenterConfig())
    got = [c for b in blocks for c in path.process(b)] + path.flush()
    assert path.stats.gaps == 1 and path.stats.gap_reasons == {"input overflowed": 1}
    assert [round(c.start_s, 3) for c in got] == [round(c.start_s, 3) for c in whole]
    # the analysis path's one time base: stream seconds (lost audio included) ↔ wall clock
    analysis = Analysis(8000, None, TrackerConfig(), FrontendParams())
    events = [e for b in blocks for e in analysis.process(b)] + analysis.finish()
    cycles = [e for e in events if isinstance(e, ClassifiedCycle)]
    assert [c.start for c in cycles] == [c.start_s for c in got]
    assert analysis.clock.wall(cycles[-1].start) == pytest.approx(100 + cycles[-1].start)


def test_long_gap_restarts_on_a_new_origin() -> None:
    x = breathing(8000, 6, [(1.0, 2.2), (3.4, 4.4)])
    path = SignalPath(8000, FrontendParams(), SegmenterConfig())
    first = path.process(AudioBlock(x, 8000, 0.0, 0.0))
    second = path.process(AudioBlock(x, 8000, 66.0, 66.0, gap_s=60.0, gap_reason="reopened"))
    rest = path.flush()
    cycles = first + second + rest
    assert path.stats.restarts == 1
    late = [c for c in cycles if c.start_s > 60]
    assert len(late) == 2 and late[0].start_s == pytest.approx(66 + 1.0, abs=0.5)


def test_block_at_wrong_rate_is_refused() -> None:
    path = SignalPath(8000, FrontendParams(), SegmenterConfig())
    with pytest.raises(ValueError, match="44100 Hz fed to a path built for 8000 Hz"):
        path.process(AudioBlock(np.zeros(10, np.float32), 44100, 0, 0))


def sample_cycles(wav: Path) -> list[list[float]]:
    src = FileSource(wav, block_ms=100)
    return [[round(c.start_s, 3), round(c.end_s, 3)]
            for c in run_signal_path(src.blocks(), src.sample_rate, FrontendParams(),
                                     SegmenterConfig())]


def test_golden_cycles_on_the_shipped_samples(sample_wavs: list[Path]) -> None:
    """Cycles on the samples stay what they were unless a change means to move them; then
    regenerate (`PYTHONPATH=. .venv/bin/python tests/test_pipeline_cli.py`) and say why."""
    golden = json.loads(GOLDEN.read_text())
    assert golden["segmenter"] == SegmenterConfig().__dict__, "defaults changed: regenerate"
    for wav in sample_wavs:
        assert sample_cycles(wav) == golden["cycles"][wav.name], wav.name


SHIPPED_MODEL = ROOT / "models" / "lungedge-cnnlstm"


def shipped_networks() -> list[str]:
    """The shipped package's networks (their sha256): what the golden labels were made with."""
    return [m.sha256 for m in load_manifest(SHIPPED_MODEL).members]


def sample_labels(wav: Path) -> list[list[Any]]:
    """Per cycle of a shipped sample: start and the shipped model's label and confidence."""
    from edge.pipeline.model import ModelRunner

    runner = ModelRunner(SHIPPED_MODEL)
    src = FileSource(wav, block_ms=100)
    out = []
    for c in run_signal_path(src.blocks(), src.sample_rate, runner.manifest.frontend,
                             SegmenterConfig()):
        p = runner.predict(c.features)
        out.append([round(c.start_s, 3), p.label, round(p.confidence, 3)])
    return out


def test_golden_labels_of_the_shipped_model(sample_wavs: list[Path]) -> None:
    """The shipped model's labels on the samples change only on purpose (new model or
    frontend): then regenerate the golden file in the same commit and say why."""
    golden = json.loads(GOLDEN.read_text())["labels"]
    assert golden["model"] == shipped_networks()
    for wav in sample_wavs:
        got = sample_labels(wav)
        want = golden["cycles"][wav.name]
        assert [g[:2] for g in got] == [w[:2] for w in want], wav.name
        assert all(abs(g[2] - w[2]) <= 0.01 for g, w in zip(got, want, strict=True))


def test_classify_table_and_json(sample_wavs: list[Path],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", *map(str, sample_wavs)]) == 0
    out = capsys.readouterr().out
    assert out.count("audio; breathing ") == 3 and "features" in out
    assert main(["classify", "--json", str(sample_wavs[0])]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema_version"] == 4
    report = data["files"][0]
    # one breathing rate: the session's (the device's definition) is the recording's
    assert report["summary"]["breathing_rate_per_min"] == \
        report["sessions"][0]["breathing_rate_per_min"]
    assert report["sample_rate"] == 8000 and report["summary"]["cycles"] > 3
    assert report["cycles"][0]["features_shape"][1] == FrontendParams().n_features
    # with no --model, the shipped model labels every cycle and summarises the session
    assert data["model"]["name"] == "lungedge-cnnlstm"
    assert all(c["label"] in ("normal", "crackle", "wheeze", "both") for c in report["cycles"])
    assert len(report["sessions"]) == 1 and report["sessions"][0]["ended_by"] == "end_of_stream"
    # each cycle says whether it could be judged; the session counts those it could not
    assert all(c["good"] == (c["unjudged"] is None) for c in report["cycles"])
    assert isinstance(report["sessions"][0]["cycles_unjudged"], dict)
    assert main(["classify", "--json", "--segments-only", str(sample_wavs[0])]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] is None and "label" not in data["files"][0]["cycles"][0]


def test_classify_summarises_every_session_of_a_recording(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    """A recording with a pause longer than session_silence_s holds two sessions: both are
    summarised (with their own times), and the pause raises and ends no_audio on the
    recording's own timeline."""
    import scipy.io.wavfile

    x, rate = read_audio(ROOT / "models" / "samples" / "normal_41209060_4.4_1_p4_4143.wav")
    pause = np.zeros(rate * 40, dtype=np.float32)
    wav = tmp_path / "two.wav"
    scipy.io.wavfile.write(wav, rate, np.concatenate([x, pause, x]))
    assert main(["classify", "--json", str(wav)]) == 0
    report = json.loads(capsys.readouterr().out)["files"][0]
    first, second = report["sessions"]
    assert first["ended_by"] == "silence" and second["ended_by"] == "end_of_stream"
    assert first["end_s"] < 20 < 54 < second["start_s"]  # a cycle may end in the pause
    assert first["cycles"] + second["cycles"] == len(report["cycles"])
    assert [(a["kind"], a["event"]) for a in report["alerts"] if a["kind"] == "no_audio"] \
        == [("no_audio", "new"), ("no_audio", "end")]
    assert main(["classify", str(wav)]) == 0
    out = capsys.readouterr().out
    assert "session 1 (" in out and "session 2 (" in out


def test_classify_bad_file_is_a_clear_error(tmp_path: Path, sample_wavs: list[Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF" + os.urandom(100))
    assert main(["classify", str(bad), str(sample_wavs[0])]) == 1
    captured = capsys.readouterr()
    assert f"lungedge: error: {bad}: not a readable WAV file" in captured.err
    assert "audio; breathing " in captured.out  # the good file was still classified


def test_console_script_runs_as_a_module(sample_wavs: list[Path]) -> None:
    proc = subprocess.run([sys.executable, "-m", "edge", "classify", "--json",
                           str(sample_wavs[1])], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"][0]["summary"]["cycles"] > 3


def test_classify_from_stdin_equals_the_file(sample_wavs: list[Path]) -> None:
    """`arecord -t raw … | lungedge classify - --rate 8000` sees what the file source sees."""
    x, _ = read_audio(sample_wavs[2])
    raw = np.round(x * 32768).clip(-32768, 32767).astype("<i2").tobytes()
    proc = subprocess.run([sys.executable, "-m", "edge", "classify", "--json", "-", "--rate",
                           "8000"], input=raw, capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from_pipe = json.loads(proc.stdout)["files"][0]["cycles"]
    assert [[c["start_s"], c["end_s"]] for c in from_pipe] == sample_cycles(sample_wavs[2])
    empty = subprocess.run([sys.executable, "-m", "edge", "classify", "-"], input=b"",
                           capture_output=True, cwd=ROOT, timeout=120)
    assert empty.returncode == 1 and b"no audio arrived" in empty.stderr


if __name__ == "__main__":  # regenerate the golden file
    wavs = sorted((ROOT / "models" / "samples").glob("*.wav"))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({
        "segmenter": SegmenterConfig().__dict__,
        "cycles": {w.name: sample_cycles(w) for w in wavs},
        "labels": {"model": shipped_networks(),
                   "cycles": {w.name: sample_labels(w) for w in wavs}},
    }, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
