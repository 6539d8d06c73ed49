"""Train the CNN-LSTM on ICBHI + SPRSound train, pick it on patient-disjoint validation, convert
it to int8, verify it, score it, and write the model package and its report.

    python -m convert.train --data ../shared/data --out models/lungedge-cnnlstm [--seeds 0 1 2]

Every training folder is split by PATIENT (seeded) into train and validation; the epoch, the seed
and nothing else are chosen on validation. The test folders (SPRSound test_inter, test_intra)
are only scored, after the choice, and the ICBHI official test split is not here at all.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.datasets import LABELS, iter_annotated
from convert.features import cached_event_features, normalisation, windows_of
from convert.metrics import icbhi_score
from convert.package import build_cnn_lstm, op_names, to_int8_tflite, write_package
from convert.verify import verify
from edge.dsp.mfcc import FrontendParams
from edge.model import WindowSpec

# 64 ms frames every 32 ms, 20 MFCC + deltas; a window is 2.05 s (64 frames), ICBHI's median
# cycle is 2.5 s and SPRSound's median event 1.2 s.
FRONTEND = FrontendParams(hop_length=128, deltas=1)
WINDOW = WindowSpec(frames=64, hop_frames=32, pad="repeat", aggregate="mean")


@dataclass
class Split:
    name: str
    feats: list[np.ndarray]
    labels: np.ndarray
    patients: list[str]
    owners: list[int]  # recording index of each event


def load(data: Path, split: str, cache: Path) -> tuple[Split, list[Any]]:
    recs = list(iter_annotated(data / split))
    f, y, p, o = cached_event_features(split, recs, FRONTEND, cache)
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
            enabled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """On normalised MFCC windows: time shift, gain (the energy coefficient), noise, time and
    frequency masks, and MixUp; returns windows and soft labels."""
    n, frames, feats = x.shape
    onehot = np.eye(len(LABELS), dtype=np.float32)[y]
    if not enabled:
        return x, onehot
    shifts = rng.integers(-frames // 8, frames // 8 + 1, n)
    x = x[np.arange(n)[:, None], (np.arange(frames)[None, :] - shifts[:, None]) % frames]
    x[:, :, 0] += rng.normal(0, 0.3, (n, 1)).astype(np.float32)
    x += rng.normal(0, 0.05, x.shape).astype(np.float32)
    t, f = np.arange(frames)[None, :], np.arange(feats)[None, :]
    t0, tw = rng.integers(0, frames, n)[:, None], rng.integers(0, frames // 10 + 1, n)[:, None]
    f0, fw = rng.integers(1, FRONTEND.n_mfcc, n)[:, None], rng.integers(0, 4, n)[:, None]
    x[(t >= t0) & (t < t0 + tw)] = 0
    x *= ~((f >= f0) & (f < f0 + fw))[:, None, :]
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
def train_seed(seed: int, train: tuple[np.ndarray, np.ndarray], vals: list[tuple[str, Any]],
               epochs: int, mixup: float, log: Any, augmentation: bool = True,
               class_weights: bool = True) -> tuple[Any, dict[str, Any]]:
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
    model = build_cnn_lstm(WINDOW.frames, FRONTEND.n_features, len(LABELS),
                           filters=(16, 32, 48), lstm_units=48)
    model.compile(optimizer=k.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    rng = np.random.default_rng(seed)
    best: dict[str, Any] = {"score": -1.0}
    history = []
    patience, bad = 6, 0
    for epoch in range(epochs):
        t = time.time()
        order = rng.permutation(len(x))
        losses = []
        for b in range(0, len(order), 64):
            idx = order[b:b + 64]
            xb, yb = augment(x[idx], y[idx], rng, mixup, augmentation)
            losses.append(model.train_on_batch(xb[..., None], yb, sample_weight=class_w[y[idx]]))
        scores = {}
        for name, (vx, vowner, vlabels) in vals:
            p = model.predict(vx[..., None], batch_size=256, verbose=0)
            pred = event_predictions(p, vowner, len(vlabels)).argmax(1)
            scores[name] = icbhi_score(vlabels, pred)["score"]
        score = float(np.mean(list(scores.values())))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val": scores,
                        "val_mean": score})
        log(f"seed {seed} epoch {epoch:2d} loss {np.mean(losses):.3f} val {scores} "
            f"mean {score:.3f} ({time.time() - t:.0f} s)")
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "weights": model.get_weights()}
            bad = 0
        else:
            bad += 1
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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--mixup", type=float, default=0.2)
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
    args.out.mkdir(parents=True, exist_ok=True)
    logf = (args.out / "training.log").open("w")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    icbhi, _ = load(args.data, "icbhi/train", args.cache)
    spr, _ = load(args.data, "sprsound/train", args.cache)
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
    x, y, _ = windows_of(train_feats, train_labels, WINDOW, mean, std)
    vals = []
    for name, (_, va) in parts.items():
        vx, _, vowner = windows_of(va.feats, va.labels, WINDOW, mean, std)
        vals.append((name, (vx, vowner, va.labels)))
    log(f"train windows {len(x)} (events per label {np.bincount(train_labels).tolist()}); "
        + "; ".join(f"{n} val events {len(v[2])}" for n, v in vals))

    runs = []
    best_model, best_run = None, None
    seed_weights = {}
    for seed in args.seeds:
        model, run = train_seed(seed, (x, y), vals, args.epochs, args.mixup, log,
                                augmentation=not args.no_augmentation,
                                class_weights=not args.no_class_weights)
        runs.append(run)
        seed_weights[seed] = model.get_weights()
        if best_run is None or run["val_mean"] > best_run["val_mean"]:
            best_model, best_run = model, run
    assert best_model is not None and best_run is not None
    if args.ablation:
        (args.out / "ablation.json").write_text(json.dumps({
            "augmentation": not args.no_augmentation, "mixup": args.mixup,
            "class_weights": not args.no_class_weights,
            "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs]}) + "\n")
        return 0

    report = {"runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
              "histories": {r["seed"]: r["history"] for r in runs}}
    (args.out / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    float_path = args.out.parent / f"{args.out.name}-float.h5"
    best_model.save(str(float_path))
    tflite, checks = package(best_model, x, np.concatenate([v[0] for _, v in vals]), mean,
                             std, best_run, args, log)
    report.update(ops=op_names(tflite), model_bytes=len(tflite), verify=checks)
    (args.out / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    if args.seed_report:
        seed_report(best_model, seed_weights, x, mean, std, args, log)
    return 0


def seed_report(model: Any, seed_weights: dict[int, Any], train_x: np.ndarray,
                mean: np.ndarray, std: np.ndarray, args: argparse.Namespace, log: Any) -> None:
    """Every seed's model, converted like the shipped one, scored on the report folders."""
    import tempfile

    from convert.evaluate import evaluate_folder
    from edge.model import ModelRunner

    rng = np.random.default_rng(0)
    rep = train_x[rng.choice(len(train_x), min(args.calibration_windows, len(train_x)),
                             replace=False)]
    per_seed = {}
    for seed, weights in seed_weights.items():
        model.set_weights(weights)
        with tempfile.TemporaryDirectory() as tmp:
            write_package(Path(tmp), to_int8_tflite(model, rep), name=f"seed-{seed}",
                          version="0", labels=LABELS, frontend=FRONTEND, window=WINDOW,
                          mean=mean, std=std, training={}, metrics={})
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


