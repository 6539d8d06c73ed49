"""Train the shipped CNN-LSTM with a recipe the validation protocol chose, convert it to int8,
verify it and write the model package.

    python -m convert.crossval --out report/crossval/NAME [recipe flags]     # first: the choice
    python -m convert.train --data ../shared/data --out models/lungedge-cnnlstm \
        --crossval report/crossval/NAME [the same recipe flags] [--seed-report FOLDER...]

Every seed trains on all of ICBHI train and SPRSound train for the recipe's epochs (a number the
protocol chose; nothing here looks at a score), and the package is their average in one graph,
or, if that fails int8 verification, the first single seed that passes. The decision
thresholds come from the protocol's out-of-fold predictions, which is why the trainer refuses a
protocol run of another recipe. Test folders are only scored (`--seed-report`, `evaluate`),
after the choice; the ICBHI official test split is not here at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from convert import recipe as recipes
from convert.crossval import (
    ICBHI,
    SPRSOUND,
    Fold,
    folds,
    load_corpus,
    protocol_report,
    saved_results,
)
from convert.datasets import LABELS, iter_annotated
from convert.features import Events
from convert.fit import Windows, fit, windows
from convert.metrics import icbhi_score, sprsound_score
from convert.package import (
    arch_of,
    average,
    load_float,
    members_of,
    op_names,
    to_int8_tflite,
    write_package,
)
from convert.recipe import Recipe
from convert.verify import VerificationError, verify
from edge.model import ADVENTITIOUS, RECORD, decide
from edge.tracker import RECORD_FRACTION, record_label


# -- thresholds from the protocol's out-of-fold predictions ------------------------------------
def same_recipe(crossval: Path, recipe: Recipe) -> None:
    mine = recipe.to_dict()
    # a setting the protocol run does not record was, then, at its default
    run = Recipe().to_dict() | json.loads((crossval / "recipe.json").read_text())
    differ = sorted(k for k in mine if k != "seeds" and run.get(k) != mine[k])
    if differ:
        raise SystemExit(f"{crossval} validated another recipe ({', '.join(differ)} differ): "
                         "run the protocol on this recipe, or pass its flags here")


def protocol_predictions(crossval: Path, recipe: Recipe, events: Events
                         ) -> tuple[list[Fold], dict[str, dict[str, Any]]]:
    """The protocol run's saved folds: every cv fold (the thresholds need each event's
    out-of-fold prediction) and the loso folds it has, each with the recipe's epochs."""
    fold_list, results = saved_results(crossval, events)
    for f in folds(events):
        if f.kind == "cv" and f.name not in results:
            raise SystemExit(f"{crossval}/{f.name}.npz is missing: the protocol has not run "
                             f"that fold yet (the float model is saved: rerun with --from-float "
                             f"once it has)")
    for name, r in results.items():
        if len(r["probs"]) < recipe.epochs:
            raise SystemExit(f"{crossval}/{name}.npz has {len(r['probs'])} epochs, the "
                             f"recipe trains {recipe.epochs}")
    return fold_list, results


