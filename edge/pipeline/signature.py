"""Who made a model package, checked before the device runs it.

A package carries `signature.json`: the sha256 of every file the device may read (the
manifest, the members, the calibrations; everything outside `report/`), signed with an
engineer's Ed25519 key (`python -m convert.sign`). A device whose config lists trusted public
keys (`model.trusted_keys`) runs only a package whose list is signed by one of them and whose
files are exactly that list: a changed byte, a file added or missing, an unknown key or a
missing signature is refused, with the reason, before any interpreter is made. Why Ed25519
through `cryptography`: a well-kept library, small keys that fit a YAML line, and
deterministic signatures (nothing random on the device).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIGNATURE_FILE = "signature.json"
SIGNATURE_SCHEMA_VERSION = 1
KEY_PREFIX = "ed25519:"
UNSIGNED_FOLDERS = ("report",)  # what the device never reads: plots, float models, JSON


class SignatureRefused(ValueError):
    """The package is not the one a trusted engineer signed: the message says why."""


@dataclass(frozen=True)
class Signed:
    """What a verified signature vouches for."""

    key_id: str
    package: str  # the manifest's name and version, as signed
    files: dict[str, str]  # path inside the package → sha256


def key_id(public_key: str) -> str:
    """A short, stable name for a public key (the first 16 hex digits of its sha256)."""
    return hashlib.sha256(_raw_key(public_key, "a public key")).hexdigest()[:16]


def public_key_text(raw: bytes) -> str:
    """How a public key is written in a config and a .pub file."""
    return KEY_PREFIX + base64.b64encode(raw).decode()


def package_files(package: Path) -> dict[str, str]:
    """Every file the device may read, with its sha256 (signature.json and report/ aside)."""
    out = {}
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package).as_posix()
        if path.is_file() and rel != SIGNATURE_FILE \
                and rel.split("/")[0] not in UNSIGNED_FOLDERS:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def signed_bytes(signed: dict[str, Any]) -> bytes:
    """The exact bytes that are signed: the signed part as canonical JSON."""
    return json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()


def verify_package(package: Path, trusted_keys: Sequence[str]) -> Signed:
    """The package's signature, checked against the trusted keys and the files on disk;
    raises SignatureRefused naming what is wrong and how to fix it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    where = package / SIGNATURE_FILE
    if not where.is_file():
        raise SignatureRefused(f"{where}: not found: this device runs only signed packages "
                               "(model.trusted_keys); sign it with `python -m convert.sign "
                               f"{package} --key KEY`")
    try:
        doc = json.loads(where.read_text())
        version, kid = doc["schema_version"], str(doc["key_id"])
        signed, signature = doc["signed"], base64.b64decode(doc["signature"], validate=True)
        files = {str(k): str(v) for k, v in signed["files"].items()}
        name = str(signed["package"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureRefused(f"{where}: not a signature file ({exc!r})") from None
    if version != SIGNATURE_SCHEMA_VERSION:
        raise SignatureRefused(f"{where}: schema_version {version!r}; this lungedge reads "
                               f"{SIGNATURE_SCHEMA_VERSION}")
    keys = {key_id(k): k for k in trusted_keys}
    if kid not in keys:
        raise SignatureRefused(f"{where}: signed by key {kid}, which this device does not "
                               f"trust (model.trusted_keys: {', '.join(keys) or 'none'})")
    try:
        Ed25519PublicKey.from_public_bytes(_raw_key(keys[kid], "model.trusted_keys")).verify(
            signature, signed_bytes(signed))
    except InvalidSignature:
        raise SignatureRefused(f"{where}: the signature does not match what it signs: the "
                               "list of files was changed after signing") from None
    on_disk = package_files(package)
    problems = [f"{f} changed since it was signed" for f in sorted(files)
                if f in on_disk and on_disk[f] != files[f]]
    problems += [f"{f} is missing" for f in sorted(set(files) - set(on_disk))]
    problems += [f"{f} was not signed" for f in sorted(set(on_disk) - set(files))]
    if problems:
        raise SignatureRefused(f"{package}: not the package key {kid} signed: "
                               + "; ".join(problems))
    return Signed(kid, name, files)


def _raw_key(text: str, what: str) -> bytes:
    if not text.startswith(KEY_PREFIX):
        raise SignatureRefused(f"{what}: {text[:24]!r} is not a public key written as "
                               f"'{KEY_PREFIX}BASE64' (the .pub file convert.sign wrote)")
    try:
        raw = base64.b64decode(text.removeprefix(KEY_PREFIX), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise SignatureRefused(f"{what}: {text[:24]!r}… is not a 32-byte Ed25519 public key")
    return raw
