"""Train the shipped CNN-LSTM with a recipe the validation protocol chose, convert it to int8,
verify it and write the model package.

    python -m convert.crossval --out report/crossval/NAME [recipe flags]     # first: the choice
    python -m convert.train --data ../shared/data --out models/lungedge-cnnlstm \
        --crossval report/crossval/NAME [the same recipe flags] [--seed-report FOLDER...]

The package is what the protocol validated in every fold: one network per seed of the recipe,
each trained on all of ICBHI train and SPRSound train, each converted to int8 and verified on
its own, averaged by the device at run time. The epochs and the decision thresholds come from
the protocol's out-of-fold predictions by the rule the protocol applied nested
(`convert.choice`), which is why the trainer refuses a protocol run of another recipe; and it
refuses a recipe that did not beat the gradient-boosting floor in the protocol
(`convert.protocol.gate`). Nothing here looks at a score of its own; test folders are only
scored (`--seed-report`, `evaluate`), after the choice; the ICBHI official test split is not
here at all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from convert import recipe as recipes
from convert.channel_edge import min_upper_edge
from convert.datasets import LABELS, iter_annotated
from convert.features import Events, band_normalised
from convert.fit import Windows, fit, windows
from convert.folds import SPRSOUND, folds, load_corpus, recipe_recordings
from convert.metrics import sprsound_score
from convert.package import (
    Decisions,
    arch_of,
    load_float,
    member_files,
    op_names,
    to_int8_tflite,
    write_package,
)
from convert.protocol import ProtocolRun
from convert.protocol_report import ProtocolReport
from convert.protocol_report import load as load_report
from convert.protocol_report import save as save_report
from convert.recipe import Recipe
from convert.training_report import TrainingReport
from convert.verify import MIN_AGREEMENT, VerificationError, verify
from edge.pipeline.calibration import MIN_CYCLES, calibrate
from edge.pipeline.calibration import save as save_calibration
from edge.pipeline.model import RECORD, RECORD_FRACTION, decide
from edge.pipeline.tracker import record_label

CORPORA = {"icbhi": "ICBHI 2017 official train (526 recordings, 77 patients)",
           "sprsound": "SPRSound train (1949 recordings, 251 patients)"}


# -- what the protocol decided -----------------------------------------------------------------
def same_recipe(crossval: Path, recipe: Recipe) -> None:
    mine = recipe.to_dict()
    # a setting the protocol run does not record was, then, at its default
    run = Recipe().to_dict() | json.loads((crossval / "recipe.json").read_text())
    differ = sorted(k for k in mine if run.get(k) != mine[k])
    if differ:
        raise SystemExit(f"{crossval} validated another recipe ({', '.join(differ)} differ): "
                         "run the protocol on this recipe, or pass its flags here")


def protocol_report(crossval: Path) -> ProtocolReport:
    path = crossval / "crossval.json"
    if not path.is_file():
        raise SystemExit(f"{path}: not found: the protocol run has not finished (rerun "
                         "convert.crossval with the same --out; it resumes)")
    return load_report(path)


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
        pred = [0 if record_label(by_recording[r], [True] * len(by_recording[r]),
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
def seeds_dir(out: Path) -> Path:
    """Every seed's float model (for --from-float), beside the package."""
    return out.parent / f"{out.name}-float-seeds"


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


def representative(train: Windows, n: int) -> np.ndarray:
    """n training windows, normalised, chosen as the protocol chose its calibration windows."""
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train.x), min(n, len(train.x)), replace=False)
    return (train.x[pick] - train.mean) / train.std


GOLDEN_WINDOWS = 16  # shipped for the device's self-test


