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

from pathlib import Path

from edge import checks
from edge.checks import Problem
from edge.loader import yaml_lines
from edge.service.config import Config


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
        out += checks.tls("mqtt.tls", tls.ca_file, tls.cert_file, tls.key_file)
    out += checks.writable_folder("spool.path", Path(cfg.spool.path).parent,
                                  "the service writes its spool to /var/lib/lungedge")
    return out


def report(cfg: Config, source: str, text: str) -> list[str]:
    """Every problem as `file:line: key: message`."""
    lines = yaml_lines(text)
    return [p.located(source, lines) for p in problems(cfg)]
