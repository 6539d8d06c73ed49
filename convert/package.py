"""Build, convert and package a CNN-LSTM: Keras model → full-integer int8 TFLite → model package.

Legacy tf_keras (`pip install --no-deps tf-keras` beside tensorflow-cpu) with batch size 1.
The LSTM is unrolled over its few time steps: measured on the same trained weights, the fused
int8 UNIDIRECTIONAL_SEQUENCE_LSTM agreed with the float model on 76% of validation windows, the
unrolled one (plain int8 FULLY_CONNECTED and element-wise ops) on 98%; ReLUs are capped at 6 so
the int8 activation ranges stay narrow, and so can the LSTM's cell state (`cell_clip`). No Flex /
Select-TF ops: the device runs plain LiteRT or tflite-runtime.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge.dsp.frontend import FrontendParams
from edge.dsp.segmenter import SegmenterConfig
from edge.pipeline.model import (
    MANIFEST_SCHEMA_VERSION,
    MIN_UPPER_EDGE_HZ,
    POOR_QUALITY_BELOW,
    POOR_RECORD_FRACTION,
    RECORD,
    RECORD_FRACTION,
    Classifier,
    Manifest,
    ModelRunner,
    TensorSpec,
    WindowSpec,
    sha256_of,
)
from edge.pipeline.self_test import SELFTEST_FILE, write_golden


@dataclass(frozen=True, kw_only=True)
class Decisions:
    """Everything between the network's outputs and what a ward sees, as the model's own: the
    manifest states each one (none left to a default the device happens to hold), and `why`
    says how each was chosen, so a reader of the manifest knows which were measured for this
    model and which were carried over."""

    thresholds: dict[str, float]  # per label, and the record fraction (always stated)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    poor_quality_below: float = POOR_QUALITY_BELOW
    min_upper_edge_hz: float = MIN_UPPER_EDGE_HZ
    poor_record_fraction: float = POOR_RECORD_FRACTION
    why: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def carried_over(cls, purpose: str) -> Decisions:
        """The values every model so far was chosen with, for a package nobody tuned."""
        return cls(thresholds={RECORD: RECORD_FRACTION},
                   why={"all": f"carried over, not chosen for this model ({purpose})"})


def keras() -> Any:
    import tf_keras

    return tf_keras


@functools.cache
def clipped_lstm_cell() -> type:
    """An LSTM cell whose cell state is clipped to ±cell_clip after every step (TFLite's own LSTM
    has the same `cell_clip`).

    Why: the int8 converter gives the cell state of each unrolled step its own range, and that
    range grows by one per step (|c_t| ≤ t, and trained models reach it: some units integrate).
    After 16 steps 256 levels cover ±16, a resolution of 0.125 where tanh is steepest. Measured
    on one 16-step model (seed 0, 12 epochs): int8 agreed with float on 97.8% of validation
    windows unclipped, 98.8% trained and converted clipped at ±4 (tanh(4) = 0.9993), at the
    same validation score. The clip is part of the float model too, so both compute the same
    function. On the 32 ms recipe of issue 24, ±4 still left the members under the trainer's
    99% bar (its 24 fold members, on new patients' windows: 98.3% on average, 5 of 24 at 99%);
    ±2 (tanh(2) = 0.96) halves the cell's int8 step: 98.9%, 14 of 24, at the same scores."""
    import tensorflow as tf

    cell: Any = keras().layers.LSTMCell

    class ClippedLSTMCell(cell):
        def __init__(self, units: int, cell_clip: float | None = None, **kwargs: Any) -> None:
            super().__init__(units, **kwargs)
            if self.dropout or self.recurrent_dropout:  # call() below would ignore them
                raise ValueError("ClippedLSTMCell has no dropout inside the cell; the model's "
                                 "Dropout follows the LSTM")
            self.cell_clip = cell_clip

        def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
            h, c = states
            z = tf.matmul(inputs, self.kernel) + tf.matmul(h, self.recurrent_kernel) + self.bias
            i, f, g, o = tf.split(z, 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            if self.cell_clip:
                c = tf.clip_by_value(c, -self.cell_clip, self.cell_clip)
            h = tf.sigmoid(o) * tf.tanh(c)
            return h, [h, c]

        def get_config(self) -> dict[str, Any]:
            return super().get_config() | {"cell_clip": self.cell_clip}

    return ClippedLSTMCell


def load_float(path: Path) -> Any:
    """A float model saved by the trainer (.h5)."""
    return keras().models.load_model(str(path), compile=False,
                                     custom_objects={"ClippedLSTMCell": clipped_lstm_cell()})


def build_cnn_lstm(frames: int, n_features: int, n_classes: int, *, filters: tuple[int, ...]
                   = (16, 32), lstm_units: int = 32, dropout: float = 0.3,
                   batch_size: int | None = None, unroll: bool = True,
                   relu_max: float | None = 6.0, time_pool: tuple[int, ...] | None = None,
                   cell_clip: float | None = None, name: str | None = None) -> Any:
    """Conv blocks over (time × features) → a sequence over time → LSTM → softmax.

    `time_pool` is each block's pooling along time (2 each by default; features always pool by
    2): it sets how many steps the LSTM runs, and every unrolled step is int8 rounding that
    accumulates in the cell state."""
    k = keras()
    inp = k.Input((frames, n_features, 1), batch_size=batch_size)
    x = inp
    for f, t in zip(filters, time_pool or (2,) * len(filters), strict=True):
        x = k.layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
        x = k.layers.BatchNormalization()(x)
        x = k.layers.ReLU(max_value=relu_max)(x)
        x = k.layers.MaxPool2D((t, 2))(x)
    x = k.layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]))(x)
    x = k.layers.RNN(clipped_lstm_cell()(lstm_units, cell_clip), unroll=unroll)(x)
    x = k.layers.Dropout(dropout)(x)
    out = k.layers.Dense(n_classes, activation="softmax")(x)
    return k.Model(inp, out, name=name)


