"""Plots: `classify --plot` (waveform and spectrogram, cycles shaded by label), and the headless
matplotlib that the toolchain's reports draw with too.

matplotlib is imported only when a plot is asked for, so the device does not need it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class PlotError(RuntimeError):
    """A plot was asked for but cannot be drawn here."""


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display on a device or in CI)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("plots need matplotlib: `pip install matplotlib`") from None
    return plt


def save(fig: Any, out: Path, dpi: int = 90) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    pyplot().close(fig)

# The four-class models' labels keep their colours from plot to plot; a model with other
# labels (its manifest says) gets the next colours of this palette, in its label order.
KNOWN = {"normal": "#4caf50", "crackle": "#ff9800", "wheeze": "#2196f3", "both": "#e91e63"}
PALETTE = ("#9c27b0", "#795548", "#00bcd4", "#cddc39", "#607d8b")
UNLABELLED = "#9e9e9e"


def colours(labels: tuple[str, ...]) -> dict[str | None, str]:
    others = iter(PALETTE * (1 + len(labels) // len(PALETTE)))
    return {**{lab: KNOWN.get(lab) or next(others) for lab in labels}, None: UNLABELLED}


def plot_cycles(samples: np.ndarray, rate: int, cycles: list[dict[str, Any]], out: Path,
                title: str = "", labels: tuple[str, ...] = ()) -> None:
    plt = pyplot()
    from matplotlib.patches import Patch

    palette = colours(labels)
    t = np.arange(len(samples)) / rate
    fig, (wave, spec) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True)
    wave.plot(t, samples, lw=0.4, color="black")
    spec.specgram(samples, NFFT=256, Fs=rate, noverlap=192, cmap="magma")
    spec.set_ylim(0, min(2000, rate / 2))
    for c in cycles:
        colour = palette.get(c.get("label"), UNLABELLED)
        for ax in (wave, spec):
            ax.axvspan(c["start_s"], c["end_s"], color=colour, alpha=0.25, lw=0)
            ax.axvline(c["start_s"], color=colour, lw=0.8)
        wave.text((c["start_s"] + c["end_s"]) / 2, wave.get_ylim()[1] * 0.85,
                  f"{c.get('label', '')}\n{c['confidence']:.2f}" if "label" in c
                  else str(c["index"]), ha="center", va="top", fontsize=7)
    labels = sorted({c.get("label") for c in cycles}, key=str)
    wave.legend(handles=[Patch(color=palette.get(lab, UNLABELLED), alpha=0.4,
                               label=lab or "cycle") for lab in labels],
                loc="lower right", fontsize=8)
    wave.set_title(title, fontsize=10)
    wave.set_ylabel("amplitude")
    spec.set_ylabel("Hz")
    spec.set_xlabel("seconds")
    save(fig, out, dpi=100)
