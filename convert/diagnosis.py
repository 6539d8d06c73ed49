"""Recording- and patient-level diagnosis on ICBHI: healthy / chronic / non-chronic.

    python -m convert.diagnosis --data ../shared/data --model models/lungedge-cnnlstm \
        --out models/lungedge-cnnlstm/report

Chronic = COPD, bronchiectasis, asthma; non-chronic = URTI, LRTI, pneumonia, bronchiolitis.
Per recording: the mean and spread of its features (the device's frontend, as the model's
manifest sets it: log mel bands or MFCC) and the mean of the cycle model's probabilities over
its cycles; a class-balanced logistic regression on those,
scored by 5-fold cross-validation grouped by PATIENT (no patient in both a training and a test
fold), repeated with 3 seeds. A patient's diagnosis averages the probabilities of their
recordings. A research report, not a device feature: 77 patients are far too few to ship it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from convert.datasets import LABELS, iter_icbhi
from convert.features import at_model_rate
from convert.metrics import confusion
from edge.dsp.frontend import Frontend
from edge.pipeline.model import ModelRunner

GROUPS = {"Healthy": "healthy", "COPD": "chronic", "Bronchiectasis": "chronic",
          "Asthma": "chronic", "URTI": "non-chronic", "LRTI": "non-chronic",
          "Pneumonia": "non-chronic", "Bronchiolitis": "non-chronic"}
CLASSES = ("healthy", "chronic", "non-chronic")


def recording_features(data: Path, runner: ModelRunner) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    diagnosis = dict(line.split("\t")[:2] for line in
                     (data / "icbhi" / "patient_diagnosis.tsv").read_text().splitlines()[1:])
    fe = Frontend(runner.manifest.frontend)
    rate = runner.manifest.sample_rate
    xs, ys, patients = [], [], []
    for rec in iter_icbhi(data / "icbhi" / "train"):
        audio = at_model_rate(str(rec.audio), rate)
        feats = fe(audio)
        probs = [list(runner.predict(fe(audio[round(e.start_s * rate):round(e.end_s * rate)]))
                      .probs.values()) for e in rec.events
                 if (e.end_s - e.start_s) * rate >= runner.manifest.frontend.n_fft]
        p = np.mean(probs, axis=0) if probs else np.full(len(LABELS), 1 / len(LABELS))
        xs.append(np.concatenate([feats.mean(0), feats.std(0), p]))
        ys.append(CLASSES.index(GROUPS[diagnosis[rec.patient].strip()]))
        patients.append(rec.patient)
    return np.asarray(xs), np.asarray(ys), np.asarray(patients)


def cross_validate(x: np.ndarray, y: np.ndarray, patients: np.ndarray, seed: int
                   ) -> dict[str, object]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    proba = np.zeros((len(y), len(CLASSES)))
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(
            x, y, patients):
        model = make_pipeline(StandardScaler(), LogisticRegression(
            C=0.1, class_weight="balanced", max_iter=2000))
        model.fit(x[train], y[train])
        proba[test] = model.predict_proba(x[test])
    rec_pred = proba.argmax(1)
    ids = sorted(set(patients))
    pat_true = np.array([y[patients == p][0] for p in ids])
    pat_pred = np.array([proba[patients == p].mean(0).argmax() for p in ids])

    def scores(t: np.ndarray, p: np.ndarray) -> dict[str, object]:
        recalls = [float(np.mean(p[t == c] == c)) for c in range(len(CLASSES))]
        return {"accuracy": round(float(np.mean(t == p)), 4),
                "balanced_accuracy": round(float(np.mean(recalls)), 4),
                "recall": dict(zip(CLASSES, [round(r, 4) for r in recalls], strict=True)),
                "confusion": confusion(t, p, len(CLASSES))}

    return {"seed": seed, "recording": scores(y, rec_pred), "patient": scores(pat_true, pat_pred)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    x, y, patients = recording_features(args.data, ModelRunner(args.model))
    runs = [cross_validate(x, y, patients, seed) for seed in (0, 1, 2)]
    summary = {}
    for level in ("recording", "patient"):
        for key in ("accuracy", "balanced_accuracy"):
            v = [r[level][key] for r in runs]  # type: ignore[index]
            summary[f"{level}_{key}"] = [round(float(np.mean(v)), 4), round(float(np.std(v)), 4)]
    counts = {"recordings": len(y), "patients": len(set(patients)),
              "patients_per_class": {c: len({p for p, t in zip(patients, y, strict=True)
                                                 if t == i}) for i, c in enumerate(CLASSES)}}
    report = {"classes": CLASSES, "counts": counts, "summary_mean_std": summary, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diagnosis.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"counts": counts, "summary_mean_std": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
