"""Before the daemon starts: every file and folder the config names, checked for what the
daemon will do with it, each problem with the file, line and key to fix.

The loader checks types and bounds; this checks the world: a model folder that holds no
package, a CA file that is missing or not a certificate, a spool directory the service cannot
write. `lungedge check-config` prints them all; `lungedge run` refuses to start on the ones it
cannot run without (the model), and runs degraded on the rest (a spool it cannot write keeps
messages in memory; a TLS file it cannot read is reported as the broker being unreachable and
retried).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from edge.loader import yaml_lines
from edge.service.config import Config


@dataclass(frozen=True)
class Problem:
    key: str  # the config key path, e.g. "mqtt.tls.ca_file"
    message: str
    fatal: bool  # the daemon cannot start with it

    def located(self, source: str, lines: dict[str, int]) -> str:
        line = lines.get(self.key)
        return f"{source}{f':{line}' if line else ''}: {self.key}: {self.message}"


def problems(cfg: Config) -> list[Problem]:
    from edge.pipeline.model import ModelError, load_manifest

    out: list[Problem] = []
    if cfg.model.path:
        try:
            load_manifest(Path(cfg.model.path))
        except ModelError as exc:
            out.append(Problem("model.path", str(exc), fatal=True))
    if cfg.model.calibration and not Path(cfg.model.calibration).is_file():
        out.append(Problem("model.calibration", f"{cfg.model.calibration}: no such file (make "
                                                "it with `lungedge calibrate`)", fatal=True))
    if cfg.source.type == "file":
        path = cfg.source.file.path
        if not path:
            out.append(Problem("source.file.path", "required for source type file", True))
        elif not Path(path).is_file():
            out.append(Problem("source.file.path", f"{path}: no such file", fatal=True))
    tls = cfg.mqtt.tls
    if tls.enabled:
        out += _tls(tls.ca_file, tls.cert_file, tls.key_file)
    out += _writable_folder(Path(cfg.spool.path).parent)
    return out


def _readable(key: str, path: str | None) -> list[Problem]:
    if path is None:
        return []
    if not Path(path).is_file():
        return [Problem(key, f"{path}: no such file", fatal=False)]
    if not os.access(path, os.R_OK):
        return [Problem(key, f"{path}: not readable by this user", fatal=False)]
    return []


def _tls(ca: str | None, cert: str | None, key: str | None) -> list[Problem]:
    found = (_readable("mqtt.tls.ca_file", ca) + _readable("mqtt.tls.cert_file", cert)
             + _readable("mqtt.tls.key_file", key))
    if found:
        return found
    context = ssl.create_default_context()
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            return [Problem("mqtt.tls.ca_file", f"{ca}: not a PEM CA certificate ({exc})",
                            fatal=False)]
    if cert and key:
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            return [Problem("mqtt.tls.cert_file", f"{cert} with {key}: not a certificate and "
                                                  f"its key ({exc})", fatal=False)]
    return []


def _writable_folder(folder: Path) -> list[Problem]:
    """The spool's folder, or the nearest one above that exists, must let this user write
    (the daemon creates what is missing)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [Problem("spool.path", f"{existing} is not a folder", fatal=False)]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Problem("spool.path", f"{existing}: this user cannot write here (the service "
                                      "writes its spool to /var/lib/lungedge)", fatal=False)]
    return []


def report(cfg: Config, source: str, text: str) -> list[str]:
    """Every problem as `file:line: key: message`."""
    lines = yaml_lines(text)
    return [p.located(source, lines) for p in problems(cfg)]