def out_of_fold(fold_list: list[Fold], results: dict[str, dict[str, Any]], epoch: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Every event's probabilities from the cross-validation fold that did not train on it."""
    cv = [f for f in fold_list if f.kind == "cv"]
    return (np.concatenate([f.val for f in cv]),
            np.concatenate([results[f.name]["probs"][epoch] for f in cv]))


def choose_threshold(events: Events, index: np.ndarray, probs: np.ndarray, log: Any
                     ) -> dict[str, Any]:
    """The manifest's adventitious threshold, on the out-of-fold predictions: the mean over
    ICBHI and SPRSound of the 4-class ICBHI score and the binary SPRSound score, so that the
    operating point serves the alerts (which need the class) and screening (normal or not)."""
    y = events.labels[index]
    sets = [events.datasets[index] == d for d in (ICBHI, SPRSOUND)]

    def objective(thresholds: dict[str, float]) -> float:
        total = []
        for inside in sets:
            pred = decide(probs[inside], LABELS, thresholds)
            total += [icbhi_score(y[inside], pred)["score"],
                      sprsound_score((y[inside] != 0).astype(int),
                                     (pred != 0).astype(int))["score"]]
        return float(np.mean(total))

    grid = np.round(np.arange(0.10, 0.91, 0.02), 2)
    values = [objective({ADVENTITIOUS: float(t)}) for t in grid]
    at_argmax = objective({})
    best = int(np.argmax(values))
    chosen = {ADVENTITIOUS: float(grid[best])} if values[best] > at_argmax else {}
    result = {"thresholds": chosen, "objective": "out-of-fold (patient-grouped cv): mean over "
              "ICBHI and SPRSound of the 4-class and the binary score",
              "value": round(max(values[best], at_argmax), 4),
              "at_argmax": round(at_argmax, 4)}
    log(f"adventitious threshold {chosen or 'none (argmax)'}: {result['value']} "
        f"(argmax {result['at_argmax']})")
    return result


def choose_record_fraction(record_labels: list[str], events: Events, index: np.ndarray,
                           probs: np.ndarray, thresholds: dict[str, float], log: Any
                           ) -> dict[str, Any]:
    """The record fraction (Task 2-1: normal or adventitious recording) on the SPRSound
    recordings (`record_labels`: their annotation, by recording index), from the out-of-fold
    labels of their annotated events and the device's record rule."""
    from convert.evaluate import RECORD_TRUTH

    labels = decide(probs, LABELS, thresholds)
    spr = np.flatnonzero(events.datasets[index] == SPRSOUND)
    # poor quality recordings have no events: the quality measure decides them, not this
    truth_of = [RECORD_TRUTH.get(r) if r != "Poor Quality" else None for r in record_labels]
    by_recording: dict[int, list[str]] = {}
    for i in spr:
        by_recording.setdefault(int(events.recordings[index[i]]), []).append(LABELS[labels[i]])
    keys = [r for r in by_recording if truth_of[r] is not None]
    truth = np.array([truth_of[r] for r in keys])

    def task(fraction: float) -> float:
        pred = [0 if record_label(by_recording[r], [1.0] * len(by_recording[r]), 0.0,
                                  fraction) == "normal" else 1 for r in keys]
        return sprsound_score(truth, np.array(pred))["score"]

    grid = np.round(np.arange(0.05, 0.61, 0.05), 2)
    values = [task(float(f)) for f in grid]
    at_default = task(RECORD_FRACTION)
    best = int(np.argmax(values))
    chosen = float(grid[best]) if values[best] > at_default else None
    result = {"record_fraction": chosen, "recordings": len(keys),
              "objective": "normal vs adventitious SPRSound recordings, out-of-fold labels of "
                           "their annotated events", "value": round(max(values[best],
                                                                        at_default), 4),
              "at_default": round(at_default, 4)}
    log(f"record fraction {chosen or f'{RECORD_FRACTION} (default)'} on {len(keys)} "
        f"recordings: {result['value']} (default {result['at_default']})")
    return result


# -- the run ---------------------------------------------------------------------------------
def seeds_path(out: Path) -> Path:
    """Every seed's float model in one file (their average, its members in seed order)."""
    return out.parent / f"{out.name}-float-seeds.h5"


def train_seeds(recipe: Recipe, train: Windows, log: Any, jobs: int, scratch: Path
                ) -> tuple[dict[int, Any], dict]:
    """Every seed's model. With `jobs` > 1 the seeds train in that many processes, each with
    its share of the cores: the model is small, so one process keeps about one core busy and
    two processes train two seeds in the time of one (`scratch` holds their float models)."""
    if jobs <= 1 or len(recipe.seeds) == 1:
        models, histories = {}, {}
        for seed in recipe.seeds:
            models[seed], histories[seed] = fit(recipe, train, seed, log)
        return models, histories
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_trainer, initargs=(threads,)) as pool:
        futures = {seed: pool.submit(_fit_seed, recipe, train, seed, scratch / f"seed-{seed}.h5")
                   for seed in recipe.seeds}
        histories = {}
        for seed, future in futures.items():
            histories[seed], lines = future.result()
            for line in lines:
                log(line)
    models = {seed: load_float(scratch / f"seed-{seed}.h5") for seed in recipe.seeds}
    return models, histories


