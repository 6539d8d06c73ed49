"""Before the daemon starts: every file and folder the config names, checked for what the
daemon will do with it, each problem with the file, line and key to fix.

The loader checks types and bounds; this checks the world: a model folder that holds no
package, a CA file that is missing or not a certificate, a password that cannot be read, a
spool path that is a folder or one the service cannot write, a device id the shipped broker
ACL will not let its user publish as. `lungedge check-config` prints them all; `lungedge run`
refuses to start on the ones it cannot run without (before it opens the spool, so a refused
start does not burn a numbering epoch), and runs degraded on the rest (a spool folder it
cannot write keeps messages in memory; a TLS file it cannot read is reported as the broker
being unreachable and retried).
"""

from __future__ import annotations

import os
from pathlib import Path

from edge import checks
from edge.checks import Problem
from edge.loader import yaml_lines
from edge.service.config import Config


def problems(cfg: Config) -> list[Problem]:
    from edge.pipeline.model import ModelError, load_manifest, signed_by
    from edge.service.model_store import ModelStore, package_to_run

    out: list[Problem] = []
    try:
        model = package_to_run(cfg.model.path, ModelStore(Path(cfg.model.store)))
    except ModelError as exc:
        out.append(Problem("model.store", str(exc), fatal=True))
        model = None
    if model is None:
        if not out:
            out.append(Problem("model.path", "null, and no model ships beside this "
                                             "installation: give the folder of a model package",
                               fatal=True))
    else:
        try:
            if cfg.model.trusted_keys:
                signed_by(model, cfg.model.trusted_keys)
            load_manifest(model)
        except ModelError as exc:  # named by the key that chose the package
            key = "model.path" if cfg.model.path or not model.is_relative_to(
                cfg.model.store) else "model.store"
            out.append(Problem(key, str(exc), fatal=True))
    if cfg.model.calibration and not Path(cfg.model.calibration).is_file():
        out.append(Problem("model.calibration", f"{cfg.model.calibration}: no such file (make "
                                                "it with `lungedge calibrate`)", fatal=True))
    if cfg.source.type == "file":
        path = cfg.source.file.path
        if not path:
            out.append(Problem("source.file.path", "required for source type file", True))
        elif not Path(path).is_file():
            out.append(Problem("source.file.path", f"{path}: no such file", fatal=True))
    out += _broker(cfg)
    spool = Path(cfg.spool.path)
    if spool.is_dir():
        out.append(Problem("spool.path", f"{spool} is a folder: give the spool file's path "
                                         "(e.g. /var/lib/lungedge/spool.db)", fatal=True))
    else:
        out += checks.writable_folder("spool.path", spool.parent,
                                      "the service writes its spool to /var/lib/lungedge")
    return out


def _broker(cfg: Config) -> list[Problem]:
    """What the broker connection needs: a host, a password that can be read, TLS files that
    load, and a device id the shipped ACL lets its user publish as (it acknowledges and
    drops, or refuses, what it does not let through)."""
    m = cfg.mqtt
    out: list[Problem] = []
    if not m.host.strip():
        out.append(Problem("mqtt.host", "empty: the broker's host name or address", True))
    if m.password_env and m.password_env not in os.environ:
        out.append(Problem("mqtt.password_env", f"the environment variable {m.password_env} "
                                                "is not set (systemd: Environment= or "
                                                "EnvironmentFile= in the unit)", fatal=True))
    if m.password_file:
        found = checks.readable("mqtt.password_file", m.password_file, fatal=True)
        if not found and not Path(m.password_file).read_text().strip():
            found = [Problem("mqtt.password_file", f"{m.password_file} is empty: its first "
                                                   "line is the password", fatal=True)]
        out += found
    if m.tls.enabled:
        out += checks.tls("mqtt.tls", m.tls.ca_file, m.tls.cert_file, m.tls.key_file)
    if m.username and (m.username != cfg.device_id or m.topic_prefix != "lungedge"):
        out.append(Problem("device_id", f"the broker's shipped ACL lets user {m.username!r} "
                                        f"publish under lungedge/{m.username}/ only, and this "
                                        f"device publishes under {m.topic_prefix}/"
                                        f"{cfg.device_id}/: set device_id to {m.username!r} "
                                        "(or give the device its own user)", fatal=False))
    return out


def report(cfg: Config, source: str, text: str) -> list[str]:
    """Every problem as `file:line: key: message`."""
    lines = yaml_lines(text)
    return [p.located(source, lines) for p in problems(cfg)]
