"""Reading recordings: WAV of any PCM width, and FLAC when soundfile is installed; anything else
(MP3, Ogg …) is refused with the formats it reads, never decoded half right.

One reader for the daemon's file source, `lungedge classify` and the training toolchain, so a
recording decodes to the same samples everywhere. WAV files are memory-mapped where scipy allows
it, so an hours-long recording is not loaded whole.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.sources.audio_format import FormatError, check_format
from edge.sources.base import SourceError, to_mono_float32

log = logging.getLogger(__name__)


class AudioFileError(SourceError):
    """A recording that cannot be used, with the path and what to do about it."""

    def __init__(self, path: str | Path, problem: str, fix: str = "") -> None:
        self.path = str(path)
        super().__init__(f"{path}: {problem}" + (f"; {fix}" if fix else ""))


@dataclass(frozen=True)
class AudioFile:
    """An opened recording: its format and a way to read it block by block."""

    path: Path
    sample_rate: int
    frames: int
    channels: int
    _data: np.ndarray | None  # WAV (possibly memory-mapped); None when soundfile decodes

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    def iter_blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """Mono float32 blocks of `block_frames` samples (the last one may be shorter)."""
        if self._data is not None:
            for start in range(0, self.frames, block_frames):
                yield to_mono_float32(np.asarray(self._data[start:start + block_frames]))
            return
        import soundfile

        try:
            with soundfile.SoundFile(str(self.path)) as f:
                while True:
                    chunk = f.read(block_frames, dtype="float32", always_2d=True)
                    if len(chunk) == 0:
                        return
                    yield to_mono_float32(chunk)
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            raise AudioFileError(self.path, f"decoding failed part-way: {exc}",
                                 "the file is damaged; re-export or re-copy it") from None

    def read(self) -> np.ndarray:
        return np.concatenate(list(self.iter_blocks(max(self.frames, 1))))


def open_audio(path: str | Path) -> AudioFile:
    """Open a recording and check it is usable; raises AudioFileError saying why not."""
    path = Path(path)
    if not path.exists():
        raise AudioFileError(path, "no such file", "check the path")
    if path.is_dir():
        raise AudioFileError(path, "is a directory, not a recording")
    if path.stat().st_size == 0:
        raise AudioFileError(path, "is empty (0 bytes)", "record or copy it again")
    if path.suffix.lower() in (".wav", ".wave"):
        audio = _open_wav(path)
    else:
        audio = _open_with_soundfile(path)
    if audio.frames == 0:
        raise AudioFileError(path, "holds no audio frames", "record or copy it again")
    try:
        check_format(audio.sample_rate, audio.channels, "its header")
    except FormatError as exc:
        raise AudioFileError(path, str(exc), "the header is damaged, or this is not a "
                                             "recording: re-export or re-copy it") from None
    if audio.channels > 1:
        log.warning("%s has %d channels; mixing them down to mono", path, audio.channels)
    return audio


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """The whole recording as mono float32 and its sample rate."""
    audio = open_audio(path)
    return audio.read(), audio.sample_rate


def _open_wav(path: Path) -> AudioFile:
    import scipy.io.wavfile  # here: a device on a microphone never pays for importing it

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", scipy.io.wavfile.WavFileWarning)
            try:
                rate, data = scipy.io.wavfile.read(path, mmap=True)
            except ValueError as exc:
                if "mmap" not in str(exc):  # e.g. 24-bit PCM cannot be memory-mapped
                    raise
                rate, data = scipy.io.wavfile.read(path)
        truncated = [w for w in caught if "prematurely" in str(w.message)]
        for w in caught:
            if w not in truncated:
                log.warning("%s: %s", path, w.message)
    except ZeroDivisionError:  # a fmt chunk declaring 0 channels or 0-byte samples
        raise AudioFileError(path, "its header declares 0 channels (or 0-byte samples)",
                             "the header is damaged: re-export or re-copy it") from None
    except Exception as exc:  # scipy's parser fails in many ways on garbage; all mean "bad file"
        raise AudioFileError(path, f"not a readable WAV file ({type(exc).__name__}: {exc})",
                             "lungedge reads PCM WAV (8/16/24/32-bit integer or float) and, "
                             "with soundfile installed, FLAC") from None
    if rate <= 0:
        raise AudioFileError(path, f"declares an impossible sample rate {rate} Hz",
                             "the header is damaged")
    if data.dtype.kind not in "iuf":
        raise AudioFileError(path, f"has unsupported sample type {data.dtype}")
    channels = 1 if data.ndim == 1 else data.shape[1]
    if truncated:  # e.g. a recording cut short by a full disk, or a copy cut short
        held = data.shape[0] / rate
        declared = _declared_s(str(truncated[0].message), data, rate)
        if held < MIN_TRUNCATED_S:
            raise AudioFileError(path, f"is truncated: its header declares {declared:.1f} s of "
                                       f"audio, the file holds {held:.3f} s",
                                 "the recording or its copy was cut short: copy or record "
                                 "it again")
        log.warning("%s is truncated: its header declares %.1f s of audio, the file holds "
                    "%.1f s; using what is there", path, declared, held)
    return AudioFile(path, int(rate), int(data.shape[0]), int(channels), data)


MIN_TRUNCATED_S = 1.0  # less than this of a truncated recording is an error, not a recording


def _declared_s(warning: str, data: np.ndarray, rate: int) -> float:
    """The length the header promised, from scipy's "expected N bytes from header"."""
    match = re.search(r"expected (\d+) bytes", warning)
    if not match:
        return float("nan")
    frame_bytes = data.dtype.itemsize * (1 if data.ndim == 1 else data.shape[1])
    return int(match.group(1)) / frame_bytes / rate


def _open_with_soundfile(path: Path) -> AudioFile:
    try:
        import soundfile
    except ImportError:
        raise AudioFileError(path, f"{path.suffix or 'this'} files need the soundfile package",
                             "install it with `pip install 'lungedge[flac]'`, or convert the "
                             "recording to WAV") from None
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise AudioFileError(path, f"not a readable audio file ({exc})",
                             "lungedge reads WAV and FLAC recordings") from None
    if info.format not in LOSSLESS:
        raise AudioFileError(path, f"a {info.format} recording ({info.format_info}): lungedge "
                                   "reads WAV and FLAC only",
                             f"convert it to one (e.g. `ffmpeg -i {path.name} "
                             f"{path.stem}.flac`): a lossy format such as MP3 decodes "
                             "differently block by block (30% of the level, here) and drops "
                             "the short transients crackles are") from None
    return AudioFile(path, int(info.samplerate), int(info.frames), int(info.channels), None)


# What soundfile may decode for lungedge: lossless formats whose block reads equal a whole read.
LOSSLESS = ("WAV", "WAVEX", "RF64", "FLAC")
