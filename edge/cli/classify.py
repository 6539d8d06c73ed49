"""`lungedge classify`: a recording (or a live source) through the analysis path
(`edge.pipeline.recording`), as a table as the cycles are found, or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.pipeline.model import Classifier
from edge.pipeline.recording import analyse_recording
from edge.pipeline.tracker import TrackerConfig
from edge.sources.base import AudioSource


def classify_source(label: str, source: AudioSource, runner: Classifier | None,
                    tracker: TrackerConfig, *, seconds: float | None = None,
                    plot: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """The report of `analyse_recording`, printed as it goes unless `quiet`."""
    if not quiet:
        print(f"{label}  ({source.sample_rate} Hz)")
        print(f"  {'#':>3}  {'start s':>8}  {'end s':>8}  {'dur s':>6}  {'features':>9}  "
              + ("label     conf  quality  " if runner else "") + "note")
    report = analyse_recording(label, source, runner, tracker, seconds=seconds, plot=plot,
                               on_cycle=None if quiet else print_row)
    if not quiet:
        print_summary(report)
        if plot:
            print(f"  plot: {plot}\n")
    return report


def print_row(r: dict[str, Any]) -> None:
    shape = "×".join(str(n) for n in r["features_shape"])
    notes = (["forced cut"] if r["forced_cut"] else []) + (
        [f"not judged: {r['unjudged'].replace('_', ' ')}"] if r.get("unjudged") else [])
    note = ", ".join(notes)
    model = (f"{r['label']:<8} {r['confidence']:>5.2f}  {r['quality']:>7.2f}  "
             if "label" in r else "")
    print(f"  {r['index']:>3}  {r['start_s']:>8.2f}  {r['end_s']:>8.2f}  "
          f"{r['duration_s']:>6.2f}  {shape:>9}  {model}{note}", flush=True)


def print_summary(report: dict[str, Any]) -> None:
    s = report["summary"]
    if not s["cycles"]:
        print("  no breathing cycles found (silence, or the stethoscope was not on the chest)\n")
        return
    rate = s["breathing_rate_per_min"]
    print(f"  {s['cycles']} cycles in {report['duration_s']:.1f} s, mean "
          f"{s['mean_cycle_s']:.2f} s, covering {100 * s['covered_fraction']:.0f}% of the "
          "audio; breathing " + (f"{rate:.1f}/min" if rate is not None else "rate unknown"))
    for i, session in enumerate(report.get("sessions", []), 1):
        by = ", ".join(f"{k} {v}" for k, v in session["cycles_by_label"].items() if v)
        unjudged = ", ".join(f"{k.replace('_', ' ')} {v}"
                             for k, v in session["cycles_unjudged"].items())
        print(f"  session {i} ({session['start_s']:.1f}–{session['end_s']:.1f} s): "
              f"{session['record_label']} ({by}; abnormal burden "
              f"{session['abnormal_burden']:.0%}, breathing "
              f"{session['breathing_rate_per_min'] or '–'}/min, not judged "
              f"{session['poor_quality_fraction']:.0%}"
              + (f": {unjudged}" if unjudged else "") + ")")
    latest = {r["unjudged"]: r["unjudged_reason"] for r in report["cycles"]
              if r.get("unjudged") and r["unjudged"] != "poor_quality"}
    for reason in latest.values():
        print(f"  could not judge: {reason}")
    for a in report.get("alerts", []):
        evidence = ", ".join(f"{k} {v}" for k, v in a["evidence"].items())
        print(f"  alert {a['event']}: {a['kind']} ({evidence})")
    print()

