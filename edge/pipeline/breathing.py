"""Breaths per minute: one definition for the device's sessions and summaries, `classify`, Home
Assistant, and the station's ward, device page and trends.

A rate is cycles × 60 / the time they span, over each stretch of breathing: a pause longer than
the device's `tracker.session_silence_s` ends a stretch (it ends the device's session too), so
the time between two auscultations is not breathing. The station used a pause of its own
(30 s) and a device set to 60 s said 11.0/min where the station said 15.3/min; `classify`
divided by the whole recording's length. The device publishes its pause in its status
(`breathing_pause_s`), and every reader calls this.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["breathing_rate"]


def breathing_rate(heard: Iterable[tuple[float, float]], pause_s: float) -> float | None:
    """Breaths per minute over cycles given as (start, end) in order; None without a stretch
    of at least two cycles."""
    stretches: list[list[float]] = []  # [cycles, first start, last end]
    for start, end in heard:
        if stretches and start - stretches[-1][2] <= pause_s:
            stretches[-1][0] += 1
            stretches[-1][2] = max(stretches[-1][2], end)
        else:
            stretches.append([1, start, end])
    counted = [(n, last - first) for n, first, last in stretches if n >= 2 and last > first]
    span = sum(s for _, s in counted)
    return round(60 * sum(n for n, _ in counted) / span, 1) if span else None
