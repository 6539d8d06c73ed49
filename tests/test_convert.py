"""The model toolchain: the whole chain on a tiny model, feature parity with the device, and the
shipped model in both interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convert.datasets import LABELS
from convert.features import Events, at_model_rate
from edge.dsp.frontend import Frontend, FrontendParams
from edge.dsp.segmenter import SegmenterConfig
from edge.pipeline.model import ADVENTITIOUS, Manifest, ModelRunner, decide, load_manifest
from edge.pipeline.signal_path import run_signal_path
from edge.sources.file import FileSource

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "models" / "samples"
SHIPPED = ROOT / "models" / "lungedge-cnnlstm"
TFLITE_PYTHON = ROOT / ".venv-tflite" / "bin" / "python"


def needs_tensorflow() -> None:
    pytest.importorskip("tensorflow", reason="the toolchain needs the convert extra: "
                                             "pip install '.[convert]' && pip install "
                                             "--no-deps tf-keras")
    pytest.importorskip("tf_keras", reason="pip install --no-deps tf-keras")


def test_chain_train_quantize_verify_evaluate(tmp_path: Path) -> None:
    """CI smoke: 1 epoch on the samples → int8 → verify → evaluate. Artefacts, not accuracy."""
    needs_tensorflow()
    from convert.evaluate import main as evaluate_main
    from convert.smoke import build
    from convert.verify import verify

    pkg = tmp_path / "model"
    build(pkg, members=2)
    result = verify(pkg)  # raises if an op is not an int8 builtin, or I/O is not int8
    assert result["members"] == 2
    assert {"LOGISTIC", "TANH", "FULLY_CONNECTED"} <= set(result["ops"])  # the LSTM's gates
    assert not [op for op in result["ops"] if "FLEX" in op.upper()]
    manifest = load_manifest(pkg)
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    assert all(m.input.dtype == m.output.dtype == "int8" for m in manifest.members)
    runner = ModelRunner(pkg)
    assert runner.predict(np.zeros((10, manifest.frontend.n_features))).label in manifest.labels
    # the device averages its members: each member's int8 output, from its own file
    assert [m.file for m in manifest.members] == ["member-0.tflite", "member-1.tflite"]
    window = np.random.default_rng(0).normal(size=manifest.members[0].input.shape[1:3])
    each = [member(window.astype(np.float32)) for member in runner.members]
    assert not np.allclose(each[0], each[1])
    assert np.allclose(runner.window_probs(window.astype(np.float32)), np.mean(each, axis=0))
    assert evaluate_main([str(pkg), str(SAMPLES), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert report[0]["events"] == 22 and "record_task_2_1" in report[0]
    assert (tmp_path / "report" / "confusion_roc.png").stat().st_size > 10_000


def test_verify_refuses_float_inside_an_int8_model(tmp_path: Path) -> None:
    """int8 in and out is not enough: a converter that falls back to float for one op (here
    FLOOR, which has no int8 kernel) leaves DEQUANTIZE → float → QUANTIZE inside the graph."""
    needs_tensorflow()
    import tensorflow as tf

    from convert.package import Decisions, keras, write_package
    from convert.verify import VerificationError, verify
    from edge.pipeline.model import WindowSpec

    k = keras()
    inp = k.Input((8, 4, 1), batch_size=1)
    x = k.layers.Lambda(lambda t: tf.math.floor(t * 3.0))(inp)
    out = k.layers.Dense(4, activation="softmax")(k.layers.Flatten()(x))
    conv = tf.lite.TFLiteConverter.from_keras_model(k.Model(inp, out))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.normal(size=(1, 8, 4, 1)).astype(np.float32)]
                                           for _ in range(20))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # float fallback allowed
    conv.inference_input_type = conv.inference_output_type = tf.int8
    write_package(tmp_path, conv.convert(), name="float-inside", version="0",
                  labels=("normal", "crackle", "wheeze", "both"),
                  frontend=FrontendParams(features="mfcc", n_mfcc=4),
                  window=WindowSpec(8, 4, "repeat", "mean"),
                  mean=np.zeros(4), std=np.ones(4), training={}, metrics={},
                  decisions=Decisions.carried_over("a test"))
    assert load_manifest(tmp_path).members[0].input.dtype == "int8"
    with pytest.raises(VerificationError, match=r"model.tflite: not full-integer: ops with "
                                                r"float tensors \[.*'FLOOR'"):
        verify(tmp_path)


@pytest.mark.parametrize("params", [FrontendParams(features="mfcc", deltas=1), FrontendParams()],
                         ids=["mfcc", "log_mel"])
def test_augment_masks_only_static_bands(params: FrontendParams) -> None:
    """Frequency masks hide a few cepstral coefficients (never the energy, c0) or a few mel
    bands, never a delta; without MixUp the labels stay one-hot."""
    from convert.fit import augment

    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 1.0, size=(256, 32, params.n_features)).astype(np.float32)
    y = rng.integers(0, 4, 256)
    xa, ya = augment(x.copy(), y, np.random.default_rng(1), 0.0, params)
    assert xa.shape == x.shape and np.array_equal(ya, np.eye(4)[y])
    static = params.n_static
    masked = (xa == 0).all(axis=1)  # a feature zero in every frame: a frequency mask
    assert masked[:, :static].sum() > 100
    assert not masked[:, static:].any()
    assert masked[:, 0].any() == (params.features == "log_mel")


def _events(rng: np.random.Generator, n: int = 400) -> Events:
    """Synthetic events: two datasets, stethoscopes tied to patients, labels tied to
    stethoscopes (as in ICBHI)."""
    patients = rng.integers(0, 40, n)
    devices = np.array(["AKGC417L", "LittC2SE", "Meditron", "Yunting II"])[patients % 4]
    datasets = np.where(devices == "Yunting II", "sprsound/train", "icbhi/train")
    labels = np.where(devices == "AKGC417L", rng.integers(0, 4, n),
                      rng.choice(4, n, p=[0.7, 0.1, 0.15, 0.05]))
    return Events([rng.normal(size=(20, 8)).astype(np.float32) for _ in range(n)], labels,
                  np.array([f"p{p}" for p in patients]), devices, datasets, patients)


def test_protocol_folds_group_patients_and_leave_stethoscopes_out() -> None:
    """cv: every patient is validated exactly once and never trained on in the same fold; loso:
    no recording of a held-out stethoscope, nor of any patient it recorded, is trained on."""
    from convert.folds import folds

    events = _events(np.random.default_rng(0))
    cv = [f for f in folds(events, k=5) if f.kind == "cv"]
    loso = [f for f in folds(events, k=5) if f.kind == "loso"]
    assert len(cv) == 5 and [f.name for f in loso] == ["loso-AKGC417L", "loso-LittC2SE",
                                                       "loso-Meditron"]
    validated = np.concatenate([f.val for f in cv])
    assert sorted(validated) == list(range(len(events)))  # each event once
    for f in cv:
        assert not set(events.patients[f.train]) & set(events.patients[f.val])
        for dataset in ("icbhi/train", "sprsound/train"):  # both sets in every fold
            assert (events.datasets[f.val] == dataset).any()
    for f in loso:
        device = f.name.removeprefix("loso-")
        assert set(events.devices[f.val]) == {device}
        assert device not in set(events.devices[f.train])
        assert not set(events.patients[f.train]) & set(events.patients[f.val])


def test_device_class_weights_make_every_stethoscope_predict_nothing() -> None:
    """With balance "device_class" every stethoscope's weighted class mix is the same, so the
    sound of a stethoscope says nothing about the label; with "class" they differ."""
    from convert.fit import event_weights

    events = _events(np.random.default_rng(1), 4000)

    def mixes(balance: str) -> np.ndarray:
        w = event_weights(events, balance)
        assert w.mean() == pytest.approx(1.0) and w.max() <= 10.0 + 1e-6
        out = []
        for d in np.unique(events.devices):
            inside = events.devices == d
            mix = np.bincount(events.labels[inside], w[inside], minlength=4)
            out.append(mix / mix.sum())
        return np.array(out)

    assert np.ptp(mixes("device_class"), axis=0).max() < 0.02
    assert np.ptp(mixes("class"), axis=0).max() > 0.2
    # "stethoscope": the same mix within each, and each stethoscope's total weight in
    # proportion to the square root of its events
    assert np.ptp(mixes("stethoscope"), axis=0).max() < 0.02
    w = event_weights(events, "stethoscope")
    totals = {d: w[events.devices == d].sum() for d in np.unique(events.devices)}
    sizes = {d: (events.devices == d).sum() for d in totals}
    ratios = [totals[d] / np.sqrt(sizes[d]) for d in totals]
    assert np.ptp(ratios) / np.mean(ratios) < 0.05
    # class power 0: every class present weighs the same within each stethoscope (the floor's
    # "balanced"); at the default 0.5 normal outweighs the rare classes
    w = event_weights(events, "stethoscope", 0.0)
    for d in np.unique(events.devices):
        inside = events.devices == d
        mix = np.bincount(events.labels[inside], w[inside], minlength=4)
        assert np.ptp(mix[mix > 0] / mix.sum()) < 0.02
    assert mixes("stethoscope")[:, 0].min() > 0.3


def test_other_stethoscope_keeps_windows_normalised_as_the_device_would() -> None:
    """A simulated stethoscope changes the band powers; the band normalisation is redone after
    it: a "cycle" window still has zero mean per band, a "gain" window's level moves by what
    the channel did to its own gain (a pure level change leaves it as it was), and p is the
    share of windows changed."""
    from convert.fit import log_mean_exp, other_stethoscope

    rng = np.random.default_rng(0)
    for mode in ("none", "cycle", "running", "gain"):
        params = FrontendParams(band_norm=mode)  # type: ignore[arg-type]
        raw = rng.normal(-12, 2, size=(64, 32, params.n_mels))
        if mode == "gain":
            levels = np.repeat(log_mean_exp(raw).mean(axis=1), params.n_mels, axis=1)
        else:
            levels = raw.mean(axis=1) if mode != "none" else np.zeros((64, params.n_mels))
        x = (raw - levels[:, None, :]).astype(np.float32)
        y = other_stethoscope(x, levels.astype(np.float32), np.random.default_rng(2), params)
        assert y.shape == x.shape and np.isfinite(y).all()
        assert not np.allclose(y, x)
        if mode == "cycle":
            assert np.abs(y.mean(axis=1)).max() < 1e-4
        if mode == "gain":  # the window's own gain stays where the normalisation put it
            assert np.abs(log_mean_exp(y).mean(axis=(1, 2))
                          - log_mean_exp(x).mean(axis=(1, 2))).max() < 1e-3
        half = other_stethoscope(x, levels.astype(np.float32), np.random.default_rng(2),
                                 params, p=0.5)
        untouched = np.all(half == x, axis=(1, 2))
        assert 10 < untouched.sum() < 54
    with pytest.raises(ValueError, match="log mel features without deltas"):
        other_stethoscope(x, levels, rng, FrontendParams(deltas=1))


def test_freq_mixstyle_mixes_band_statistics_not_time_patterns() -> None:
    """Freq-MixStyle keeps each band's pattern in time (its standardised shape) and moves only
    its mean and sd over time toward another window's; p = 0 changes nothing."""
    from convert.fit import freq_mixstyle

    rng = np.random.default_rng(0)
    x = (rng.normal(0, 1, (32, 64, 40)) * rng.uniform(0.5, 2, (32, 1, 40))
         + rng.normal(0, 3, (32, 1, 40))).astype(np.float32)
    assert np.array_equal(freq_mixstyle(x, np.random.default_rng(1), 0.0), x)
    y = freq_mixstyle(x, np.random.default_rng(1), 1.0)

    def shape(v: np.ndarray) -> np.ndarray:
        return (v - v.mean(axis=1, keepdims=True)) / v.std(axis=1, keepdims=True)

    assert np.abs(shape(y) - shape(x)).max() < 1e-2
    assert not np.allclose(y.mean(axis=1), x.mean(axis=1))


