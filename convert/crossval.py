"""The validation protocol: how well a recipe does on patients and stethoscopes it never met.

    python -m convert.crossval --data ../shared/data --out report/crossval/NAME [--jobs 2] \
        [recipe flags]

Two kinds of folds, every one through the same `convert.fit` as the shipped model:

- **cv**: k-fold cross-validation grouped by patient (k = 5): ICBHI train's 77 patients and
  SPRSound train's 251 are each dealt into k folds (ICBHI's within each stethoscope, so every
  fold has some of each); every patient is validated exactly once, by models that never
  heard them.
- **loso**: leave one stethoscope out. For each of AKG C417L, Littmann Classic II SE and
  Meditron, models trained on everything else (SPRSound included, every recording of a
  patient ever recorded on that stethoscope left out) are validated on all its ICBHI cycles.

In every fold the protocol reproduces what ships: one network per seed of the recipe (the
package's members, so the spread over seeds is measured, not assumed), the epochs and
thresholds chosen by the trainer's own rule (`convert.choice`) on the *other* folds'
out-of-fold predictions, and each member converted to int8 at that epoch, the members'
int8 outputs averaged as the device averages them. The gradient-boosting floor
(`convert.floor`) runs on the same folds. `convert.protocol` scores all of it: per
stethoscope, per fold, per seed, against the floor, with a prediction for a new ICBHI-like
test and the gate a recipe must pass to ship.

Saved in OUT, so an interrupted run resumes where it stopped: FOLD-sSEED.npz (the validation
windows' float probabilities after every epoch), FOLD-sSEED-weights.npz (the weights after
every epoch, for the int8 step), FOLD-sSEED-int8.npz, floor-VARIANT.npz, and the members heard
otherwise at their fold's chosen epoch: FOLD-sSEED-quiet.npz, FOLD-sSEED-channel-NAME.npz (the
channel stress test, `convert.channels`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from convert import channels, floor, protocol_report
from convert import recipe as recipes
from convert.features import Events
from convert.fit import Windows, fit, windows
from convert.folds import QUIET_DB, Fold, folds, load_corpus, member_path
from convert.recipe import Recipe
from edge.dsp.frontend import FrontendParams

CALIBRATION_WINDOWS = 3000  # as the trainer calibrates a shipped member's int8 conversion


Log = Callable[[str], None]


# -- the runs of one fold ----------------------------------------------------------------------
def fold_windows(fold: Fold, events: Events, recipe: Recipe) -> tuple[Windows, Windows]:
    train = windows(events.take(fold.train), recipe)
    return train, windows(events.take(fold.val), recipe, train.mean, train.std,
                          train.calibration)


def train_member(fold: Fold, events: Events, recipe: Recipe, seed: int, out: Path,
                 log: Log) -> None:
    """One member of one fold: its validation windows' probabilities and its weights after
    every epoch (what the nested choice and the int8 step need)."""
    path = member_path(out, fold.name, seed)
    if path.exists() and np.array_equal(np.load(path)["val"], fold.val):
        log(f"{fold.name} seed {seed}: already done ({path})")
        return
    t = time.time()
    train, val = fold_windows(fold, events, recipe)
    log(f"{fold.name} seed {seed}: {len(fold.train)} training events ({len(train.x)} "
        f"windows), {len(fold.val)} validation events")
    x = ((val.x - val.mean) / val.std)[..., None]
    per_epoch: list[np.ndarray] = []
    weights: dict[str, Any] = {}

    def on_epoch(epoch: int, model: Any) -> dict[str, Any]:
        per_epoch.append(model.predict(x, batch_size=256, verbose=0).astype(np.float32))
        for i, w in enumerate(model.get_weights()):
            weights[f"e{epoch + 1}_{i}"] = w
        return {}

    fit(recipe, train, seed, lambda m: log(f"{fold.name} {m}"), on_epoch)
    np.savez_compressed(member_path(out, fold.name, seed, "weights"), **weights)
    np.savez_compressed(path, val=fold.val, owner=val.owner, window_probs=np.stack(per_epoch),
                        seconds=time.time() - t)


def quantize_member(fold: Fold, events: Events, recipe: Recipe, seed: int, epoch: int,
                    out: Path, log: Log) -> None:
    """The member at `epoch` as the trainer would ship it: full-integer int8, calibrated on
    its own training windows; its validation windows' dequantized probabilities."""
    from convert.package import int8_probabilities, to_int8_tflite

    path = member_path(out, fold.name, seed, "int8")
    if path.exists() and int(np.load(path)["epoch"]) == epoch:
        return
    train, val = fold_windows(fold, events, recipe)
    model = float_member(fold, recipe, seed, epoch, out, train.x.shape[1:])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train.x), min(CALIBRATION_WINDOWS, len(train.x)), replace=False)
    tflite = to_int8_tflite(model, (train.x[pick] - train.mean) / train.std)
    probs = int8_probabilities(tflite, (val.x - val.mean) / val.std)
    np.savez_compressed(path, epoch=epoch, window_probs=probs, bytes=len(tflite))
    log(f"{fold.name} seed {seed}: int8 at epoch {epoch} ({len(tflite)} bytes)")