def average(members: list[Any], batch_size: int | None = None) -> Any:
    """One graph whose output is the mean of the members' softmax outputs.

    Seeds of the same recipe make different mistakes; averaging them is the cheapest accuracy
    there is, and the device still runs one model file (ADD and MUL are int8 builtins)."""
    k = keras()
    inp = k.Input(members[0].input_shape[1:], batch_size=batch_size)
    return k.Model(inp, k.layers.Average()([m(inp) for m in members]), name="ensemble")


def members_of(model: Any) -> list[Any]:
    """The CNN-LSTMs an averaged model is made of; a single CNN-LSTM is its own member."""
    return [layer for layer in model.layers if hasattr(layer, "layers")] or [model]


def with_batch(model: Any, batch_size: int) -> Any:
    """A copy with a fixed batch size and the same weights (the device feeds batch 1)."""
    members = members_of(model)
    if members != [model]:
        return average([with_batch(m, batch_size) for m in members], batch_size)
    frames, n_features = model.input_shape[1], model.input_shape[2]
    copy = build_cnn_lstm(frames, n_features, model.output_shape[-1], batch_size=batch_size,
                          **arch_of(model))
    copy.set_weights(model.get_weights())
    return copy


def to_int8_tflite(model: Any, representative: np.ndarray) -> bytes:
    """Full-integer conversion (int8 in and out) calibrated on real training windows."""
    import tensorflow as tf

    def samples() -> Iterator[list[np.ndarray]]:
        for x in representative:
            yield [x[None, ..., None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(with_batch(model, 1))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = samples
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    # Measured on the 0.2.0 ensemble: the MLIR quantizer left the LSTM gate SPLIT in float
    # (DEQUANTIZE → SPLIT → QUANTIZE) in two of five members, depending on their weights; the
    # legacy quantizer quantizes every op. verify() refuses any float tensor.
    conv.experimental_new_quantizer = False
    return conv.convert()


def arch_of(model: Any) -> dict[str, Any]:
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    lstm = next(layer for layer in model.layers if layer.__class__.__name__ == "RNN")
    drop = next(layer for layer in model.layers if layer.__class__.__name__ == "Dropout")
    relu = next(layer for layer in model.layers if layer.__class__.__name__ == "ReLU")
    pools = [layer for layer in model.layers if layer.__class__.__name__ == "MaxPooling2D"]
    return {"filters": tuple(c.filters for c in convs), "lstm_units": lstm.cell.units,
            "time_pool": tuple(int(p.pool_size[0]) for p in pools),
            "cell_clip": lstm.cell.cell_clip, "dropout": drop.rate, "unroll": lstm.unroll,
            "relu_max": None if relu.max_value is None else float(relu.max_value)}


def member_files(n: int) -> list[str]:
    """The members' file names in a package: model.tflite alone, or one per member."""
    return ["model.tflite"] if n == 1 else [f"member-{i}.tflite" for i in range(n)]


def write_package(out: Path, tflite: bytes | Sequence[bytes], *, name: str, version: str,
                  labels: tuple[str, ...], frontend: FrontendParams, window: WindowSpec,
                  mean: np.ndarray, std: np.ndarray, training: dict[str, Any],
                  metrics: dict[str, Any], decisions: Decisions,
                  normalise: Literal["global", "stethoscope"] = "global",
                  golden: np.ndarray | None = None) -> Manifest:
    """Writes the members' .tflite files (one model, or several the device averages) and a
    manifest whose tensor specs are read back from them, with the decisions and how they were
    made (training["decisions"]); a .tflite left from an earlier package in OUT is removed,
    so the folder holds exactly what the manifest lists. `golden`: normalised windows the
    package ships with what it makes of them, for the device's self-test before it runs it."""
    from edge.pipeline.model import Member, _interpreter_class

    models = [tflite] if isinstance(tflite, bytes) else list(tflite)
    out.mkdir(parents=True, exist_ok=True)
    files = member_files(len(models))
    for stale in out.glob("*.tflite"):
        if stale.name not in files:
            stale.unlink()
    interpreter_cls, _ = _interpreter_class()
    members = []
    for file, model in zip(files, models, strict=True):
        (out / file).write_bytes(model)
        it = interpreter_cls(model_path=str(out / file))
        specs = []
        for d in (it.get_input_details()[0], it.get_output_details()[0]):
            scale, zero = d["quantization"]
            specs.append(TensorSpec(tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name,
                                    float(scale), int(zero)))
        members.append(Member(file=file, sha256=sha256_of(out / file), input=specs[0],
                              output=specs[1]))
    manifest = Manifest(name=name, version=version, labels=labels,
                        sample_rate=frontend.sample_rate, frontend=frontend, window=window,
                        members=tuple(members), feature_mean=tuple(float(v) for v in mean),
                        feature_std=tuple(float(v) for v in std), normalise=normalise,
                        training=training | {"decisions": decisions.why}, metrics=metrics,
                        thresholds={RECORD: RECORD_FRACTION} | decisions.thresholds,
                        segmenter=decisions.segmenter,
                        poor_quality_below=decisions.poor_quality_below,
                        min_upper_edge_hz=decisions.min_upper_edge_hz,
                        poor_record_fraction=decisions.poor_record_fraction,
                        schema_version=MANIFEST_SCHEMA_VERSION)
    manifest.check_consistent(str(out / "manifest.json"))
    (out / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    (out / SELFTEST_FILE).unlink(missing_ok=True)
    if golden is not None:
        write_golden(out, ModelRunner(out), golden)
    return manifest


def int8_probabilities(tflite: bytes | Any, windows: np.ndarray) -> np.ndarray:
    """The dequantized outputs of an int8 model (its bytes, or a loaded interpreter) for
    normalised windows (n, frames, features), one window at a time as the device invokes it:
    what verification compares with the float model and what the protocol scores."""
    from edge.pipeline.model import _interpreter_class

    if isinstance(tflite, bytes):
        interpreter_cls, _ = _interpreter_class()
        tflite = interpreter_cls(model_content=tflite)
        tflite.allocate_tensors()
    inp, out = tflite.get_input_details()[0], tflite.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    probs = np.empty((len(windows), int(out["shape"][-1])), dtype=np.float32)
    for i, w in enumerate(windows):
        q = np.clip(np.round(w / s_in + z_in), -128, 127).astype(np.int8)
        tflite.set_tensor(inp["index"], q.reshape(inp["shape"]))
        tflite.invoke()
        probs[i] = (tflite.get_tensor(out["index"])[0].astype(np.float32) - z_out) * s_out
    return probs


def op_names(tflite: bytes) -> list[str]:
    """Builtin op names in a model (for checks: int8 builtins only, no Flex ops)."""
    from edge.pipeline.model import _interpreter_class

    interpreter_cls, _ = _interpreter_class()
    it = interpreter_cls(model_content=tflite)
    return sorted({d["op_name"] for d in it._get_ops_details()})


class FloatMembers(Classifier):
    """A package's float members (report/float/seed-N.h5, kept beside it by the trainer)
    classifying exactly as its int8 runner does, windows to decision: what the int8 models
    are measured against on any recordings (`convert.evaluate --float/--agreement`)."""

    def __init__(self, package: Path) -> None:
        from edge.pipeline.model import load_manifest

        super().__init__(load_manifest(package))
        seeds = self.manifest.training.get("members")
        if not isinstance(seeds, dict):
            raise FileNotFoundError(f"{package}: its manifest names no float members "
                                    "(training.members); packages before 0.6.0 kept none")
        self.models = []
        for member in self.manifest.members:
            path = package / "report" / "float" / f"seed-{seeds[member.file]}.h5"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: the float member of {member.file} is "
                                        "missing")
            self.models.append(load_float(path))

    def window_probs(self, window: np.ndarray) -> np.ndarray:
        x = window[None, ..., None].astype(np.float32)
        return np.mean([np.asarray(m(x, training=False))[0] for m in self.models], axis=0)
