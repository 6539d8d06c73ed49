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

from edge.dsp.segmenter import SegmenterConfig
from edge.pipeline.model import ModelError, ModelRunner, decide, load_manifest

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
    assert m.frontend.features == "mfcc" and m.frontend.band_norm == "none"
    assert m.schema_version == 5 and m.frontend.n_features == m.members[0].input.shape[2]
    # what decided its cycles then (the config's defaults) is what it gets
    assert m.segmenter == SegmenterConfig() and m.poor_quality_below == 0.3
    assert [member.file for member in m.members] == ["model.tflite"]


def test_manifest_schema_versions_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"schema_version 6; this lungedge reads "
                                         r"\[1, 2, 3, 4, 5\]: update lungedge"):
        load_manifest(_package_edited(tmp_path / "a", lambda m: m.update(schema_version=6)))
    # schema 5 must carry the segmenter and the quality cut, every setting of them
    with pytest.raises(ModelError, match=r"missing key\(s\) \['segmenter', "
                                         r"'poor_quality_below'\]: a schema-5 manifest"):
        load_manifest(_package_edited(tmp_path / "d", lambda m: m.update(schema_version=5)))
    with pytest.raises(ModelError, match=r"segmenter: missing key\(s\) \['band_low_hz'"):
        today = load_manifest(SMOKE).to_dict()  # the smoke model's, as schema 5 writes it
        load_manifest(_package_edited(tmp_path / "e", lambda m: (
            m.clear(), m.update(today | {"segmenter": {"on_db": 5.0}}))))
    # schema 2 must pin the frontend's output, like every other frontend parameter
    with pytest.raises(ModelError, match=r"frontend: missing key\(s\) \['features'\]"):
        load_manifest(_package_edited(tmp_path / "b", lambda m: m.update(schema_version=2)))
    # and schema 3 its band normalisation
    with pytest.raises(ModelError, match=r"missing key\(s\) \[.*'band_norm', 'band_norm_s'\]"):
        load_manifest(_package_edited(tmp_path / "c", lambda m: m.update(schema_version=3)))


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


def _out_of_fold(rng: np.random.Generator, n: int = 600) -> tuple[Any, np.ndarray, np.ndarray]:
    """Events of 60 SPRSound-like and ICBHI-like recordings, and probabilities that lean
    normal: the argmax misses adventitious events a lower threshold catches."""
    from convert.features import Events

    y = rng.choice(4, n, p=[0.6, 0.2, 0.15, 0.05])
    probs = np.full((n, 4), 0.1)
    probs[np.arange(n), y] += 0.25
    probs[:, 0] += 0.3  # a bias towards normal
    probs /= probs.sum(1, keepdims=True)
    recordings = np.arange(n) // 10
    datasets = np.where(recordings % 2, "sprsound/train", "icbhi/train")
    events = Events([np.zeros((4, 2), np.float32)] * n, y, np.array([f"p{r}" for r in
                    recordings]), np.full(n, "d"), datasets, recordings)
    return events, np.arange(n), probs


def test_threshold_choice_writes_a_threshold_the_device_applies(tmp_path: Path) -> None:
    """The rule's search over out-of-fold predictions keeps the best point of its grid (none
    if the argmax does better), and the device's decision with it is the one scored."""
    from convert.choice import choose
    from edge.pipeline.model import decide

    events, index, probs = _out_of_fold(np.random.default_rng(0))
    y, datasets = events.labels[index], events.datasets[index]
    result = choose(y, datasets, probs[None])
    assert result.thresholds and result.value > result.at_argmax and result.epoch == 1
    manifest = load_manifest(_package_with(tmp_path, result.thresholds))
    assert manifest.thresholds == result.thresholds
    labels = decide(probs, manifest.labels, manifest.thresholds)
    assert (labels != 0).sum() > (probs.argmax(1) != 0).sum()  # it calls more adventitious
    # a model already at its best operating point gets no threshold
    sharp = np.eye(4)[events.labels] * 0.9 + 0.025
    assert choose(y, datasets, sharp[None]).thresholds == {}


def test_the_rule_picks_the_epoch_whose_predictions_are_best() -> None:
    """Epochs are chosen like thresholds: the epoch with the best objective at its own best
    threshold (here the sharp predictions of epoch 2 beat the noisy ones of epochs 1 and 3);
    with `epochs=False` only the last is considered."""
    from convert.choice import choose

    rng = np.random.default_rng(0)
    events, index, _ = _out_of_fold(rng)
    y, datasets = events.labels[index], events.datasets[index]
    sharp = np.eye(4)[y] * 0.9 + 0.025
    blurred = rng.dirichlet(np.ones(4), len(y)) + np.eye(4)[y] * 0.2
    by_epoch = np.stack([blurred, sharp, blurred])
    assert choose(y, datasets, by_epoch).epoch == 2
    assert choose(y, datasets, by_epoch, epochs=False).epoch == 3


def test_an_icbhi_objective_is_not_carried_by_sprsound() -> None:
    """With `counted="icbhi"` SPRSound's predictions do not take part in the choice: epoch 1
    is sharp on SPRSound and blurred on ICBHI, epoch 2 the other way round, and only the ICBHI
    objective picks epoch 2 whatever SPRSound's numbers are."""
    from convert.choice import choose, objective

    rng = np.random.default_rng(0)
    events, index, _ = _out_of_fold(rng)
    y, datasets = events.labels[index], events.datasets[index]
    sharp = np.eye(4)[y] * 0.9 + 0.025
    blurred = rng.dirichlet(np.ones(4), len(y)) + np.eye(4)[y] * 0.2
    icbhi = (datasets == "icbhi/train")[:, None]
    first, second = np.where(icbhi, blurred, sharp), np.where(icbhi, sharp, 0.25)
    assert choose(y, datasets, np.stack([first, second]), counted="icbhi").epoch == 2
    # the objective itself: SPRSound's events changed, the ICBHI objective unchanged
    assert objective(y, datasets, first, {}, "icbhi") == \
        objective(y, datasets, np.where(icbhi, blurred, 0.25), {}, "icbhi")
    assert objective(y, datasets, first, {}) != \
        objective(y, datasets, np.where(icbhi, blurred, 0.25), {})


def test_record_fraction_choice_uses_the_device_record_rule() -> None:
    """The record fraction is chosen on the SPRSound recordings' out-of-fold event labels,
    through edge.pipeline.tracker.record_label, the rule the device's session summary applies."""
    from convert.train import choose_record_fraction
    from edge.pipeline.tracker import record_label

    events, index, _ = _out_of_fold(np.random.default_rng(1))
    n_recordings = int(events.recordings.max()) + 1
    # a recording is adventitious when a third of its events are
    truth = ["CAS" if (events.labels[events.recordings == r] != 0).mean() > 0.33 else "Normal"
             for r in range(n_recordings)]
    truth[1] = "Poor Quality"  # no events to decide by: left out
    result = choose_record_fraction(truth, events, index, np.eye(4)[events.labels], {},
                                    lambda _msg: None)
    assert result["recordings"] == n_recordings // 2 - 1
    fraction = result["record_fraction"]
    assert fraction is not None and result["value"] == 1.0
    for r in range(3, n_recordings, 2):
        labels = [("normal", "crackle", "wheeze", "both")[i]
                  for i in events.labels[events.recordings == r]]
        said = record_label(labels, [True] * len(labels), fraction)
        assert (said != "normal") == (truth[r] == "CAS")
