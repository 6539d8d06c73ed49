from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import soundfile

from edge.audio_file import AudioFileError, open_audio, read_audio

RATE = 8000


def tone(n: int = 4000) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 300 * np.arange(n) / RATE)).astype(np.float32)


@pytest.mark.parametrize(("dtype", "scale", "offset", "tol"), [
    ("uint8", 127, 128, 1 / 120),
    ("int16", 32767, 0, 1e-4),
    ("int32", 2**31 - 1, 0, 1e-6),
    ("float32", 1, 0, 1e-7),
])
def test_wav_sample_formats(tmp_path: Path, dtype: str, scale: float, offset: float,
                            tol: float) -> None:
    x = tone()
    path = tmp_path / f"{dtype}.wav"
    pcm = x if dtype == "float32" else np.round(x * scale) + offset
    scipy.io.wavfile.write(path, RATE, pcm.astype(dtype))
    y, rate = read_audio(path)
    assert rate == RATE and y.dtype == np.float32
    assert np.abs(y - x).max() < tol


def test_wav_24_bit(tmp_path: Path) -> None:
    x = tone()
    path = tmp_path / "s24.wav"
    soundfile.write(path, x, RATE, subtype="PCM_24")
    y, _ = read_audio(path)
    assert np.abs(y - x).max() < 1e-6


def test_stereo_is_downmixed_with_a_warning(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    x = tone()
    path = tmp_path / "st.wav"
    scipy.io.wavfile.write(path, RATE, np.stack([x, -0.5 * x], axis=1))
    with caplog.at_level(logging.WARNING):
        y, _ = read_audio(path)
    assert np.allclose(y, 0.25 * x, atol=1e-7)
    assert "2 channels" in caplog.text


def test_flac_equals_wav(tmp_path: Path) -> None:
    x = np.round(tone() * 32767).astype(np.int16)
    soundfile.write(tmp_path / "a.flac", x, RATE, subtype="PCM_16")
    scipy.io.wavfile.write(tmp_path / "a.wav", RATE, x)
    assert np.array_equal(read_audio(tmp_path / "a.flac")[0], read_audio(tmp_path / "a.wav")[0])


def test_blocks_cover_the_file_exactly(tmp_path: Path) -> None:
    x = tone(4321)
    scipy.io.wavfile.write(tmp_path / "b.wav", RATE, x)
    audio = open_audio(tmp_path / "b.wav")
    blocks = list(audio.iter_blocks(1000))
    assert [len(b) for b in blocks] == [1000] * 4 + [321]
    assert np.array_equal(np.concatenate(blocks), x)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk", "not a readable WAV"),
    (b"this is not audio at all" * 10, "not a readable WAV"),
])
def test_bad_wav_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFileError, match=message) as info:
        open_audio(path)
    assert str(path) in str(info.value)


def test_wav_with_no_frames(tmp_path: Path) -> None:
    path = tmp_path / "none.wav"
    scipy.io.wavfile.write(path, RATE, np.zeros(0, dtype=np.int16))
    with pytest.raises(AudioFileError, match="no audio frames"):
        open_audio(path)


def test_truncated_wav_data(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    scipy.io.wavfile.write(path, RATE, (tone() * 32767).astype(np.int16))
    path.write_bytes(path.read_bytes()[:200])  # the header promises 0.5 s, 0.01 s are there
    with pytest.raises(AudioFileError, match=r"is truncated: its header declares 0\.5 s of "
                                             r"audio, the file holds 0\.010 s; .* copy or "
                                             r"record it again"):
        read_audio(path)


def test_corrupt_flac_and_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "x.flac"
    path.write_bytes(b"fLaC" + bytes(100))
    with pytest.raises(AudioFileError, match="not a readable audio file"):
        open_audio(path)
    other = tmp_path / "x.mp3"
    other.write_bytes(struct.pack("<I", 12345) * 50)
    with pytest.raises(AudioFileError, match="WAV and FLAC"):
        open_audio(other)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="no such file"):
        open_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioFileError, match="is a directory"):
        open_audio(tmp_path)