def test_fit_returns_the_moving_average() -> None:
    """With `ema` the model returned, and the one each epoch is validated on, is the moving
    average of the weights, not the raw weights training went on with."""
    needs_tensorflow()
    from convert.fit import Windows, fit
    from convert.recipe import Recipe

    rng = np.random.default_rng(0)
    recipe = Recipe(frontend=FrontendParams(n_fft=64, hop_length=32, n_mels=8), filters=(4,),
                    lstm_units=4, epochs=3, mixup=0.0, ema=0.9)
    y = np.arange(128) % 4
    x = rng.normal(size=(128, 16, 8)).astype(np.float32) + y[:, None, None] * 0.5
    w = Windows(x=x, levels=np.zeros((128, 8), np.float32), y=y,
                weight=np.ones(128, np.float32), owner=np.arange(128),
                device=np.arange(128) % 2, devices=("a", "b"), mean=np.zeros(8, np.float32),
                std=np.ones(8, np.float32))
    seen: list[list[np.ndarray]] = []
    averaged, history = fit(recipe, w, 0, lambda _: None,
                            lambda e, m: seen.append(m.get_weights()) or {})
    assert len(history) == len(seen) == 3
    assert all(np.array_equal(a, b) for a, b in zip(averaged.get_weights(), seen[-1],
                                                    strict=True))
    from dataclasses import replace

    raw, _ = fit(replace(recipe, ema=0.0), w, 0, lambda _: None)
    assert not all(np.allclose(a, b) for a, b in zip(averaged.get_weights(),
                                                     raw.get_weights(), strict=True))
    # against a stethoscope adversary: the same classifier's layers, trained otherwise, and
    # nothing of the adversary in what is returned (what ships)
    fought, _ = fit(replace(recipe, adversary=1.0), w, 0, lambda _: None)
    assert [type(la) for la in fought.layers] == [type(la) for la in averaged.layers]
    assert not any("adversary" in layer.name for layer in fought.layers)
    assert not all(np.allclose(a, b) for a, b in zip(averaged.get_weights(),
                                                     fought.get_weights(), strict=True))


