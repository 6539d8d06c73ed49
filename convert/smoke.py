"""A tiny int8 CNN-LSTM from the shipped sample recordings: a valid model package in a minute.

Not a classifier to trust: it exists so the daemon's tests and the toolchain's smoke test have a
real int8 model with a real manifest, built by the same code as the shipped model.

    python -m convert.smoke OUT_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from convert.datasets import LABELS, iter_sprsound
from convert.features import event_features, normalisation, windows_of
from convert.package import Decisions, build_cnn_lstm, to_int8_tflite, write_package
from edge.dsp.frontend import FrontendParams
from edge.pipeline.model import WindowSpec

SAMPLES = Path(__file__).resolve().parents[1] / "models" / "samples"


def build(out: Path, seed: int = 0, members: int = 1) -> None:
    import tensorflow as tf

    frontend = FrontendParams()
    window = WindowSpec(frames=64, hop_frames=32, pad="repeat", aggregate="mean")
    feats, labels, _ = event_features(iter_sprsound(SAMPLES), frontend)
    mean, std = normalisation(feats)
    x, y, _ = windows_of(feats, labels, window, mean, std)
    tflites = []
    for s in range(seed, seed + members):
        tf.keras.utils.set_random_seed(s)
        model = build_cnn_lstm(window.frames, frontend.n_features, len(LABELS), filters=(8, 16),
                               lstm_units=16)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x[..., None], y, epochs=1, batch_size=16, verbose=0)
        tflites.append(to_int8_tflite(model, x[:64]))
    write_package(out, tflites, name="lungedge-smoke", version="0.0.1",
                  labels=LABELS, frontend=frontend, window=window, mean=mean, std=std,
                  training={"data": "models/samples (3 SPRSound test_inter recordings)",
                            "epochs": 1, "seeds": list(range(seed, seed + members)),
                            "purpose": "tests only; not a classifier"},
                  metrics={}, decisions=Decisions.carried_over("the tests' smoke package"),
                  golden=x[:8])
    print(f"wrote {out}: {members} member(s), manifest.json ({len(x)} windows, "
          f"{np.bincount(y, minlength=4).tolist()} per label)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--members", type=int, default=1,
                    help="networks (seeds) in the package, averaged by the device")
    args = ap.parse_args()
    build(args.out, args.seed, args.members)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