def package(models: dict[int, Any], recipe: Recipe, train: Windows, decisions: Decisions,
            provenance: dict[str, Any], args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """Each member converted to int8 on its own (calibrated on real training windows), the
    package, the float members beside it (report/float/), and the verification: each member
    and their average against float (raises below --min-agreement, leaving no package)."""
    rep = representative(train, args.calibration_windows)
    check = np.random.default_rng(1).choice(len(train.x), min(args.check_windows,
                                                               len(train.x)), replace=False)
    check_x = (train.x[check] - train.mean) / train.std
    seeds = list(models)
    tflites = [to_int8_tflite(models[s], rep) for s in seeds]
    calibration = train.calibration or {}
    mean, std = calibration.get("", (train.mean, train.std))
    write_package(args.out, tflites, name="lungedge-cnnlstm", version=args.version,
                  labels=LABELS, frontend=recipe.frontend, window=recipe.window,
                  mean=mean, std=std, decisions=decisions, metrics={},
                  normalise=recipe.normalise, golden=check_x[:GOLDEN_WINDOWS],
                  training=provenance | {
                      "members": dict(zip(member_files(len(seeds)), seeds, strict=True)),
                      "calibration_windows": len(rep), "min_agreement": args.min_agreement,
                      "architecture": arch_of(models[seeds[0]])})
    float_dir = args.out / "report" / "float"
    float_dir.mkdir(parents=True, exist_ok=True)
    for stale in float_dir.glob("*.h5"):
        stale.unlink()
    floats = []
    for seed in seeds:
        floats.append(float_dir / f"seed-{seed}.h5")
        models[seed].save(str(floats[-1]))
    try:
        checks = verify(args.out, floats, check_x, min_agreement=args.min_agreement)
    except VerificationError:
        for name in [*member_files(len(seeds)), "manifest.json"]:
            (args.out / name).unlink(missing_ok=True)
        raise
    log(f"verified: {checks}")
    return checks | {"ops": op_names(tflites[0])}


def training_calibrations(events: Events, recipe: Recipe, out: Path, made_with: str
                          ) -> list[str]:
    """With normalise "stethoscope": each training stethoscope's statistics (the ones its
    events were standardised with in training), written as the calibration `lungedge
    calibrate` makes (calibrations/NAME.json in the package). A device on one of those
    stethoscopes, and the demo on SPRSound's samples, is calibrated without recording anything;
    a stethoscope the model never met still needs `lungedge calibrate`."""
    feats, _ = band_normalised(events, recipe.frontend)
    hop_s = recipe.frontend.hop_length / recipe.frontend.sample_rate
    written = []
    for device in sorted({str(d) for d in events.devices}):
        mine = [f for f, d in zip(feats, events.devices, strict=True) if str(d) == device]
        if len(mine) < MIN_CYCLES:
            continue  # too few to stand for the stethoscope (the uncalibrated fallback does)
        name = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-")
        save_calibration(calibrate(mine, recipe.frontend, device,
                                   sum(len(f) for f in mine) * hop_s, made_with),
                         out / "calibrations" / f"{name}.json")
        written.append(name)
    return written


def seed_report(args: argparse.Namespace, log: Any) -> None:
    """Every member of the package alone (its own int8 file, the package's thresholds),
    scored on the report folders: the spread a single network has, beside the package."""
    import shutil

    from convert.evaluate import evaluate_folder
    from edge.pipeline.model import ModelRunner, load_manifest

    manifest = load_manifest(args.out)
    seeds = manifest.training.get("members", {})
    per_seed = {}
    for member in manifest.members:
        seed = seeds.get(member.file, member.file)
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy2(args.out / member.file, Path(tmp) / member.file)
            alone = dataclasses.replace(manifest, members=(member,))
            (Path(tmp) / "manifest.json").write_text(json.dumps(alone.to_dict()))
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
    report = protocol_report(args.crossval)
    gate = report.gate
    if not gate.passed:
        failed = gate.failures()
        if not args.allow_below_floor:
            raise SystemExit(f"{args.crossval}: the recipe does not beat the gradient-boosting "
                             f"floor in the protocol on {failed}; no package (see "
                             f"{args.crossval}/crossval.md)")
        log(f"BELOW THE FLOOR on {failed}: packaging anyway (--allow-below-floor)")
    events = load_corpus(args.data, recipe, args.cache, args.limit)
    run_ = ProtocolRun.load(args.crossval, events, folds(events), recipe)
    if [f.name for f in run_.folds if f.kind == "cv"] != [f.name for f in folds(events)
                                                           if f.kind == "cv"]:
        raise SystemExit(f"{args.crossval}: not every cross-validation fold has all its "
                         f"members: rerun convert.crossval there (it resumes)")
    choice = run_.shipping_choice()
    log(f"protocol's choice on every cv fold: {choice.epoch} epochs, thresholds "
        f"{choice.thresholds or 'none (argmax)'} (objective {choice.value}, argmax "
        f"{choice.at_argmax})")
    index, probs = run_.out_of_fold()
    if "sprsound" in recipe.datasets:
        record = choose_record_fraction([r.record_label for r in iter_annotated(
            args.data / SPRSOUND)][:args.limit], events, index, probs[choice.epoch - 1],
            choice.thresholds, log)
    else:
        record = {"record_fraction": None, "why": "no SPRSound recordings in the recipe"}
    bar, measured = min_upper_edge((r for _, recordings, _ in recipe_recordings(
        args.data, recipe, args.limit) for r in recordings), recipe.frontend.sample_rate)
    log(f"channel the model needs: an upper edge of {bar:g} Hz ({measured})")
    decisions = Decisions(
        thresholds=choice.thresholds | {RECORD: record["record_fraction"] or RECORD_FRACTION},
        min_upper_edge_hz=bar,
        why={"thresholds": "the protocol's shipping choice on every cv fold",
             RECORD: record, "min_upper_edge_hz": measured,
             "segmenter": "edge.dsp.segmenter's defaults, tuned by bench/segmentation.py on "
                          "annotated training recordings",
             "poor_quality_below": "edge.pipeline.model's default, the value every model so "
                                   "far was chosen with",
             "poor_record_fraction": "edge.pipeline.model's default (half a session unjudged)"})
    shipped = dataclasses.replace(recipe, epochs=choice.epoch)
    train = windows(events, shipped)
    log(f"training {len(recipe.seeds)} member(s) for {choice.epoch} epochs on {len(events)} "
        f"events ({len(train.x)} windows; per label "
        f"{np.bincount(events.labels, minlength=len(LABELS)).tolist()})")
    if args.from_float:
        models = {s: load_float(seeds_dir(args.out) / f"seed-{s}.h5") for s in recipe.seeds}
        histories: dict[int, Any] = {}
    else:
        with tempfile.TemporaryDirectory(dir=args.out.parent) as scratch:
            models, histories = train_seeds(shipped, train, log, args.jobs, Path(scratch))
        seeds_dir(args.out).mkdir(exist_ok=True)
        for seed, model in models.items():
            model.save(str(seeds_dir(args.out) / f"seed-{seed}.h5"))
    provenance = {
        "data": [CORPORA[d] for d in recipe.datasets],
        "split": "none: every member trains on all of it for the epochs the protocol's rule "
                 "chose; the recipe, its epochs and the thresholds were chosen by the "
                 "validation protocol",
        "recipe": recipe.to_dict(), "epochs": choice.epoch, "protocol": str(args.crossval),
        "choice": choice.to_dict(),
        "protocol_prediction": dataclasses.asdict(report.prediction),
        "floor_gate": gate.passed}
    checks = package(models, shipped, train, decisions, provenance, args, log)
    if shipped.normalise == "stethoscope":
        written = training_calibrations(events, shipped, args.out,
                                        f"lungedge-cnnlstm {args.version}")
        log(f"calibrations of the training stethoscopes: {', '.join(written)}")
    save_report(TrainingReport(
        recipe=recipe.to_dict(), epochs=choice.epoch, members=list(models), verify=checks,
        histories={str(k): v for k, v in histories.items()}, choice=choice.to_dict(),
        record_threshold=record, floor_gate=gate, protocol_prediction=report.prediction),
        args.out / "report" / "training.json")
    if args.seed_report:
        seed_report(args, log)
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
    ap.add_argument("--version", default="0.6.0", help="of the package written")
    ap.add_argument("--from-float", action="store_true",
                    help="no training: package the seeds an earlier run saved beside OUT "
                         "(OUT-float-seeds/)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="seeds trained at once, in as many processes (the cores are shared)")
    ap.add_argument("--calibration-windows", type=int, default=3000)
    ap.add_argument("--check-windows", type=int, default=4000,
                    help="windows on which int8 and float must agree")
    ap.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT,
                    help="int8 vs float top-1 agreement below which no package is written")
    ap.add_argument("--allow-below-floor", action="store_true",
                    help="package a recipe that did not beat the floor in the protocol (smoke "
                         "runs and experiments; never for a package that ships)")
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
