"""The systemd unit and the installer: verified by systemd's own tools, installed into a temp
root (twice), and the exposure score bounded."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "lungedge.service"
INSTALL = ROOT / "systemd" / "install.sh"


def analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze missing (Debian package systemd; `make test` installs it)")
    return exe


@pytest.mark.parametrize("unit", [UNIT, ROOT / "systemd" / "lungedge-station.service"],
                         ids=["device", "station"])
def test_exposure_score_is_at_most_2(unit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = subprocess.run([analyze(), "security", "--offline=yes", str(unit)],
                         capture_output=True, text=True).stdout
    score = float(re.search(rf"Overall exposure level for {unit.name}: ([\d.]+)",
                            out).group(1))
    with capsys.disabled():
        print(f"\nsystemd-analyze security exposure: {score}")
    assert score <= 2.0


def tree_digest(root: Path) -> str:
    """Every file outside the venv, with contents and modes."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if "venv" in p.relative_to(root).parts or not p.is_file():
            continue
        h.update(f"{p.relative_to(root)} {oct(p.stat().st_mode)}\n".encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["bash", str(INSTALL), "--root", str(root), "--no-start"], check=True,
                   capture_output=True, text=True, env={**os.environ, "PYTHON": "python3"})
    return root


def test_install_puts_files_where_the_unit_expects_them(installed: Path) -> None:
    unit = (installed / "etc/systemd/system/lungedge.service").read_text()
    exe = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
    config = re.search(r"--config (\S+)", unit).group(1)
    assert os.access(installed / exe.lstrip("/"), os.X_OK)
    assert (installed / config.lstrip("/")).is_file()
    # check-config verifies the files it names too: read with the target's paths in the
    # temp root, the installed config finds the model install.sh copied there
    relocated = installed / "lungedge.yaml"
    relocated.write_text((installed / config.lstrip("/")).read_text()
                         .replace("/opt/lungedge/", f"{installed}/opt/lungedge/")
                         .replace("/var/lib/lungedge/", f"{installed}/var/lib/lungedge/"))
    check = subprocess.run([str(installed / exe.lstrip("/")), "check-config", str(relocated)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert (installed / "var/lib/lungedge").is_dir()
    # and systemd accepts the unit as installed (paths pointed into the temp root)
    local = installed / "lungedge.service"
    local.write_text(unit.replace("/opt/lungedge/", f"{installed}/opt/lungedge/"))
    verify = subprocess.run([analyze(), "verify", str(local)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr


def test_the_installed_venv_finds_the_shipped_model_outside_the_checkout(
        installed: Path, sample_wavs: list[Path], tmp_path: Path) -> None:
    """A venv outside the checkout, installed as a wheel (not editable): `classify` without
    --model finds the model install.sh copied beside it, run from a folder of its own.
    (It looked in edge/models/ once, and worked only because .venv sat in the checkout.)"""
    exe = installed / "opt/lungedge/venv/bin/lungedge"
    wav = tmp_path / "sample.wav"
    shutil.copy(sample_wavs[0], wav)
    run = subprocess.run([str(exe), "classify", str(wav), "--json"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert '"cycles"' in run.stdout


def test_second_run_changes_nothing_and_keeps_the_config(installed: Path) -> None:
    before = tree_digest(installed)
    venv_before = (installed / "opt/lungedge/venv/pyvenv.cfg").stat().st_mtime
    subprocess.run(["bash", str(INSTALL), "--root", str(installed), "--no-start"], check=True,
                   capture_output=True)
    assert tree_digest(installed) == before
    assert (installed / "opt/lungedge/venv/pyvenv.cfg").stat().st_mtime == venv_before
    config = installed / "etc/lungedge/lungedge.yaml"
    config.write_text(config.read_text().replace("port: 1883", "port: 8883"))
    subprocess.run(["bash", str(INSTALL), "--root", str(installed), "--no-start"], check=True,
                   capture_output=True)
    assert "port: 8883" in config.read_text()  # a user's config is never overwritten


def test_uninstall_keeps_config_unless_purged(installed: Path, tmp_path: Path) -> None:
    root = tmp_path / "r"
    shutil.copytree(installed, root, symlinks=True)
    subprocess.run(["bash", str(INSTALL), "--root", str(root), "--uninstall"], check=True,
                   capture_output=True)
    assert not (root / "etc/systemd/system/lungedge.service").exists()
    assert not (root / "opt/lungedge").exists()
    assert (root / "etc/lungedge/lungedge.yaml").exists()
    subprocess.run(["bash", str(INSTALL), "--root", str(root), "--uninstall", "--purge"],
                   check=True, capture_output=True)
    assert not (root / "etc/lungedge").exists()


def test_bad_options_are_refused() -> None:
    r = subprocess.run(["bash", str(INSTALL), "--runtime", "onnx", "--root", "/tmp/x"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--runtime is litert or tflite" in r.stderr
