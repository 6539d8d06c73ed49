"""Signed model packages (issue 41, first part): an engineer signs a package with
`python -m convert.sign`; a device that lists trusted keys runs it, through a real broker, and
refuses every other package with the reason, before any interpreter is made."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.dev.local_broker import LocalBroker as Broker
from edge.pipeline.model import ModelError, ModelRunner
from tests.test_daemon import (
    ROOT,
    SMOKE_MODEL,
    Subscriber,
    finish,
    run_cli,
    start_daemon,
    write_config,
)

pytest.importorskip("cryptography", reason="cryptography (a runtime dependency) is missing: "
                    "pip install -e .")


def sign_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "convert.sign", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, str, Path]:
    """The smoke package, copied with a calibration beside it and signed: (package, the
    trusted key as a config writes it, the private key)."""
    r = sign_cli("new-key", str(tmp_path / "keys" / "ward"))
    assert r.returncode == 0, r.stderr
    key = (tmp_path / "keys" / "ward.pub").read_text().strip()
    assert f'trusted_keys: ["{key}"]' in r.stdout
    package = tmp_path / "package"
    shutil.copytree(SMOKE_MODEL, package)
    (package / "calibrations").mkdir()
    (package / "calibrations" / "steth.json").write_text("{}\n")
    (package / "report").mkdir()
    (package / "report" / "notes.txt").write_text("not read by the device\n")
    r = sign_cli("sign", str(package), "--key", str(tmp_path / "keys" / "ward.key"))
    assert r.returncode == 0, r.stderr
    assert "lungedge-smoke 0.0.1, 3 files" in r.stdout  # manifest, member, calibration
    return package, key, tmp_path / "keys" / "ward.key"


def test_a_new_key_is_private_and_never_overwritten(tmp_path: Path) -> None:
    assert sign_cli("new-key", str(tmp_path / "k")).returncode == 0
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k.pub").read_text().startswith("ed25519:")
    again = sign_cli("new-key", str(tmp_path / "k"))
    assert again.returncode != 0 and "never overwritten" in again.stderr


def test_a_signed_package_loads_and_its_report_is_not_signed(signed: tuple[Path, str, Path]
                                                              ) -> None:
    package, key, _ = signed
    runner = ModelRunner(package, trusted_keys=[key])
    assert runner.signed_by is not None and runner.signed_by.package == "lungedge-smoke 0.0.1"
    (package / "report" / "notes.txt").write_text("changed after signing: not the device's\n")
    assert ModelRunner(package, trusted_keys=[key]).signed_by == runner.signed_by
    r = sign_cli("verify", str(package), "--trust", str(package.parent / "keys" / "ward.pub"))
    assert r.returncode == 0 and "signed by key" in r.stdout, r.stderr
    assert ModelRunner(package).signed_by is None  # no trusted keys: not checked


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _edit_signed_list(package: Path) -> None:
    doc = json.loads((package / "signature.json").read_text())
    doc["signed"]["files"]["manifest.json"] = "0" * 64
    (package / "signature.json").write_text(json.dumps(doc))


TAMPERINGS: dict[str, tuple[Callable[[Path], object], str]] = {
    "a member changed": (lambda p: _flip_last_byte(p / "model.tflite"),
                         "model.tflite changed since it was signed"),
    "the manifest changed": (lambda p: (p / "manifest.json").write_text(
        (p / "manifest.json").read_text().replace('"0.0.1"', '"9.9.9"')),
        "manifest.json changed since it was signed"),
    "a calibration added": (lambda p: (p / "calibrations" / "other.json").write_text("{}"),
                            "calibrations/other.json was not signed"),
    "a calibration removed": (lambda p: (p / "calibrations" / "steth.json").unlink(),
                              "calibrations/steth.json is missing"),
    "the signed list edited": (_edit_signed_list, "the signature does not match"),
    "the signature removed": (lambda p: (p / "signature.json").unlink(),
                              "signature.json: not found: this device runs only signed"),
    "the signature file garbled": (lambda p: (p / "signature.json").write_text("{"),
                                   "not a signature file"),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_every_tampering_is_refused_with_its_reason(signed: tuple[Path, str, Path],
                                                    tampering: str) -> None:
    package, key, _ = signed
    change, reason = TAMPERINGS[tampering]
    change(package)
    with pytest.raises(ModelError, match=reason):
        ModelRunner(package, trusted_keys=[key])


def test_an_unknown_key_and_a_malformed_key_are_refused(signed: tuple[Path, str, Path],
                                                        tmp_path: Path) -> None:
    package = signed[0]
    assert sign_cli("new-key", str(tmp_path / "other")).returncode == 0
    other = (tmp_path / "other.pub").read_text().strip()
    with pytest.raises(ModelError, match=r"signed by key [0-9a-f]{16}, which this device does "
                                         r"not trust \(model.trusted_keys: [0-9a-f]{16}\)"):
        ModelRunner(package, trusted_keys=[other])
    with pytest.raises(ModelError, match="not a public key written as 'ed25519:BASE64'"):
        ModelRunner(package, trusted_keys=["ssh-ed25519 AAAA"])


def test_the_daemon_runs_a_signed_package_and_refuses_a_tampered_one(
        signed: tuple[Path, str, Path], tmp_path: Path, broker: Broker) -> None:
    """Through the command line a technician uses: check-config and run name the key and the
    reason; the same config with the signed package classifies through a real broker."""
    package, key, _ = signed
    extra = f'  trusted_keys: ["{key}"]\n'
    cfg = write_config(tmp_path, broker.port, model=package)
    cfg.write_text(cfg.read_text().replace(f"  path: {package}\n",
                                           f"  path: {package}\n{extra}"))
    r = run_cli("check-config", str(cfg))
    assert r.returncode == 0, r.stderr
    sub = Subscriber(broker.port)
    proc = start_daemon(cfg)
    out = finish(proc)
    assert proc.returncode == 0, out
    assert "signed by key" in out
    sub.wait_for(lambda: bool(sub.of("cycle")))
    sub.close()
    _flip_last_byte(package / "model.tflite")
    r = run_cli("check-config", str(cfg))
    assert r.returncode == 2 and "model.path: " in r.stderr \
        and "model.tflite changed since it was signed" in r.stderr, r.stderr
    r = run_cli("run", "--config", str(cfg))
    assert r.returncode == 2 and "model.tflite changed since it was signed" in r.stderr
