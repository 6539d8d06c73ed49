"""The station's configuration: typed, frozen dataclasses from one YAML file, read by the same
loader as the device's (edge.typed), so its errors name the file, line and key path too.

`python -m station.config` prints the documented example (`station/station.example.yaml` is
that, checked by a test).
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.config import BrokerConfig, ConfigError, example_of, read_config_file
from edge.typed import Invalid, ValidationError, from_yaml, section, setting
from station.routing.rules import RoutingConfig


@dataclass(frozen=True)
class StationMqttConfig(BrokerConfig):
    client_id: str = setting("lungedge-station", "MQTT client id. The broker keeps this "
                                                 "station's session under it, so messages "
                                                 "wait for the station while it is down.")
    shared_group: str | None = setting(None, "Share the subscription with the other ingest "
                                             "workers of this group ($share/GROUP/…, MQTT 5): "
                                             "each message goes to one of them.")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = setting("sqlite:////var/lib/lungedge-station/station.db",
                       "SQLAlchemy URL: sqlite:///PATH (embedded, the default) or "
                       "postgresql+psycopg://USER@HOST/DB for several workers.")
    retention_days: float = setting(30.0, "Cycles, summaries, statistics and gap records are "
                                          "kept this long, days.", gt=0)
    alert_retention_days: float = setting(365.0, "Alerts and their history (with who "
                                                 "acknowledged them) are kept this long, "
                                                 "days.", gt=0)
    clip_retention_days: float = setting(7.0, "The audio clips behind alerts are kept this "
                                              "long, days.", gt=0)


@dataclass(frozen=True)
class User:
    name: str = setting("", "Who acknowledges: shown beside every acknowledgement.")
    password_hash: str = setting("", "From `lungedge station hash-password` (scrypt); never "
                                     "the password itself.")

    def validate(self) -> None:
        if not self.name.strip():
            raise Invalid("name", "a user needs a name")
        if not self.password_hash.startswith("scrypt$"):
            raise Invalid("password_hash", "not a hash from `lungedge station hash-password`")


@dataclass(frozen=True)
class WebConfig:
    host: str = setting("127.0.0.1", "Address the web UI listens on. Anything but the loopback "
                                     "needs auth: users or proxy.")
    port: int = setting(8080, "Port of the web UI.", ge=1, le=65535)
    auth: Literal["none", "users", "proxy"] = setting(
        "none", "none: read-only, on the loopback only; users: log in with the users below; "
                "proxy: a reverse proxy in front has logged the user in and says who in "
                "proxy_user_header.")
    users: list[User] = setting([], "People who may log in (auth: users).")
    proxy_user_header: str = setting("X-Remote-User", "The proxy's header naming the user "
                                                      "(auth: proxy).")
    secret_file: str = setting("/var/lib/lungedge-station/secret", "Key that signs login "
                                                                  "cookies; made if missing.")
    secure_cookies: bool = setting(False, "Send the login cookie over HTTPS only (true behind "
                                          "a TLS proxy).")
    max_upload_mb: float = setting(50.0, "Largest recording `analyse a recording` accepts, MB.",
                                   gt=0)

    def validate(self) -> None:
        if self.auth == "users" and not self.users:
            raise Invalid("users", "auth is 'users' but no user is configured; add one with a "
                                   "hash from `lungedge station hash-password`")
        if self.auth == "none" and not _loopback(self.host):
            raise Invalid("host", f"the web UI would listen on {self.host} with no login: set "
                                  "auth to 'users' (with users) or 'proxy', or listen on "
                                  "127.0.0.1")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AlarmConfig:
    offline_after_s: float = setting(180.0, "A device not heard from for this long is offline "
                                            "even before its broker says so, s.", gt=0)
    spool_backlog: int = setting(1000, "A device holding this many undelivered messages raises "
                                       "a spool backlog alarm.", ge=1)


@dataclass(frozen=True)
class StationConfig:
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", "Log verbosity.")
    mqtt: StationMqttConfig = section(StationMqttConfig, "The broker the devices publish to.")
    database: DatabaseConfig = section(DatabaseConfig, "Where the station keeps what it heard.")
    web: WebConfig = section(WebConfig, "The web UI.")
    alarms: AlarmConfig = section(AlarmConfig, "Technical alarms the station raises itself.")
    routing: RoutingConfig = section(RoutingConfig, "Who hears of which alert, and how.")
    model: str | None = setting(None, "Model package for `analyse a recording` (null: the "
                                      "shipped one).")


DEFAULT_PATH = Path("/etc/lungedge/station.yaml")
EXAMPLE_HEADER = """\
# lungedge station configuration: every key, its default and what it means. Generated from the
# typed definitions (`python -m station.config > station/station.example.yaml`). Unknown keys
# are errors. Validate with:  lungedge station check-config station.yaml

"""


def load(path: str | Path) -> StationConfig:
    path = Path(path)
    text = read_config_file(path, "station/station.example.yaml")
    try:
        return from_yaml(StationConfig, text, str(path))
    except ValidationError as exc:
        raise ConfigError(exc.message, source=exc.source, line=exc.line,
                          key_path=exc.key_path) from None


def example() -> str:
    return example_of(StationConfig, EXAMPLE_HEADER, {})


if __name__ == "__main__":
    sys.stdout.write(example())

