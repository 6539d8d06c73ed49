"""A live input device through PortAudio (pyaudio): the stethoscope as a USB sound card.

Blocking reads keep the arithmetic of lost audio exact: an `input overflowed` read (-9981) has
discarded exactly one block, which is reported as a gap of that length; a device that vanishes is
closed and reopened with capped exponential backoff, and the wall-clock time it was away becomes
the next block's gap. Neither ends the stream: a stethoscope unplugged for a minute is a state,
not a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from edge import clock
from edge.native import quiet_stderr
from edge.sources.base import (
    AudioBlock,
    PlainInput,
    SourceError,
    reopen_with_backoff,
    to_mono_float32,
)

log = logging.getLogger(__name__)

INPUT_OVERFLOWED = -9981  # paInputOverflowed


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    max_input_channels: int
    default_sample_rate: float
    host_api: str


def _import_pyaudio() -> ModuleType:
    try:
        import pyaudio
    except ImportError:
        raise SourceError("live audio input needs pyaudio: install Debian's portaudio19-dev, "
                          "then `pip install 'lungedge[audio]'`") from None
    return pyaudio


def list_input_devices(pa: Any | None = None) -> list[InputDevice]:
    """Every PortAudio device that can record."""
    own = pa is None
    if pa is None:
        with quiet_stderr():  # ALSA's and JACK's probing: dozens of lines before the answer
            audio: Any = _import_pyaudio().PyAudio()
    else:
        audio = pa
    try:
        devices = []
        for index in range(audio.get_device_count()):
            info = audio.get_device_info_by_index(index)
            if int(info.get("maxInputChannels", 0)) <= 0:
                continue
            api = audio.get_host_api_info_by_index(info["hostApi"])["name"]
            devices.append(InputDevice(index, str(info["name"]), int(info["maxInputChannels"]),
                                       float(info["defaultSampleRate"]), str(api)))
        return devices
    finally:
        if own:
            audio.terminate()


def resolve_device(devices: list[InputDevice], wanted: int | str | None) -> InputDevice | None:
    """The device asked for by index or name substring; None means the system default."""
    if wanted is None:
        return None
    names = "; ".join(f"{d.index}: {d.name}" for d in devices) or "none"
    if isinstance(wanted, int):
        for d in devices:
            if d.index == wanted:
                return d
        raise SourceError(f"no input device with index {wanted}; inputs are: {names}")
    matches = [d for d in devices if wanted.lower() in d.name.lower()]
    if not matches:
        raise SourceError(f"no input device whose name contains {wanted!r}; inputs are: {names}"
                          " (run `lungedge devices`)")
    if len(matches) > 1:
        exact = [d for d in matches if d.name.lower() == wanted.lower()]
        if len(exact) == 1:
            return exact[0]
        found = "; ".join(f"{d.index}: {d.name}" for d in matches)
        raise SourceError(f"input device name {wanted!r} is ambiguous ({found}); use a longer "
                          "substring or the index")
    return matches[0]


class SoundCardSource(PlainInput):
    """Reads blocks from a PortAudio input; survives overflows and device loss."""

    def __init__(self, *, device: int | str | None, sample_rate: int, channels: int = 1,
                 block_ms: int = 100, reopen_backoff_max_s: float = 30.0,
                 pyaudio_module: ModuleType | None = None) -> None:
        self.pyaudio = pyaudio_module or _import_pyaudio()
        self.wanted = device
        self.sample_rate = sample_rate
        self.live = True
        self.channels = channels
        self.block_frames = max(1, round(sample_rate * block_ms / 1000))
        self.backoff_max_s = reopen_backoff_max_s
        self.state = "closed"  # closed → streaming ⇄ reopening
        self.overflows = 0
        self.reopens = 0
        self.device_name = "default input"
        self._stop = threading.Event()
        self._pa: Any = None
        self._stream: Any = None
        self._open()  # the first open fails loudly: a wrong device is a config error

    def describe(self) -> str:
        return (f"pyaudio device {self.device_name!r} ({self.sample_rate} Hz, "
                f"{self.channels} ch, {self.block_frames}-frame blocks)")

    def counters(self) -> dict[str, int]:
        return {"overflows": self.overflows, "reopens": self.reopens}

    def _open(self) -> None:
        self._pa = self.pyaudio.PyAudio()
        try:
            dev = resolve_device(list_input_devices(self._pa), self.wanted)
            if dev is not None:
                self.device_name = dev.name
            self._stream = self._pa.open(
                format=self.pyaudio.paInt16, channels=self.channels, rate=self.sample_rate,
                input=True, frames_per_buffer=self.block_frames,
                input_device_index=None if dev is None else dev.index)
        except SourceError:
            self._release()
            raise
        except (OSError, ValueError) as exc:
            self._release()
            raise SourceError(f"cannot open input {self.device_name!r} at {self.sample_rate} "
                              f"Hz, {self.channels} ch: {exc}; check the rate and channels it "
                              "supports with `lungedge devices`") from None
        self.state = "streaming"

    def _release(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop_stream()
                self._stream.close()
            except OSError:
                pass
            self._stream = None
        if self._pa is not None:
            # Terminate so the next PyAudio() re-scans devices: a re-plugged stethoscope
            # comes back under a new ALSA card number.
            self._pa.terminate()
            self._pa = None

    def blocks(self) -> Iterator[AudioBlock]:
        position = 0  # frames on the audio timeline, gaps included
        gap_frames = 0
        gap_reason = ""
        while not self._stop.is_set():
            if self._stream is None:
                away_since = time.monotonic()  # not the wall clock: NTP may set it meanwhile
                if not self._reopen():
                    return
                lost = round((time.monotonic() - away_since) * self.sample_rate)
                gap_frames += lost
                gap_reason = gap_reason or "device reopened"
            try:
                raw = self._stream.read(self.block_frames, exception_on_overflow=True)
            except OSError as exc:
                if getattr(exc, "errno", None) == INPUT_OVERFLOWED:
                    # PortAudio discarded this read: exactly one block is gone.
                    self.overflows += 1
                    gap_frames += self.block_frames
                    gap_reason = gap_reason or "input overflowed"
                    log.warning("input overflowed (%d so far): one %d-frame block lost",
                                self.overflows, self.block_frames)
                    continue
                log.error("input device %r failed: %s; reopening", self.device_name, exc)
                self._release()
                self.state = "reopening"
                continue
            position += gap_frames
            frames = np.frombuffer(raw, dtype="<i2").reshape(-1, self.channels)
            samples = to_mono_float32(frames)
            # the wall clock when it was captured: it follows NTP setting the clock, where a
            # sample count from the start would keep a boot-time clock's error forever
            yield AudioBlock(samples, self.sample_rate, position / self.sample_rate,
                             clock.wall() - len(samples) / self.sample_rate,
                             gap_frames / self.sample_rate, gap_reason)
            position += len(samples)
            gap_frames, gap_reason = 0, ""

    def _reopen(self) -> bool:
        if not reopen_with_backoff(self._open, self._stop, what=f"input {self.wanted!r}",
                                   first_s=0.5, max_s=self.backoff_max_s,
                                   errors=(SourceError,)):
            return False
        self.reopens += 1
        log.info("input %r reopened (%d reopen(s) so far)", self.device_name, self.reopens)
        return True

    def close(self) -> None:
        self._stop.set()
        self._release()
        self.state = "closed"
