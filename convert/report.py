"""Finish a model package's report: training curves, the validation protocol's numbers and the
held-out metrics in its manifest, and the protocol's report beside them.

    python -m convert.report PACKAGE --training training.json --protocol CROSSVAL_DIR \
        --evaluation EVAL.json [...] [--alternatives CROSSVAL_DIR ...]

The manifest's sha256 covers model.tflite only, so metrics can be written after evaluation
without touching the model the device checks.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from edge.plot import pyplot, save

PROTOCOL_FILES = ("crossval.md", "crossval.json", "crossval_curves.png", "recipe.json")


def plot_training(training: dict[str, Any], out: Path) -> None:
    """The shipped seeds' training loss: they train on everything, so the protocol's curves
    (crossval_curves.png) are the validation."""
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for i, (seed, hist) in enumerate(training["histories"].items()):
        ax.plot([h["epoch"] for h in hist], [h["loss"] for h in hist], f"C{i}",
                label=f"seed {seed}")
    ax.set_title("training loss (augmented, weighted), every event of both training sets")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    save(fig, out)


def protocol_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The protocol's headline numbers at the epoch the recipe trains for."""
    keep = ("events", "sp", "se", "score", "auc", "crackle_recall", "wheeze_recall")
    cv = report["cv"]
    return {
        "epoch": report["epoch"], "objective": report["objective"],
        "icbhi_cv": {k: cv["icbhi"][k] for k in (*keep, "fold_mean", "fold_sd")},
        "icbhi_cv_by_stethoscope": {d: {k: s[k] for k in keep}
                                    for d, s in cv["icbhi_by_stethoscope"].items()},
        "loso": {d: {k: s[k] for k in keep} for d, s in report["loso"].items()},
        "loso_mean": report["loso_mean"],
        "sprsound_cv": {k: cv["sprsound"][k] for k in (*keep, "fold_mean", "fold_sd")},
    }


def differences(recipe: dict[str, Any], chosen: dict[str, Any]) -> str:
    """A recipe as its settings that differ from the chosen one's (seeds aside: the protocol
    trains one per fold whatever a recipe ships)."""
    keys = sorted(k for k in chosen.keys() | recipe.keys()
                  if k != "seeds" and recipe.get(k) != chosen.get(k))
    return ", ".join(f"{k} {recipe.get(k)}" for k in keys) or "the chosen recipe"


def comparison(runs: dict[str, dict[str, Any]], chosen: str) -> str:
    """Every protocol run of a choice side by side, as the card quotes them: what a recipe
    changes, and what that does per stethoscope, not only pooled."""
    held = ("AKGC417L", "LittC2SE", "Meditron")

    def cell(s: dict[str, Any] | None) -> str:
        return "–" if s is None else f"{s['score']:.3f} ({s['sp']:.2f}/{s['se']:.2f})"

    lines = ["# The recipes the protocol compared", "",
             f"Chosen: **{chosen}**. Each cell: ICBHI Score (Sp/Se), at the argmax and the "
             "epoch the recipe trains for (the package's thresholds come after the choice: "
             "training.json, protocol_at_thresholds). \"cv\": patient-grouped "
             "cross-validation, pooled out of fold; \"held out\": leave one stethoscope out. "
             "The objective is the mean of ICBHI cv, the held-out mean and SPRSound cv.", "",
             "| run | differs from the chosen recipe by | objective | ICBHI cv (fold mean ± sd) | "
             + " | ".join(f"cv {d}" for d in held) + " | "
             + " | ".join(f"held out {d}" for d in held)
             + " | held-out mean | SPRSound cv | held-out crackle recall |",
             "|" + "---|" * (7 + 2 * len(held))]
    base = runs[chosen]["recipe"]
    for name, r in runs.items():
        cv, by = r["cv"], r["cv"]["icbhi_by_stethoscope"]
        crackle = " / ".join("–" if d not in r["loso"] else f"{r['loso'][d]['crackle_recall']}"
                             for d in held)
        lines.append(
            f"| {'**' + name + '**' if name == chosen else name} | "
            f"{differences(r['recipe'], base)} | {r['objective']} | "
            f"{cell(cv['icbhi'])} ({cv['icbhi']['fold_mean']} ± {cv['icbhi']['fold_sd']}) | "
            + " | ".join(cell(by.get(d)) for d in held) + " | "
            + " | ".join(cell(r["loso"].get(d)) for d in held)
            + f" | {r['loso_mean']} | {cell(cv['sprsound'])} | {crackle} |")
    return "\n".join(lines) + "\n"


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
    training = json.loads(args.training.read_text())
    protocol = json.loads((args.protocol / "crossval.json").read_text())
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
            runs[alt.name] = json.loads((alt / "crossval.json").read_text())
            shutil.copy2(alt / "crossval.json",
                         report_dir / "protocol" / "alternatives" / f"{alt.name}.json")
        (report_dir / "protocol" / "comparison.md").write_text(
            comparison(runs, args.protocol.name))
    metrics: dict[str, Any] = {"protocol": protocol_metrics(protocol),
                               "verify": training.get("verify", {})}
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
