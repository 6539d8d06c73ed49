"""Sign a model package with an engineer's key, so that a device trusting that key runs it and
nothing else (`edge.pipeline.signature` checks it on the device).

    python -m convert.sign new-key ~/keys/ward-models        # ward-models.key and .pub
    python -m convert.sign sign out/lungedge-cnnlstm --key ~/keys/ward-models.key
    python -m convert.sign verify out/lungedge-cnnlstm --trust ~/keys/ward-models.pub

The private key stays on the workstation (written readable by its owner only); the public key
goes into each device's config (`model.trusted_keys`). Signing writes `signature.json` last,
after the manifest has been checked, so a package is signed only as the device will read it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

from edge.pipeline.model import ModelError, load_manifest
from edge.pipeline.signature import (
    SIGNATURE_FILE,
    SIGNATURE_SCHEMA_VERSION,
    SignatureRefused,
    Signed,
    key_id,
    package_files,
    public_key_text,
    signed_bytes,
    verify_package,
)


def new_key(stem: Path) -> str:
    """A new Ed25519 key pair: STEM.key (PKCS#8 PEM, mode 0600) and STEM.pub; returns the
    public key as a config takes it. Refuses to overwrite a key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private, public = stem.with_suffix(".key"), stem.with_suffix(".pub")
    for path in (private, public):
        if path.exists():
            raise SystemExit(f"{path}: exists; a key is never overwritten (choose another name)")
    stem.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    text = public_key_text(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                         serialization.PublicFormat.Raw))
    public.write_text(text + "\n")
    return text


def sign(package: Path, key_file: Path) -> Signed:
    """Writes PACKAGE/signature.json over every file the device may read."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        manifest = load_manifest(package)
    except ModelError as exc:
        raise SystemExit(f"not signed: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SystemExit(f"{key_file}: not a private key convert.sign wrote ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"{key_file}: not an Ed25519 key")
    public = public_key_text(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw))
    (package / SIGNATURE_FILE).unlink(missing_ok=True)
    signed: dict[str, Any] = {"package": f"{manifest.name} {manifest.version}",
                              "files": package_files(package)}
    doc = {"schema_version": SIGNATURE_SCHEMA_VERSION, "key_id": key_id(public),
           "signed": signed,
           "signature": base64.b64encode(key.sign(signed_bytes(signed))).decode()}
    (package / SIGNATURE_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return Signed(key_id(public), signed["package"], signed["files"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert.sign", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    k = sub.add_parser("new-key", help="make a key pair: STEM.key (private) and STEM.pub")
    k.add_argument("stem", type=Path)
    s = sub.add_parser("sign", help="sign a package (writes its signature.json)")
    s.add_argument("package", type=Path)
    s.add_argument("--key", type=Path, required=True, help="the private key (STEM.key)")
    v = sub.add_parser("verify", help="check a package as a device trusting these keys would")
    v.add_argument("package", type=Path)
    v.add_argument("--trust", type=Path, nargs="+", required=True, help="public keys (.pub)")
    args = ap.parse_args(argv)
    if args.command == "new-key":
        text = new_key(args.stem)
        print(f"wrote {args.stem.with_suffix('.key')} (keep it on this workstation) and "
              f"{args.stem.with_suffix('.pub')}; key id {key_id(text)}. For each device's "
              f"config:\n  model:\n    trusted_keys: [\"{text}\"]")
    elif args.command == "sign":
        done = sign(args.package, args.key)
        print(f"signed {args.package} ({done.package}, {len(done.files)} files) with key "
              f"{done.key_id}")
    else:
        try:
            signed = verify_package(args.package, [p.read_text().strip() for p in args.trust])
        except (SignatureRefused, OSError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        print(f"{args.package}: {signed.package}, {len(signed.files)} files, signed by key "
              f"{signed.key_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
