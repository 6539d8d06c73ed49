"""The daemon's configuration: typed, frozen dataclasses loaded from one YAML file. Each
package owns its own section (sources, delivery, the tracker's alert rules); this is where they
are put together.

Everything is validated before anything starts, so a typo fails at `check-config` time with the
file, line and key path instead of hours later on a ward. Unknown keys are errors. Each field
carries its default, its bounds and a one-line description (the `doc` metadata), and
`lungedge.example.yaml` is generated from them (`python -m edge.service.config > …`; a test
keeps the two equal), so the documentation cannot drift from the code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from edge.delivery.settings import ClipsConfig, HomeAssistantConfig, MqttConfig, SpoolConfig
from edge.loader import (
    ConfigError,
    Invalid,
    ValidationError,
    example_of,
    from_yaml,
    read_config_file,
    section,
    setting,
)
from edge.pipeline.tracker import TrackerConfig
from edge.sources.settings import SourceConfig

DEFAULT_CONFIG_PATH = Path("/etc/lungedge/lungedge.yaml")


@dataclass(frozen=True)
class ModelConfig:
    path: str | None = setting(None, "Model package folder (manifest.json + its .tflite files); "
                                     "null: the store's current package (`lungedge model "
                                     "install`), else the model that ships with lungedge (in "
                                     "its source tree, or where install.sh put it).")
    num_threads: int = setting(1, "Interpreter threads.", ge=1, le=8)
    calibration: str | None = setting(None, "This stethoscope's calibration (`lungedge "
                                            "calibrate`), for a model trained with normalise: "
                                            "stethoscope; null: the model's own statistics.")
    trusted_keys: list[str] = setting([], "Public keys ('ed25519:…', from `python -m "
                                          "convert.sign new-key`) a model package must be "
                                          "signed with; a package not signed by one, or "
                                          "changed since, is refused. Empty: not checked.")

    store: str = setting("/var/lib/lungedge/models", "Where `lungedge model install` keeps "
                                                     "the packages it installed; with path "
                                                     "null the daemon runs the store's current "
                                                     "one, else the shipped model.")
    max_window_ms: float = setting(50.0, "A package whose self-test takes longer than this "
                                         "per window on this device is not installed, ms.",
                                   gt=0)
    watch_s: float = setting(600.0, "A newly installed package runs on trial this long: a "
                                    "restart of the daemon or blocks dropped because "
                                    "processing fell behind meanwhile send the device back to "
                                    "the previous package, s.", ge=0)

    def validate(self) -> None:
        from edge.pipeline.signature import SignatureRefused, key_id

        for i, key in enumerate(self.trusted_keys):
            try:
                key_id(key)
            except SignatureRefused as exc:
                raise Invalid(f"trusted_keys[{i}]", str(exc).split(": ", 1)[1]) from None


@dataclass(kw_only=True, frozen=True)
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
EXAMPLE_HEADER = """\
# lungedge configuration: every key, its default and what it means. Generated from the typed
# definitions in edge/ (`python -m edge.service.config > edge/lungedge.example.yaml`). Copy it to
# /etc/lungedge/lungedge.yaml and change what you need; keys you leave out keep these defaults.
# Unknown keys are errors. Validate with:  lungedge check-config /etc/lungedge/lungedge.yaml

"""


def example_yaml() -> str:
    """The documented example config: every section and key, with its doc line and bounds."""
    return example_of(Config, EXAMPLE_HEADER, {})


if __name__ == "__main__":
    sys.stdout.write(example_yaml())
