"""Model packages (manifest.json + its int8 .tflite members) and the runner that classifies cycles.

The manifest is the contract between training and the device: labels, sample rate, the exact
frontend parameters, how a cycle becomes fixed-size windows and how their outputs combine, and
the tensors' quantization. The runner refuses a package whose manifest and model disagree, naming
the mismatch, so a model can never silently see features it was not trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge.dsp.frontend import FrontendParams
from edge.dsp.segmenter import SegmenterConfig
from edge.loader import ValidationError, build, complete, setting
from edge.native import quiet_stderr
from edge.pipeline.calibration import Calibration, CalibrationError
from edge.pipeline.calibration import load as load_calibration
from edge.pipeline.signature import SignatureRefused, Signed, verify_package

log = logging.getLogger(__name__)

# 2 added frontend.features (MFCC or log mel), 3 frontend.band_norm and band_norm_s, 4 the
# members (several int8 networks averaged at run time, each with its own file, checksum and
# quantization, where 1–3 had one model.tflite described by input, output and sha256) and
# normalise. An older manifest predates them and still loads, with what its models took (MFCC;
# no band normalisation; one member): a software update must not strand a deployed model.
# 5 added the segmenter's settings and the quality cut: they decide which cycles the model hears
# and which of its calls count, so they travel with it; an older manifest gets the values every
# model before 5 ran with (the operator's config held them then, at these defaults).
MANIFEST_SCHEMA_VERSION = 5
READABLE_SCHEMA_VERSIONS = (1, 2, 3, 4, 5)
FRONTEND_BEFORE_SCHEMA = {2: {"band_norm": "none", "band_norm_s": 10.0},
                          1: {"features": "mfcc", "band_norm": "none", "band_norm_s": 10.0}}
# The one threshold a manifest may carry: the summed probability of the adventitious classes at
# which a cycle is called adventitious. Chosen on validation, because the argmax's implicit
# operating point is set by the training class balance, not by what screening needs.
ADVENTITIOUS = "adventitious"
# The share of a recording's good cycles that must be adventitious for the recording to be:
# it depends on how often the model calls a normal cycle adventitious, so it is chosen on
# validation recordings with the model and travels with it (RECORD_FRACTION where none is).
RECORD = "record_fraction"
RECORD_FRACTION = 0.2
# The share of a recording's cycles that could not be judged that makes it "poor quality".
POOR_RECORD_FRACTION = 0.5
# A cycle of lower signal quality (edge.dsp.quality) is poor, not evidence: the value every
# model so far was chosen with, and what a manifest that does not say gets.
POOR_QUALITY_BELOW = 0.3
# The upper edge a stethoscope's channel must reach for a model to hear crackles, for a manifest
# that does not say: what 0.6.0's training stethoscopes pass, less a margin (the trainer
# measures its own, convert/channel_edge.py: SPRSound's Yunting II reaches 450–700 Hz,
# ICBHI's 0.45–1.8 kHz; a low-pass at 250 Hz leaves about 320–400 Hz).
MIN_UPPER_EDGE_HZ = 420.0
# Which labels show which finding (the alert kinds and the record label's CAS/DAS), for a
# manifest that does not say: the four-class models' convention.
DEFAULT_FINDINGS: dict[str, tuple[str, ...]] = {"wheeze": ("wheeze", "both"),
                                                "crackle": ("crackle", "both")}


class ModelError(ValueError):
    """A model package that cannot be used; the message names the file and the mismatch."""


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: Literal["int8"]
    scale: float
    zero_point: int


@dataclass(frozen=True)
class WindowSpec:
    frames: int  # feature frames per model input window
    hop_frames: int  # between windows over a longer cycle
    pad: Literal["zeros", "repeat"]  # a short cycle: zeros (the mean, after normalising) or tiled
    aggregate: Literal["mean", "max"]  # how the windows' probabilities combine


@dataclass(frozen=True)
class Member:
    """One int8 network of a package. Each member is converted, calibrated and verified on its
    own, so each has its own quantization; the runner averages their outputs."""

    file: str  # inside the package, e.g. "model.tflite"
    sha256: str
    input: TensorSpec
    output: TensorSpec


@dataclass(frozen=True, kw_only=True)
class Manifest:
    name: str
    version: str
    labels: tuple[str, ...]
    sample_rate: int
    frontend: FrontendParams = field(metadata=complete("every frontend parameter, pinned"))
    window: WindowSpec
    members: tuple[Member, ...]
    feature_mean: tuple[float, ...]  # per-feature normalisation before quantizing
    feature_std: tuple[float, ...]
    # "stethoscope": trained on features standardised by each stethoscope's own statistics; a
    # device calibrated on its stethoscope (`lungedge calibrate`) uses that stethoscope's, an
    # uncalibrated one feature_mean/feature_std (every training stethoscope pooled)
    normalise: Literal["global", "stethoscope"] = "global"
    training: dict[str, Any] = field(default_factory=dict)  # data, split, seeds: provenance
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    findings: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_FINDINGS))
    # which stretches of audio become the cycles the model hears (tuned on training recordings)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig, metadata=complete(
        "every segmenter setting, pinned"))
    poor_quality_below: float = setting(
        POOR_QUALITY_BELOW, "A cycle whose signal quality is below this is poor: not evidence "
                            "for an alert, a burden or a record label.", ge=0, le=1)
    min_upper_edge_hz: float = setting(
        MIN_UPPER_EDGE_HZ, "A stethoscope whose channel passes nothing above this "
                           "(edge.dsp.bandwidth) hides what the model needs to hear crackles: "
                           "its cycles are not judged (edge.pipeline.signal_judgement).",
        ge=0, le=24000)
    poor_record_fraction: float = setting(
        POOR_RECORD_FRACTION, "A session with this share of its cycles unjudged (poor quality, "
                              "clipping, a band-limited channel, noise) is 'poor quality', "
                              "whatever the rest say.", gt=0, le=1)
    schema_version: int = MANIFEST_SCHEMA_VERSION

    @property
    def record_fraction(self) -> float:
        """The share of a session's good cycles that makes its record adventitious."""
        return self.thresholds.get(RECORD, RECORD_FRACTION)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        d["members"] = [dataclasses.asdict(m) for m in self.members]
        for member in d["members"]:
            for key in ("input", "output"):
                member[key]["shape"] = list(member[key]["shape"])
        d["feature_mean"] = list(self.feature_mean)
        d["feature_std"] = list(self.feature_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest.json") -> Manifest:
        """A manifest from its parsed JSON; every problem names the key path under `where`."""
        if not isinstance(d, dict):
            raise ModelError(f"{where}: expected a JSON object")
        version = d.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise ModelError(f"{where}: schema_version {version!r}; this lungedge reads "
                             f"{list(READABLE_SCHEMA_VERSIONS)}: update lungedge to run this "
                             "model")
        if isinstance(d.get("frontend"), dict):
            d = d | {"frontend": FRONTEND_BEFORE_SCHEMA.get(version, {}) | d["frontend"]}
        if version < 5:  # the operator's config decided these then, at today's defaults
            d = {"segmenter": dataclasses.asdict(SegmenterConfig()),
                 "poor_quality_below": POOR_QUALITY_BELOW} | d
        else:
            missing = [k for k in ("segmenter", "poor_quality_below") if k not in d]
            if missing:
                raise ModelError(f"{where}: missing key(s) {missing}: a schema-5 manifest "
                                 "carries the segmenter and the quality cut its model was "
                                 "chosen with")
        if version < 4:  # one model.tflite, described at the top level
            d = {k: v for k, v in d.items() if k not in ("input", "output", "sha256")} | {
                "members": [{"file": "model.tflite"} | {k: d[k] for k in ("sha256", "input",
                                                                         "output") if k in d}]}
        try:
            m = build(cls, d | {"schema_version": MANIFEST_SCHEMA_VERSION}, source=where)
        except ValidationError as exc:
            raise ModelError(str(exc)) from None
        m.check_consistent(where)
        return m

    def check_consistent(self, where: str) -> None:
        problems = []
        if self.sample_rate != self.frontend.sample_rate:
            problems.append(f"sample_rate {self.sample_rate} ≠ frontend.sample_rate "
                            f"{self.frontend.sample_rate}")
        n = self.frontend.n_features
        if len(self.feature_mean) != n or len(self.feature_std) != n:
            problems.append(f"feature_mean/feature_std need {n} values (frontend features)")
        if any(s <= 0 for s in self.feature_std):
            problems.append("feature_std must be > 0")
        if not self.members:
            problems.append("members: a package needs at least one model")
        files = [m.file for m in self.members]
        if len(set(files)) != len(files):
            problems.append(f"members: a file named twice in {files}")
        for i, member in enumerate(self.members):
            shape = member.input.shape
            if len(shape) not in (3, 4) or shape[0] != 1 or shape[1] != self.window.frames \
                    or shape[2] != n or (len(shape) == 4 and shape[3] != 1):
                problems.append(f"members[{i}].input.shape {list(shape)} should be [1, "
                                f"window.frames ({self.window.frames}), features ({n})] or "
                                "with a trailing 1")
            if tuple(member.output.shape) != (1, len(self.labels)):
                problems.append(f"members[{i}].output.shape {list(member.output.shape)} "
                                f"should be [1, {len(self.labels)}] (one per label)")
            if Path(member.file).name != member.file or not member.file.endswith(".tflite"):
                problems.append(f"members[{i}].file {member.file!r}: a .tflite file name "
                                "inside the package, without a folder")
        if not 1 <= self.window.hop_frames <= self.window.frames:
            problems.append("window.hop_frames must be in 1…window.frames")
        unknown = sorted(set(self.thresholds) - {ADVENTITIOUS, RECORD})
        if unknown:
            problems.append(f"thresholds: unknown key(s) {unknown}; only {ADVENTITIOUS!r} "
                            f"and {RECORD!r}")
        if "normal" not in self.labels and self.thresholds:
            problems.append("thresholds need a 'normal' label")
        for key in (ADVENTITIOUS, RECORD):
            t = self.thresholds.get(key)
            if t is not None and not 0 < t < 1:
                problems.append(f"thresholds.{key} must be in (0, 1), got {t}")
        unknown_kinds = sorted(set(self.findings) - set(DEFAULT_FINDINGS))
        if unknown_kinds:
            problems.append(f"findings: unknown kind(s) {unknown_kinds}; the device alerts on "
                            f"{sorted(DEFAULT_FINDINGS)}")
        for kind, labels in self.findings.items():
            if set(labels) - set(self.labels):
                problems.append(f"findings.{kind}: {sorted(set(labels) - set(self.labels))} "
                                f"not among the labels {list(self.labels)}")
        if problems:
            raise ModelError(f"{where}: " + "; ".join(problems))


SHIPPED = "lungedge-cnnlstm"


def shipped_model() -> Path | None:
    """The model package that ships with lungedge: in the source tree (a checkout, an editable
    install, wherever its virtualenv is), or where install.sh puts it (the models folder beside
    the virtualenv, /opt/lungedge/models); None where none is. (It looked in edge/models/,
    which does not exist, and found the model only because the venv sat in the checkout.)"""
    for folder in (Path(__file__).resolve().parents[2] / "models",
                   Path(sys.prefix).parent / "models", Path("/opt/lungedge/models")):
        if (folder / SHIPPED / "manifest.json").is_file():
            return folder / SHIPPED
    return None


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def signed_by(package: Path, trusted_keys: Sequence[str]) -> Signed:
    """The package's signature by one of the trusted keys, or a ModelError saying why not."""
    try:
        return verify_package(package, trusted_keys)
    except SignatureRefused as exc:
        raise ModelError(str(exc)) from None


def load_manifest(package: Path) -> Manifest:
    path = package / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: not found; a model package is a folder holding "
                         "manifest.json and the .tflite files it lists") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not readable JSON ({exc})") from None
    return Manifest.from_dict(data, where=str(path))


