"""Plots: `classify --plot` (waveform and spectrogram, cycles shaded by label), and the headless
matplotlib that the toolchain's reports draw with too.

matplotlib is imported only when a plot is asked for, so the device does not need it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge.dsp.frontend import periodic_window


class PlotError(RuntimeError):
    """A plot was asked for but cannot be drawn here."""


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display on a device or in CI)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("plots need matplotlib, which this installation lacks: "
                        f"`{sys.executable} -m pip install matplotlib` (the pip of the "
                        "environment lungedge runs in)") from None
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


def spectrogram(samples: np.ndarray, n_fft: int = 256, hop: int = 64,
                columns: int = 4000) -> np.ndarray:
    """(frames, n_fft // 2 + 1) power in dB, for display: every hop samples for a short
    recording, and for a long one `columns` frames spread evenly over it, so its memory is
    bounded whatever the length (matplotlib's specgram of 2 h allocated 2.6 GB, of 20 min at
    8 kHz 600 MB; this, 8 MB)."""
    n = max(len(samples) - n_fft, 0)
    frames = min(columns, n // hop + 1)
    starts = np.linspace(0, n, frames).astype(int)
    padded = np.pad(samples, (0, max(0, n_fft - len(samples))))
    windowed = padded[starts[:, None] + np.arange(n_fft)] * periodic_window("hann", n_fft)
    spectrum = np.fft.rfft(windowed, axis=1)
    return 10 * np.log10(spectrum.real ** 2 + spectrum.imag ** 2 + 1e-12)


def plot_cycles(samples: np.ndarray, rate: int, cycles: list[dict[str, Any]], out: Path,
                title: str = "", labels: tuple[str, ...] = ()) -> None:
    plt = pyplot()
    from matplotlib.patches import Patch

    palette = colours(labels)
    step = max(1, len(samples) // 20000)
    t = np.arange(0, len(samples), step) / rate
    fig, (wave, spec) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True)
    wave.plot(t, samples[::step], lw=0.4, color="black")
    spec.imshow(spectrogram(samples).T, origin="lower", aspect="auto", cmap="magma",
                extent=(0, len(samples) / rate, 0, rate / 2))
    spec.set_ylim(0, min(2000, rate / 2))
    for c in cycles:
        colour = palette.get(c.get("label"), UNLABELLED)
        for ax in (wave, spec):
            ax.axvspan(c["start_s"], c["end_s"], color=colour, alpha=0.25, lw=0)
            ax.axvline(c["start_s"], color=colour, lw=0.8)
        wave.text((c["start_s"] + c["end_s"]) / 2, wave.get_ylim()[1] * 0.85,
                  f"{c.get('label', '')}\n{c['confidence']:.2f}" if "label" in c
                  else str(c["index"]), ha="center", va="top", fontsize=7)
    heard = sorted({c.get("label") for c in cycles}, key=str)
    wave.legend(handles=[Patch(color=palette.get(lab, UNLABELLED), alpha=0.4,
                               label=lab or "cycle") for lab in heard],
                loc="lower right", fontsize=8)
    wave.set_title(title, fontsize=10)
    wave.set_ylabel("amplitude")
    spec.set_ylabel("Hz")
    spec.set_xlabel("seconds")
    save(fig, out, dpi=100)
