"""The daemon's configuration: typed, frozen dataclasses loaded from one YAML file.

Everything is validated before anything starts, so a typo fails at `check-config` time with the
file, line and key path instead of hours later on a ward. Unknown keys are errors. Each field
carries its default, its bounds and a one-line description (the `doc` metadata), and
`lungedge.example.yaml` is generated from them (`python -m edge.config > …`; a test keeps the
two equal), so the documentation cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import textwrap
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from edge.audio_format import MAX_CHANNELS, MAX_RATE, MIN_RATE
from edge.tracker import TrackerConfig
from edge.typed import Invalid, ValidationError, from_yaml, section, setting

DEFAULT_CONFIG_PATH = Path("/etc/lungedge/lungedge.yaml")


class ConfigError(ValidationError):
    """A configuration problem a user can fix: where it is and what is allowed."""


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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class ModelConfig:
    path: str | None = setting(None, "Model package folder (model.tflite + manifest.json); "
                                     "required by `lungedge run`.")
    num_threads: int = setting(1, "Interpreter threads.", ge=1, le=8)
    calibration: str | None = setting(None, "This stethoscope's calibration (`lungedge "
                                            "calibrate`), for a model trained with normalise: "
                                            "stethoscope; null: the model's own statistics.")


@dataclass(frozen=True)
class TlsConfig:
    enabled: bool = setting(False, "Connect with TLS.")
    ca_file: str | None = setting(None, "CA certificate (PEM) to verify the broker; null: the "
                                        "system's CAs.")
    cert_file: str | None = setting(None, "Client certificate (PEM), for mutual TLS.")
    key_file: str | None = setting(None, "Client key (PEM), for mutual TLS.")

    def validate(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise Invalid("key_file", "cert_file and key_file go together")


@dataclass(frozen=True)
class BrokerConfig:
    """How to reach the MQTT broker: the device's settings, and the station's."""

    host: str = setting("localhost", "Broker host.")
    port: int = setting(1883, "Broker port.", ge=1, le=65535)
    topic_prefix: str = setting("lungedge", "First topic level: PREFIX/DEVICE/cycle, ….")
    keepalive_s: int = setting(30, "MQTT keepalive, s.", ge=5, le=600)
    username: str | None = setting(None, "User name, if the broker wants one.")
    password_file: str | None = setting(None, "File holding the password (first line).")
    password_env: str | None = setting(None, "Environment variable holding the password.")
    tls: TlsConfig = section(TlsConfig, "TLS settings.")
    reconnect_min_s: float = setting(0.5, "First reconnect delay, s (doubles, with jitter).",
                                     gt=0, le=60)
    reconnect_max_s: float = setting(30.0, "Longest reconnect delay, s.", gt=0, le=600)

    def validate(self) -> None:
        if self.password_file and self.password_env:
            raise Invalid("password_env", "give password_file or password_env, not both")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise Invalid("reconnect_max_s", "must be ≥ reconnect_min_s")

    def password(self) -> str | None:
        """The password, read when needed; it is never part of the config or a log line."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"environment variable {self.password_env} is not set",
                                  key_path="mqtt.password_env")
            return value
        if self.password_file:
            try:
                return Path(self.password_file).read_text().splitlines()[0]
            except (OSError, IndexError) as exc:
                raise ConfigError(f"cannot read password file {self.password_file}: {exc}",
                                  key_path="mqtt.password_file") from None
        return None


@dataclass(frozen=True)
class MqttConfig(BrokerConfig):
    stats_interval_s: float = setting(60.0, "Interval of stats messages, s.", ge=1, le=3600)


@dataclass(frozen=True)
class SpoolConfig:
    path: str = setting("/var/lib/lungedge/spool.db", "SQLite store-and-forward spool.")
    max_messages: int = setting(100000, "Bound of the spool; beyond it the oldest cycle "
                                        "results go first, alerts and summaries last.",
                                ge=100)
    memory_messages: int = setting(5000, "While the disk refuses writes (full, read-only, "
                                         "failing), messages wait in memory, up to this many.",
                                   ge=100)
    drops_window_s: float = setting(600.0, "Drops make the status degraded while they are this "
                                           "recent, s (stats count them all).", gt=0)


@dataclass(frozen=True)
class ClipsConfig:
    enabled: bool = setting(False, "Publish the audio of the cycle that opens or updates a "
                                   "wheeze or crackle alert (topic PREFIX/DEVICE/clip).")
    every_abnormal: bool = setting(False, "…and of every abnormal cycle, alert or not.")
    max_per_hour: int = setting(60, "At most this many clips in any hour; more are counted "
                                    "as dropped.", ge=1)
    max_kb_per_hour: int = setting(5000, "…and at most this many kB of them.", ge=10)


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = setting(False, "Announce this device to Home Assistant (MQTT discovery): "
                                   "alert binary sensors, abnormal burden, breathing rate and "
                                   "status, on the broker of `mqtt`.")
    discovery_prefix: str = setting("homeassistant", "Home Assistant's discovery prefix (its "
                                                     "default); discovery is sent again when "
                                                     "PREFIX/status says online.")
    name: str | None = setting(None, "Device name shown in Home Assistant; null: 'lungedge "
                                     "DEVICE_ID'.")

    def validate(self) -> None:
        if not self.discovery_prefix or set("+#") & set(self.discovery_prefix):
            raise Invalid("discovery_prefix", "must be a non-empty MQTT topic without + or #")


