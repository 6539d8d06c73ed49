"""Check a model package before it ships; exits non-zero, saying which check failed.

    python -m convert.verify MODEL_DIR [--float FLOAT.h5 --windows WINDOWS.npy]

Checks: only int8 builtin ops (no Flex / Select-TF, no custom ops) and no float tensor anywhere in
the graph; int8 input and output; size;
the manifest loads and agrees with the tensors (the runner's own checks); latency per window in
the interpreter installed here; and, given the float Keras model and real windows, top-1
agreement between the int8 and float models (≥ 99%) and their largest probability difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.model import ModelError, ModelRunner

ALLOWED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D",
               "AVERAGE_POOL_2D", "RESHAPE", "SOFTMAX", "STRIDED_SLICE", "MEAN", "ADD", "MUL",
               "UNIDIRECTIONAL_SEQUENCE_LSTM", "QUANTIZE", "DEQUANTIZE", "CONCATENATION",
               "TRANSPOSE", "PACK", "UNPACK", "SPLIT", "TANH", "LOGISTIC", "RELU", "MINIMUM",
               "MAXIMUM"}
MAX_BYTES = 1_000_000
MIN_AGREEMENT = 0.99


class VerificationError(RuntimeError):
    pass


def verify(package: Path, float_model: Path | None = None, windows: np.ndarray | None = None,
           min_agreement: float = MIN_AGREEMENT) -> dict[str, Any]:
    from convert.package import op_names

    tflite = (package / "model.tflite").read_bytes()
    runner = ModelRunner(package)  # manifest ↔ tensors, sha256
    ops = op_names(tflite)
    failures = []
    bad_ops = sorted(set(ops) - ALLOWED_OPS)
    if bad_ops:
        failures.append(f"ops outside the int8 builtins allowed on the device: {bad_ops}")
    if len(tflite) > MAX_BYTES:
        failures.append(f"model is {len(tflite)} bytes, over {MAX_BYTES}")
    m = runner.manifest
    if m.input.dtype != "int8" or m.output.dtype != "int8":
        failures.append("input and output must be int8")
    interp = runner.interpreter
    dtypes = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
    floats = sorted({d["op_name"] for d in interp._get_ops_details()
                     if any(dtypes.get(i) == np.float32 for i in [*d["inputs"], *d["outputs"]])})
    if floats:
        failures.append(f"not full-integer: ops with float tensors {floats} (a quantizer fell "
                        "back to float; see convert.package.to_int8_tflite)")
    x = np.zeros(m.input.shape, dtype=np.int8)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    for _ in range(5):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
    t = time.perf_counter()
    n = 200
    for _ in range(n):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
    latency_ms = (time.perf_counter() - t) / n * 1000
    result: dict[str, Any] = {"ops": ops, "bytes": len(tflite), "runtime": runner.runtime,
                              "latency_ms_per_window": round(latency_ms, 3)}
    if float_model is not None and windows is not None:
        from convert.package import load_float

        model = load_float(float_model)
        p_float = model.predict(windows[..., None], batch_size=256, verbose=0)
        p_int8 = []
        for w in windows:
            interp.set_tensor(inp["index"], runner.quantize(w).reshape(m.input.shape))
            interp.invoke()
            p_int8.append(runner.dequantize(interp.get_tensor(out["index"])[0]))
        p_int8 = np.asarray(p_int8)
        agree = p_float.argmax(1) == p_int8.argmax(1)
        top2 = np.sort(p_float, axis=1)[:, -2:]
        decided = top2[:, 1] - top2[:, 0] >= 0.1  # the float model itself is not near a tie
        result.update(agreement_top1=round(float(agree.mean()), 4),
                      agreement_where_float_margin_ge_0_1=round(float(agree[decided].mean()), 4),
                      max_prob_diff=round(float(np.abs(p_float - p_int8).max()), 4),
                      windows=len(windows), min_agreement=min_agreement)
        if agree.mean() < min_agreement:
            failures.append(f"int8 and float models agree on {agree.mean():.1%} of windows, "
                            f"under {min_agreement:.1%}")
    if failures:
        raise VerificationError("; ".join(failures))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--float", dest="float_model", type=Path)
    ap.add_argument("--windows", type=Path, help=".npy of normalised windows")
    ap.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT)
    args = ap.parse_args()
    try:
        result = verify(args.package, args.float_model,
                        np.load(args.windows) if args.windows else None, args.min_agreement)
    except (VerificationError, ModelError) as exc:
        print(f"verification FAILED: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
