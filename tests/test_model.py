"""The manifest: which schema versions load, and its adventitious threshold (how the device
decides normal vs adventitious)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.model import ModelError, ModelRunner, decide, load_manifest

SMOKE = Path(__file__).resolve().parent / "data" / "smoke_model"
LABELS = ("normal", "crackle", "wheeze", "both")


def test_decide_is_the_argmax_without_a_threshold() -> None:
    p = np.array([[0.6, 0.3, 0.1, 0.0], [0.2, 0.1, 0.7, 0.0]])
    assert decide(p, LABELS, {}).tolist() == [0, 2]


def test_decide_with_a_threshold_names_the_likeliest_adventitious_class() -> None:
    p = np.array([[0.65, 0.20, 0.15, 0.0],   # 0.35 adventitious ≥ 0.3 → crackle
                  [0.75, 0.05, 0.20, 0.0],   # 0.25 < 0.3 → normal
                  [0.30, 0.30, 0.05, 0.35]])  # → both
    assert decide(p, LABELS, {"adventitious": 0.3}).tolist() == [1, 0, 3]
    assert decide(p[0], LABELS, {"adventitious": 0.36}).tolist() == [0]


def _package_edited(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the smoke package whose manifest `edit` changed in place."""
    pkg = tmp_path / "model"
    shutil.copytree(SMOKE, pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    edit(manifest)
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    return pkg


def _package_with(tmp_path: Path, thresholds: dict[str, float]) -> Path:
    return _package_edited(tmp_path, lambda m: m.update(thresholds=thresholds))


def test_a_schema_1_manifest_loads_as_the_mfcc_model_it_was() -> None:
    """Schema 1 predates frontend.features; every model then took MFCCs. The smoke model's
    manifest is such a file, kept as written, so a deployed model survives an update."""
    assert json.loads((SMOKE / "manifest.json").read_text())["schema_version"] == 1
    m = ModelRunner(SMOKE).manifest
    assert m.frontend.features == "mfcc" and m.schema_version == 2
    assert m.frontend.n_features == m.input.shape[2]


def test_manifest_schema_versions_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"schema_version 3; this lungedge reads \[1, 2\]: "
                                         "update lungedge"):
        load_manifest(_package_edited(tmp_path / "a", lambda m: m.update(schema_version=3)))
    # schema 2 must pin the frontend's output, like every other frontend parameter
    with pytest.raises(ModelError, match=r"frontend: missing key\(s\) \['features'\]"):
        load_manifest(_package_edited(tmp_path / "b", lambda m: m.update(schema_version=2)))


@pytest.mark.parametrize("thresholds, message", [
    ({"adventitious": 1.5}, "thresholds.adventitious must be in (0, 1), got 1.5"),
    ({"record_fraction": 0.0}, "thresholds.record_fraction must be in (0, 1), got 0.0"),
    ({"crackle": 0.4}, "thresholds: unknown key(s) ['crackle']"),
])
def test_a_bad_threshold_is_refused_with_its_key(tmp_path: Path, thresholds: dict[str, float],
                                                 message: str) -> None:
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        load_manifest(_package_with(tmp_path, thresholds))


def test_the_runner_applies_the_threshold(tmp_path: Path) -> None:
    """The same int8 outputs, three operating points: a threshold near 0 calls every cycle
    adventitious, one near 1 calls every cycle normal, none is the argmax."""
    rng = np.random.default_rng(0)
    plain = ModelRunner(SMOKE)
    n = plain.manifest.frontend.n_features
    feats = [rng.normal(size=(80, n)) * 10 for _ in range(8)]
    eager = ModelRunner(_package_with(tmp_path / "a", {"adventitious": 0.001}))
    strict = ModelRunner(_package_with(tmp_path / "b", {"adventitious": 0.999}))
    for f in feats:
        p = plain.predict(f)
        assert p.label == max(p.probs, key=p.probs.get)
        e, s = eager.predict(f), strict.predict(f)
        assert e.probs == s.probs == p.probs
        assert e.label != "normal" and s.label == "normal"
        assert e.confidence == pytest.approx(e.probs[e.label], abs=1e-4)


def test_threshold_search_writes_a_threshold_the_device_reads(tmp_path: Path) -> None:
    """The trainer's search runs the int8 package on validation events, keeps the best point
    of its grid (or none, if the argmax does better), and the manifest it writes loads on the
    device."""
    from convert.datasets import iter_sprsound
    from convert.features import event_features
    from convert.train import tune_threshold

    pkg = _package_with(tmp_path, {})
    params = load_manifest(pkg).frontend
    samples = Path(__file__).resolve().parents[1] / "models" / "samples"
    feats, labels, _ = event_features(iter_sprsound(samples), params)
    result = tune_threshold(pkg, [("samples", feats, labels)], lambda _msg: None)
    assert result["validation"] >= result["validation_at_argmax"]
    manifest = load_manifest(pkg)
    assert manifest.thresholds == result["thresholds"]
    assert manifest.training["threshold"] == result


def test_record_fraction_search_scores_what_the_device_would_say(tmp_path: Path) -> None:
    """The record fraction is chosen by streaming recordings through the real segmenter and
    int8 model; evaluating the package it writes gives back the score it was chosen for, so
    the tuner, the evaluation and the tracker use one record rule."""
    from convert.datasets import iter_sprsound
    from convert.evaluate import evaluate_folder
    from convert.train import tune_record_fraction

    root = Path(__file__).resolve().parents[1]
    pkg = tmp_path / "model"
    shutil.copytree(root / "models" / "lungedge-cnnlstm", pkg, ignore=shutil.ignore_patterns(
        "report"))
    samples = root / "models" / "samples"
    result = tune_record_fraction(pkg, list(iter_sprsound(samples)), lambda _msg: None)
    assert result["recordings"] == 3
    assert result["validation"] >= result["validation_at_default"]
    manifest = load_manifest(pkg)
    assert manifest.thresholds.get("record_fraction") == result["record_fraction"]
    assert manifest.training["record_threshold"] == result
    report = evaluate_folder(ModelRunner(pkg), samples)
    assert report["record_task_2_1"]["score"] == result["validation"]