@dataclass(frozen=True)
class Config:
    """The deployment: where audio comes from and results go, and the alert rules a ward
    chose. What decides a cycle and its label is the model's (its manifest), not here."""

    REMOVED: ClassVar[dict[str, str]] = {
        "segmenter": "the segmenter's settings decide which cycles the model hears: they "
                     "travel with the model (its manifest's segmenter)"}

    device_id: str = setting("lungedge-1", "This device's id: names its MQTT topics.")
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", "Log verbosity.")
    source: SourceConfig = section(SourceConfig, "Audio input.")
    model: ModelConfig = section(ModelConfig, "The classifier.")
    tracker: TrackerConfig = section(TrackerConfig, "Smoothing, alerts and sessions.")
    mqtt: MqttConfig = section(MqttConfig, "Where results go.")
    spool: SpoolConfig = section(SpoolConfig, "Store-and-forward spool.")
    clips: ClipsConfig = section(ClipsConfig, "Evidence: the audio behind an alert.")
    homeassistant: HomeAssistantConfig = section(HomeAssistantConfig, "Home Assistant.")
    log_repeat_s: float = setting(300.0, "A log line that keeps repeating (a broker down all "
                                         "night) is written once, then summarised this often, "
                                         "s: an SD card is not a write sink.", ge=1)
    queue_blocks: int = setting(50, "Captured blocks that may wait for processing before "
                                    "capture drops (and counts) them.", ge=2, le=10000)

    def validate(self) -> None:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        if not self.device_id or set(self.device_id) - allowed:
            raise Invalid("device_id", "must be non-empty and use only letters, digits, "
                                        f"'-', '_' and '.' (it is an MQTT topic level), got "
                                        f"{self.device_id!r}")


def read_config_file(path: Path, example: str) -> str:
    """A config file's text; a missing or unreadable one is a ConfigError naming the file and,
    when missing, the example to start from."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no such file; pass --config PATH or create it from {example}",
                          source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError naming file, line and key."""
    path = Path(path)
    return parse_config(read_config_file(path, "edge/lungedge.example.yaml"), source=str(path))


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        return from_yaml(Config, text, source)
    except ValidationError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(exc.message, source=exc.source, line=exc.line,
                          key_path=exc.key_path) from None


# The example differs from the defaults only where install.sh puts things.
EXAMPLE_VALUES = {"model.path": "/opt/lungedge/models/lungedge-cnnlstm"}
EXAMPLE_HEADER = """\
# lungedge configuration: every key, its default and what it means. Generated from the typed
# definitions in edge/ (`python -m edge.config > edge/lungedge.example.yaml`). Copy it to
# /etc/lungedge/lungedge.yaml and change what you need; keys you leave out keep these defaults.
# Unknown keys are errors. Validate with:  lungedge check-config /etc/lungedge/lungedge.yaml

"""


def example_yaml() -> str:
    """The documented example config: every section and key, with its doc line and bounds."""
    return example_of(Config, EXAMPLE_HEADER, EXAMPLE_VALUES)


def example_of(cls: type, header: str, values: dict[str, Any]) -> str:
    """A documented YAML example of a config dataclass: `values` (by key path) where it is
    not to show the defaults."""
    out = [header]
    _example(cls, "", 0, out, values)
    return "".join(out)


def _example(cls: type, path: str, indent: int, out: list[str],
             values: dict[str, Any]) -> None:
    hints = typing.get_type_hints(cls)
    pad = " " * indent
    for f in dataclasses.fields(cls):
        key_path = f"{path}.{f.name}" if path else f.name
        doc = f.metadata.get("doc", "") + _bounds(hints[f.name], f.metadata)
        if not indent and dataclasses.is_dataclass(hints[f.name]):
            out.append("\n")
        out += [f"{pad}# {line}\n" for line in textwrap.wrap(doc, 96 - indent)]
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name]):
            out.append(f"{pad}{f.name}:\n")
            _example(hints[f.name], key_path, indent + 2, out, values)
            continue
        default = f.default if f.default is not dataclasses.MISSING else \
            typing.cast(Callable[[], Any], f.default_factory)()
        value = values.get(key_path, default)
        out.append(pad + yaml.safe_dump({f.name: value}, default_flow_style=True,
                                        allow_unicode=True, width=1000).strip()[1:-1] + "\n")
        item = typing.get_args(hints[f.name])
        # a list of sections (rules, users): one commented out, documented
        if typing.get_origin(hints[f.name]) is list and item and isinstance(item[0], type) \
                and dataclasses.is_dataclass(item[0]):
            entry: list[str] = []
            _example(item[0], f"{key_path}[]", 0, entry, values)
            out.append(f"{pad}# for example, one entry:\n")
            first = True
            for line in "".join(entry).splitlines():
                if line.startswith("#"):
                    out.append(f"{pad}#     {line}\n")
                else:
                    out.append(f"{pad}#   {'- ' if first else '  '}{line}\n")
                    first = False

def _bounds(tp: Any, meta: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " One of: " + ", ".join(str(v) for v in typing.get_args(tp)) + "."
    parts = [f"{op} {meta[k]}" for k, op in (("ge", "≥"), ("gt", ">"), ("le", "≤"))
             if meta.get(k) is not None]
    return f" ({', '.join(parts)})" if parts else ""


if __name__ == "__main__":
    sys.stdout.write(example_yaml())
