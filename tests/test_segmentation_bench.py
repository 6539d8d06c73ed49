"""The segmentation bench: its scoring, the dataset readers it uses, a run on real data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import segmentation as bench

from convert.datasets import DatasetError, iter_annotated, iter_sprsound
from edge.dsp.segmenter import SegmenterConfig


def test_iou_and_one_to_one_matching() -> None:
    assert bench.iou((0, 2), (1, 3)) == pytest.approx(1 / 3)
    assert bench.iou((0, 1), (2, 3)) == 0
    # One prediction covering two events matches at most one of them.
    assert len(bench.match([(0, 2)], [(0, 1), (1, 2)], 0.3)) == 1
    assert sorted(bench.match([(0, 1), (1, 2)], [(0, 1), (1, 2)], 0.5)) == [(0, 0), (1, 1)]


def test_score_counts_in_annotated_stretch_and_bias() -> None:
    c = bench.score_recording(preds=[(0.1, 1.1), (5.0, 6.0)], refs=[(0.0, 1.0), (1.5, 2.5)])
    assert (c.tp50, c.preds, c.preds_in_stretch, c.refs) == (1, 2, 1, 2)
    assert c.onset_bias == [pytest.approx(0.1)] and c.centre_hits == 1


def test_bad_annotation_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"record_annotation": "Normal", "event_annotation": '
                                     '[{"start": 1, "end": 2, "type": "Squeak"}]}')
    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match="unknown type 'Squeak'"):
        list(iter_sprsound(tmp_path))


def test_icbhi_format(tmp_path: Path) -> None:
    (tmp_path / "101_1b1_Al_sc_Meditron.txt").write_text("0.036\t0.579\t0\t0\n"
                                                          "0.579\t2.45\t1\t1\n")
    (tmp_path / "101_1b1_Al_sc_Meditron.wav").write_bytes(b"")
    (rec,) = list(iter_annotated(tmp_path))
    assert rec.patient == "101" and [e.label for e in rec.events] == ["normal", "both"]
    (tmp_path / "101_1b1_Al_sc_Meditron.txt").write_text("0.1\t0.5\t2\t0\n")
    with pytest.raises(DatasetError, match=r"Meditron\.txt:1: expected"):
        list(iter_annotated(tmp_path))


@pytest.mark.shared_data
def test_bench_runs_on_real_recordings(sprsound: Path) -> None:
    bench._CACHE["t"] = bench.load_split(sprsound / "test_inter", limit=20)
    counts, speed = bench.evaluate("t", SegmenterConfig(), None)
    assert counts.refs > 20 and counts.preds > 20
    _, _, f30 = bench.f1(counts.tp30, counts.preds, counts.refs)
    assert f30 > 0.3  # a regression guard, far under what the bench reports
    assert speed > 50
