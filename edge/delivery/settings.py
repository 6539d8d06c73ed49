"""Delivery's sections of the device config: the broker (shared with the station's config),
the spool, evidence clips and Home Assistant."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge.loader import ConfigError, Invalid, section, setting


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


@dataclass(kw_only=True, frozen=True)
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
    stats_interval_s: float = setting(5.0, "Interval of stats messages, s: also the device's "
                                           "heartbeat (its status says so), by which a "
                                           "station knows within a few of them that it is "
                                           "gone.", ge=1, le=3600)


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


@dataclass(kw_only=True, frozen=True)
class ClipsConfig:
    enabled: bool = setting(False, "Publish the audio of the cycle that opens or updates a "
                                   "wheeze or crackle alert (topic PREFIX/DEVICE/clip).")
    every_abnormal: bool = setting(False, "…and of every abnormal cycle, alert or not.")
    max_per_hour: int = setting(60, "At most this many clips in any hour; more are counted "
                                    "as dropped.", ge=1)
    max_kb_per_hour: int = setting(5000, "…and at most this many kB of them.", ge=10)
    per_alert: int = setting(3, "At most this many clips of one alert (its opening cycle "
                                "first, then updates): one long alert cannot spend the hour.",
                             ge=1)
    reserved_for_new: int = setting(10, "Of max_per_hour, this many (at most all but one) are "
                                        "kept for the first clip of new alerts: updates and "
                                        "every_abnormal clips stop short of them, so every "
                                        "alert has its audio.", ge=0)


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
