"""Score a model package on any annotated folder, exactly as the device would classify it.

    python -m convert.evaluate MODEL_DIR FOLDER [FOLDER ...] --out REPORT_DIR \
        [--float | --agreement]

A FOLDER is in ICBHI format (audio + .txt cycles) or SPRSound format (audio + .json), so the
withheld ICBHI test split can be scored with this same command. Everything goes through the
int8 model in `edge.pipeline.model.ModelRunner` and the device's frontend. Per folder:

- event level, annotated boundaries: ICBHI-style 4-class Se/Sp/Score and the binary
  (normal vs adventitious) SPRSound Task 1-1 SE/SP/AS/HS/Score, confusion matrix, ROC curve;
- streaming: the device's segmenter and model over whole recordings, no annotations used; each
  annotated event is scored by the label of the cycle that overlaps it most (none: normal);
- record level (SPRSound folders): Task 2-1, normal / adventitious / poor quality, from the
  streaming cycles of each recording with the tracker's record rules and quality measure.

A model trained with `normalise: stethoscope` is scored as a site would run it: each
stethoscope in the folder (ICBHI names it per recording; a SPRSound folder has one) is
calibrated on the folder's *other* patients' annotated cycles, never on the patient being
scored, exactly as the validation protocol held stethoscopes out.

`--float` scores the package's float members (kept under report/float/) through the same
steps instead, and `--agreement` scores the int8 models and counts how often the float members
give each annotated event the same label: int8 against float on any recordings, not only on
the training windows the trainer's gate checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from convert.datasets import LABELS, DatasetError, Recording, iter_annotated
from convert.features import at_model_rate
from convert.metrics import confusion, icbhi_score, roc, roc_auc, sprsound_score
from edge.dsp.frontend import BandNormaliser, Frontend
from edge.pipeline.analysis import Analysis, ClassifiedCycle
from edge.pipeline.calibration import feature_statistics
from edge.pipeline.model import Classifier, Manifest, ModelRunner
from edge.pipeline.plot import pyplot, save
from edge.pipeline.tracker import TrackerConfig, record_label
from edge.sources.audio_file import read_audio
from edge.sources.base import AudioBlock, SourceError

RECORD_TRUTH = {"Normal": 0, "CAS": 1, "DAS": 1, "CAS & DAS": 1, "Poor Quality": 2}


def evaluate_folder(runner: Classifier, folder: Path, limit: int | None = None,
                    patients: set[str] | None = None, reference: Classifier | None = None
                    ) -> dict[str, Any]:
    """Every score of `runner` on a folder; with a `reference` (the package's float members)
    also how often the two agree on an annotated event's label, and by how much their
    probabilities differ at most."""
    m = runner.manifest
    agree, diff = [], 0.0
    fe = Frontend(m.frontend)
    norm = BandNormaliser(m.frontend)
    recs: list[Recording] = [r for r in iter_annotated(folder)
                             if patients is None or r.patient in patients][:limit]
    site = site_calibrations(recs, m) if m.normalise == "stethoscope" and not getattr(
        runner, "calibration", None) else None
    y_true, y_event, p_event, y_stream, rec_true, rec_pred = [], [], [], [], [], []
    for rec in recs:
        if site is not None:
            for r in (runner, reference):
                if r is not None:
                    r.standardise_with(*site[rec.device, rec.patient])
        audio = at_model_rate(str(rec.audio), m.sample_rate)
        cycles = stream(runner, rec.audio)
        norm.reset()
        for ev in rec.events:
            a, b = (round(t * m.sample_rate) for t in (ev.start_s, ev.end_s))
            if b - a < m.frontend.n_fft:
                continue
            feats = norm(fe(audio[a:b]))
            pred = runner.predict(feats)
            if reference is not None:
                ref = reference.predict(feats)
                agree.append(ref.label == pred.label)
                diff = max(diff, *(abs(ref.probs[k] - pred.probs[k]) for k in LABELS))
            y_true.append(LABELS.index(ev.label))
            y_event.append(LABELS.index(pred.label))
            p_event.append([pred.probs[lab] for lab in LABELS])
            overlap = [max(0.0, min(c.end, ev.end_s) - max(c.start, ev.start_s))
                       for c in cycles]
            best = int(np.argmax(overlap)) if overlap and max(overlap) > 0 else None
            y_stream.append(LABELS.index(cycles[best].prediction.label)  # type: ignore[union-attr]
                            if best is not None else 0)
        if rec.record_label in RECORD_TRUTH:
            rec_true.append(RECORD_TRUTH[rec.record_label])
            rec_pred.append(record_class(cycles, m))
    probs = np.asarray(p_event)
    y = np.asarray(y_true)
    yp = np.asarray(y_event)  # the device's decision, with the manifest's threshold
    binary_true, binary_pred = (y != 0).astype(int), (yp != 0).astype(int)
    out: dict[str, Any] = {
        "folder": str(folder) + (f" (patients {','.join(sorted(patients))})" if patients
                                 else ""),
        "recordings": len(recs), "events": len(y),
        "events_per_label": np.bincount(y, minlength=4).tolist(),
        "event_4class": icbhi_score(y, yp),
        "event_binary": sprsound_score(binary_true, binary_pred),
        "event_confusion": confusion(y, yp, 4),
        "streaming_4class": icbhi_score(y, np.asarray(y_stream)),
        "streaming_binary": sprsound_score(binary_true, (np.asarray(y_stream) != 0).astype(int)),
        "roc": _roc(binary_true, 1 - probs[:, 0]),
    }
    if site is not None:
        out["calibration"] = ("per stethoscope, from the folder's other patients' annotated "
                              "cycles (never the patient scored), as a site calibrates a new "
                              "stethoscope")
    if reference is not None:
        out["agreement_with_float"] = {"events": len(agree),
                                       "labels_agree": round(float(np.mean(agree)), 4)
                                       if agree else None, "max_prob_diff": round(diff, 4)}
    if rec_true:
        out["record_task_2_1"] = sprsound_score(np.asarray(rec_true), np.asarray(rec_pred),
                                                exact=True)
        out["record_confusion"] = confusion(np.asarray(rec_true), np.asarray(rec_pred), 3)
    return out


def site_calibrations(recs: list[Recording], m: Manifest
                      ) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """For a model trained with normalise: stethoscope, the statistics each recording is
    standardised with: its stethoscope's, from the other patients' recordings in the folder
    (a recording that names no stethoscope shares the folder's), never the patient's own, as
    the protocol validated it; with no other patient on it, the manifest's pooled ones."""
    fe, norm = Frontend(m.frontend), BandNormaliser(m.frontend)
    feats: dict[tuple[str, str], list[np.ndarray]] = {}
    for rec in recs:
        audio = at_model_rate(str(rec.audio), m.sample_rate)
        norm.reset()
        for ev in rec.events:
            a, b = (round(t * m.sample_rate) for t in (ev.start_s, ev.end_s))
            if b - a >= m.frontend.n_fft:
                feats.setdefault((rec.device, rec.patient), []).append(norm(fe(audio[a:b])))
    pooled = (np.asarray(m.feature_mean), np.asarray(m.feature_std))
    out = {}
    for device, patient in {(r.device, r.patient) for r in recs}:
        others = [f for (d, p), fs in feats.items() if d == device and p != patient
                  for f in fs]
        out[device, patient] = feature_statistics(others) if others else pooled
    return out


def stream(runner: Classifier, recording: Path) -> list[ClassifiedCycle]:
    """The device's analysis path over a whole recording, no annotation used: its cycles."""
    x, rate = read_audio(recording)
    analysis = Analysis(rate, runner, TrackerConfig())
    events = analysis.process(AudioBlock(x, rate, 0.0, 0.0)) + analysis.finish()
    return [e for e in events if isinstance(e, ClassifiedCycle)]


def record_class(cycles: list[ClassifiedCycle], manifest: Manifest) -> int:
    """Task 2-1's class of the label the device's session summary would give the recording."""
    judged = [c for c in cycles if c.prediction]
    label = record_label([c.prediction.label for c in judged if c.prediction],
                         [bool(c.good) for c in judged], manifest.record_fraction,
                         manifest.findings, poor_fraction=manifest.poor_record_fraction)
    return {"normal": 0, "poor quality": 2}.get(label, 1)


def _roc(y: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    fpr, tpr = roc(y, score)
    return {"auc": roc_auc(y, score), "fpr": fpr[::max(1, len(fpr) // 200)].round(4).tolist(),
            "tpr": tpr[::max(1, len(tpr) // 200)].round(4).tolist()}


def plot(results: list[dict[str, Any]], out: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, len(results), figsize=(4.2 * len(results), 8), squeeze=False)
    for i, r in enumerate(results):
        cm = np.array(r["event_confusion"])
        ax = axes[0][i]
        ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        for (a, b), v in np.ndenumerate(cm):
            ax.text(b, a, str(v), ha="center", va="center", fontsize=9)
        ax.set_xticks(range(4), LABELS, rotation=30)
        ax.set_yticks(range(4), LABELS)
        ax.set_title(f"{Path(r['folder']).name}: score {r['event_4class']['score']:.3f}",
                     fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("annotated")
        ax = axes[1][i]
        ax.plot(r["roc"]["fpr"], r["roc"]["tpr"])
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"normal vs adventitious, AUC {r['roc']['auc']:.3f}", fontsize=9)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
    save(fig, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=None, help="recordings per folder")
    ap.add_argument("--patients", help="only these patients (comma-separated), e.g. a "
                                       "validation split")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--float", dest="float_members", action="store_true",
                       help="score the package's float members (report/float/) instead of "
                            "its int8 models, through the same frontend, windows and decision")
    which.add_argument("--agreement", action="store_true",
                       help="score the int8 models and say how often the float members agree "
                            "with them on each annotated event")
    args = ap.parse_args(argv)
    from convert.package import FloatMembers

    runner: Classifier = FloatMembers(args.model) if args.float_members \
        else ModelRunner(args.model)
    reference = FloatMembers(args.model) if args.agreement else None
    results, failed = [], []
    for folder in args.folders:
        try:
            r = evaluate_folder(runner, folder, args.limit,
                                set(args.patients.split(",")) if args.patients else None,
                                reference)
        except (DatasetError, SourceError) as exc:  # said, and the other folders still scored
            print(f"convert.evaluate: {folder}: not scored: {exc}", file=sys.stderr)
            failed.append(folder)
            continue
        r["models"] = "float" if args.float_members else "int8"
        results.append(r)
        print(f"{folder}: events {r['events']}, 4-class {r['event_4class']}, binary "
              f"{r['event_binary']['score']}, streaming {r['streaming_4class']['score']}"
              + (f", record 2-1 {r['record_task_2_1']['score']}"
                 if "record_task_2_1" in r else "")
              + (f", int8 ≈ float on {r['agreement_with_float']['labels_agree']:.1%} of "
                 f"events" if "agreement_with_float" in r else ""), flush=True)
    if results:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "evaluation.json").write_text(json.dumps(results, indent=1) + "\n")
        plot(results, args.out / "confusion_roc.png")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
