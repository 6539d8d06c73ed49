"""A package proves itself on the device before it classifies a patient.

The trainer ships a few of its own model inputs with the package (`selftest.npz`: normalised
windows and the probabilities its members gave them when it was packaged). A device about to
run a new package loads it beside the running one and runs those windows: every label the
package was sure of (top-two margin ≥ SURE_MARGIN) must come out the same, every probability
within PROB_TOLERANCE, and a window must take no longer than the device's budget. A package
without golden windows is still run on a few synthetic ones (finite probabilities that sum to
one, within the budget), and the result says nothing was compared.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.pipeline.model import Classifier, ModelError

SELFTEST_FILE = "selftest.npz"
SURE_MARGIN = 0.1  # closer calls may flip between interpreters (XNNPACK vs tflite-runtime)
PROB_TOLERANCE = 0.1


class SelfTestFailed(ModelError):
    """The package does not behave on this device as it did when it was packaged."""


@dataclass(frozen=True)
class SelfTest:
    windows: int
    compared: bool  # golden windows were shipped and compared
    ms_per_window: float

    def __str__(self) -> str:
        what = "golden windows agree" if self.compared else "synthetic windows (no golden)"
        return f"{self.windows} {what}, {self.ms_per_window:.1f} ms a window"


def write_golden(package: Path, runner: Classifier, windows: np.ndarray) -> None:
    """The package's golden windows: normalised inputs and what its members make of them."""
    probs = np.stack([runner.window_probs(w) for w in windows])
    np.savez_compressed(package / SELFTEST_FILE, windows=windows.astype(np.float32),
                        probs=probs.astype(np.float32))


def self_test(runner: Classifier, package: Path, max_window_ms: float) -> SelfTest:
    """Runs the package's golden windows (or synthetic ones); raises SelfTestFailed saying
    which window and what came out."""
    golden = package / SELFTEST_FILE
    m = runner.manifest
    if golden.is_file():
        try:
            with np.load(golden) as data:
                windows, expected = data["windows"], data["probs"]
        except (OSError, ValueError, KeyError) as exc:
            raise SelfTestFailed(f"{golden}: unreadable ({exc})") from None
        shape = (m.window.frames, m.frontend.n_features)
        if windows.ndim != 3 or windows.shape[1:] != shape or len(expected) != len(windows):
            raise SelfTestFailed(f"{golden}: windows of shape {windows.shape[1:]}, the model "
                                 f"takes {shape}")
    else:
        rng = np.random.default_rng(0)
        windows = rng.normal(size=(4, m.window.frames, m.frontend.n_features)) \
            .astype(np.float32)
        expected = None
    t = time.perf_counter()
    got = np.stack([runner.window_probs(w) for w in windows])
    ms = (time.perf_counter() - t) * 1000 / len(windows)
    if not np.all(np.isfinite(got)) or np.any(np.abs(got.sum(axis=1) - 1) > 0.05):
        raise SelfTestFailed(f"{package}: its outputs are not probabilities ({got[0]})")
    if expected is not None:
        ranked = np.sort(expected, axis=1)
        sure = ranked[:, -1] - ranked[:, -2] >= SURE_MARGIN
        flipped = np.flatnonzero(sure & (got.argmax(1) != expected.argmax(1)))
        if len(flipped):
            i = int(flipped[0])
            raise SelfTestFailed(
                f"{golden}: window {i} called {m.labels[int(got[i].argmax())]} here, "
                f"{m.labels[int(expected[i].argmax())]} when packaged ({len(flipped)} of "
                f"{int(sure.sum())} sure windows differ)")
        worst = float(np.abs(got - expected).max())
        if worst > PROB_TOLERANCE:
            raise SelfTestFailed(f"{golden}: probabilities differ from the packaged ones by "
                                 f"up to {worst:.2f} (tolerance {PROB_TOLERANCE})")
    if ms > max_window_ms:
        raise SelfTestFailed(f"{package}: {ms:.1f} ms a window on this device, over its budget "
                             f"of {max_window_ms:g} ms (model.max_window_ms)")
    return SelfTest(len(windows), expected is not None, ms)