def _interpreter_class() -> tuple[Any, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError:
        raise ModelError("no TFLite interpreter installed: `pip install 'lungedge[litert]'` "
                         "(or 'lungedge[tflite]' for tflite-runtime with numpy<2)") from None


def cycle_windows(features: np.ndarray, window: WindowSpec, mean: np.ndarray,
                  std: np.ndarray) -> np.ndarray:
    """A cycle's (frames, features) → (n, window.frames, features), normalised.

    The one definition of windowing: the trainer builds its examples with it, the device its
    model inputs, so both see a cycle the same way."""
    x = (features - mean) / std
    n = len(x)
    if n < window.frames:
        if window.pad == "repeat" and n > 0:
            x = np.tile(x, (int(np.ceil(window.frames / n)), 1))[:window.frames]
        else:
            x = np.pad(x, ((0, window.frames - n), (0, 0)))
        return x[None].astype(np.float32)
    starts = list(range(0, n - window.frames + 1, window.hop_frames))
    if starts[-1] != n - window.frames:  # cover the cycle's end too
        starts.append(n - window.frames)
    return np.stack([x[s:s + window.frames] for s in starts]).astype(np.float32)


def combine_windows(probs: np.ndarray, aggregate: str) -> np.ndarray:
    """A cycle's probabilities from its windows' (n, labels): their mean, or each label's
    maximum renormalised. The device and the trainer's scoring both call this."""
    p = probs.mean(axis=0) if aggregate == "mean" else probs.max(axis=0)
    return p / max(float(p.sum()), 1e-9)


def decide(probs: np.ndarray, labels: tuple[str, ...], thresholds: dict[str, float]
           ) -> np.ndarray:
    """Label indices for rows of class probabilities: the argmax, unless the manifest sets an
    adventitious threshold; then normal vs adventitious is decided by it and the most probable
    adventitious class names the cycle. The device and the threshold search both call this."""
    probs = np.atleast_2d(probs)
    t = thresholds.get(ADVENTITIOUS)
    if t is None:
        return probs.argmax(1)
    normal = labels.index("normal")
    rest = np.array(probs, dtype=np.float64)
    rest[:, normal] = -1.0
    return np.where(1.0 - probs[:, normal] >= t, rest.argmax(1), normal)


@dataclass(frozen=True)
class Prediction:
    label: str
    probs: dict[str, float]
    confidence: float
    windows: int


class LoadedMember:
    """One member's interpreter, its tensors checked against the manifest: it quantizes a
    window with its own input scale and returns its dequantized probabilities."""

    def __init__(self, package: Path, member: Member, num_threads: int) -> None:
        path = package / member.file
        if not path.is_file():
            raise ModelError(f"{path}: not found (the manifest lists it as a member)")
        digest = sha256_of(path)
        if digest != member.sha256:
            raise ModelError(f"{path}: sha256 {digest[:12]}… does not match the manifest's "
                             f"{member.sha256[:12]}…: model and manifest come from different "
                             "builds")
        interpreter_cls, self.runtime = _interpreter_class()
        try:
            with quiet_stderr():  # TFLite's "INFO: Created … XNNPACK delegate" on every load
                self.interpreter = interpreter_cls(model_path=str(path),
                                                   num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: not a loadable TFLite model ({exc})") from None
        self.spec = member
        self._check_tensors(path)

    def _check_tensors(self, path: Path) -> None:
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(f"{path}: expected one input and one output tensor, found "
                             f"{len(inp)} and {len(out)}")
        self._in, self._out = inp[0], out[0]
        for name, detail, spec in (("input", self._in, self.spec.input),
                                   ("output", self._out, self.spec.output)):
            shape = tuple(int(v) for v in detail["shape"])
            dtype = np.dtype(detail["dtype"]).name
            scale, zero = detail["quantization"]
            problems = []
            if shape != spec.shape:
                problems.append(f"shape {list(shape)} ≠ manifest {list(spec.shape)}")
            if dtype != spec.dtype:
                problems.append(f"dtype {dtype} ≠ manifest {spec.dtype}")
            if not np.isclose(scale, spec.scale, rtol=1e-5, atol=0) or zero != spec.zero_point:
                problems.append(f"quantization (scale {scale:.6g}, zero point {zero}) ≠ "
                                f"manifest ({spec.scale:.6g}, {spec.zero_point})")
            if problems:
                raise ModelError(f"{path}: {name} tensor " + "; ".join(problems))

    def __call__(self, window: np.ndarray) -> np.ndarray:
        """A normalised window's probabilities."""
        s = self.spec.input
        q = np.clip(np.round(window / s.scale + s.zero_point), -128, 127).astype(np.int8)
        self.interpreter.set_tensor(self._in["index"], q.reshape(s.shape))
        self.interpreter.invoke()
        o = self.spec.output
        return (self.interpreter.get_tensor(self._out["index"])[0].astype(np.float32)
                - o.zero_point) * o.scale


class Classifier:
    """What turns a cycle's features into a label as a package's manifest says: its windows,
    normalised, each window's probabilities, the windows combined, the decision at the
    manifest's thresholds. The int8 runner below is the device's; the toolchain scores the
    package's float members through the same steps (`convert.evaluate --float`), so the two
    can only differ in the networks."""

    manifest: Manifest

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._mean = np.asarray(manifest.feature_mean, dtype=np.float32)
        self._std = np.asarray(manifest.feature_std, dtype=np.float32)

    def standardise_with(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Statistics to standardise the features with instead of the manifest's (a
        stethoscope's calibration)."""
        self._mean = np.asarray(mean, dtype=np.float32)
        self._std = np.asarray(std, dtype=np.float32)

    def windows(self, features: np.ndarray) -> np.ndarray:
        m = self.manifest
        return cycle_windows(features, m.window, self._mean, self._std)

    def window_probs(self, window: np.ndarray) -> np.ndarray:
        """A normalised window's probabilities."""
        raise NotImplementedError

    def predict(self, features: np.ndarray) -> Prediction:
        m = self.manifest
        probs = [self.window_probs(window) for window in self.windows(features)]
        p = combine_windows(np.asarray(probs), m.window.aggregate)
        best = int(decide(p, m.labels, m.thresholds)[0])
        return Prediction(m.labels[best], {lab: round(float(v), 4)
                                           for lab, v in zip(m.labels, p, strict=True)},
                          float(p[best]), len(probs))


class ModelRunner(Classifier):
    """A model package, loaded and checked, on the device's interpreter: each member's int8
    output averaged per window. The one place the device, the toolchain's evaluation and the
    station turn features into a label."""

    def __init__(self, package: str | Path, num_threads: int = 1,
                 calibration: str | Path | None = None, *,
                 trusted_keys: Sequence[str] = ()) -> None:
        """With `trusted_keys`, the package must carry a signature by one of them over exactly
        its files (edge.pipeline.signature), checked before anything in it is read."""
        package = Path(package)
        self.signed_by = signed_by(package, trusted_keys) if trusted_keys else None
        super().__init__(load_manifest(package))
        self.members = [LoadedMember(package, member, num_threads)
                        for member in self.manifest.members]
        self.runtime = self.members[0].runtime
        m = self.manifest
        self.calibration = self._calibrate(Path(calibration)) if calibration else None
        if m.normalise == "stethoscope" and self.calibration is None:
            log.warning("model %s %s expects its stethoscope's calibration (`lungedge "
                        "calibrate`, then model.calibration in the config); until then it uses "
                        "the statistics of its training stethoscopes pooled", m.name, m.version)
        log.info("model %s %s (%d member(s)) on %s (%d thread(s))%s%s", m.name, m.version,
                 len(self.members), self.runtime, num_threads,
                 f", calibrated for {self.calibration.stethoscope}" if self.calibration else "",
                 f", signed by key {self.signed_by.key_id}" if self.signed_by else "")

    def _calibrate(self, path: Path) -> Calibration:
        """The stethoscope's statistics replace the manifest's normalisation."""
        m = self.manifest
        if m.normalise != "stethoscope":
            raise ModelError(f"{path}: model {m.name} {m.version} standardises its input with "
                             "its own training statistics and takes no stethoscope calibration: "
                             "remove model.calibration (or --calibration)")
        try:
            cal = load_calibration(path, m.frontend)
        except CalibrationError as exc:
            raise ModelError(str(exc)) from None
        self.standardise_with(np.asarray(cal.feature_mean), np.asarray(cal.feature_std))
        return cal

    def window_probs(self, window: np.ndarray) -> np.ndarray:
        """A normalised window's probabilities: the members' averaged."""
        if len(self.members) == 1:
            return self.members[0](window)
        return np.mean([member(window) for member in self.members], axis=0)
