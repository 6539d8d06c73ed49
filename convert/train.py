"""Train the CNN-LSTM on ICBHI + SPRSound train, pick it on patient-disjoint validation, convert
it to int8, verify it, score it, and write the model package and its report.

    python -m convert.train --data ../shared/data --out models/lungedge-cnnlstm

Every training folder is split by PATIENT (seeded) into train and validation; each seed's epoch,
the package (the best on validation of the single seeds and their average whose int8 version
passes verification), the adventitious threshold and the record fraction are chosen on
validation, and nothing else.
The test folders (SPRSound test_inter, test_intra) are only scored, after the choice, and the
ICBHI official test split is not here at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.datasets import LABELS, Recording, iter_annotated
from convert.features import at_model_rate, cached_event_features, normalisation, windows_of
from convert.metrics import icbhi_score, sprsound_score
from convert.package import (
    arch_of,
    average,
    build_cnn_lstm,
    load_float,
    members_of,
    op_names,
    to_int8_tflite,
    write_package,
)
from convert.verify import VerificationError, verify
from edge.dsp.frontend import FrontendParams
from edge.model import ADVENTITIOUS, WindowSpec

# A window is 2.05 s (8,192 samples at 4 kHz) whatever the frame hop: ICBHI's median cycle is
# 2.5 s and SPRSound's median event 1.2 s. Windows over a long cycle overlap by half.
WINDOW_SAMPLES = 8192


def recipe(n_fft: int, hop_length: int, n_mfcc: int, features: str, deltas: int,
           n_mels: int) -> tuple[FrontendParams, WindowSpec]:
    """The frontend and windowing for a frame length and hop in samples."""
    frames = WINDOW_SAMPLES // hop_length
    return (FrontendParams(n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, n_mfcc=n_mfcc,
                           deltas=deltas, features=features),  # type: ignore[arg-type]
            WindowSpec(frames=frames, hop_frames=frames // 2, pad="repeat", aggregate="mean"))


# What thresholds are chosen on: per validation set its (name, event features, labels), and
# the validation recordings that carry a record label.
Validation = tuple[list[tuple[str, list[np.ndarray], np.ndarray]], list[Recording]]


@dataclass
class Split:
    name: str
    feats: list[np.ndarray]
    labels: np.ndarray
    patients: list[str]
    owners: list[int]  # recording index of each event


def load(data: Path, split: str, frontend: FrontendParams, cache: Path
         ) -> tuple[Split, list[Any]]:
    recs = list(iter_annotated(data / split))
    f, y, p, o = cached_event_features(split, recs, frontend, cache)
    return Split(split, f, y, p, o), recs


def patient_split(s: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    patients = sorted(set(s.patients))
    rng = np.random.default_rng(seed)
    val = set(rng.choice(patients, max(1, round(len(patients) * val_fraction)), replace=False))
    idx_t = [i for i, p in enumerate(s.patients) if p not in val]
    idx_v = [i for i, p in enumerate(s.patients) if p in val]

    def sub(idx: list[int], tag: str) -> Split:
        return Split(f"{s.name}:{tag}", [s.feats[i] for i in idx], s.labels[idx],
                     [s.patients[i] for i in idx], [s.owners[i] for i in idx])

    return sub(idx_t, "train"), sub(idx_v, "val")


# -- augmentation --------------------------------------------------------------------------------
def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, mixup: float,
            frontend: FrontendParams, enabled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """On normalised feature windows: time shift, gain, noise, time and frequency masks, and
    MixUp; returns windows and soft labels. A gain moves the energy coefficient of MFCCs and
    every band of a log-mel spectrum; a frequency mask hides a few cepstral coefficients (never
    the energy) or a few bands."""
    n, frames, feats = x.shape
    onehot = np.eye(len(LABELS), dtype=np.float32)[y]
    if not enabled:
        return x, onehot
    cepstral = frontend.features == "mfcc"
    static = frontend.n_static
    shifts = rng.integers(-frames // 8, frames // 8 + 1, n)
    x = x[np.arange(n)[:, None], (np.arange(frames)[None, :] - shifts[:, None]) % frames]
    x[:, :, :1 if cepstral else static] += rng.normal(0, 0.3, (n, 1, 1)).astype(np.float32)
    x += rng.normal(0, 0.05, x.shape).astype(np.float32)
    t, f = np.arange(frames)[None, :], np.arange(feats)[None, :]
    t0, tw = rng.integers(0, frames, n)[:, None], rng.integers(0, frames // 10 + 1, n)[:, None]
    f0 = rng.integers(1 if cepstral else 0, static, n)[:, None]
    fw = rng.integers(0, 4 if cepstral else static // 8 + 1, n)[:, None]
    x[(t >= t0) & (t < t0 + tw)] = 0
    x *= ~((f >= f0) & (f < np.minimum(f0 + fw, static)))[:, None, :]
    if mixup > 0:
        lam = rng.beta(mixup, mixup, size=(n, 1, 1)).astype(np.float32)
        perm = rng.permutation(n)
        x = lam * x + (1 - lam) * x[perm]
        onehot = lam[:, :, 0] * onehot + (1 - lam[:, :, 0]) * onehot[perm]
    return x, onehot


def event_predictions(probs: np.ndarray, owner: np.ndarray, n_events: int) -> np.ndarray:
    """Mean window probabilities per event, as the device aggregates them."""
    sums = np.zeros((n_events, probs.shape[1]))
    np.add.at(sums, owner, probs)
    counts = np.bincount(owner, minlength=n_events)[:, None]
    return sums / np.maximum(counts, 1)


# -- training ------------------------------------------------------------------------------------
def validation_scores(model: Any, vals: list[tuple[str, Any]]) -> tuple[dict[str, float], float]:
    """ICBHI-style 4-class score of the float model on each validation set, and their mean:
    the one number epochs, seeds and ensembles are chosen by."""
    scores = {}
    for name, (vx, vowner, vlabels) in vals:
        p = model.predict(vx[..., None], batch_size=256, verbose=0)
        pred = event_predictions(p, vowner, len(vlabels)).argmax(1)
        scores[name] = icbhi_score(vlabels, pred)["score"]
    return scores, float(np.mean(list(scores.values())))


def train_seed(seed: int, train: tuple[np.ndarray, np.ndarray], vals: list[tuple[str, Any]],
               epochs: int, mixup: float, frontend: FrontendParams, log: Any,
               arch: dict[str, Any],
               augmentation: bool = True, class_weights: bool = True, ema: float = 0.0
               ) -> tuple[Any, dict[str, Any]]:
    """One seed's model at its best epoch on validation. With `ema` > 0 the model validated and
    kept is an exponential moving average of the weights (decay `ema` per batch): the raw
    weights' validation score jumps by ±0.03 between epochs, so the best raw epoch is partly
    luck, and an average of nearby weights is a smoother, usually better, model."""
    import tensorflow as tf

    from convert.package import keras

    tf.keras.utils.set_random_seed(seed)
    k = keras()
    x, y = train
    counts = np.bincount(y, minlength=len(LABELS))
    class_w = (counts.sum() / np.maximum(counts, 1)) ** 0.5  # sqrt-inverse frequency
    class_w /= (class_w * counts).sum() / counts.sum()
    if not class_weights:
        class_w = np.ones(len(LABELS))
    model = build_cnn_lstm(x.shape[1], x.shape[2], len(LABELS), **arch)
    model.compile(optimizer=k.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    rng = np.random.default_rng(seed)
    best: dict[str, Any] = {"score": -1.0}
    history = []
    patience, bad = 6, 0
    averaged = model.get_weights() if ema else []
    steps = 0
    for epoch in range(epochs):
        t = time.time()
        order = rng.permutation(len(x))
        losses = []
        for b in range(0, len(order), 64):
            idx = order[b:b + 64]
            xb, yb = augment(x[idx], y[idx], rng, mixup, frontend, augmentation)
            losses.append(model.train_on_batch(xb[..., None], yb, sample_weight=class_w[y[idx]]))
            if ema:
                steps += 1
                d = min(ema, (1 + steps) / (10 + steps))  # short memory while it starts
                averaged = [d * a + (1 - d) * w for a, w in zip(averaged, model.get_weights(),
                                                                 strict=True)]
        if ema:
            raw = model.get_weights()
            model.set_weights(averaged)
        scores, score = validation_scores(model, vals)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val": scores,
                        "val_mean": score})
        log(f"seed {seed} epoch {epoch:2d} loss {np.mean(losses):.3f} val {scores} "
            f"mean {score:.3f} ({time.time() - t:.0f} s)")
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "weights": model.get_weights()}
            bad = 0
        else:
            bad += 1
        if ema:
            model.set_weights(raw)
        if bad >= patience:
            break
        if epoch == 8:
            model.optimizer.learning_rate.assign(3e-4)
    model.set_weights(best["weights"])
    return model, {"seed": seed, "best_epoch": best["epoch"], "val_mean": best["score"],
                   "history": history}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "LUNGEDGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path(".cache/features"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--mixup", type=float, default=0.2)
    ap.add_argument("--filters", type=int, nargs="+", default=[16, 32, 48],
                    help="channels of each conv block")
    ap.add_argument("--lstm-units", type=int, default=48)
    ap.add_argument("--cell-clip", type=float, default=4.0,
                    help="clip the LSTM's cell state to ±this after every step, so its int8 "
                         "range stays narrow (0: no clip)")
    ap.add_argument("--time-pool", type=int, nargs="+", default=None,
                    help="each conv block's pooling along time (default 2 each): the LSTM "
                         "runs frames / their product steps")
    ap.add_argument("--no-ensemble", dest="ensemble", action="store_false",
                    help="candidates are the single seeds only, not their average")
    ap.add_argument("--version", default="0.4.0", help="of the package written")
    ap.add_argument("--from-float", type=Path, metavar="H5",
                    help="no training: package (convert, verify, threshold, --seed-report) the "
                         "float model an earlier run of this command saved beside OUT, with the "
                         "runs recorded in OUT/training.json")
    ap.add_argument("--n-fft", type=int, default=256, help="frame length, samples at 4 kHz")
    ap.add_argument("--hop-length", type=int, default=64,
                    help="frame hop, samples at 4 kHz; the window stays 2.05 s")
    ap.add_argument("--n-mfcc", type=int, default=20, help="cepstral coefficients (≤ 40)")
    ap.add_argument("--features", choices=("mfcc", "log_mel"), default="log_mel",
                    help="the frontend's output: cepstra, or the log mel bands themselves")
    ap.add_argument("--n-mels", type=int, default=40, help="mel bands over 80–2000 Hz")
    ap.add_argument("--deltas", type=int, choices=(0, 1, 2), default=0,
                    help="delta (1) and delta-delta (2) features appended")
    ap.add_argument("--ema", type=float, default=0.998,
                    help="validate and keep a moving average of the weights with this decay "
                         "per batch (0: the raw weights)")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--limit", type=int, default=None, help="events per set (smoke runs)")
    ap.add_argument("--no-augmentation", action="store_true", help="ablation")
    ap.add_argument("--no-class-weights", action="store_true", help="ablation")
    ap.add_argument("--calibration-windows", type=int, default=3000)
    ap.add_argument("--min-agreement", type=float, default=0.99,
                    help="int8 vs float top-1 agreement on validation windows below which no "
                         "package is written (what was used is recorded in the manifest)")
    ap.add_argument("--seed-report", type=Path, nargs="*", default=[], metavar="FOLDER",
                    help="after the choice, score every seed's int8 model on these folders "
                         "(mean ± std over seeds; the choice itself never sees them)")
    ap.add_argument("--ablation", action="store_true",
                    help="only train and report validation (no int8 package)")
    args = ap.parse_args()
    args.frontend, args.window = recipe(args.n_fft, args.hop_length, args.n_mfcc, args.features,
                                        args.deltas, args.n_mels)
    try:
        return run(args)
    except VerificationError as exc:
        print(f"verification FAILED, no package written: {exc}. The float model is beside "
              f"{args.out}; `--from-float` repackages it.", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    logf = (args.out / "training.log").open("a" if args.from_float else "w")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    frontend, window = args.frontend, args.window
    icbhi, _ = load(args.data, "icbhi/train", frontend, args.cache)
    spr, spr_recordings = load(args.data, "sprsound/train", frontend, args.cache)
    parts = {}
    for s in (icbhi, spr):
        tr, va = patient_split(s, args.val_fraction, seed=1234)
        if args.limit:
            tr = Split(tr.name, tr.feats[:args.limit], tr.labels[:args.limit],
                       tr.patients[:args.limit], tr.owners[:args.limit])
            va = Split(va.name, va.feats[:args.limit], va.labels[:args.limit],
                       va.patients[:args.limit], va.owners[:args.limit])
        parts[s.name] = (tr, va)
        log(f"{s.name} validation patients: {','.join(sorted(set(va.patients)))}")
    train_feats = [f for tr, _ in parts.values() for f in tr.feats]
    train_labels = np.concatenate([tr.labels for tr, _ in parts.values()])
    mean, std = normalisation(train_feats)
    x, y, _ = windows_of(train_feats, train_labels, window, mean, std)
    vals = []
    for name, (_, va) in parts.items():
        vx, _, vowner = windows_of(va.feats, va.labels, window, mean, std)
        vals.append((name, (vx, vowner, va.labels)))
    log(f"train windows {len(x)} (events per label {np.bincount(train_labels).tolist()}); "
        + "; ".join(f"{n} val events {len(v[2])}" for n, v in vals))

    if args.from_float:
        previous = json.loads((args.out / "training.json").read_text())
        report = {k: previous[k] for k in ("runs", "histories")}
        chosen = load_float(args.from_float)
        if tuple(chosen.input_shape[1:3]) != (window.frames, frontend.n_features):
            raise SystemExit(f"{args.from_float} takes windows of {chosen.input_shape[1]} frames "
                             f"× {chosen.input_shape[2]} features, not {window.frames} × "
                             f"{frontend.n_features}: pass the --n-fft, --hop-length, "
                             "--features, --n-mels, --n-mfcc and --deltas it was trained with")
        every = seeds_path(args.out)  # every seed, for the seed report; else the chosen ones
        models = (dict(zip([r["seed"] for r in previous["runs"]],
                           members_of(load_float(every)), strict=True)) if every.exists()
                  else dict(zip(previous["choice"]["members"], members_of(chosen), strict=True)))
        candidates = [(chosen, previous["choice"])]
        log(f"from {args.from_float}: seeds {previous['choice']['members']}, no training "
            f"(seed report: seeds {list(models)})")
    else:
        runs, models = [], {}
        for seed in args.seeds:
            model, run = train_seed(seed, (x, y), vals, args.epochs, args.mixup,
                                    frontend, log,
                                    {"filters": tuple(args.filters),
                                     "lstm_units": args.lstm_units,
                                     "time_pool": args.time_pool and tuple(args.time_pool),
                                     "cell_clip": args.cell_clip},
                                    augmentation=not args.no_augmentation,
                                    class_weights=not args.no_class_weights, ema=args.ema)
            runs.append(run)
            models[seed] = model
        if args.ablation:
            (args.out / "ablation.json").write_text(json.dumps({
                "frontend": frontend.to_dict(), "ema": args.ema,
                "augmentation": not args.no_augmentation, "mixup": args.mixup,
                "class_weights": not args.no_class_weights,
                "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs]}) + "\n")
            return 0
        report = {"runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
                  "histories": {r["seed"]: r["history"] for r in runs}}
        every = list(models.values())
        (average(every) if len(every) > 1 else every[0]).save(str(seeds_path(args.out)))
        candidates = ranked(models, runs, vals, args.ensemble, log)
    val_events = [(tr_va[1].name, tr_va[1].feats, tr_va[1].labels) for tr_va in parts.values()]
    val_patients = set(parts[spr.name][1].patients)
    val_recordings = [r for r in spr_recordings if r.patient in val_patients][:args.limit]
    validation = (val_events, val_recordings)
    rejected: list[dict[str, Any]] = []
    for i, (chosen, choice) in enumerate(candidates):
        report.update(choice=choice, rejected=rejected)
        if not args.from_float:
            chosen.save(str(args.out.parent / f"{args.out.name}-float.h5"))
            # written now too, so that --from-float can pick up after a failed verification
            (args.out / "training.json").write_text(json.dumps(report, indent=1) + "\n")
        try:
            tflite, checks = package(chosen, choice, x, np.concatenate([v[0] for _, v in vals]),
                                     validation, mean, std, args, log)
            break
        except VerificationError as exc:
            if i == len(candidates) - 1:
                raise
            rejected.append(choice | {"verification": str(exc)})
            log(f"seeds {choice['members']} failed int8 verification ({exc}): the next "
                "candidate on validation")
    report.update(ops=op_names(tflite), model_bytes=len(tflite), verify=checks)
    (args.out / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    if args.seed_report:
        seed_report(models, x, validation, mean, std, args, log)
    return 0


def seeds_path(out: Path) -> Path:
    """Every seed's float model in one file (their average; its members in seed order), so that
    --from-float can still report on every seed when a single one was chosen."""
    return out.parent / f"{out.name}-float-seeds.h5"


def ranked(models: dict[int, Any], runs: list[dict[str, Any]], vals: list[tuple[str, Any]],
           ensemble: bool, log: Any) -> list[tuple[Any, dict[str, Any]]]:
    """Every seed alone and (unless `ensemble` is off) the seeds' average, best on validation
    first: the package is the first of them whose int8 version passes verification."""
    candidates = [(models[r["seed"]], {"members": [r["seed"]], "val_mean": r["val_mean"]})
                  for r in runs]
    if ensemble and len(models) > 1:
        avg = average(list(models.values()))
        scores, score = validation_scores(avg, vals)
        log(f"average of seeds {list(models)}: val {scores} mean {score:.3f}")
        candidates.append((avg, {"members": list(models), "val_mean": score}))
    candidates.sort(key=lambda c: -c[1]["val_mean"])
    log("candidates on validation: " + ", ".join(f"seeds {c['members']} {c['val_mean']:.3f}"
                                                 for _, c in candidates))
    return candidates


def calibration_windows(train_x: np.ndarray, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return train_x[rng.choice(len(train_x), min(n, len(train_x)), replace=False)]


def tune_threshold(package_dir: Path, val_events: list[tuple[str, list[np.ndarray], np.ndarray]],
                   log: Any) -> dict[str, Any]:
    """Choose the manifest's adventitious threshold on the validation events, through the int8
    model as the device runs it, and write it into the manifest.

    The objective is the mean over the validation sets of the 4-class ICBHI score and the binary
    SPRSound score, so the operating point serves both the alerts (which need the class) and
    screening (which needs normal vs not)."""
    from edge.model import ModelRunner, decide

    runner = ModelRunner(package_dir)
    labels = runner.manifest.labels
    probs = [(np.array([[runner.predict(f).probs[lab] for lab in labels] for f in feats]), y)
             for _, feats, y in val_events]

    def objective(thresholds: dict[str, float]) -> float:
        total = []
        for p, y in probs:
            pred = decide(p, labels, thresholds)
            total += [icbhi_score(y, pred)["score"],
                      sprsound_score((y != 0).astype(int), (pred != 0).astype(int))["score"]]
        return float(np.mean(total))

    grid = np.round(np.arange(0.10, 0.91, 0.02), 2)
    values = [objective({ADVENTITIOUS: float(t)}) for t in grid]
    at_argmax = objective({})
    best = int(np.argmax(values))
    # the argmax is not a point of the grid: keep it when no threshold beats it
    chosen = {ADVENTITIOUS: float(grid[best])} if values[best] > at_argmax else {}
    result = {"thresholds": chosen, "objective": "mean over validation sets of 4-class ICBHI "
              "score and binary SPRSound score", "validation": round(max(values[best],
                                                                         at_argmax), 4),
              "validation_at_argmax": round(at_argmax, 4)}
    log(f"thresholds {chosen or 'none (argmax)'} on validation: {result['validation']} "
        f"(argmax {result['validation_at_argmax']})")
    _write_threshold(package_dir, ADVENTITIOUS, chosen.get(ADVENTITIOUS), "threshold", result)
    return result


def tune_record_fraction(package_dir: Path, recordings: list[Recording], log: Any
                         ) -> dict[str, Any]:
    """Choose the manifest's record fraction (edge.model.RECORD) for Task 2-1 on the validation
    recordings, streamed through the device's segmenter and the int8 model with its event
    threshold; tracker.RECORD_FRACTION stays unless a point of the grid beats it."""
    from convert.evaluate import RECORD_TRUTH, record_class, stream
    from edge.model import RECORD, ModelRunner
    from edge.tracker import RECORD_FRACTION

    runner = ModelRunner(package_dir)
    rate = runner.manifest.sample_rate
    streamed = [(RECORD_TRUTH[r.record_label], *stream(runner, at_model_rate(str(r.audio), rate)))
                for r in recordings if r.record_label in RECORD_TRUTH]
    truth = np.array([t for t, _, _ in streamed])

    def task_2_1(fraction: float) -> float:
        pred = np.array([record_class(c, p, rate, fraction) for _, c, p in streamed])
        return sprsound_score(truth, pred, exact=True)["score"]

    grid = np.round(np.arange(0.05, 0.61, 0.05), 2)
    values = [task_2_1(float(f)) for f in grid]
    at_default = task_2_1(RECORD_FRACTION)
    best = int(np.argmax(values))
    chosen = float(grid[best]) if values[best] > at_default else None
    result = {"record_fraction": chosen, "objective": "Task 2-1 score on the validation "
              "recordings, streamed", "recordings": len(streamed),
              "validation": round(max(values[best], at_default), 4),
              "validation_at_default": round(at_default, 4)}
    log(f"record fraction {chosen or f'{RECORD_FRACTION} (default)'} on {len(streamed)} "
        f"validation recordings: Task 2-1 {result['validation']} (default "
        f"{result['validation_at_default']})")
    _write_threshold(package_dir, RECORD, chosen, "record_threshold", result)
    return result


def tune_thresholds(package_dir: Path, validation: Validation, log: Any) -> None:
    """The event threshold first: the record rule counts the cycles it labels."""
    val_events, val_recordings = validation
    tune_threshold(package_dir, val_events, log)
    if val_recordings:
        tune_record_fraction(package_dir, val_recordings, log)


def _write_threshold(package_dir: Path, key: str, value: float | None, record_as: str,
                     result: dict[str, Any]) -> None:
    path = package_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["thresholds"] = {k: v for k, v in manifest.get("thresholds", {}).items()
                              if k != key} | ({key: value} if value is not None else {})
    manifest["training"][record_as] = result
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def seed_report(models: dict[int, Any], train_x: np.ndarray, validation: Validation,
                mean: np.ndarray, std: np.ndarray, args: argparse.Namespace, log: Any) -> None:
    """Every seed's model alone, converted and thresholded like the shipped one, scored on the
    report folders: the spread a single training run has."""
    import tempfile

    from convert.evaluate import evaluate_folder
    from edge.model import ModelRunner

    rep = calibration_windows(train_x, args.calibration_windows)
    per_seed = {}
    for seed, model in models.items():
        with tempfile.TemporaryDirectory() as tmp:
            write_package(Path(tmp), to_int8_tflite(model, rep), name=f"seed-{seed}",
                          version="0", labels=LABELS, frontend=args.frontend, window=args.window,
                          mean=mean, std=std, training={}, metrics={})
            tune_thresholds(Path(tmp), validation, log)
            runner = ModelRunner(tmp)
            per_seed[seed] = {str(f): evaluate_folder(runner, f) for f in args.seed_report}
        log(f"seed {seed}: " + "; ".join(
            f"{Path(f).name} 4-class {r['event_4class']['score']} binary "
            f"{r['event_binary']['score']}" for f, r in per_seed[seed].items()))
    summary = {}
    for f in map(str, args.seed_report):
        for key in ("event_4class", "event_binary", "streaming_4class", "record_task_2_1"):
            v = [per_seed[s][f][key]["score"] for s in per_seed if key in per_seed[s][f]]
            if v:
                summary[f"{Path(f).name} {key}"] = [round(float(np.mean(v)), 4),
                                                    round(float(np.std(v)), 4)]
    (args.out / "seed_report.json").write_text(json.dumps(
        {"mean_std_over_seeds": summary, "seeds": list(per_seed)}, indent=1) + "\n")
    log(f"over seeds {list(per_seed)}: {summary}")


def package(model: Any, choice: dict[str, Any], train_x: np.ndarray, val_windows: np.ndarray,
            validation: Validation, mean: np.ndarray, std: np.ndarray,
            args: argparse.Namespace, log: Any) -> tuple[bytes, dict[str, Any]]:
    """int8 conversion calibrated on real training windows, the package, its verification
    against the float model on the validation windows (raises below --min-agreement), and the
    thresholds chosen on validation."""
    rep = calibration_windows(train_x, args.calibration_windows)
    tflite = to_int8_tflite(model, rep)
    write_package(
        args.out, tflite, name="lungedge-cnnlstm", version=args.version, labels=LABELS,
        frontend=args.frontend, window=args.window, mean=mean, std=std,
        training={"data": ["ICBHI 2017 official train (526 recordings, 77 patients)",
                           "SPRSound train (1949 recordings, 251 patients)"],
                  "split": f"by patient, {args.val_fraction:.0%} of each set to validation, "
                           "seed 1234", "seeds": args.seeds,
                  "members": choice["members"],
                  "architecture": {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in arch_of(members_of(model)[0]).items()},
                  "epochs_max": args.epochs, "mixup": args.mixup,
                  "weights": f"moving average, decay {args.ema} per batch" if args.ema
                  else "raw",
                  "augmentation": "time shift, gain, noise, time/frequency masks, MixUp",
                  "class_weights": "sqrt inverse frequency",
                  "calibration_windows": len(rep), "min_agreement": args.min_agreement},
        metrics={})
    windows_path = args.out.parent / f"{args.out.name}-val-windows.npy"
    np.save(windows_path, val_windows)
    float_path = args.from_float or args.out.parent / f"{args.out.name}-float.h5"
    try:
        checks = verify(args.out, float_path, val_windows, min_agreement=args.min_agreement)
    except VerificationError:
        for name in ("model.tflite", "manifest.json"):  # no half-made package left behind
            (args.out / name).unlink(missing_ok=True)
        raise
    log(f"verified: {checks}")
    tune_thresholds(args.out, validation, log)
    return tflite, checks


if __name__ == "__main__":
    raise SystemExit(main())
