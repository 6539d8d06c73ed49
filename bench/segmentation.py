"""How well the streaming segmenter finds annotated breathing cycles, and how fast it runs.

Runs the device's own resampler and CycleSegmenter (as configured) over annotated recordings —
SPRSound events and ICBHI cycles — and matches its cycles to the annotations one-to-one by IoU.
Prints one row per split.

`--tune N` first runs a seeded random search over segmenter settings on TRAINING recordings only
(`--tune-on`, default SPRSound train and ICBHI train, i.e. every annotation the classifier is
trained on) maximising the mean of their F1 at IoU ≥ 0.5, and reports with the best settings
(copy them into SegmenterConfig's defaults when they win).

    python bench/segmentation.py [--data ../shared/data] [--splits sprsound/test_inter ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convert.datasets import iter_annotated
from edge.dsp.frontend import FrontendParams
from edge.dsp.resample import StreamingResampler
from edge.dsp.segmenter import CycleSegmenter, SegmenterConfig
from edge.sources.audio_file import read_audio

MODEL_RATE = FrontendParams().sample_rate


@dataclass
class Counts:
    refs: int = 0
    preds: int = 0
    preds_in_stretch: int = 0
    tp50: int = 0
    tp30: int = 0
    tp50_in_stretch: int = 0
    centre_hits: int = 0
    onset_bias: list[float] = dataclasses.field(default_factory=list)
    offset_bias: list[float] = dataclasses.field(default_factory=list)

    def add(self, other: Counts) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = min(a[1], b[1]) - max(a[0], b[0])
    if inter <= 0:
        return 0.0
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def match(preds: list[tuple[float, float]], refs: list[tuple[float, float]],
          threshold: float) -> list[tuple[int, int]]:
    """One-to-one matches with IoU ≥ threshold, best pairs first."""
    pairs = sorted(((iou(p, r), i, j) for i, p in enumerate(preds) for j, r in enumerate(refs)),
                   reverse=True)
    used_p: set[int] = set()
    used_r: set[int] = set()
    out = []
    for value, i, j in pairs:
        if value < threshold:
            break
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
            out.append((i, j))
    return out


def score_recording(preds: list[tuple[float, float]],
                    refs: list[tuple[float, float]]) -> Counts:
    c = Counts(refs=len(refs), preds=len(preds))
    lo, hi = refs[0][0], refs[-1][1]
    inside = [i for i, p in enumerate(preds) if lo <= (p[0] + p[1]) / 2 <= hi]
    c.preds_in_stretch = len(inside)
    m50 = match(preds, refs, 0.5)
    c.tp50 = len(m50)
    c.tp50_in_stretch = sum(1 for i, _ in m50 if i in set(inside))
    m30 = match(preds, refs, 0.3)
    c.tp30 = len(m30)
    c.onset_bias = [preds[i][0] - refs[j][0] for i, j in m30]
    c.offset_bias = [preds[i][1] - refs[j][1] for i, j in m30]
    c.centre_hits = sum(any(p[0] <= (r[0] + r[1]) / 2 <= p[1] for p in preds) for r in refs)
    return c


def f1(tp: int, n_pred: int, n_ref: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_ref if n_ref else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


# -- data ---------------------------------------------------------------------------------------
_CACHE: dict[str, list[tuple[np.ndarray, list[tuple[float, float]]]]] = {}


def load_split(folder: Path, limit: int | None, seed: int = 0) -> list:
    """Annotated recordings at the model rate (poor-quality ones, with no events, are left out:
    there is nothing to match)."""
    recs = [r for r in iter_annotated(folder) if r.events]
    if limit and limit < len(recs):
        rng = np.random.default_rng(seed)
        recs = [recs[i] for i in sorted(rng.choice(len(recs), limit, replace=False))]
    out = []
    for r in recs:
        x, sr = read_audio(r.audio)
        rs = StreamingResampler(sr, MODEL_RATE)
        y = np.concatenate([rs.process(x), rs.flush()])
        out.append((y, [(e.start_s, e.end_s) for e in r.events]))
    return out


def _segment(args: tuple[str, int, SegmenterConfig]) -> tuple[Counts, float, float]:
    split, index, cfg = args
    audio, refs = _CACHE[split][index]
    seg = CycleSegmenter(cfg, MODEL_RATE)
    t = time.perf_counter()
    cycles = seg.process(audio) + seg.flush()
    elapsed = time.perf_counter() - t
    preds = [(c.start_s, c.end_s) for c in cycles]
    return score_recording(preds, refs), elapsed, len(audio) / MODEL_RATE


def evaluate(split: str, cfg: SegmenterConfig, pool: multiprocessing.pool.Pool | None,
             limit: int | None = None) -> tuple[Counts, float]:
    jobs = [(split, i, cfg) for i in range(len(_CACHE[split]))][:limit]
    results = pool.map(_segment, jobs, chunksize=8) if pool else list(map(_segment, jobs))
    total = Counts()
    cpu = audio = 0.0
    for c, e, a in results:
        total.add(c)
        cpu += e
        audio += a
    return total, audio / cpu if cpu else 0.0


def row(name: str, c: Counts, speed: float) -> list[str]:
    p50, r50, f50 = f1(c.tp50, c.preds, c.refs)
    _, _, f30 = f1(c.tp30, c.preds, c.refs)
    p_in = c.tp50_in_stretch / c.preds_in_stretch if c.preds_in_stretch else 0.0
    on = np.array(c.onset_bias) if c.onset_bias else np.zeros(1)
    off = np.array(c.offset_bias) if c.offset_bias else np.zeros(1)
    return [name, str(c.refs), str(c.preds), f"{p50:.3f}", f"{r50:.3f}", f"{f50:.3f}",
            f"{f30:.3f}", f"{p_in:.3f}", f"{c.centre_hits / max(c.refs, 1):.3f}",
            f"{np.median(on):+.3f}", f"{np.median(off):+.3f}", f"{speed:,.0f}×"]


HEADER = ["split", "events", "cycles", "P@.5", "R@.5", "F1@.5", "F1@.3", "P@.5 in-annot",
          "centre hit", "onset bias s", "offset bias s", "x-real-time"]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for r in [HEADER, ["-" * w for w in widths], *rows]:
        print(" | ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))


def tune(base: SegmenterConfig, splits: list[str], trials: int, seed: int,
         pool: multiprocessing.pool.Pool) -> SegmenterConfig:
    def objective(cfg: SegmenterConfig) -> float:
        scores = []
        for split in splits:
            c, _ = evaluate(split, cfg, pool)
            scores.append(f1(c.tp50, c.preds, c.refs)[2])
        return float(np.mean(scores))

    rng = np.random.default_rng(seed)
    best, best_score = base, objective(base)
    print(f"start: mean F1@.5 {best_score:.3f} over {', '.join(splits)}", flush=True)
    space = {
        "band_low_hz": (80, 300), "band_high_hz": (500, 1900), "smooth_ms": (40, 500),
        "floor_window_s": (1.5, 12), "floor_quantile": (0.05, 0.5), "on_db": (1, 10),
        "off_db": (0, 6), "min_cycle_s": (0.1, 0.8), "merge_gap_s": (0, 0.6),
        "pad_s": (0, 0.6), "max_cycle_s": (2.0, 8.0), "tail_s": (0, 4.0),
    }
    for t in range(trials):
        # Half the trials explore, half refine around the best so far.
        values = {}
        for k, (lo, hi) in space.items():
            if t % 2 == 0:
                values[k] = float(rng.uniform(lo, hi))
            else:
                values[k] = float(np.clip(getattr(best, k) + rng.normal(0, (hi - lo) / 10),
                                          lo, hi))
        values["off_db"] = min(values["off_db"], values["on_db"])
        values["max_cycle_s"] = max(values["max_cycle_s"], 2 * values["min_cycle_s"])
        cfg = dataclasses.replace(base, **{k: round(v, 3) for k, v in values.items()})
        score = objective(cfg)
        if score > best_score:
            best, best_score = cfg, score
            print(f"trial {t}: mean F1@.5 {score:.3f} {values}", flush=True)
    return best


def main() -> int:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "LUNGEDGE_SHARED_DATA", here.parent / "shared" / "data")),
        help="folder holding sprsound/ and icbhi/ (env LUNGEDGE_SHARED_DATA)")
    ap.add_argument("--splits", nargs="+", default=[
        "sprsound/train", "icbhi/train", "sprsound/test_intra", "sprsound/test_inter"],
        help="annotated folders under --data to report on (SPRSound or ICBHI format)")
    ap.add_argument("--limit", type=int, default=None, help="recordings per split (seeded)")
    ap.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                    help="random-search segmenter settings on --tune-on first")
    ap.add_argument("--tune-on", nargs="+", default=["sprsound/train", "icbhi/train"],
                    help="TRAINING folders to tune on (never a test split)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    for split in {*args.splits, *args.tune_on}:
        if not (args.data / split).is_dir():
            print(f"{args.data / split} not found: pass --data or set LUNGEDGE_SHARED_DATA",
                  file=sys.stderr)
            return 2
    if any("test" in s for s in args.tune_on):
        print("refusing to tune on a test split", file=sys.stderr)
        return 2
    cfg = SegmenterConfig()
    ctx = multiprocessing.get_context("fork")
    for split in {*args.splits, *(args.tune_on if args.tune else [])}:
        _CACHE[split] = load_split(args.data / split, args.limit)
    with ctx.Pool(args.jobs) as pool:
        if args.tune:
            cfg = tune(cfg, args.tune_on, args.tune, 0, pool)
            print("best:", {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
        rows = []
        for split in args.splits:
            counts, _ = evaluate(split, cfg, pool)
            _, speed = evaluate(split, cfg, None, limit=50)  # one process: true speed
            rows.append(row(split, counts, speed))
    seg = CycleSegmenter(cfg, MODEL_RATE)
    print(f"\nsegmenter: {cfg}\nmodel rate {MODEL_RATE} Hz; a cycle is emitted at most "
          f"{seg.latency_s:.2f} s after its end ({seg.forced_cut_latency_s:.2f} s after a forced "
          "cut)\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