@pytest.mark.parametrize("band_norm", ["none", "cycle", "running", "gain"])
def test_trainer_features_and_windows_equal_the_device_ones(sample_wavs: list[Path],
                                                           band_norm: str) -> None:
    """The trainer's path (whole recording at the model rate, the frontend, a band normaliser
    fed a recording's events in order, its windows and normalisation) gives, for the device's
    own cycles, the features and model inputs the device computes while streaming."""
    from dataclasses import replace

    from convert.features import Events, band_normalised
    from convert.fit import windows
    from convert.recipe import Recipe

    recipe = Recipe(frontend=FrontendParams(band_norm=band_norm, band_norm_s=3.0))  # type: ignore
    params = recipe.frontend
    src = FileSource(sample_wavs[1], block_ms=37)  # odd blocks: the streaming path
    device = list(run_signal_path(src.blocks(), src.sample_rate, params, SegmenterConfig()))
    offline = at_model_rate(str(sample_wavs[1]), params.sample_rate)  # the trainer's path
    fe = Frontend(params)
    n = len(device)
    events = Events([fe(offline[c.cycle.start:c.cycle.end]) for c in device],
                    np.zeros(n, int), np.full(n, "p"), np.full(n, "d"), np.full(n, "s"),
                    np.zeros(n, int))
    trainer, _ = band_normalised(events, params)
    for t, c in zip(trainer, device, strict=True):
        assert np.abs(t - c.features).max() < 1e-3
    if band_norm != "none":  # the normalisation did something
        assert np.abs(trainer[-1] - events.feats[-1]).max() > 0.1
    # the windows the model is trained on are the inputs the device's runner feeds it
    w = windows(events, recipe)
    runner = ModelRunner(SHIPPED)
    manifest = replace(runner.manifest, feature_mean=tuple(w.mean), feature_std=tuple(w.std),
                       window=recipe.window)
    runner.manifest = manifest
    runner._mean, runner._std = w.mean, w.std
    device_windows = np.concatenate([runner.windows(c.features) for c in device])
    assert np.abs((w.x - w.mean) / w.std - device_windows).max() < 1e-3


