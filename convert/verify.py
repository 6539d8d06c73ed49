"""Check a model package before it ships; exits non-zero, saying which check failed.

    python -m convert.verify MODEL_DIR [--float MEMBER.h5 ... --windows WINDOWS.npy]

Checks, for every member: only int8 builtin ops (no Flex / Select-TF, no custom ops) and no
float tensor anywhere in the graph; int8 input and output; and for the package: total size,
the manifest loads and agrees with the tensors (the runner's own checks), latency per window
(every member) in the interpreter installed here; and, given the float Keras members (in the
manifest's order) and real windows, top-1 agreement between int8 and float, each member alone
and averaged as the device averages them (≥ 99% each), and their largest probability
difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.pipeline.model import ModelError, ModelRunner

ALLOWED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D",
               "AVERAGE_POOL_2D", "RESHAPE", "SOFTMAX", "STRIDED_SLICE", "MEAN", "ADD", "MUL",
               "UNIDIRECTIONAL_SEQUENCE_LSTM", "QUANTIZE", "DEQUANTIZE", "CONCATENATION",
               "TRANSPOSE", "PACK", "UNPACK", "SPLIT", "TANH", "LOGISTIC", "RELU", "MINIMUM",
               "MAXIMUM"}
MAX_BYTES = 2_000_000  # every member together (issue 24's budget for the device)
MIN_AGREEMENT = 0.99


class VerificationError(RuntimeError):
    pass


def agreement(p_float: np.ndarray, p_int8: np.ndarray) -> dict[str, float]:
    agree = p_float.argmax(1) == p_int8.argmax(1)
    top2 = np.sort(p_float, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] >= 0.1  # the float model itself is not near a tie
    return {"agreement_top1": round(float(agree.mean()), 4),
            "agreement_where_float_margin_ge_0_1": round(float(agree[decided].mean()), 4)
            if decided.any() else 1.0,
            "max_prob_diff": round(float(np.abs(p_float - p_int8).max()), 4)}


def verify(package: Path, float_models: list[Path] | None = None,
           windows: np.ndarray | None = None, min_agreement: float = MIN_AGREEMENT
           ) -> dict[str, Any]:
    from convert.package import int8_probabilities, op_names

    runner = ModelRunner(package)  # manifest ↔ tensors, sha256
    m = runner.manifest
    failures = []
    ops: set[str] = set()
    total = 0
    for member, loaded in zip(m.members, runner.members, strict=True):
        tflite = (package / member.file).read_bytes()
        total += len(tflite)
        ops |= set(op_names(tflite))
        if member.input.dtype != "int8" or member.output.dtype != "int8":
            failures.append(f"{member.file}: input and output must be int8")
        interp = loaded.interpreter
        dtypes = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
        floats = sorted({d["op_name"] for d in interp._get_ops_details()
                         if any(dtypes.get(i) == np.float32
                                for i in [*d["inputs"], *d["outputs"]])})
        if floats:
            failures.append(f"{member.file}: not full-integer: ops with float tensors {floats} "
                            "(a quantizer fell back to float; see "
                            "convert.package.to_int8_tflite)")
    bad_ops = sorted(ops - ALLOWED_OPS)
    if bad_ops:
        failures.append(f"ops outside the int8 builtins allowed on the device: {bad_ops}")
    if total > MAX_BYTES:
        failures.append(f"the members are {total} bytes together, over {MAX_BYTES}")
    x = np.zeros(m.members[0].input.shape[1:3], dtype=np.float32)
    for _ in range(5):
        runner.window_probs(x)
    t = time.perf_counter()
    n = 200
    for _ in range(n):
        runner.window_probs(x)
    latency_ms = (time.perf_counter() - t) / n * 1000
    result: dict[str, Any] = {"ops": sorted(ops), "bytes": total, "members": len(m.members),
                              "runtime": runner.runtime,
                              "latency_ms_per_window": round(latency_ms, 3)}
    if float_models and windows is not None:
        from convert.package import load_float

        if len(float_models) != len(m.members):
            raise VerificationError(f"{len(float_models)} float model(s) for "
                                    f"{len(m.members)} member(s): give one per member, in "
                                    "the manifest's order")
        p_floats, p_int8s = [], []
        for path, member, loaded in zip(float_models, m.members, runner.members, strict=True):
            p_float = load_float(path).predict(windows[..., None], batch_size=256, verbose=0)
            p_int8 = int8_probabilities(loaded.interpreter, windows)
            checks = agreement(p_float, p_int8)
            result.setdefault("per_member", {})[member.file] = checks
            if checks["agreement_top1"] < min_agreement:
                failures.append(f"{member.file}: int8 and float agree on "
                                f"{checks['agreement_top1']:.1%} of windows, under "
                                f"{min_agreement:.1%}")
            p_floats.append(p_float)
            p_int8s.append(p_int8)
        averaged = agreement(np.mean(p_floats, axis=0), np.mean(p_int8s, axis=0))
        result.update(averaged, windows=len(windows), min_agreement=min_agreement)
        if averaged["agreement_top1"] < min_agreement:
            failures.append(f"the members averaged: int8 and float agree on "
                            f"{averaged['agreement_top1']:.1%} of windows, under "
                            f"{min_agreement:.1%}")
    if failures:
        raise VerificationError("; ".join(failures))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--float", dest="float_models", type=Path, nargs="+",
                    help="the float members (.h5), in the manifest's order")
    ap.add_argument("--windows", type=Path, help=".npy of normalised windows")
    ap.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT)
    args = ap.parse_args()
    try:
        result = verify(args.package, args.float_models,
                        np.load(args.windows) if args.windows else None, args.min_agreement)
    except (VerificationError, ModelError) as exc:
        print(f"verification FAILED: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
