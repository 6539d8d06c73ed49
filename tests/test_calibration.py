"""A new stethoscope's calibration: made from unlabelled recordings by `lungedge calibrate`,
checked when loaded, and applied by the runner of a model trained for it (and refused by one
that was not)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.dsp.frontend import FrontendParams
from edge.pipeline.calibration import (
    MIN_CYCLES,
    CalibrationError,
    calibrate,
    feature_statistics,
    load,
)
from edge.pipeline.model import ModelError, ModelRunner

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "data" / "smoke_model"
SAMPLES = sorted((ROOT / "models" / "samples").glob("*.wav"))


def stethoscope_model(tmp_path: Path) -> Path:
    """The smoke package as a model trained with normalise: stethoscope."""
    pkg = tmp_path / "model"
    shutil.copytree(SMOKE, pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["normalise"] = "stethoscope"
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    return pkg


def lungedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from edge.cli.main import main; "
                           "raise SystemExit(main())", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_statistics_are_the_trainers_and_need_enough_cycles() -> None:
    rng = np.random.default_rng(0)
    feats = [rng.normal(3.0, 2.0, (50, 4)).astype(np.float32) for _ in range(MIN_CYCLES)]
    feats[0][:, 3] = 7.0  # one band silent in this cycle
    mean, std = feature_statistics(feats)
    frames = np.concatenate(feats)
    assert np.allclose(mean, frames.mean(0)) and np.allclose(std, frames.std(0))
    from convert.features import normalisation  # the trainer's statistics are these

    assert normalisation is feature_statistics
    params = FrontendParams(n_mels=4, features="log_mel")
    assert calibrate(feats, params, "s", 60.0, "m 1").cycles == MIN_CYCLES
    with pytest.raises(CalibrationError, match=r"3 breathing cycle\(s\) in 9 s of audio; a "
                                               "calibration needs at least 20: record longer"):
        calibrate(feats[:3], params, "s", 9.0, "m 1")


def test_calibrate_then_classify_with_it(tmp_path: Path) -> None:
    """The command a technician runs on a new stethoscope's recordings, then the runner that
    standardises with what it learnt: other inputs to the network, so other probabilities."""
    pkg = stethoscope_model(tmp_path)
    out = tmp_path / "var" / "calibration.json"
    done = lungedge("calibrate", *map(str, SAMPLES), "--model", str(pkg), "--stethoscope",
                    "Yunting II, ward 4", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"set model.calibration: {out}" in done.stdout
    saved = json.loads(out.read_text())
    assert saved["kind"] == "lungedge-calibration" and saved["cycles"] >= MIN_CYCLES
    assert saved["stethoscope"] == "Yunting II, ward 4"
    plain = ModelRunner(pkg)
    calibrated = ModelRunner(pkg, calibration=out)
    assert calibrated.calibration is not None and plain.calibration is None
    assert np.allclose(calibrated._mean, saved["feature_mean"])
    feats = np.random.default_rng(1).normal(-10, 3, (90, plain.manifest.frontend.n_features))
    assert plain.predict(feats).probs != calibrated.predict(feats).probs
    # classify takes it too
    done = lungedge("classify", str(SAMPLES[0]), "--model", str(pkg), "--calibration", str(out),
                    "--json")
    assert done.returncode == 0, done.stderr


def test_a_calibration_is_checked_against_the_model(tmp_path: Path) -> None:
    pkg = stethoscope_model(tmp_path)
    frontend = ModelRunner(pkg).manifest.frontend
    rng = np.random.default_rng(0)
    other = FrontendParams(features="mfcc", n_mfcc=frontend.n_mfcc, n_mels=32)
    feats = [rng.normal(size=(40, other.n_features)).astype(np.float32) for _ in range(25)]
    from edge.pipeline.calibration import save

    save(calibrate(feats, other, "s", 60.0, "m"), tmp_path / "other.json")
    with pytest.raises(ModelError, match=r"other.json: made for other features \(frontend "
                                         r"n_mels differ from this model's\): calibrate again"):
        ModelRunner(pkg, calibration=tmp_path / "other.json")
    with pytest.raises(ModelError, match=r"missing.json: not found: make it with `lungedge "
                                         "calibrate`"):
        ModelRunner(pkg, calibration=tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text('{"kind": "lungedge-calibration", "schema_version": 1}')
    with pytest.raises(ModelError, match=r"junk.json: .*missing"):
        ModelRunner(pkg, calibration=tmp_path / "junk.json")
    # a model trained with its own statistics takes none
    with pytest.raises(ModelError, match=r"takes no stethoscope calibration: remove "
                                         r"model\.calibration"):
        ModelRunner(SMOKE, calibration=tmp_path / "other.json")
    done = lungedge("calibrate", *map(str, SAMPLES), "--model", str(SMOKE), "--stethoscope",
                    "x", "--out", str(tmp_path / "c.json"))
    assert done.returncode == 2 and "takes no calibration" in done.stderr
    assert not (tmp_path / "c.json").exists()
    with pytest.raises(CalibrationError, match="not a lungedge calibration"):
        (tmp_path / "plain.json").write_text("{}")
        load(tmp_path / "plain.json", frontend)