@pytest.mark.shared_data
def test_protocol_then_trainer_on_a_sliver_of_the_data(tmp_path: Path) -> None:
    """The toolchain's own chain, end to end on a few recordings (artefacts, not accuracy):
    the protocol's folds with two members each and the floor beside them, the nested choices
    and the int8 step; the trainer refusing a recipe below the floor, then (allowed, as an
    experiment) taking its epochs and thresholds from the protocol by the same rule,
    converting every member to int8 and writing a package the device loads."""
    needs_tensorflow()
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "icbhi" / "train").is_dir():
        pytest.skip(f"ICBHI/SPRSound not found at {SHARED_DATA}; CI has it")
    from convert import crossval, train

    tiny = ["--limit", "24", "--epochs", "2", "--filters", "4", "8", "--lstm-units", "8",
            "--band-norm", "gain", "--normalise", "stethoscope", "--seeds", "0", "1",
            "--cache", str(tmp_path / "cache"),
            "--data", str(SHARED_DATA)]
    assert crossval.main(["--out", str(tmp_path / "cv"), "--jobs", "2", *tiny]) == 0
    report_json = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    shipped = report_json["shipped"]
    assert {"icbhi", "sprsound", "icbhi_by_stethoscope"} <= set(shipped["cv"])
    assert report_json["int8"] and report_json["seeds"] == [0, 1]
    assert set(report_json["floor"]) == {"raw", "per_recording"}
    assert report_json["floor"]["raw"]["cv"]["sprsound"] is None  # an ICBHI baseline
    assert report_json["prediction"]["official_test"] is not None
    rows = [r["where"] for r in report_json["gate"]["rows"]]
    assert rows[:9] == [f"{w} {s}" for w in ("cv", "held out", "quiet")
                        for s in ("AKGC417L", "LittC2SE", "Meditron")]
    # the channel stress test: every change, the held-out stethoscopes and SPRSound cv through
    # it, the floor beside them, and the changes that keep the breath band gated
    from convert.channels import CHANNELS

    stress = report_json["channels"]
    assert [c["name"] for c in stress["changes"]] == [c.name for c in CHANNELS]
    assert all(c["sprsound_cv"] is not None and set(c["held_out"]) == {
        "AKGC417L", "LittC2SE", "Meditron"} for c in stress["changes"])
    gated = {c.name for c in CHANNELS if c.keeps_breath_band}
    assert {r.split(" ")[0] for r in rows[9:]} == gated
    assert len(rows[9:]) == 4 * len(gated)
    assert set(report_json["floor_channels"]) == {"raw", "per_recording"}
    assert "lowpass-1000" in report_json["prediction"]["assumed"]["Litt3200"]
    # every fold's choice was made without it: the chosen epochs are within the run
    assert {c["epoch"] for c in report_json["choices"].values()} <= {1, 2}
    assert len(report_json["curve"]) == 2
    markdown = (tmp_path / "cv" / "crossval.md").read_text()
    assert markdown.startswith("# Validation protocol") and "floor (raw)" in markdown
    assert "Fold by fold on the same patients" in markdown
    assert "## Through another channel" in markdown
    assert (tmp_path / "cv" / "cv1-s1-int8.npz").is_file()
    # int8 = float per fold member, recomputed here from what the run saved
    from convert.protocol_report import load

    agreement = load(tmp_path / "cv" / "crossval.json").int8_agreement
    assert agreement is not None and len(agreement.members) == 2 * len(report_json["folds"])
    saved_float, saved_int8 = (np.load(tmp_path / "cv" / f"cv1-s1{s}.npz") for s in ("", "-int8"))
    assert agreement.members["cv1 s1"] == round(float(np.mean(
        saved_int8["window_probs"].argmax(1)
        == saved_float["window_probs"][int(saved_int8["epoch"]) - 1].argmax(1))), 4)
    assert agreement.at_bar == sum(v >= 0.99 for v in agreement.members.values())
    assert "int8 = float, fold by fold" in markdown
    # a tiny recipe does not beat the floor: the trainer refuses it…
    assert not report_json["gate"]["passed"]
    with pytest.raises(SystemExit, match="does not beat the gradient-boosting floor"):
        train.main(["--out", str(tmp_path / "pkg"), "--crossval", str(tmp_path / "cv"),
                    *tiny])
    # …and a protocol run of another recipe…
    with pytest.raises(SystemExit, match="validated another recipe"):
        train.main(["--out", str(tmp_path / "pkg"), "--crossval", str(tmp_path / "cv"),
                    *tiny, "--mixup", "0.3", "--allow-below-floor"])
    # …and packages this one when told it is an experiment
    assert train.main(["--out", str(tmp_path / "pkg"), "--crossval", str(tmp_path / "cv"),
                       "--jobs", "2", "--min-agreement", "0", "--check-windows", "50",
                       "--calibration-windows", "50", "--allow-below-floor", *tiny]) == 0
    runner = ModelRunner(tmp_path / "pkg")
    manifest = runner.manifest
    assert manifest.frontend.band_norm == "gain" and len(manifest.members) == 2
    assert manifest.training["epochs"] == report_json["shipping_choice"]["epoch"]
    assert manifest.training["members"] == {"member-0.tflite": 0, "member-1.tflite": 1}
    assert manifest.thresholds.get("adventitious") == \
        report_json["shipping_choice"]["thresholds"].get("adventitious")
    assert manifest.training["floor_gate"] is False
    # every decision between the network and the ward is stated, with how it was made: the
    # channel bar measured on these recordings, the record fraction chosen or carried over
    from convert.channel_edge import min_upper_edge
    from convert.folds import recipe_recordings
    from convert.recipe import from_dict

    why = manifest.training["decisions"]
    assert set(why) == {"thresholds", "record_fraction", "min_upper_edge_hz", "segmenter",
                        "poor_quality_below", "poor_record_fraction"}
    assert "record_fraction" in manifest.thresholds
    assert why["min_upper_edge_hz"]["min_upper_edge_hz"] == manifest.min_upper_edge_hz
    recipe = from_dict(manifest.training["recipe"])
    recordings = [r for _, part, _ in recipe_recordings(SHARED_DATA, recipe, 24) for r in part]
    assert min_upper_edge(recordings, manifest.sample_rate)[0] == manifest.min_upper_edge_hz
    on_disk = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert {"segmenter", "poor_quality_below", "min_upper_edge_hz", "poor_record_fraction"} \
        <= set(on_disk)
    assert sorted(p.name for p in (tmp_path / "pkg" / "report" / "float").iterdir()) == [
        "seed-0.h5", "seed-1.h5"]
    training = json.loads((tmp_path / "pkg" / "report" / "training.json").read_text())
    assert set(training["verify"]["per_member"]) == {"member-0.tflite", "member-1.tflite"}
    assert runner.predict(np.zeros((40, manifest.frontend.n_features))).label in LABELS
    # trained per stethoscope: its training stethoscopes' calibrations come with it, usable
    # as a device uses one (those with fewer than MIN_CYCLES events have none)
    calibrations = sorted((tmp_path / "pkg" / "calibrations").glob("*.json"))
    assert "AKGC417L.json" in [p.name for p in calibrations]
    calibrated = ModelRunner(tmp_path / "pkg", calibration=calibrations[0])
    assert calibrated.calibration is not None and calibrated.calibration.cycles >= 20
    # …and its report: the protocol's numbers and held-out scores in the manifest
    from convert import evaluate, report

    assert evaluate.main([str(tmp_path / "pkg"), str(SAMPLES), "--out",
                          str(tmp_path / "eval")]) == 0
    # the float members kept beside the package, scored the same way, and against the int8
    assert evaluate.main([str(tmp_path / "pkg"), str(SAMPLES), "--out",
                          str(tmp_path / "eval-float"), "--agreement"]) == 0
    agreement = json.loads((tmp_path / "eval-float" / "evaluation.json").read_text())[0]
    assert agreement["agreement_with_float"]["events"] == 22
    assert 0 <= agreement["agreement_with_float"]["labels_agree"] <= 1
    assert evaluate.main([str(tmp_path / "pkg"), str(SAMPLES), "--out",
                          str(tmp_path / "eval-f"), "--float"]) == 0
    assert json.loads((tmp_path / "eval-f" / "evaluation.json").read_text())[0]["models"] == \
        "float"
    other = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    other["recipe"]["mixup"] = 0.3  # as if the protocol had run another recipe
    (tmp_path / "cv-other").mkdir()
    (tmp_path / "cv-other" / "crossval.json").write_text(json.dumps(other))
    assert report.main([str(tmp_path / "pkg"), "--training",
                        str(tmp_path / "pkg" / "report" / "training.json"), "--protocol",
                        str(tmp_path / "cv"), "--evaluation",
                        str(tmp_path / "eval" / "evaluation.json"),
                        "--alternatives", str(tmp_path / "cv-other")]) == 0
    compared = (tmp_path / "pkg" / "report" / "protocol" / "comparison.md").read_text()
    table = [line for line in compared.splitlines() if line.startswith("|")]
    assert len(table) == 6 and len({line.count("|") for line in table}) == 1
    assert "| cv-other | mixup 0.3 |" in compared and "| floor (raw) |" in compared
    assert (tmp_path / "pkg" / "report" / "protocol" / "alternatives" / "cv-other.json").is_file()
    metrics = ModelRunner(tmp_path / "pkg").manifest.metrics
    assert metrics["protocol"]["objective"] == shipped["objective"]
    assert set(metrics["protocol"]["loso"]) <= {"AKGC417L", "LittC2SE", "Meditron"}
    assert metrics["models/samples"]["event_4class"]["score"] is not None
    assert (tmp_path / "pkg" / "report" / "protocol" / "crossval.md").is_file()
    assert (tmp_path / "pkg" / "report" / "training_curves.png").stat().st_size > 5_000