def package(model: Any, train_x: np.ndarray, val_windows: np.ndarray, mean: np.ndarray,
            std: np.ndarray, best_run: dict[str, Any], args: argparse.Namespace,
            log: Any) -> tuple[bytes, dict[str, Any]]:
    """int8 conversion calibrated on real training windows, the package, and its verification
    against the float model on the validation windows (raises below --min-agreement)."""
    rng = np.random.default_rng(0)
    rep = train_x[rng.choice(len(train_x), min(args.calibration_windows, len(train_x)),
                             replace=False)]
    tflite = to_int8_tflite(model, rep)
    write_package(
        args.out, tflite, name="lungedge-cnnlstm", version="0.1.0", labels=LABELS,
        frontend=FRONTEND, window=WINDOW, mean=mean, std=std,
        training={"data": ["ICBHI 2017 official train (526 recordings, 77 patients)",
                           "SPRSound train (1949 recordings, 251 patients)"],
                  "split": f"by patient, {args.val_fraction:.0%} of each set to validation, "
                           "seed 1234", "seeds": args.seeds,
                  "chosen_seed": best_run["seed"], "best_epoch": best_run["best_epoch"],
                  "epochs_max": args.epochs, "mixup": args.mixup,
                  "augmentation": "time shift, gain, noise, time/frequency masks, MixUp",
                  "class_weights": "sqrt inverse frequency",
                  "calibration_windows": len(rep), "min_agreement": args.min_agreement},
        metrics={})
    windows_path = args.out.parent / f"{args.out.name}-val-windows.npy"
    np.save(windows_path, val_windows)
    checks = verify(args.out, args.out.parent / f"{args.out.name}-float.h5", val_windows,
                    min_agreement=args.min_agreement)
    log(f"verified: {checks}")
    return tflite, checks


if __name__ == "__main__":
    raise SystemExit(main())
