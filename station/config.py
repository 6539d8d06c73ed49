"""The station's configuration: typed, frozen dataclasses from one YAML file, read by the same
loader as the device's (edge.loader), so its errors name the file, line and key path too.

`python -m station.config` prints the documented example (`station/station.example.yaml` is
that, checked by a test).
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.delivery.settings import BrokerConfig
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

    def validate(self) -> None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(self.url)
        except ArgumentError:
            raise Invalid("url", f"{self.url!r} is not a database URL; use "
                                 "sqlite:////var/lib/lungedge-station/station.db or "
                                 "postgresql+psycopg://USER@HOST/DB") from None
        if url.drivername not in ("sqlite", "postgresql+psycopg", "postgresql"):
            raise Invalid("url", f"{url.drivername}: the station stores in SQLite "
                                 "(sqlite:///PATH) or PostgreSQL (postgresql+psycopg://…), "
                                 "nothing else")
        if url.drivername == "sqlite" and not url.database:
            raise Invalid("url", "sqlite:/// needs a file path (sqlite:////var/lib/…/station.db"
                                 "); an in-memory database would forget everything")


def _base64(text: str) -> bool:
    import base64
    import binascii

    try:
        return bool(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return False


@dataclass(frozen=True)
class User:
    name: str = setting("", "Who acknowledges: shown beside every acknowledgement.")
    password_hash: str = setting("", "From `lungedge station hash-password` (scrypt); never "
                                     "the password itself.")

    def validate(self) -> None:
        if not self.name.strip():
            raise Invalid("name", "a user needs a name")
        parts = self.password_hash.split("$")
        if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]) \
                or not _base64(parts[4]) or not _base64(parts[5]):
            raise Invalid("password_hash", "not a hash from `lungedge station hash-password` "
                                           "(scrypt$N$r$p$salt$key): no password could ever "
                                           "match it; make one with that command")


@dataclass(kw_only=True, frozen=True)
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
    trusted_proxies: list[str] = setting([], "Addresses (or networks, 10.0.0.0/24) of the "
                                             "reverse proxies whose proxy_user_header is "
                                             "believed; required with auth: proxy (from "
                                             "anyone else the header is ignored).")
    login_to_read: bool | None = setting(None, "Every page, clip and live update needs a "
                                               "login; null: yes whenever there are logins "
                                               "(auth users or proxy: a proxy on the same "
                                               "host made every reader look local). Patient "
                                               "audio is on them; write false to let the "
                                               "loopback read without one.")
    session_idle_min: float = setting(30.0, "A login nobody uses for this long ends, min.",
                                      gt=0)
    session_max_h: float = setting(12.0, "A login ends after this long whatever, h.", gt=0)
    secret_file: str = setting("/var/lib/lungedge-station/secret", "Key that signs login "
                                                                  "cookies; made if missing.")
    secure_cookies: bool = setting(False, "Send the login cookie over HTTPS only (true behind "
                                          "a TLS proxy).")
    max_upload_mb: float = setting(50.0, "Largest recording `analyse a recording` accepts, MB "
                                         "(counted as it arrives, whatever the request "
                                         "claims).", gt=0)
    max_analyse_min: float = setting(30.0, "Longest recording it analyses, minutes (checked "
                                           "in the file's header before any decoding).", gt=0)

    def validate(self) -> None:
        if self.auth == "users" and not self.users:
            raise Invalid("users", "auth is 'users' but no user is configured; add one with a "
                                   "hash from `lungedge station hash-password`")
        if self.auth == "none" and not _loopback(self.host):
            raise Invalid("host", f"the web UI would listen on {self.host} with no login: set "
                                  "auth to 'users' (with users) or 'proxy', or listen on "
                                  "127.0.0.1")
        if self.login_to_read is False and not _loopback(self.host):
            raise Invalid("login_to_read", f"anyone who reaches {self.host} would read the "
                                           "ward and hear patients' audio without logging in: "
                                           "leave it null (or true), or listen on 127.0.0.1")
        if self.auth == "proxy" and not self.trusted_proxies:
            raise Invalid("trusted_proxies", "auth is 'proxy' but no proxy is trusted: any "
                                             "client could send the user header and act as "
                                             "anyone; list your proxy's address")
        for i, net in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise Invalid(f"trusted_proxies[{i}]", f"{net!r} is not an address or "
                                                       "network") from None

    @property
    def read_needs_login(self) -> bool:
        """Logins exist, and `login_to_read: false` was not written (auth none is read-only and
        answers the loopback only)."""
        return self.auth != "none" and self.login_to_read is not False


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AlarmConfig:
    offline_after_s: float = setting(180.0, "A device that does not say its heartbeat (one "
                                            "older than status schema 6) and is not heard "
                                            "from for this long is offline even before its "
                                            "broker says so, s; one that says it is offline "
                                            "after 2.5 heartbeats of silence.", gt=0)
    spool_backlog: int = setting(1000, "A device holding this many undelivered messages raises "
                                       "a spool backlog alarm.", ge=1)


@dataclass(kw_only=True, frozen=True)
class StationConfig:
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", "Log verbosity.")
    mqtt: StationMqttConfig = section(StationMqttConfig, "The broker the devices publish to.")
    database: DatabaseConfig = section(DatabaseConfig, "Where the station keeps what it heard.")
    web: WebConfig = section(WebConfig, "The web UI.")
    alarms: AlarmConfig = section(AlarmConfig, "Technical alarms the station raises itself.")
    routing: RoutingConfig = section(RoutingConfig, "Who hears of which alert, and how.")
    model: str | None = setting(None, "Model package for `analyse a recording` (null: the "
                                      "shipped one).")


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

