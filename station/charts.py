"""Charts as SVG geometry, drawn by the templates: no chart library to vendor (the network is
closed) and nothing a device sent ever reaches the page but through the templates' escaping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge.pipeline.plot import colours
from station.store.read_models import Bucket, TimelineCycle

WIDTH, HEIGHT = 900, 60  # the cycle strip
TREND_HEIGHT = 100  # a trend: tall enough for its y axis's labels on a phone


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    colour: str
    label: str
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    text: str  # the station's clock time, with the date where it is not today
    minor: bool = False  # every other one: hidden where the chart is narrow (a phone)

    @property
    def anchor(self) -> str:
        """Text inside the chart at its ends (the first label was cut: "Dec 18:00")."""
        return "start" if self.x < 40 else "end" if self.x > WIDTH - 40 else "middle"


@dataclass(frozen=True)
class Level:
    """A value on a chart's y axis: where, and its label with its unit."""

    y: float
    text: str
    minor: bool  # between the ends: hidden where the chart is narrow (a phone)


# Each trend's fixed scale, stated on its axis: a chart that rescales to its own maximum made a
# rate of 14 look like one of 40.
RATE_TOP = 60.0  # breaths/min; a rate above it is drawn at the top
SCALES: dict[str, tuple[float, tuple[tuple[float, str], ...]]] = {
    "burden": (1.0, ((0.0, "0%"), (0.5, "50%"), (1.0, "100%"))),
    "rate": (RATE_TOP, ((0.0, "0"), (20.0, "20"), (40.0, "40"), (60.0, "60"))),
    "quality": (1.0, ((0.0, "0"), (0.5, "0.5"), (1.0, "1"))),
}


def local_time(t: float, now: float, seconds: bool = True) -> str:
    """`t` on the station's clock, with its date where that is not today."""
    when = time.localtime(t)
    fmt = "%H:%M:%S" if seconds else "%H:%M"
    return time.strftime(fmt if when[:3] == time.localtime(now)[:3] else "%d %b " + fmt, when)


def axis(since: float, until: float, step_s: int, now: float) -> list[Tick]:
    """Ticks on [since, until] at whole steps of the station's local clock (every 5 minutes,
    every 3 hours), placed as the charts place their data."""
    span = max(until - since, 1e-9)
    offset = time.localtime(since).tm_gmtoff
    t = math.ceil((since + offset) / step_s) * step_s - offset
    out: list[Tick] = []
    while t <= until:
        out.append(Tick(round((t - since) / span * WIDTH, 1), local_time(t, now, seconds=False),
                        minor=len(out) % 2 == 1))
        t += step_s
    return out


def y_of(value: float, top: float, height: int = HEIGHT) -> float:
    return round(height - min(value, top) / top * (height - 6) - 3, 1)


def levels(name: str) -> list[Level]:
    """The y axis of a trend: its fixed scale's values, labelled."""
    top, marks = SCALES[name]
    return [Level(y_of(v, top, TREND_HEIGHT), text, 0 < i < len(marks) - 1)
            for i, (v, text) in enumerate(marks)]


def timeline(cycles: Sequence[TimelineCycle], since: float, until: float,
             labels: tuple[str, ...]) -> list[Bar]:
    """Each cycle as a bar on [since, until], coloured by its label."""
    span = max(until - since, 1e-9)
    palette = colours(labels)
    out = []
    for c in cycles:
        x0 = max(0.0, (c.start - since) / span * WIDTH)
        x1 = min(WIDTH, (c.end - since) / span * WIDTH)
        if x1 > x0:
            out.append(Bar(round(x0, 1), round(max(x1 - x0, 1.0), 1),
                           palette.get(c.label, palette[None]), c.label,
                           f"{c.label} {c.confidence:.2f}, quality {c.quality:.2f}"))
    return out


@dataclass(frozen=True)
class Series:
    line: str  # SVG polyline points
    dots: list[tuple[float, float]]  # the same points, so a lone one shows too


def series(values: list[float | None], top: float, height: int = HEIGHT) -> Series:
    """Values on 0…top, one per slot across the width (empty slots skipped)."""
    n = len(values)
    dots = [(round((i + 0.5) / n * WIDTH, 1), y_of(v, top, height))
            for i, v in enumerate(values) if v is not None]
    return Series(" ".join(f"{x},{y}" for x, y in dots), dots)


def trends(buckets: Sequence[Bucket], first: int, n: int) -> dict[str, Any]:
    """Per bucket: abnormal burden (0…1), breathing rate (the store's: over the stretches of
    breathing heard in the bucket), quality."""
    by_bucket = {r.bucket: r for r in buckets}
    burden: list[float | None] = []
    rate: list[float | None] = []
    quality: list[float | None] = []
    for h in range(first, first + n):
        r = by_bucket.get(h)
        burden.append(r.abnormal / r.good if r and r.good else None)
        rate.append(r.rate if r else None)
        quality.append(r.quality_sum / r.cycles if r and r.cycles else None)
    return {"burden": series(burden, SCALES["burden"][0], TREND_HEIGHT),
            "rate": series(rate, SCALES["rate"][0], TREND_HEIGHT),
            "quality": series(quality, SCALES["quality"][0], TREND_HEIGHT),
            "levels": {name: levels(name) for name in SCALES},
            "latest": {"burden": next((v for v in reversed(burden) if v is not None), None),
                       "rate": next((v for v in reversed(rate) if v is not None), None),
                       "quality": next((v for v in reversed(quality) if v is not None),
                                       None)}}
