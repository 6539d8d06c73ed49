"""The world a config points at, checked before a program starts: files that must be readable,
TLS material that must load, folders that must take writes. Each problem names the config key,
so `check-config` (the device's and the station's) can say the file, line and key to fix, and
a start refuses with the same words instead of a traceback."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    key: str  # the config key path, e.g. "mqtt.tls.ca_file"
    message: str
    fatal: bool  # the program cannot start with it

    def located(self, source: str, lines: dict[str, int]) -> str:
        line = lines.get(self.key)
        return f"{source}{f':{line}' if line else ''}: {self.key}: {self.message}"


def readable(key: str, path: str | None, fatal: bool = False) -> list[Problem]:
    if path is None:
        return []
    if not Path(path).is_file():
        return [Problem(key, f"{path}: no such file", fatal)]
    if not os.access(path, os.R_OK):
        return [Problem(key, f"{path}: not readable by this user", fatal)]
    return []


def tls(prefix: str, ca: str | None, cert: str | None, key: str | None,
        fatal: bool = False) -> list[Problem]:
    """The CA, certificate and key under `prefix` (e.g. "mqtt.tls"): present, readable, PEM."""
    found = (readable(f"{prefix}.ca_file", ca, fatal)
             + readable(f"{prefix}.cert_file", cert, fatal)
             + readable(f"{prefix}.key_file", key, fatal))
    if found:
        return found
    context = ssl.create_default_context()
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            return [Problem(f"{prefix}.ca_file", f"{ca}: not a PEM CA certificate ({exc})",
                            fatal)]
    if cert and key:
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            return [Problem(f"{prefix}.cert_file", f"{cert} with {key}: not a certificate and "
                                                   f"its key ({exc})", fatal)]
    return []


def writable_folder(key: str, folder: Path, why: str, fatal: bool = False) -> list[Problem]:
    """`folder`, or the nearest one above it that exists (what is missing is created), must
    let this user write; `why` says where the service expects to write."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [Problem(key, f"{existing} is not a folder", fatal)]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Problem(key, f"{existing}: this user cannot write here ({why})", fatal)]
    return []


def writable_file(key: str, path: Path, why: str, fatal: bool = False) -> list[Problem]:
    """A file that is written to: if it exists, readable and writable (a read-only file or
    file system shows here); else its folder must take it."""
    if path.exists():
        if not path.is_file():
            return [Problem(key, f"{path} is not a file", fatal)]
        if not os.access(path, os.R_OK | os.W_OK):
            return [Problem(key, f"{path}: this user cannot write it ({why})", fatal)]
        return writable_folder(key, path.parent, why, fatal)  # SQLite writes beside it
    return writable_folder(key, path.parent, why, fatal)
