"""The audio input's section of the device config (`source:`): owned here, beside the sources
it opens, so opening a source needs nothing of the rest of the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge.loader import Invalid, section, setting
from edge.sources.audio_format import MAX_CHANNELS, MAX_RATE, MIN_RATE


@dataclass(frozen=True)
class FileSourceConfig:
    path: str | None = setting(None, "WAV (any PCM width) or FLAC file to play as the input.")
    realtime: bool = setting(True, "Pace blocks at the recording's real speed (false: as fast "
                                   "as the pipeline takes them).")
    loop: bool = setting(False, "Start again at the end instead of ending the stream.")


@dataclass(frozen=True)
class StdinSourceConfig:
    sample_rate: int = setting(8000, "Rate of the raw s16le samples on standard input, Hz.",
                               ge=MIN_RATE, le=MAX_RATE)
    channels: int = setting(1, "Interleaved channels on standard input (downmixed to mono).",
                            ge=1, le=MAX_CHANNELS)


@dataclass(frozen=True)
class PyAudioSourceConfig:
    device: int | str | None = setting(
        None, "Input device: index, or a substring of its name (see `lungedge devices`); "
              "null for the system default input.")
    sample_rate: int = setting(48000, "Rate to open the device at, Hz (resampled to the model "
                                      "rate).", ge=MIN_RATE, le=MAX_RATE)
    channels: int = setting(1, "Channels to open (downmixed to mono).", ge=1, le=MAX_CHANNELS)
    reopen_backoff_max_s: float = setting(30.0, "Longest wait between attempts to reopen a "
                                                "lost device, s.", gt=0, le=3600)


@dataclass(kw_only=True, frozen=True)
class SerialSourceConfig:
    port: str | None = setting(None, "Serial device of the stethoscope, e.g. "
                                     "/dev/serial/by-id/usb-…; required for type: serial.")
    baud: int = setting(115200, "Baud rate (ignored by USB-CDC devices).", ge=9600)
    sample_rate: Literal[4000, 8000, 16000, 22050, 44100, 48000] = setting(
        8000, "Rate to ask the stethoscope for, Hz.")
    gain_db: int | None = setting(None, "Microphone gain to set on the device, dB; null: "
                                        "leave it as it is.", ge=-40, le=40)
    stall_timeout_s: float = setting(2.0, "Restart the stream after this long without data; "
                                          "reopen the port after three times as long, s.",
                                     gt=0, le=60)
    reopen_backoff_max_s: float = setting(30.0, "Longest wait between attempts to reopen an "
                                                "unplugged stethoscope, s.", gt=0, le=3600)


@dataclass(kw_only=True, frozen=True)
class SourceConfig:
    type: Literal["file", "stdin", "pyaudio", "serial"] = setting(
        "pyaudio", "Where audio comes from.")
    block_ms: int = setting(100, "Length of one captured block, ms.", ge=5, le=2000)
    file: FileSourceConfig = section(FileSourceConfig, "Settings for type: file.")
    stdin: StdinSourceConfig = section(StdinSourceConfig, "Settings for type: stdin.")
    pyaudio: PyAudioSourceConfig = section(PyAudioSourceConfig, "Settings for type: pyaudio.")
    serial: SerialSourceConfig = section(SerialSourceConfig, "Settings for type: serial.")

    def validate(self) -> None:
        if self.type == "file" and not self.file.path:
            raise Invalid("file.path", "source.type is 'file' but no file.path is given; "
                                        "set it to a WAV or FLAC recording")
        if self.type == "serial" and not self.serial.port:
            raise Invalid("serial.port", "source.type is 'serial' but no serial.port is "
                                          "given; set it to the stethoscope's serial device")