def _predictions(python: str, cycles: Path) -> dict[str, object]:
    code = f"""
import json, numpy as np
from edge.pipeline.model import ModelRunner
r = ModelRunner({str(SHIPPED)!r})
cycles = np.load({str(cycles)!r})
print(json.dumps({{"runtime": r.runtime,
                  "probs": [list(r.predict(c).probs.values()) for c in cycles]}}))
"""
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fold_margins_pair_the_recipe_with_the_floor_on_the_same_patients() -> None:
    """A measured run (docs/protocol/): per fold, the recipe's ICBHI score minus the better of
    the two floors' in that fold, in the report beside the gate; a report whose floor has no
    ICBHI folds has no pairing rather than a wrong one."""
    import dataclasses

    from convert.protocol import fold_margins, markdown
    from convert.protocol_report import load

    report = load(ROOT / "docs" / "protocol" / "gain-stethoscope-weighted" / "crossval.json")
    mine = report.shipped.cv.icbhi
    raw, per_recording = (report.floor[v].cv.icbhi for v in ("raw", "per_recording"))
    assert mine and raw and per_recording
    expected = [round(s - max(a, b), 4) for s, a, b in
                zip(mine.fold_scores, raw.fold_scores, per_recording.fold_scores, strict=True)]
    assert fold_margins(report) == expected == [-0.0267, 0.094, 0.0166, -0.0114, -0.0294]
    assert "-0.027, +0.094, +0.017, -0.011, -0.029: better in **2 of 5** folds" \
        in markdown(report)
    no_icbhi = {v: dataclasses.replace(r, cv=dataclasses.replace(r.cv, icbhi=None))
                for v, r in report.floor.items()}
    assert fold_margins(dataclasses.replace(report, floor=no_icbhi)) is None


