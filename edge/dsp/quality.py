"""How much a cycle sounds like breathing heard through a stethoscope on the chest (0…1).

A heuristic, not a trained model: the record-level "poor quality" and the poor-signal alert rest
on it, and the model card says so.
"""

from __future__ import annotations

import numpy as np


def signal_quality(samples: np.ndarray, sample_rate: int) -> float:
    """Breath sound rises and falls within a cycle, so its 20 ms frame energies spread over
    10–20 dB; hum, rubbing or an open microphone are flat (a low spread) and clipping is
    distortion. Spread maps linearly from 3 dB (0) to 15 dB (1), times the unclipped share."""
    frame = max(1, sample_rate // 50)
    n = len(samples) // frame
    if n < 4:
        return 0.0
    energy = np.mean(samples[:n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)
    db = 10 * np.log10(energy + 1e-12)
    low, high = np.percentile(db, [10, 90])
    spread = float(high - low)
    unclipped = 1.0 - float(np.mean(np.abs(samples) >= 0.99))
    return round(float(np.clip((spread - 3) / 12, 0, 1)) * unclipped, 3)
