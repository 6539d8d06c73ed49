"""Before the station starts: every file, folder and database the config names, checked for what
the station will do with it, each problem with the file, line and key (`lungedge station
check-config` said OK, then the start failed with a traceback naming neither file nor key, or
retried a read-only database for ever). `check-config` prints them all; the start refuses on
them, in the same words."""

from __future__ import annotations

from pathlib import Path

from edge import checks
from edge.checks import Problem
from station.config import StationConfig


def problems(cfg: StationConfig) -> list[Problem]:
    out: list[Problem] = []
    tls = cfg.mqtt.tls
    if tls.enabled:
        out += checks.tls("mqtt.tls", tls.ca_file, tls.cert_file, tls.key_file, fatal=True)
    if cfg.mqtt.password_file:
        out += checks.readable("mqtt.password_file", cfg.mqtt.password_file, fatal=True)
    url = cfg.database.url
    if url.startswith("sqlite:///"):
        out += checks.writable_file("database.url", Path(url.removeprefix("sqlite:///")),
                                    "the service keeps its database in "
                                    "/var/lib/lungedge-station", fatal=True)
    secret = Path(cfg.web.secret_file)
    out += checks.readable("web.secret_file", str(secret), fatal=True) if secret.exists() \
        else checks.writable_folder("web.secret_file", secret.parent, "the station makes its "
                                    "cookie key there on its first start", fatal=True)
    if cfg.model:
        from edge.pipeline.model import ModelError, load_manifest

        try:
            load_manifest(Path(cfg.model))
        except ModelError as exc:
            out.append(Problem("model", str(exc), fatal=True))
    return out
