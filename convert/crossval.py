"""The validation protocol: how well a recipe does on patients and stethoscopes it never met.

    python -m convert.crossval --data ../shared/data --out report/crossval/NAME [recipe flags]

Two kinds of folds, one training run each (seed `--protocol-seed`), every one through the same
`convert.fit` as the shipped model:

- **cv**: k-fold cross-validation grouped by patient (k = 5): ICBHI train's 77 patients and
  SPRSound train's 251 are each dealt into k folds (ICBHI's within each stethoscope, so every
  fold has some of each); every patient is validated exactly once, by a model that never
  heard them.
- **loso**: leave one stethoscope out. For each of AKG C417L, Littmann Classic II SE and
  Meditron, a model trained on everything else (SPRSound included, every recording of a
  patient ever recorded on that stethoscope left out) is validated on all its ICBHI cycles.

Validation is at event level on the annotated boundaries, with the float model (the int8 model
agrees with it on ≥ 99% of windows, `convert.verify`), after every epoch, so the report also
says how many epochs to train. Reported per stethoscope: Sp, Se, ICBHI Score, AUC of normal vs
adventitious, crackle and wheeze recall; per fold, and pooled over the folds. The one number a
recipe is chosen by (`objective`) is the mean of the ICBHI cross-validated Score, the mean
leave-one-stethoscope-out Score and the SPRSound cross-validated Score.

A fold whose result is already in OUT is not trained again (an interrupted run resumes).
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

from convert import recipe as recipes
from convert.datasets import LABELS, iter_annotated
from convert.features import Events, cached_events
from convert.fit import Windows, fit, predict_events, windows
from convert.metrics import icbhi_score, roc_auc, sprsound_score
from convert.recipe import Recipe
from edge.model import decide

ICBHI, SPRSOUND = "icbhi/train", "sprsound/train"
HELD_OUT_STETHOSCOPES = ("AKGC417L", "LittC2SE", "Meditron")


@dataclass(frozen=True)
class Fold:
    name: str  # "cv1" … "cvK", "loso-AKGC417L" …
    kind: str  # "cv" or "loso"
    train: np.ndarray  # event indices
    val: np.ndarray


def load_corpus(data: Path, recipe: Recipe, cache: Path | None,
                limit: int | None = None) -> Events:
    parts = []
    for split in (ICBHI, SPRSOUND):
        recordings = list(iter_annotated(data / split))[:limit]
        parts.append(cached_events(split, recordings, recipe.frontend, cache))
    return Events.join(parts)


def folds(events: Events, k: int = 5, seed: int = 0) -> list[Fold]:
    """The cv folds, then the loso folds."""
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for dataset in (ICBHI, SPRSOUND):
        inside = events.datasets == dataset
        # deal each stethoscope's patients round the folds, continuing where the last left off
        dealt = 0
        for device in sorted(set(events.devices[inside])):
            patients = sorted(set(events.patients[inside & (events.devices == device)])
                              - set(fold_of))
            for p in rng.permutation(patients):
                fold_of[str(p)] = dealt % k
                dealt += 1
    which = np.array([fold_of[p] for p in events.patients])
    out = [Fold(f"cv{i + 1}", "cv", np.flatnonzero(which != i), np.flatnonzero(which == i))
           for i in range(k) if (which == i).any()]
    for device in HELD_OUT_STETHOSCOPES:
        held = events.devices == device
        if not held.any():
            continue
        patients = set(events.patients[held])
        out.append(Fold(f"loso-{device}", "loso",
                        np.flatnonzero(~np.isin(events.patients, list(patients))),
                        np.flatnonzero(held)))
    return out


def run_fold(fold: Fold, events: Events, recipe: Recipe, seed: int, out: Path,
             log: Any) -> dict[str, Any]:
    """Train on the fold's training events; the validation events' probabilities after every
    epoch (saved to OUT/FOLD.npz, and read back from there on a rerun)."""
    path = out / f"{fold.name}.npz"
    if path.exists():
        saved = np.load(path)
        if np.array_equal(saved["val"], fold.val):
            log(f"{fold.name}: already done ({path})")
            return {"probs": saved["probs"], "seconds": float(saved["seconds"])}
    t = time.time()
    train = windows(events.take(fold.train), recipe)
    val: Windows = windows(events.take(fold.val), recipe, train.mean, train.std)
    y = events.labels[fold.val]
    log(f"{fold.name}: {len(fold.train)} training events ({len(train.x)} windows), "
        f"{len(fold.val)} validation events")
    per_epoch: list[np.ndarray] = []

    def on_epoch(epoch: int, model: Any) -> dict[str, Any]:
        p = predict_events(model, val)
        per_epoch.append(p.astype(np.float32))
        return {"val_4class": icbhi_score(y, p.argmax(1))["score"]}

    fit(recipe, train, seed, lambda m: log(f"{fold.name} {m}"), on_epoch)
    probs = np.stack(per_epoch)
    seconds = time.time() - t
    np.savez_compressed(path, val=fold.val, probs=probs, seconds=seconds)
    return {"probs": probs, "seconds": seconds}


# -- scoring -------------------------------------------------------------------------------------
def scores(y: np.ndarray, probs: np.ndarray, thresholds: dict[str, float] | None = None
           ) -> dict[str, Any]:
    """What the report gives for a group of events: the ICBHI 4-class score, normal vs
    adventitious, and the recall of each finding; at the argmax (how recipes are compared),
    or as a package with these thresholds decides."""
    pred = decide(probs, LABELS, thresholds or {})
    four = icbhi_score(y, pred)
    adventitious = (y != 0).astype(int)
    out: dict[str, Any] = {
        "events": len(y), "sp": four["sp"], "se": four["se"], "score": four["score"],
        "binary": sprsound_score(adventitious, (pred != 0).astype(int))["score"],
        "auc": roc_auc(adventitious, 1 - probs[:, 0]) if 0 < adventitious.sum() < len(y)
        else None}
    for i, label in enumerate(LABELS[1:], 1):
        n = int((y == i).sum())
        out[f"{label}_recall"] = round(float((pred[y == i] == i).mean()), 4) if n else None
    # how often a finding is heard at all, whatever its exact class (a crackle called "both")
    crackle = np.isin(y, (1, 3))
    out["crackle_heard"] = round(float(np.isin(pred[crackle], (1, 3)).mean()), 4) \
        if crackle.any() else None
    return out


def saved_results(out: Path, events: Events) -> tuple[list[Fold], dict[str, dict[str, Any]]]:
    """The folds a run has saved in OUT (those not run yet are left out), with their
    probabilities after every epoch."""
    fold_list = [f for f in folds(events) if (out / f"{f.name}.npz").is_file()]
    return fold_list, {f.name: {"probs": np.load(out / f"{f.name}.npz")["probs"]}
                       for f in fold_list}


def protocol_report(events: Events, fold_list: list[Fold], results: dict[str, dict[str, Any]],
                    epoch: int, thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Every number of the protocol at one epoch (index into the saved probabilities): at the
    argmax, as recipes are compared, or with a package's thresholds, as it decides."""
    y, dev, ds = events.labels, events.devices, events.datasets
    report: dict[str, Any] = {"epoch": epoch + 1, "cv": {}, "loso": {}}
    pooled = {"index": [], "probs": []}
    per_fold: dict[str, list[float]] = {"icbhi": [], "sprsound": []}
    for f in fold_list:
        p = results[f.name]["probs"][epoch]
        if f.kind == "loso":
            report["loso"][f.name.removeprefix("loso-")] = scores(y[f.val], p, thresholds)
            continue
        pooled["index"].append(f.val)
        pooled["probs"].append(p)
        for key, dataset in (("icbhi", ICBHI), ("sprsound", SPRSOUND)):
            inside = ds[f.val] == dataset
            per_fold[key].append(icbhi_score(y[f.val][inside],
                                             decide(p[inside], LABELS, thresholds or {}))["score"])
    if pooled["index"]:
        index = np.concatenate(pooled["index"])
        probs = np.concatenate(pooled["probs"])
        for key, dataset in (("icbhi", ICBHI), ("sprsound", SPRSOUND)):
            inside = ds[index] == dataset
            report["cv"][key] = scores(y[index][inside], probs[inside], thresholds) | {
                "fold_scores": [round(s, 4) for s in per_fold[key]],
                "fold_mean": round(float(np.mean(per_fold[key])), 4),
                "fold_sd": round(float(np.std(per_fold[key])), 4)}
        icbhi = ds[index] == ICBHI
        report["cv"]["icbhi_by_stethoscope"] = {
            d: scores(y[index][icbhi & (dev[index] == d)], probs[icbhi & (dev[index] == d)],
                      thresholds)
            for d in sorted(set(dev[index][icbhi]))}
    loso = [r["score"] for r in report["loso"].values()]
    parts = [report["cv"].get("icbhi", {}).get("score"), np.mean(loso) if loso else None,
             report["cv"].get("sprsound", {}).get("score")]
    known = [float(v) for v in parts if v is not None]
    report["loso_mean"] = round(float(np.mean(loso)), 4) if loso else None
    report["objective"] = round(float(np.mean(known)), 4) if known else None
    return report


