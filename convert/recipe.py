"""A training recipe: everything that decides a model, one object for the validation protocol
(`convert.crossval`) and the shipping run (`convert.train`), so what was validated is what
ships. Its flags are defined here once, and it is recorded in every report and manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from edge.dsp.frontend import FrontendParams
from edge.model import WindowSpec

# A window is 2.05 s (8,192 samples at 4 kHz) whatever the frame hop: ICBHI's median cycle is
# 2.5 s and SPRSound's median event 1.2 s. Windows over a long cycle overlap by half.
WINDOW_SAMPLES = 8192


@dataclass(frozen=True)
class Recipe:
    # frontend
    n_fft: int = 256
    hop_length: int = 64
    n_mels: int = 40
    n_mfcc: int = 20
    features: Literal["mfcc", "log_mel"] = "log_mel"
    deltas: int = 0
    fmin: float = 80.0
    fmax: float = 2000.0
    log_floor: float = 1e-10
    band_norm: Literal["none", "cycle", "running"] = "none"
    band_norm_s: float = 10.0
    # network
    filters: tuple[int, ...] = (16, 32, 48)
    lstm_units: int = 48
    cell_clip: float = 4.0
    time_pool: tuple[int, ...] | None = None
    # training
    epochs: int = 20
    mixup: float = 0.2
    ema: float = 0.998
    augmentation: bool = True
    device_augmentation: bool = False  # simulate other stethoscopes: EQ, band limits, noise
    balance: Literal["class", "device_class"] = "class"
    loss: Literal["ce", "focal"] = "ce"
    seeds: tuple[int, ...] = field(default=(0, 1, 2, 3, 4))

    @property
    def frontend(self) -> FrontendParams:
        return FrontendParams(n_fft=self.n_fft, hop_length=self.hop_length, n_mels=self.n_mels,
                              n_mfcc=self.n_mfcc, features=self.features, deltas=self.deltas,
                              fmin=self.fmin, fmax=self.fmax, log_floor=self.log_floor,
                              band_norm=self.band_norm, band_norm_s=self.band_norm_s)

    @property
    def window(self) -> WindowSpec:
        frames = WINDOW_SAMPLES // self.hop_length
        return WindowSpec(frames=frames, hop_frames=frames // 2, pad="repeat",
                          aggregate="mean")

    @property
    def arch(self) -> dict[str, Any]:
        return {"filters": self.filters, "lstm_units": self.lstm_units,
                "time_pool": self.time_pool, "cell_clip": self.cell_clip}

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


HELP = {
    "n_fft": "frame length, samples at 4 kHz",
    "hop_length": "frame hop, samples at 4 kHz; the window stays 2.05 s",
    "n_mels": "mel bands over fmin–fmax",
    "n_mfcc": "cepstral coefficients (features mfcc)",
    "features": "the frontend's output: log mel bands, or cepstra",
    "deltas": "delta (1) and delta-delta (2) features appended",
    "fmin": "lowest frequency of the mel bands, Hz",
    "fmax": "highest frequency of the mel bands, Hz",
    "log_floor": "floor of the band power before the log",
    "band_norm": "subtract each band's level: none, the cycle's own mean, or a running "
                 "average over the stream (edge.dsp.frontend.BandNormaliser)",
    "band_norm_s": "time constant of the running band level, s of cycle audio",
    "filters": "channels of each conv block",
    "lstm_units": "LSTM units",
    "cell_clip": "clip the LSTM's cell state to ±this after every step, so its int8 range "
                 "stays narrow (0: no clip)",
    "time_pool": "each conv block's pooling along time (default 2 each): the LSTM runs "
                 "frames / their product steps",
    "epochs": "epochs per seed (fixed: chosen with the validation protocol)",
    "mixup": "MixUp alpha (0: none)",
    "ema": "keep a moving average of the weights with this decay per batch (0: raw weights)",
    "augmentation": "time shift, gain, noise, time and frequency masks, MixUp",
    "device_augmentation": "also simulate other stethoscopes: spectral tilt and band EQ, band "
                           "limits, background noise at 5–30 dB SNR, level",
    "balance": "sample weights: sqrt inverse frequency of the class, or of the class within "
               "each stethoscope (so no stethoscope predicts a label)",
    "loss": "cross-entropy, or focal (gamma 2)",
    "seeds": "training seeds; a shipped model averages them",
}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """One flag per Recipe field, its default the recipe's."""
    g = ap.add_argument_group("recipe")
    defaults = Recipe()
    hints = typing.get_type_hints(Recipe)
    for f in dataclasses.fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                           help=HELP[f.name])
        elif f.name in ("filters", "time_pool", "seeds"):
            g.add_argument(flag, type=int, nargs="+", default=default, help=HELP[f.name])
        else:
            hint = hints[f.name]
            choices = list(typing.get_args(hint)) if typing.get_origin(hint) is Literal \
                else None
            g.add_argument(flag, type=type(default), default=default, help=HELP[f.name],
                           choices=choices)


def from_arguments(args: argparse.Namespace) -> Recipe:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)}
    for name in ("filters", "time_pool", "seeds"):
        if values[name] is not None:
            values[name] = tuple(values[name])
    return Recipe(**values)
