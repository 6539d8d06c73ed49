"""The daemon's configuration: typed, frozen dataclasses loaded from one YAML file.

Everything is validated before anything starts, so a typo fails at `check-config` time with the
file, line and key path instead of hours later on a ward. Unknown keys are errors. Each field
carries its default, its bounds and a one-line description (the `doc` metadata), so the dataclasses
are the reference for `lungedge.example.yaml`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_CONFIG_PATH = Path("/etc/lungedge/lungedge.yaml")


class ConfigError(ValueError):
    """A configuration problem a user can fix: where it is and what is allowed."""

    def __init__(self, message: str, *, source: str = "", line: int | None = None,
                 key_path: str = "") -> None:
        self.message = message
        self.source = source
        self.line = line
        self.key_path = key_path
        where = source or "<config>"
        if line is not None:
            where += f":{line}"
        prefix = f"{where}: {key_path}: " if key_path else f"{where}: "
        super().__init__(prefix + message)


class _Invalid(ValueError):
    """Raised by a section's `validate()`; the loader adds file, line and key path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def setting(default: Any, doc: str, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None) -> Any:
    """A config field with its documentation and numeric bounds."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        factory = default if callable(default) else (lambda: default)
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc})


@dataclass(frozen=True)
class FileSourceConfig:
    path: str | None = setting(None, "WAV (any PCM width) or FLAC file to play as the input.")
    realtime: bool = setting(True, "Pace blocks at the recording's real speed (false: as fast "
                                   "as the pipeline takes them).")
    loop: bool = setting(False, "Start again at the end instead of ending the stream.")


@dataclass(frozen=True)
class StdinSourceConfig:
    sample_rate: int = setting(8000, "Rate of the raw s16le samples on standard input, Hz.",
                               ge=1000, le=192000)
    channels: int = setting(1, "Interleaved channels on standard input (downmixed to mono).",
                            ge=1, le=8)


@dataclass(frozen=True)
class PyAudioSourceConfig:
    device: int | str | None = setting(
        None, "Input device: index, or a substring of its name (see `lungedge devices`); "
              "null for the system default input.")
    sample_rate: int = setting(48000, "Rate to open the device at, Hz (resampled to the model "
                                      "rate).", ge=1000, le=192000)
    channels: int = setting(1, "Channels to open (downmixed to mono).", ge=1, le=8)
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
            raise _Invalid("file.path", "source.type is 'file' but no file.path is given; "
                                        "set it to a WAV or FLAC recording")
        if self.type == "serial" and not self.serial.port:
            raise _Invalid("serial.port", "source.type is 'serial' but no serial.port is "
                                          "given; set it to the stethoscope's serial device")


@dataclass(frozen=True)
class SegmenterConfig:
    """Breathing-cycle segmentation; defaults were tuned on SPRSound train (bench/)."""

    band_low_hz: float = setting(195.0, "Low edge of the band whose energy marks breath "
                                        "sound, Hz.", gt=0)
    band_high_hz: float = setting(1010.0, "High edge of that band, Hz.", gt=0)
    frame_ms: float = setting(10.0, "Envelope frame length, ms.", ge=2, le=50)
    smooth_ms: float = setting(300.0, "Envelope smoothing (moving average), ms.", ge=0, le=1000)
    floor_window_s: float = setting(6.6, "Window of the running noise-floor estimate, s.",
                                    ge=0.5, le=60)
    floor_quantile: float = setting(0.34, "Quantile of the recent envelope taken as the noise "
                                         "floor.", gt=0, le=0.9)
    on_db: float = setting(4.9, "A cycle starts when the envelope rises this far above the "
                                "floor, dB.", gt=0, le=40)
    off_db: float = setting(4.9, "…and ends when it falls back below floor + this, dB.",
                            ge=0, le=40)
    min_cycle_s: float = setting(0.1, "Breath sounds shorter than this are ignored, "
                                      "s.", gt=0, le=5)
    max_cycle_s: float = setting(3.35, "Longer cycles are cut here (forced cut), s.",
                                 gt=0, le=30)
    merge_gap_s: float = setting(0.48, "Breath sound must stay quiet this long to end, s.",
                                 ge=0, le=2)
    pad_s: float = setting(0.22, "A cycle starts this long before its breath's onset, s.",
                           ge=0, le=1)
    tail_s: float = setting(2.57, "A cycle ends this long after its breath's sound (or at "
                                  "the next breath, if sooner), s.", ge=0, le=5)

    def validate(self) -> None:
        if self.band_high_hz <= self.band_low_hz:
            raise _Invalid("band_high_hz", f"must be above band_low_hz "
                                           f"({self.band_low_hz}), got {self.band_high_hz}")
        if self.off_db > self.on_db:
            raise _Invalid("off_db", f"must not exceed on_db ({self.on_db}), got "
                                     f"{self.off_db}")
        if self.max_cycle_s < 2 * self.min_cycle_s:
            raise _Invalid("max_cycle_s", f"must be at least twice min_cycle_s "
                                          f"({self.min_cycle_s}), got {self.max_cycle_s}")


@dataclass(frozen=True)
class ModelConfig:
    path: str | None = setting(None, "Model package folder (model.tflite + manifest.json); "
                                     "required by `lungedge run`.")
    num_threads: int = setting(1, "Interpreter threads.", ge=1, le=8)


@dataclass(frozen=True)
class TlsConfig:
    enabled: bool = setting(False, "Connect with TLS.")
    ca_file: str | None = setting(None, "CA certificate (PEM) to verify the broker; null: the "
                                        "system's CAs.")
    cert_file: str | None = setting(None, "Client certificate (PEM), for mutual TLS.")
    key_file: str | None = setting(None, "Client key (PEM), for mutual TLS.")

    def validate(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise _Invalid("key_file", "cert_file and key_file go together")


@dataclass(frozen=True)
class MqttConfig:
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
    stats_interval_s: float = setting(60.0, "Interval of stats messages, s.", ge=1, le=3600)

    def validate(self) -> None:
        if self.password_file and self.password_env:
            raise _Invalid("password_env", "give password_file or password_env, not both")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise _Invalid("reconnect_max_s", "must be ≥ reconnect_min_s")

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
class SpoolConfig:
    path: str = setting("/var/lib/lungedge/spool.db", "SQLite store-and-forward spool.")
    max_messages: int = setting(100000, "Bound of the spool; beyond it the oldest cycle "
                                        "results go first, alerts and summaries last.",
                                ge=100)


@dataclass(frozen=True)
class AlertRule:
    on_fraction: float = setting(0.4, "Raise when this share of recent cycles shows it.",
                                 gt=0, le=1)
    off_fraction: float = setting(0.15, "End when the share falls to this or below.",
                                  ge=0, le=1)
    min_cycles: int = setting(3, "…and at least this many recent cycles show it (debounce).",
                              ge=1)

    def validate(self) -> None:
        if self.off_fraction >= self.on_fraction:
            raise _Invalid("off_fraction", "must be below on_fraction (hysteresis)")


@dataclass(frozen=True)
class TrackerConfig:
    window_cycles: int = setting(8, "Recent cycles the alert rules look at.", ge=1, le=100)
    min_confidence: float = setting(0.5, "A cycle counts as abnormal only this confident.",
                                    ge=0, le=1)
    wheeze: AlertRule = section(AlertRule, "Wheeze (CAS) alerts.")
    crackle: AlertRule = section(AlertRule, "Crackle (DAS) alerts.")
    poor_signal: AlertRule = section(AlertRule, "Poor-signal alerts (low cycle quality).")
    poor_quality_below: float = setting(0.3, "A cycle's quality below this is poor.", ge=0,
                                        le=1)
    no_audio_s: float = setting(10.0, "No audio (or only silence) for this long raises "
                                      "no_audio, s.", gt=0)
    session_silence_s: float = setting(30.0, "A session ends after this long without "
                                             "cycles, s.", gt=0)
    session_max_s: float = setting(600.0, "…or after this long, s.", gt=0)


@dataclass(frozen=True)
class Config:
    device_id: str = setting("lungedge-1", "This device's id: names its MQTT topics.")
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", "Log verbosity.")
    source: SourceConfig = section(SourceConfig, "Audio input.")
    segmenter: SegmenterConfig = section(SegmenterConfig, "Breathing-cycle segmentation.")
    model: ModelConfig = section(ModelConfig, "The classifier.")
    tracker: TrackerConfig = section(TrackerConfig, "Smoothing, alerts and sessions.")
    mqtt: MqttConfig = section(MqttConfig, "Where results go.")
    spool: SpoolConfig = section(SpoolConfig, "Store-and-forward spool.")
    queue_blocks: int = setting(50, "Captured blocks that may wait for processing before "
                                    "capture drops (and counts) them.", ge=2, le=10000)

    def validate(self) -> None:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        if not self.device_id or set(self.device_id) - allowed:
            raise _Invalid("device_id", "must be non-empty and use only letters, digits, "
                                        f"'-', '_' and '.' (it is an MQTT topic level), got "
                                        f"{self.device_id!r}")


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file; pass --config PATH or create it from "
                          "edge/lungedge.example.yaml", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from None
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML: {problem}", source=source,
                          line=mark.line + 1 if mark else None) from None
    if node is None:
        return Config()
    return _Builder(source).build(Config, node, "")


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, key_path: str, message: str) -> typing.NoReturn:
        raise ConfigError(message, source=self.source, line=node.start_mark.line + 1,
                          key_path=key_path)

    def build(self, cls: type, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path or "(top level)", "expected a mapping of keys to values")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        key_nodes: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            key = str(knode.value)
            key_path = f"{path}.{key}" if path else key
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.fail(knode, key_path, f"unknown key{hint}; allowed here: "
                                           f"{', '.join(fields)}")
            if key in values:
                self.fail(knode, key_path, "key given twice")
            values[key] = self.convert(hints[key], vnode, key_path, fields[key].metadata)
            key_nodes[key] = knode
        obj = cls(**values)
        validate = getattr(obj, "validate", None)
        if validate is not None:
            try:
                validate()
            except _Invalid as exc:
                first = exc.key.split(".")[0]
                where = key_nodes.get(first, node)
                self.fail(where, f"{path}.{exc.key}" if path else exc.key, str(exc))
        return obj

    def convert(self, tp: Any, node: yaml.Node, path: str, meta: Any) -> Any:
        if dataclasses.is_dataclass(tp):
            return self.build(tp, node, path)
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, path, f"expected {_describe(tp)}, got a "
                                  f"{'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}")
        value = self.constructor.construct_object(node)
        options = typing.get_args(tp) if _is_union(tp) else (tp,)
        for option in options:
            ok, converted = _coerce(option, value)
            if ok:
                self.check_bounds(converted, node, path, meta)
                return converted
        self.fail(node, path, f"expected {_describe(tp)}, got {value!r}")

    def check_bounds(self, value: Any, node: yaml.Node, path: str, meta: Any) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        ge, gt, le = meta.get("ge"), meta.get("gt"), meta.get("le")
        if ge is not None and value < ge:
            self.fail(node, path, f"must be ≥ {ge}, got {value}")
        if gt is not None and value <= gt:
            self.fail(node, path, f"must be > {gt}, got {value}")
        if le is not None and value > le:
            self.fail(node, path, f"must be ≤ {le}, got {value}")


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _coerce(tp: Any, value: Any) -> tuple[bool, Any]:
    if tp is type(None):
        return value is None, None
    if typing.get_origin(tp) is Literal:
        return value in typing.get_args(tp), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        return isinstance(value, str), value
    raise TypeError(f"config type {tp} is not supported by the loader")


def _describe(tp: Any) -> str:
    if _is_union(tp):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             type(None): "null"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))
