"""Finish a model package's report: training curves, the validation protocol's numbers and the
held-out metrics in its manifest, and the protocol's report beside them.

    python -m convert.report PACKAGE --training training.json --protocol CROSSVAL_DIR \
        --evaluation EVAL.json [...] [--alternatives CROSSVAL_DIR ...]

Each member's sha256 in the manifest covers its .tflite only, so metrics can be written after
evaluation without touching the models the device checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from convert.protocol import comparison, per_stethoscope
from convert.protocol_report import ProtocolReport, Scores
from convert.protocol_report import load as load_report
from convert.training_report import TrainingReport
from convert.training_report import load as load_training
from edge.pipeline.plot import pyplot, save

PROTOCOL_FILES = ("crossval.md", "crossval.json", "crossval_curves.png", "recipe.json")


def plot_training(training: TrainingReport, out: Path) -> None:
    """The shipped members' training loss: they train on everything, so the protocol's curves
    (crossval_curves.png) are the validation."""
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for i, (seed, hist) in enumerate(training.histories.items()):
        ax.plot([h["epoch"] for h in hist], [h["loss"] for h in hist], f"C{i}",
                label=f"seed {seed}")
    ax.set_title("training loss (augmented, weighted), every event of both training sets")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    save(fig, out)


def protocol_metrics(report: ProtocolReport) -> dict[str, Any]:
    """The protocol's headline numbers, as shipped (members' int8 averaged, nested choices),
    with the floor's and the prediction beside them."""
    keep = ("events", "sp", "se", "score", "auc", "crackle_recall", "wheeze_recall")
    shipped = report.shipped
    cv = shipped.cv

    def some(s: Scores | None, *more: str) -> dict[str, Any] | None:
        return None if s is None else {k: getattr(s, k) for k in (*keep, *more)}

    return {
        "seeds": report.seeds, "int8": report.int8, "objective": shipped.objective,
        "icbhi_cv": some(cv.icbhi, "fold_mean", "fold_sd"),
        "icbhi_cv_by_stethoscope": {d: some(s) for d, s in cv.icbhi_by_stethoscope.items()},
        "loso": {d: some(s) for d, s in shipped.loso.items()},
        "loso_mean": shipped.loso_mean,
        "sprsound_cv": some(cv.sprsound, "fold_mean", "fold_sd"),
        "members_mean_sd": report.members_mean_sd,
        "floor": {v: per_stethoscope(r) for v, r in report.floor.items()},
        "prediction": dataclasses.asdict(report.prediction), "floor_gate": report.gate.passed,
        "shipping_choice": report.shipping_choice,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--training", type=Path, required=True)
    ap.add_argument("--protocol", type=Path, required=True,
                    help="the convert.crossval run that chose the recipe (its --out)")
    ap.add_argument("--evaluation", type=Path, nargs="+", required=True)
    ap.add_argument("--alternatives", type=Path, nargs="*", default=[], metavar="CROSSVAL_DIR",
                    help="the protocol's runs of the recipes not chosen: kept beside the "
                         "chosen one's and compared with it in protocol/comparison.md")
    args = ap.parse_args(argv)
    training = load_training(args.training)
    protocol = load_report(args.protocol / "crossval.json")
    evaluation = [r for path in args.evaluation for r in json.loads(path.read_text())]
    report_dir = args.package / "report"
    plot_training(training, report_dir / "training_curves.png")
    (report_dir / "protocol").mkdir(parents=True, exist_ok=True)
    for name in PROTOCOL_FILES:
        shutil.copy2(args.protocol / name, report_dir / "protocol" / name)
    if args.alternatives:
        runs = {args.protocol.name: protocol}
        (report_dir / "protocol" / "alternatives").mkdir(exist_ok=True)
        for alt in args.alternatives:
            runs[alt.name] = load_report(alt / "crossval.json")
            shutil.copy2(alt / "crossval.json",
                         report_dir / "protocol" / "alternatives" / f"{alt.name}.json")
        (report_dir / "protocol" / "comparison.md").write_text(
            comparison(runs, args.protocol.name))
    metrics: dict[str, Any] = {"protocol": protocol_metrics(protocol),
                               "verify": training.verify}
    for r in evaluation:
        name = "/".join(Path(r["folder"]).parts[-2:])
        metrics[name] = {k: r[k] for k in ("events", "event_4class", "event_binary",
                                           "streaming_4class", "streaming_binary",
                                           "record_task_2_1") if k in r}
    manifest_path = args.package / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["metrics"] = metrics
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
