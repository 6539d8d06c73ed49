"""The channel a model needs, measured on what it learnt from: the upper edge (the device's own
measure, `edge.dsp.bandwidth`) that the training recordings' breathing cycles reach.

The device refuses to judge cycles from a stethoscope whose channel stops below the model's
`min_upper_edge_hz` (`edge.pipeline.signal_judgement`): a model has never heard a channel that
narrow, and crackles live above it. The bar is what 98% of the training recordings reach, less
half a sixth-octave band (the measure's own resolution), so the training stethoscopes
themselves pass (SPRSound's Yunting II reaches 450–700 Hz, ICBHI's stethoscopes 0.45–1.8 kHz:
about 420 Hz) while a bell or a low-pass at 250 Hz (320–400 Hz) does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from convert.datasets import Recording
from convert.features import at_model_rate
from edge.dsp.bandwidth import ChannelBandwidth

PERCENTILE = 2.0  # the edge that all but this share (%) of the training recordings reach
MARGIN = 2 ** (-1 / 12)  # half a sixth-octave band below it


def recording_edge(rec: Recording, rate: int) -> float | None:
    """The upper edge the recording's annotated cycles show (None: too little of them)."""
    x = at_model_rate(str(rec.audio), rate)
    meter = ChannelBandwidth(rate)
    for ev in rec.events:
        meter.add(x[round(ev.start_s * rate):round(ev.end_s * rate)])
    return meter.upper_edge_hz


def min_upper_edge(recordings: Iterable[Recording], rate: int) -> tuple[float, dict[str, Any]]:
    """The bar for a model trained on these recordings, and how it was measured."""
    edges = np.array([e for rec in recordings if (e := recording_edge(rec, rate)) is not None])
    if not len(edges):
        raise ValueError("no training recording shows enough breathing to measure its channel")
    reached = float(np.percentile(edges, PERCENTILE))
    bar = round(reached * MARGIN, -1)
    return bar, {"min_upper_edge_hz": bar, "recordings": len(edges),
                 f"p{PERCENTILE:g}_hz": round(reached), "median_hz": round(float(np.median(edges))),
                 "rule": f"the edge {100 - PERCENTILE:g}% of the training recordings reach, "
                         "less half a sixth-octave band (convert/channel_edge.py)"}