def quieter(events: Events, frontend: FrontendParams, db: float) -> Events:
    """The same cycles as a stethoscope `db` quieter would give them: every log mel band
    moved by the gain, down to the frontend's floor (what a quiet stethoscope cannot go
    below)."""
    if frontend.features != "log_mel" or frontend.deltas:
        raise ValueError("the quiet-stethoscope check needs log mel features without deltas")
    shift, floor = db * np.log(10) / 10, np.log(frontend.log_floor)
    return dataclasses.replace(events, feats=[np.maximum(f + shift, floor).astype(np.float32)
                                              for f in events.feats])


def float_member(fold: Fold, recipe: Recipe, seed: int, epoch: int, out: Path,
                 shape: tuple[int, int]) -> Any:
    """The member of `fold` and `seed` as its float network was after `epoch`."""
    from convert.package import build_cnn_lstm

    saved = np.load(member_path(out, fold.name, seed, "weights"))
    n = sum(1 for k in saved.files if k.startswith(f"e{epoch}_"))
    model = build_cnn_lstm(*shape, 4, **recipe.arch)
    model.set_weights([saved[f"e{epoch}_{i}"] for i in range(n)])
    return model


def training_statistics(fold: Fold, events: Events, recipe: Recipe) -> Windows:
    """The fold's training windows (what its validation is normalised with), once per fold in
    a worker: a member heard otherwise needs them again for every way it is heard."""
    cached: dict[str, Windows] = _WORKER.setdefault("training", {})
    if fold.name not in cached:
        cached.clear()  # one fold's windows at a time: they are most of a worker's memory
        cached[fold.name] = windows(events.take(fold.train), recipe)
    return cached[fold.name]


def heard_member(fold: Fold, events: Events, recipe: Recipe, seed: int, epoch: int,
                 out: Path, log: Log, what: str) -> None:
    """The member at `epoch` (float) on its validation events heard otherwise:

    - "quiet" (held-out stethoscopes): QUIET_DB quieter — does it hear the sound or the level?
      0.5.0 called every recording at SPRSound's level normal, a manikin's coarse crackles
      included;
    - "uncalibrated" (held-out stethoscopes): standardised with every training stethoscope's
      statistics pooled, as a device nobody calibrated does (a recipe with normalise:
      stethoscope);
    - "channel-NAME" (every fold): through one of `convert.channels.CHANNELS`, another
      stethoscope's frequency response."""
    path = member_path(out, fold.name, seed, what)
    if path.exists() and int(np.load(path)["epoch"]) == epoch:
        return
    train = training_statistics(fold, events, recipe)
    if what == "quiet":
        val = windows(quieter(events.take(fold.val), recipe.frontend, QUIET_DB), recipe,
                      train.mean, train.std, train.calibration)
    elif what == "uncalibrated":
        assert train.calibration is not None
        held = events.take(fold.val)
        pooled = train.calibration[""]
        val = windows(held, recipe, train.mean, train.std,
                      {str(d): pooled for d in set(held.devices)} | {"": pooled})
    else:
        heard = channel_corpus(channels.BY_NAME[what.removeprefix("channel-")])
        val = windows(heard.take(fold.val), recipe, train.mean, train.std, train.calibration)
    model = float_member(fold, recipe, seed, epoch, out, train.x.shape[1:])
    probs = model.predict(((val.x - val.mean) / val.std)[..., None], batch_size=256,
                          verbose=0)
    np.savez_compressed(path, epoch=epoch, window_probs=probs.astype(np.float32))
    log(f"{fold.name} seed {seed}: {what}, at epoch {epoch}")


def channel_corpus(channel: channels.Channel) -> Events:
    """The worker's corpus heard through `channel` (the same events in the same order), one
    channel at a time in memory."""
    held = _WORKER.setdefault("channel", {})
    if channel.name not in held:
        held.clear()
        data, recipe, cache, limit = _WORKER["corpus"]
        held[channel.name] = load_corpus(data, recipe, cache, limit, channel)
    events: Events = held[channel.name]
    return events