def test_shipped_model_in_both_runtimes(sample_wavs: list[Path], tmp_path: Path) -> None:
    """Both interpreters give the same probabilities, to within rounding, for real cycles.

    They run the same int8 graph with different kernels (XNNPACK and the reference ones), whose
    rounding differs by an output step here and there and compounds over the LSTM's steps:
    measured on these cycles, at most 0.019 apart and 0.003 on average for 0.3.0 and 0.4.0
    (averages of five networks); 0.034 and 0.0046 (about one output step of 1/256) for 0.5.0,
    one network, where nothing averages the rounding out. Only near-ties (top-2 margin, or
    distance to the manifest's adventitious threshold, under 0.02) may change label."""
    if not SHIPPED.exists():
        pytest.skip("no shipped model yet")
    if not TFLITE_PYTHON.exists():
        pytest.skip(f"{TFLITE_PYTHON} missing: `make test` builds it (tflite-runtime with "
                    "numpy<2)")
    params = load_manifest(SHIPPED).frontend
    fe = Frontend(params)
    cycles = [fe(x[s:s + 6000]) for wav in sample_wavs
              for x in [at_model_rate(str(wav), params.sample_rate)]
              for s in range(0, len(x) - 6000 + 1, 2000)]  # 1.5 s stretches every 0.5 s
    np.save(tmp_path / "cycles.npy", np.stack(cycles))
    litert = _predictions(sys.executable, tmp_path / "cycles.npy")
    tflite = _predictions(str(TFLITE_PYTHON), tmp_path / "cycles.npy")
    assert litert["runtime"] == "ai_edge_litert" and tflite["runtime"] == "tflite_runtime"
    a, b = np.array(litert["probs"]), np.array(tflite["probs"])
    assert a.shape == (len(cycles), 4) and len(cycles) > 80
    diff = np.abs(a - b)
    assert diff.max() <= 0.04 and diff.mean() <= 2 / 256
    top2 = np.sort(a, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= 0.02
    assert np.array_equal(a.argmax(1)[clear], b.argmax(1)[clear])
    # as the device decides: the threshold on the adventitious probabilities' sum
    manifest = load_manifest(SHIPPED)
    threshold = manifest.thresholds.get(ADVENTITIOUS)
    if threshold is not None:
        clear &= np.abs(1 - a[:, manifest.labels.index("normal")] - threshold) >= 0.02
    decided = [decide(p, manifest.labels, manifest.thresholds)[clear] for p in (a, b)]
    assert np.array_equal(*decided)


@pytest.mark.shared_data
def test_diagnosis_report_is_patient_disjoint(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="the convert extra installs scikit-learn")
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "icbhi" / "train").is_dir():
        pytest.skip(f"ICBHI not found at {SHARED_DATA / 'icbhi'}; CI has it")
    from convert.diagnosis import CLASSES, cross_validate, recording_features

    x, y, patients = recording_features(SHARED_DATA, ModelRunner(SHIPPED))
    assert len(y) == 526 and len(set(patients)) == 77
    result = cross_validate(x, y, patients, seed=0)
    assert result["patient"]["balanced_accuracy"] > 1 / len(CLASSES)  # better than chance
    # grouped folds: every recording of a patient was predicted by a model that never saw them
    from sklearn.model_selection import StratifiedGroupKFold

    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=0).split(x, y,
                                                                                   patients):
        assert not set(patients[train]) & set(patients[test])