def curves(events: Events, fold_list: list[Fold], results: dict[str, dict[str, Any]]
           ) -> list[dict[str, Any]]:
    n = min(len(r["probs"]) for r in results.values())
    out = []
    for e in range(n):
        r = protocol_report(events, fold_list, results, e)
        out.append({"epoch": e + 1, "objective": r["objective"],
                    "icbhi_cv": r["cv"].get("icbhi", {}).get("score"),
                    "sprsound_cv": r["cv"].get("sprsound", {}).get("score"),
                    "loso_mean": r["loso_mean"]})
    return out


def plot_curves(curve: list[dict[str, Any]], out: Path, title: str) -> None:
    from edge.plot import pyplot, save

    fig, ax = pyplot().subplots(figsize=(7, 4))
    epochs = [c["epoch"] for c in curve]
    for key, style in (("objective", "k-"), ("icbhi_cv", "C0--"), ("loso_mean", "C3--"),
                       ("sprsound_cv", "C2:")):
        values = [c[key] for c in curve]
        if any(v is not None for v in values):
            ax.plot(epochs, values, style, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("4-class Score")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, out)


def markdown(report: dict[str, Any], recipe: Recipe, curve: list[dict[str, Any]]) -> str:
    def row(name: str, s: dict[str, Any]) -> str:
        cells = [s["events"], s["sp"], s["se"], s["score"], s.get("auc"), s.get("crackle_recall"),
                 s.get("crackle_heard"), s.get("wheeze_recall")]
        return f"| {name} | " + " | ".join("–" if c is None else str(c) for c in cells) + " |"

    head = ("| | events | Sp | Se | Score | AUC | crackle recall | crackle heard | wheeze "
            "recall |\n|---|---|---|---|---|---|---|---|---|")
    lines = [f"# Validation protocol: epoch {report['epoch']}", "",
             f"objective **{report['objective']}** (mean of ICBHI cv, loso mean, SPRSound cv)",
             ""]
    cv = report["cv"]
    if cv:
        lines += ["## Patient-grouped cross-validation (pooled out-of-fold; fold mean ± sd)", "",
                  head, row("ICBHI (all)", cv["icbhi"])]
        lines += [row(f"ICBHI {d}", s) for d, s in cv["icbhi_by_stethoscope"].items()]
        lines += [row("SPRSound", cv["sprsound"]), "",
                  f"ICBHI Score per fold {cv['icbhi']['fold_scores']}: "
                  f"{cv['icbhi']['fold_mean']} ± {cv['icbhi']['fold_sd']}; SPRSound "
                  f"{cv['sprsound']['fold_mean']} ± {cv['sprsound']['fold_sd']}", ""]
    if report["loso"]:
        lines += ["## Leave one stethoscope out (ICBHI cycles of the held-out stethoscope)", "",
                  head] + [row(d, s) for d, s in report["loso"].items()]
        lines += ["", f"mean Score {report['loso_mean']}", ""]
    lines += ["## Per epoch", "", "| epoch | objective | ICBHI cv | loso mean | SPRSound cv |",
              "|---|---|---|---|---|"]
    lines += [f"| {c['epoch']} | {c['objective']} | {c['icbhi_cv']} | {c['loso_mean']} | "
              f"{c['sprsound_cv']} |" for c in curve]
    lines += ["", "## Recipe", "", "```json", json.dumps(recipe.to_dict(), indent=1), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "LUNGEDGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path(".cache/features"))
    ap.add_argument("--k", type=int, default=5, help="cross-validation folds")
    ap.add_argument("--protocol-seed", type=int, default=0,
                    help="seed of the fold assignment and of each fold's training")
    ap.add_argument("--only", nargs="+", help="fold names to run (e.g. cv1 loso-Meditron)")
    ap.add_argument("--limit", type=int, help="recordings per dataset (smoke runs)")
    recipes.add_arguments(ap)
    args = ap.parse_args(argv)
    recipe = recipes.from_arguments(args)
    args.out.mkdir(parents=True, exist_ok=True)
    logf = (args.out / "crossval.log").open("a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    (args.out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1) + "\n")
    events = load_corpus(args.data, recipe, args.cache, args.limit)
    fold_list = [f for f in folds(events, args.k, args.protocol_seed)
                 if not args.only or f.name in args.only]
    results = {f.name: run_fold(f, events, recipe, args.protocol_seed, args.out, log)
               for f in fold_list}
    curve = curves(events, fold_list, results)
    report = protocol_report(events, fold_list, results, len(curve) - 1)
    best = max(curve, key=lambda c: c["objective"] or 0)
    report |= {"recipe": recipe.to_dict(), "curve": curve, "best_epoch": best["epoch"],
               "seconds": round(sum(r["seconds"] for r in results.values()))}
    (args.out / "crossval.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "crossval.md").write_text(markdown(report, recipe, curve))
    plot_curves(curve, args.out / "crossval_curves.png", str(args.out.name))
    log(f"objective {report['objective']} at epoch {report['epoch']} (best {best['objective']} "
        f"at epoch {best['epoch']}); ICBHI cv {report['cv'].get('icbhi', {}).get('score')}, "
        f"loso {report['loso_mean']}, SPRSound cv "
        f"{report['cv'].get('sprsound', {}).get('score')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
