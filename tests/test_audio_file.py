from __future__ import annotations

import logging
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import soundfile

from edge.sources.audio_file import AudioFileError, open_audio, read_audio

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


def test_headers_no_recording_has_are_refused(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A header declaring 1 Hz would be read as 34 hours of audio, 0 channels ended in a
    ZeroDivisionError: both are refused saying what the header claims; an unusual rate that is
    still possible is read, with a warning."""
    data = (np.random.default_rng(0).normal(size=4000) * 3000).astype(np.int16)
    scipy.io.wavfile.write(tmp_path / "one_hz.wav", 1, data)
    with pytest.raises(AudioFileError, match=r"one_hz.wav: its header: a sample rate of 1 Hz; "
                                             r"lungedge takes 1000–192000 Hz"):
        open_audio(tmp_path / "one_hz.wav")
    scipy.io.wavfile.write(tmp_path / "ok.wav", 8000, data)
    raw = bytearray((tmp_path / "ok.wav").read_bytes())
    raw[22:24] = struct.pack("<H", 0)  # the fmt chunk's channel count
    (tmp_path / "no_channels.wav").write_bytes(bytes(raw))
    with pytest.raises(AudioFileError, match=r"no_channels.wav: its header declares 0 channels"):
        open_audio(tmp_path / "no_channels.wav")
    scipy.io.wavfile.write(tmp_path / "odd.wav", 12345, data)
    with caplog.at_level("WARNING"):
        assert open_audio(tmp_path / "odd.wav").sample_rate == 12345
    assert "an unusual sample rate, 12345 Hz" in caplog.text


@pytest.mark.parametrize(("flags", "message"), [
    (["--channels", "0"], "0 channel(s); lungedge takes 1–8"),
    (["--channels", "9"], "9 channel(s); lungedge takes 1–8"),
    (["--rate", "100000000"], "a sample rate of 100000000 Hz; lungedge takes 1000–192000 Hz"),
])
def test_classify_flags_have_the_configs_limits(flags: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "edge", "classify", "-", "--segments-only",
                           *flags], input=b"\0\0" * 100, capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().endswith(message) and b"Traceback" not in proc.stderr


def test_an_mp3_is_refused_with_the_formats_that_are_read(tmp_path: Path,
                                                          sample_wavs: list[Path]) -> None:
    """An MP3 was accepted and misdecoded without a word (libsndfile's block reads of MP3
    differ from a whole read by 30% of the level: 7 normal cycles as MP3, crackles as WAV).
    Now it is refused in one line naming what is read and how to convert it, whatever its
    name says."""
    import soundfile

    from edge.cli.main import main
    from edge.sources.audio_file import AudioFileError, open_audio

    x, rate = soundfile.read(str(sample_wavs[0]))
    mp3 = tmp_path / "wheeze.mp3"
    soundfile.write(mp3, x, rate, format="MP3")
    disguised = tmp_path / "wheeze.flac.bin"
    disguised.write_bytes(mp3.read_bytes())
    for path in (mp3, disguised):
        with pytest.raises(AudioFileError, match="reads WAV and FLAC only"):
            open_audio(path)
    assert main(["classify", str(mp3)]) == 1