def test_pooling_and_cell_clip_survive_the_batch_one_copy() -> None:
    """The copy converted to int8 is rebuilt from arch_of(): a pooling or clip it did not read
    back would give the LSTM another number of steps or another cell, or fail to take the
    weights."""
    needs_tensorflow()
    from convert.package import arch_of, average, build_cnn_lstm, with_batch

    model = build_cnn_lstm(32, 8, 4, filters=(4, 4), lstm_units=4, time_pool=(2, 4),
                           cell_clip=0.5)
    assert arch_of(model)["time_pool"] == (2, 4) and arch_of(model)["cell_clip"] == 0.5
    assert model.get_layer(index=-3).input_shape[1] == 32 // 8  # LSTM steps
    x = np.random.default_rng(0).normal(size=(3, 32, 8, 1)).astype(np.float32)
    for m in (model, average([model, model])):
        copy = with_batch(m, 1)
        assert np.allclose(copy.predict(x[:1], verbose=0), m.predict(x[:1], verbose=0))


def cell_state_ranges(tflite: bytes) -> list[float]:
    """The width (max − min) of the cell state's int8 range at each unrolled step: what TANH(c)
    reads."""
    from edge.pipeline.model import _interpreter_class

    it = _interpreter_class()[0](model_content=tflite)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    cells = [tensors[op["inputs"][0]] for op in it._get_ops_details() if op["op_name"] == "TANH"]
    return [c["quantization"][0] * 255 for c in cells if "split" not in c["name"]]


@pytest.mark.parametrize("clip", [None, 4.0])
def test_cell_clip_bounds_the_int8_cell_state(clip: float | None) -> None:
    """An LSTM whose units integrate (input, forget and candidate gates open) grows its cell
    state by one per step; clipped, no step's int8 range is wider than the clip allows."""
    needs_tensorflow()
    from convert.package import build_cnn_lstm, to_int8_tflite

    model = build_cnn_lstm(64, 8, 4, filters=(4,), lstm_units=4, cell_clip=clip)
    rnn = next(layer for layer in model.layers if layer.__class__.__name__ == "RNN")
    kernel, recurrent, bias = rnn.get_weights()
    rnn.set_weights([kernel * 0, recurrent * 0, np.full_like(bias, 8.0)])
    x = np.random.default_rng(0).normal(size=(20, 64, 8)).astype(np.float32)
    ranges = cell_state_ranges(to_int8_tflite(model, x))
    assert len(ranges) == 32
    if clip is None:
        assert ranges[-1] > 30  # one per step, as the unclipped 16-step candidate measured
    else:
        assert max(ranges) <= 2 * clip * 1.01