# -- running many at once ----------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_init(data: Path, recipe: Recipe, cache: Path | None, limit: int | None, k: int,
                 fold_seed: int, threads: int) -> None:
    """A process's thread budget (set before TensorFlow is imported) and its copy of the
    corpus (from the feature cache)."""
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    events = load_corpus(data, recipe, cache, limit)
    _WORKER.update(events=events, recipe=recipe, corpus=(data, recipe, cache, limit),
                   folds={f.name: f for f in folds(events, k, fold_seed)})


def _worker_task(task: tuple[str, str, int, int], out: Path) -> list[str]:
    kind, fold, seed, epoch = task
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    f, events, recipe = _WORKER["folds"][fold], _WORKER["events"], _WORKER["recipe"]
    if kind == "train":
        train_member(f, events, recipe, seed, out, log)
    elif kind in ("quiet", "uncalibrated") or kind.startswith("channel-"):
        heard_member(f, events, recipe, seed, epoch, out, log, kind)
    else:
        quantize_member(f, events, recipe, seed, epoch, out, log)
    return lines


def run_tasks(tasks: list[tuple[str, str, int, int]], args: argparse.Namespace, recipe: Recipe,
              record: Log) -> None:
    """Tasks ("train" or "int8", fold, seed, epoch) in `args.jobs` processes, each with its
    share of the cores (a member keeps about one core busy), or in this one. A task prints
    as it goes; `record` keeps its lines (the run's log file) once it is done."""
    settings = (args.data, recipe, args.cache, args.limit, args.k, args.protocol_seed)
    if args.jobs <= 1:
        _worker_init(*settings, threads=os.cpu_count() or 1)
        for task in tasks:
            for line in _worker_task(task, args.out):
                record(line)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init, initargs=(*settings, threads)) as pool:
        for lines in pool.map(_worker_task, tasks, [args.out] * len(tasks)):
            for line in lines:
                record(line)


def main(argv: list[str] | None = None) -> int:
    from convert import protocol

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "LUNGEDGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path(".cache/features"))
    ap.add_argument("--k", type=int, default=5, help="cross-validation folds")
    ap.add_argument("--protocol-seed", type=int, default=0,
                    help="seed of the fold assignment (each member trains with its own seed)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="members trained at once, in as many processes (the cores are shared)")
    ap.add_argument("--limit", type=int, help="recordings per dataset (smoke runs)")
    recipes.add_arguments(ap)
    args = ap.parse_args(argv)
    recipe = recipes.from_arguments(args)
    args.out.mkdir(parents=True, exist_ok=True)
    logf = (args.out / "crossval.log").open("a")

    def record(msg: str) -> None:
        logf.write(msg + "\n")
        logf.flush()

    def log(msg: str) -> None:
        print(msg, flush=True)
        record(msg)

    (args.out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1) + "\n")
    events = load_corpus(args.data, recipe, args.cache, args.limit)
    fold_list = folds(events, args.k, args.protocol_seed)
    for variant in floor.VARIANTS:
        floor.run(events, fold_list, variant, args.out, log,
                  lambda c: load_corpus(args.data, recipe, args.cache, args.limit, c))
    run_tasks([("train", f.name, s, 0) for s in recipe.seeds for f in fold_list], args, recipe,
              record)
    run = protocol.ProtocolRun.load(args.out, events, fold_list, recipe)
    run_tasks([("int8", f.name, s, run.choices[f.name].epoch) for s in recipe.seeds
               for f in fold_list], args, recipe, record)
    checks = (["quiet"] if recipe.frontend.features == "log_mel" and not recipe.frontend.deltas
              else []) + (["uncalibrated"] if recipe.normalise == "stethoscope" else [])
    run_tasks([(what, f.name, s, run.choices[f.name].epoch) for what in checks
               for s in recipe.seeds for f in fold_list if f.kind == "loso"], args, recipe,
              record)
    # the channel stress test: every fold, one channel after another (a worker keeps one
    # channel's corpus in memory)
    run_tasks([(f"channel-{c.name}", f.name, s, run.choices[f.name].epoch)
               for c in channels.CHANNELS for f in fold_list for s in recipe.seeds],
              args, recipe, record)
    report = protocol.ProtocolRun.load(args.out, events, fold_list, recipe).report()
    protocol_report.save(report, args.out / "crossval.json")
    (args.out / "crossval.md").write_text(protocol.markdown(report))
    protocol.plot_curves(report.curve, args.out / "crossval_curves.png", args.out.name)
    log(protocol.summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
