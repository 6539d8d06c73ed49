"""The streaming cycle segmenter: invariance to chunking, bounds, latency, forced cuts."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.dsp.frontend import FrontendParams
from edge.dsp.segmenter import CycleSegmenter, SegmenterConfig
from edge.pipeline.signal_path import run_signal_path
from edge.sources.base import AudioBlock
from tests.conftest import breathing

RATE = 4000
BREATHS = [(1.0, 2.2), (3.4, 4.4), (5.9, 7.3), (8.6, 9.5), (11.0, 12.4)]


def segment(x: np.ndarray, sizes: list[int], cfg: SegmenterConfig | None = None) -> list:
    seg = CycleSegmenter(cfg or SegmenterConfig(), RATE)
    out, i = [], 0
    for n in sizes:
        out += seg.process(x[i:i + n])
        i += n
    return out + seg.process(x[i:]) + seg.flush()


def test_finds_synthetic_breaths() -> None:
    x = breathing(RATE, 14, BREATHS)
    cycles = segment(x, [], dataclasses.replace(SegmenterConfig(), pad_s=0, tail_s=0))
    assert len(cycles) == len(BREATHS)
    for c, (start, end) in zip(cycles, BREATHS, strict=True):
        inter = min(c.end_s, end) - max(c.start_s, start)
        union = max(c.end_s, end) - min(c.start_s, start)
        assert inter / union > 0.6, (c.start_s, c.end_s, start, end)
        assert np.array_equal(c.samples, x[c.start:c.end])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 6000), min_size=1, max_size=40))
def test_same_cycles_and_features_whatever_the_block_sizes(sizes: list[int]) -> None:
    """The property the whole design leans on: chunking never changes results."""
    x = breathing(8000, 14, BREATHS, seed=5)
    params = FrontendParams()
    seg = SegmenterConfig()

    def blocks(chunks: list[int]) -> list[AudioBlock]:
        out, i = [], 0
        for n in [*chunks, len(x)]:
            if i >= len(x):
                break
            out.append(AudioBlock(x[i:i + n], 8000, i / 8000, 0.0))
            i += n
        return out

    ref = list(run_signal_path(blocks([len(x)]), 8000, params, seg))
    got = list(run_signal_path(blocks(sizes), 8000, params, seg))
    assert [(c.cycle.start, c.cycle.end) for c in got] == [(c.cycle.start, c.cycle.end)
                                                           for c in ref]
    for a, b in zip(got, ref, strict=True):
        assert np.abs(a.features - b.features).max() < 1e-4


def test_forced_cut_at_max_length_and_nothing_longer() -> None:
    cfg = dataclasses.replace(SegmenterConfig(), max_cycle_s=2.0)
    x = breathing(RATE, 12, [(1.0, 11.0)])  # one 10 s "breath": a cough fit, a loose lead
    cycles = segment(x, [1000] * 50, cfg)
    assert len(cycles) >= 4
    assert all(c.duration_s <= cfg.max_cycle_s + 1e-9 for c in cycles)
    assert any(c.forced_cut for c in cycles)
    ends = [c.end for c in cycles]
    starts = [c.start for c in cycles]
    assert all(s >= e for s, e in zip(starts[1:], ends[:-1], strict=False))  # no overlap


def test_short_clicks_are_dropped() -> None:
    x = breathing(RATE, 10, [(2.0, 2.05), (5.0, 5.04)])
    assert segment(x, []) == []


def test_silence_gives_nothing() -> None:
    assert segment(np.zeros(RATE * 10, dtype=np.float32), [4000] * 9) == []


@pytest.mark.parametrize("tail_s", [0.0, 0.3, 2.5])
def test_emission_latency_is_bounded(tail_s: float) -> None:
    """Each cycle comes out no later than latency_s of audio after its end (forced cuts:
    forced_cut_latency_s), whatever the tail."""
    cfg = dataclasses.replace(SegmenterConfig(), tail_s=tail_s, max_cycle_s=3.0)
    x = breathing(RATE, 24, [*BREATHS, (14.0, 22.0)])  # the last one needs forced cuts
    seg = CycleSegmenter(cfg, RATE)
    block = RATE // 100
    forced = 0
    for i in range(0, len(x), block):
        for c in seg.process(x[i:i + block]):
            waited = (i + block) / RATE - c.end_s
            bound = seg.forced_cut_latency_s if c.forced_cut else seg.latency_s
            assert waited <= bound + 1 / 100 + 1e-9, (c.start_s, c.end_s, waited, bound)
            forced += c.forced_cut
    assert forced >= 2
    assert seg.latency_s < 1.0 and seg.forced_cut_latency_s < 2.0


def test_long_tail_tiles_onset_to_onset() -> None:
    cfg = dataclasses.replace(SegmenterConfig(), tail_s=3.0, pad_s=0.0)
    cycles = segment(breathing(RATE, 14, BREATHS), [], cfg)
    for a, b in itertools.pairwise(cycles):
        assert a.end == b.start  # each cycle runs to the next breath's onset
    assert len(cycles) == len(BREATHS)


def test_band_must_fit_the_model_rate() -> None:
    with pytest.raises(ValueError, match="band_high_hz"):
        CycleSegmenter(dataclasses.replace(SegmenterConfig(), band_high_hz=2500), RATE)