def _one_trainer(threads: int) -> None:
    """A training process's thread budget, set before TensorFlow is imported."""
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"


def _fit_seed(recipe: Recipe, train: Windows, seed: int, path: Path
              ) -> tuple[list[Any], list[str]]:
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    model, history = fit(recipe, train, seed, log)
    model.save(str(path))
    return history, lines


def package(model: Any, members: list[int], recipe: Recipe, train: Windows,
            thresholds: dict[str, float], provenance: dict[str, Any],
            args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """int8 conversion calibrated on real training windows, the package, and its verification
    against the float model (raises below --min-agreement, leaving no package behind)."""
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train.x), min(args.calibration_windows, len(train.x)), replace=False)
    rep = (train.x[pick] - train.mean) / train.std
    check = rng.choice(len(train.x), min(args.check_windows, len(train.x)), replace=False)
    check_x = (train.x[check] - train.mean) / train.std
    tflite = to_int8_tflite(model, rep)
    write_package(args.out, tflite, name="lungedge-cnnlstm", version=args.version,
                  labels=LABELS, frontend=recipe.frontend, window=recipe.window,
                  mean=train.mean, std=train.std, thresholds=thresholds, metrics={},
                  training=provenance | {
                      "members": members, "calibration_windows": len(rep),
                      "min_agreement": args.min_agreement,
                      "architecture": {k: list(v) if isinstance(v, tuple) else v
                                       for k, v in arch_of(members_of(model)[0]).items()}})
    float_path = args.out.parent / f"{args.out.name}-float.h5"
    model.save(str(float_path))
    try:
        checks = verify(args.out, float_path, check_x, min_agreement=args.min_agreement)
    except VerificationError:
        for name in ("model.tflite", "manifest.json"):
            (args.out / name).unlink(missing_ok=True)
        raise
    log(f"verified: {checks}")
    return checks | {"ops": op_names(tflite), "model_bytes": len(tflite)}


def seed_report(models: dict[int, Any], recipe: Recipe, train: Windows,
                thresholds: dict[str, float], args: argparse.Namespace, log: Any) -> None:
    """Every seed's model alone, converted like the shipped one, scored on the report folders:
    the spread a single training run has."""
    from convert.evaluate import evaluate_folder
    from edge.model import ModelRunner

    rep = (train.x[:args.calibration_windows] - train.mean) / train.std
    per_seed = {}
    for seed, model in models.items():
        with tempfile.TemporaryDirectory() as tmp:
            write_package(Path(tmp), to_int8_tflite(model, rep), name=f"seed-{seed}",
                          version="0", labels=LABELS, frontend=recipe.frontend,
                          window=recipe.window, mean=train.mean, std=train.std, training={},
                          metrics={}, thresholds=thresholds)
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
    (args.out / "report").mkdir(parents=True, exist_ok=True)
    (args.out / "report" / "seed_report.json").write_text(json.dumps(
        {"mean_std_over_seeds": summary, "seeds": list(per_seed)}, indent=1) + "\n")
    log(f"over seeds {list(per_seed)}: {summary}")


