from __future__ import annotations

import io
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.service.config import parse_config
from edge.sources import open_source
from edge.sources.audio_file import read_audio
from edge.sources.file import FileSource
from edge.sources.stdin import StdinSource


def test_file_source_yields_the_whole_recording(sample_wavs: list[Path]) -> None:
    src = FileSource(sample_wavs[0], block_ms=37)
    blocks = list(src.blocks())
    x, rate = read_audio(sample_wavs[0])
    assert np.array_equal(np.concatenate([b.samples for b in blocks]), x)
    assert all(b.sample_rate == rate and b.gap_s == 0 for b in blocks)
    starts = [b.start_s for b in blocks]
    assert starts == sorted(starts) and starts[0] == 0
    assert blocks[1].start_s == pytest.approx(len(blocks[0].samples) / rate)


def test_file_source_loops_and_closes(sample_wavs: list[Path]) -> None:
    src = FileSource(sample_wavs[0], block_ms=1000, loop=True)
    seen = 0.0
    for block in src.blocks():
        seen += block.duration_s
        if seen > 40:  # past two plays of a 15 s recording
            src.close()
    assert 40 < seen < 42


def test_file_source_realtime_paces_blocks(sample_wavs: list[Path]) -> None:
    src = FileSource(sample_wavs[0], block_ms=50, realtime=True)
    it = src.blocks()
    t0 = time.monotonic()
    first = next(it)
    second = next(it)
    # Each block is released only once it has been "heard" (paced on the monotonic clock);
    # its wall time is when its first sample was heard.
    assert time.monotonic() - t0 >= 0.1 - 1e-3
    assert second.wall_time - first.wall_time == pytest.approx(0.05, abs=0.04)
    src.close()


def test_stdin_source_reassembles_a_pipe(sample_wavs: list[Path]) -> None:
    x, _ = read_audio(sample_wavs[0])
    pcm = np.round(x[:8001] * 32768).clip(-32768, 32767).astype("<i2").tobytes()
    r, w = os.pipe()

    def writer() -> None:  # odd-sized writes, as arecord through a pipe may do
        with os.fdopen(w, "wb", buffering=0) as f:
            for i in range(0, len(pcm), 777):
                f.write(pcm[i:i + 777])

    t = threading.Thread(target=writer)
    t.start()
    with os.fdopen(r, "rb", buffering=0) as f:
        blocks = list(StdinSource(8000, block_ms=100, stream=f).blocks())
    t.join()
    assert [len(b.samples) for b in blocks] == [800] * 10 + [1]
    assert np.allclose(np.concatenate([b.samples for b in blocks]), x[:8001], atol=1 / 32768)


def test_stdin_source_downmixes_and_reports_a_torn_frame(
        caplog: pytest.LogCaptureFixture) -> None:
    stereo = np.array([[1000, 3000], [-2000, 0]], dtype="<i2").tobytes() + b"\x01"
    with caplog.at_level(logging.WARNING):
        blocks = list(StdinSource(8000, channels=2, stream=io.BytesIO(stereo)).blocks())
    assert np.allclose(blocks[0].samples, [2000 / 32768, -1000 / 32768])
    assert "1 trailing byte" in caplog.text


def test_open_source_from_config(sample_wavs: list[Path]) -> None:
    cfg = parse_config(f"source:\n  type: file\n  file:\n    path: {sample_wavs[0]}\n")
    src = open_source(cfg.source)
    assert isinstance(src, FileSource) and src.sample_rate == 8000
    assert "8000 Hz" in src.describe()
