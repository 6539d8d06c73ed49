"""The daemon's statistics stay bounded for a process meant to run for months."""

from __future__ import annotations

import numpy as np

from edge.service.stats import InferenceTimes


def test_inference_times_keep_a_bounded_recent_window() -> None:
    times = InferenceTimes(size=1000)
    assert times.percentile(50) is None
    for i in range(100_000):  # months of cycles: the memory stays the ring's
        times.add(1.0 if i < 99_000 else 5.0)
    assert times._ms.nbytes == 1000 * 8
    assert times.percentile(50) == 5.0  # the last 1,000 only
    assert np.isfinite(times.percentile(99))  # type: ignore[arg-type]