def run(args: argparse.Namespace, recipe: Recipe) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    logf = (args.out.parent / f"{args.out.name}-training.log").open("a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    same_recipe(args.crossval, recipe)
    events = load_corpus(args.data, recipe, args.cache, args.limit)
    train = windows(events, recipe)
    log(f"training on {len(events)} events ({len(train.x)} windows; per label "
        f"{np.bincount(events.labels, minlength=len(LABELS)).tolist()})")
    if args.from_float:
        every = load_float(seeds_path(args.out))
        models = dict(zip(recipe.seeds, members_of(every), strict=True))
        histories: dict[int, Any] = {}
    else:
        with tempfile.TemporaryDirectory(dir=args.out.parent) as scratch:
            models, histories = train_seeds(recipe, train, log, args.jobs, Path(scratch))
        every = average(list(models.values())) if len(models) > 1 else models[recipe.seeds[0]]
        every.save(str(seeds_path(args.out)))
    # the protocol's predictions are read only now, so training may start while its last folds
    # (loso, which the thresholds do not use) are still running
    fold_list, results = protocol_predictions(args.crossval, recipe, events)
    index, probs = out_of_fold(fold_list, results, recipe.epochs - 1)
    threshold = choose_threshold(events, index, probs, log)
    record = choose_record_fraction([r.record_label for r in iter_annotated(
        args.data / SPRSOUND)][:args.limit], events, index, probs, threshold["thresholds"], log)
    thresholds = threshold["thresholds"] | ({RECORD: record["record_fraction"]}
                                            if record["record_fraction"] else {})
    protocol = protocol_report(events, fold_list, results, recipe.epochs - 1,
                               threshold["thresholds"])
    log("protocol at the thresholds, held out: " + "; ".join(
        f"{d} Sp {s['sp']} Se {s['se']} Score {s['score']}" for d, s in protocol["loso"].items()))
    provenance = {
        "data": ["ICBHI 2017 official train (526 recordings, 77 patients)",
                 "SPRSound train (1949 recordings, 251 patients)"],
        "split": "none: every seed trains on all of it for the recipe's epochs; the recipe, "
                 "its epochs and the thresholds were chosen by the validation protocol",
        "recipe": recipe.to_dict(), "protocol": str(args.crossval),
        "threshold": threshold, "record_threshold": record}
    candidates = ([(every, list(models))] if len(models) > 1 else []) + [
        (models[s], [s]) for s in recipe.seeds]
    rejected: list[dict[str, Any]] = []
    for i, (model, members) in enumerate(candidates):
        try:
            checks = package(model, members, recipe, train, thresholds,
                             provenance | {"rejected": rejected}, args, log)
            break
        except VerificationError as exc:
            if i == len(candidates) - 1:
                raise
            rejected.append({"members": members, "verification": str(exc)})
            log(f"seeds {members} failed int8 verification ({exc}); trying the next")
    (args.out / "report").mkdir(parents=True, exist_ok=True)
    (args.out / "report" / "training.json").write_text(json.dumps(
        {"recipe": recipe.to_dict(), "members": members, "rejected": rejected,
         "verify": checks, "histories": {str(k): v for k, v in histories.items()},
         "threshold": threshold, "record_threshold": record,
         "protocol_at_thresholds": protocol}, indent=1) + "\n")
    if args.seed_report:
        seed_report(models, recipe, train, thresholds, args, log)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "LUNGEDGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--crossval", type=Path, required=True,
                    help="the protocol's run of this recipe (convert.crossval --out): its "
                         "out-of-fold predictions choose the thresholds")
    ap.add_argument("--cache", type=Path, default=Path(".cache/features"))
    ap.add_argument("--version", default="0.5.0", help="of the package written")
    ap.add_argument("--from-float", action="store_true",
                    help="no training: package the seeds an earlier run saved beside OUT")
    ap.add_argument("--jobs", type=int, default=1,
                    help="seeds trained at once, in as many processes (the cores are shared)")
    ap.add_argument("--calibration-windows", type=int, default=3000)
    ap.add_argument("--check-windows", type=int, default=4000,
                    help="windows on which int8 and float must agree")
    ap.add_argument("--min-agreement", type=float, default=0.99,
                    help="int8 vs float top-1 agreement below which no package is written")
    ap.add_argument("--limit", type=int, help="recordings per dataset (smoke runs; the "
                                              "protocol run must have had the same)")
    ap.add_argument("--seed-report", type=Path, nargs="*", default=[], metavar="FOLDER",
                    help="after the choice, score every seed's int8 model on these folders")
    recipes.add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run(args, recipes.from_arguments(args))
    except VerificationError as exc:
        print(f"verification FAILED, no package written: {exc}. The float seeds are beside "
              f"{args.out}; `--from-float` repackages them.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
