"""Finish a model package's report: training curves, and the held-out metrics in its manifest.

    python -m convert.report PACKAGE --training training.json --evaluation EVAL.json [...]

The manifest's sha256 covers model.tflite only, so metrics can be written after evaluation
without touching the model the device checks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge.plot import pyplot, save


def plot_training(training: dict[str, Any], out: Path) -> None:
    fig, (loss_ax, val_ax) = pyplot().subplots(1, 2, figsize=(11, 4))
    for i, (seed, hist) in enumerate(training["histories"].items()):
        epochs = [h["epoch"] for h in hist]
        colour = f"C{i}"  # one colour per seed in both panels
        loss_ax.plot(epochs, [h["loss"] for h in hist], colour, label=f"seed {seed}")
        val_ax.plot(epochs, [h["val_mean"] for h in hist], colour, label=f"seed {seed} (mean)")
        for name, style in zip(hist[0]["val"], (":", "--"), strict=False):
            val_ax.plot(epochs, [h["val"][name] for h in hist], colour, lw=0.7, ls=style,
                        label=f"seed {seed} {name.split('/')[0]}")
    loss_ax.set_title("training loss (augmented, weighted)")
    val_ax.set_title("validation ICBHI-style score (patient-disjoint)")
    for ax in (loss_ax, val_ax):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    save(fig, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--training", type=Path, required=True)
    ap.add_argument("--evaluation", type=Path, nargs="+", required=True)
    args = ap.parse_args()
    training = json.loads(args.training.read_text())
    evaluation = [r for path in args.evaluation for r in json.loads(path.read_text())]
    plot_training(training, args.package / "report" / "training_curves.png")
    vals = [r["val_mean"] for r in training["runs"]]
    metrics: dict[str, Any] = {
        "validation_score_mean_std_over_seeds": [round(float(np.mean(vals)), 4),
                                                 round(float(np.std(vals)), 4)],
        "chosen": training.get("choice", {}),
        "verify": training.get("verify", {}),
    }
    for r in evaluation:
        folder = r["folder"].split(" (patients")[0]
        name = "/".join(Path(folder).parts[-2:]) + (" validation" if "(patients" in r["folder"]
                                                   else "")
        metrics[name] = {k: r[k] for k in ("events", "event_4class", "event_binary",
                                           "streaming_4class", "streaming_binary")
                         if k in r} | ({"record_task_2_1": r["record_task_2_1"]}
                                       if "record_task_2_1" in r else {})
    manifest_path = args.package / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["metrics"] = metrics
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
