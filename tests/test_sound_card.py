"""The pyaudio source.

No sound card exists on the test machines, so the real path is driven through PortAudio's ALSA
backend reading an ALSA `file` PCM (declared in a private asoundrc) whose capture data comes from
a file: device listing, lookup by name, opening and byte-exact reads all run for real. ALSA's
`null` slave is not clocked, so an input overflow or an unplugged device cannot be provoked; those
paths are driven by a stand-in pyaudio module that raises exactly what PortAudio raises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.sources.base import SourceError
from edge.sources.sound_card import INPUT_OVERFLOWED, InputDevice, SoundCardSource, resolve_device

pytest.importorskip("pyaudio", reason="pyaudio not installed (needs portaudio19-dev); "
                                      "`pip install '.[audio]'`")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def alsa_home(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    pcm = (rng.standard_normal(8000 * 2) * 3000).astype("<i2")
    pcm.tofile(tmp_path / "in.raw")
    (tmp_path / ".asoundrc").write_text(f"""
pcm.lungtest {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{tmp_path / 'in.raw'}"
    format "raw"
    hint {{ show on description "lungedge test input" }}
}}
""")
    return tmp_path


def run_py(home: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.mark.alsa
def test_reads_an_alsa_pcm_through_portaudio(alsa_home: Path) -> None:
    proc = run_py(alsa_home, """
import json
from edge.sources.sound_card import SoundCardSource
src = SoundCardSource(device="lungtest", sample_rate=8000, block_ms=100)
out = []
for block in src.blocks():
    out.append(block.samples.tolist())
    if len(out) == 5:
        break
src.close()
print(json.dumps({"blocks": out, "describe": src.describe(), "state": src.state}))
""")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    got = np.concatenate([np.array(b) for b in result["blocks"]])
    ref = np.fromfile(alsa_home / "in.raw", dtype="<i2")[:len(got)] / 32768
    assert len(got) == 4000 and np.array_equal(got.astype(np.float32), ref.astype(np.float32))
    assert "lungtest" in result["describe"] and result["state"] == "closed"


@pytest.mark.alsa
def test_devices_command_and_unknown_device(alsa_home: Path) -> None:
    proc = run_py(alsa_home, "from edge.cli.main import main; raise SystemExit(main(['devices']))")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lungtest" in proc.stdout
    proc = run_py(alsa_home, """
from edge.sources.sound_card import SoundCardSource
SoundCardSource(device="stethoscope", sample_rate=8000)
""")
    assert proc.returncode != 0
    assert "no input device whose name contains 'stethoscope'" in proc.stderr
    assert "lungtest" in proc.stderr  # the message lists what there is


def test_resolve_device_by_index_and_substring() -> None:
    devs = [InputDevice(0, "HDA Intel: ALC (hw:0,0)", 2, 48000, "ALSA"),
            InputDevice(3, "USB Stethoscope: Audio (hw:1,0)", 1, 44100, "ALSA"),
            InputDevice(4, "USB Stethoscope: Audio (hw:2,0)", 1, 44100, "ALSA")]
    assert resolve_device(devs, None) is None
    assert resolve_device(devs, 3).index == 3  # type: ignore[union-attr]
    assert resolve_device(devs, "alc").index == 0  # type: ignore[union-attr]
    with pytest.raises(SourceError, match="ambiguous"):
        resolve_device(devs, "stethoscope")
    with pytest.raises(SourceError, match="no input device with index 9"):
        resolve_device(devs, 9)


# -- overflow and device loss, driven by a stand-in for the pyaudio module ------------------------
class _Stream:
    def __init__(self, script: list[str], frames: int) -> None:
        self.script, self.frames = script, frames
        self.value = 0

    def read(self, n: int, exception_on_overflow: bool = True) -> bytes:
        assert exception_on_overflow, "overflow must be reported, not swallowed"
        step = self.script.pop(0) if self.script else "stop"
        if step == "overflow":
            raise OSError(INPUT_OVERFLOWED, "Input overflowed")
        if step == "lost":
            raise OSError(-9999, "Unanticipated host error")
        if step == "stop":
            raise KeyboardInterrupt  # ends the test's reading loop
        self.value += 1
        return np.full(n, self.value * 100, dtype="<i2").tobytes()

    def stop_stream(self) -> None: ...

    def close(self) -> None: ...


def fake_pyaudio(scripts: list[list[str]], failed_opens: int) -> types.ModuleType:
    mod = types.ModuleType("pyaudio")
    mod.paInt16 = 8  # type: ignore[attr-defined]
    state = {"opens": 0, "failures": failed_opens}

    class PyAudio:
        def get_device_count(self) -> int:
            return 1

        def get_device_info_by_index(self, i: int) -> dict[str, Any]:
            return {"name": "USB Stethoscope", "maxInputChannels": 1, "hostApi": 0,
                    "defaultSampleRate": 8000.0}

        def get_host_api_info_by_index(self, i: int) -> dict[str, Any]:
            return {"name": "ALSA"}

        def open(self, **kw: Any) -> _Stream:
            state["opens"] += 1
            if state["opens"] > 1 and state["failures"] > 0:
                state["failures"] -= 1
                raise OSError(-9996, "Invalid input device (no default output device)")
            return _Stream(scripts.pop(0), kw["frames_per_buffer"])

        def terminate(self) -> None: ...

    mod.PyAudio = PyAudio  # type: ignore[attr-defined]
    mod.state = state  # type: ignore[attr-defined]
    return mod


def collect(src: SoundCardSource) -> list:
    out = []
    try:
        for block in src.blocks():
            out.append(block)
    except KeyboardInterrupt:
        pass
    return out


def test_overflow_is_counted_and_becomes_an_exact_gap() -> None:
    mod = fake_pyaudio([["data", "overflow", "overflow", "data", "data"]], 0)
    src = SoundCardSource(device="steth", sample_rate=8000, block_ms=100, pyaudio_module=mod)
    blocks = collect(src)
    assert src.overflows == 2 and src.counters() == {"overflows": 2, "reopens": 0}
    assert [b.gap_s for b in blocks] == [0, pytest.approx(0.2), 0]
    assert blocks[1].gap_reason == "input overflowed"
    assert [b.start_s for b in blocks] == [0, pytest.approx(0.3), pytest.approx(0.4)]


def test_device_loss_reopens_with_backoff_and_reports_the_gap(monkeypatch: Any) -> None:
    mod = fake_pyaudio([["data", "lost"], ["data", "data"]], failed_opens=2)
    sleeps: list[float] = []
    src = SoundCardSource(device=None, sample_rate=8000, block_ms=100, pyaudio_module=mod,
                           reopen_backoff_max_s=0.8)
    monkeypatch.setattr(src._stop, "wait", lambda d: sleeps.append(d) or False)
    blocks = collect(src)
    assert sleeps == [0.5, 0.8]  # doubled, then capped
    assert src.reopens == 1 and src.state == "streaming"
    assert src.counters() == {"overflows": 0, "reopens": 1}
    assert len(blocks) == 3
    assert blocks[1].gap_reason == "device reopened" and blocks[1].gap_s >= 0
    assert blocks[1].start_s == pytest.approx(0.1 + blocks[1].gap_s)
