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
from edge.pipeline.model import WindowSpec

# A window is 2.05 s (8,192 samples at 4 kHz) whatever the frame hop: ICBHI's median cycle is
# 2.5 s and SPRSound's median event 1.2 s. Windows over a long cycle overlap by half.
WINDOW_SAMPLES = 8192

# which corpora's scores choose a recipe's epochs and threshold (convert.choice)
Counted = Literal["both", "icbhi"]


@dataclass(kw_only=True, frozen=True)
class Recipe:
    frontend: FrontendParams = field(default_factory=FrontendParams)
    # network
    filters: tuple[int, ...] = (16, 32, 48)
    lstm_units: int = 48
    cell_clip: float = 4.0
    time_pool: tuple[int, ...] | None = None
    aggregate: Literal["mean", "max"] = "mean"
    # training
    epochs: int = 20
    mixup: float = 0.2
    ema: float = 0.998
    augmentation: bool = True
    # the share of training windows heard as another stethoscope would give them (frequency
    # response, band limits, noise floor: convert.fit.other_stethoscope); 0: none
    channel_augmentation: float = 0.0
    # the share of training windows whose per-band statistics are mixed with another's
    # (Freq-MixStyle, convert.fit.freq_mixstyle); 0: none
    freq_mixstyle: float = 0.0
    balance: Literal["class", "device_class", "stethoscope"] = "class"
    # each class's share of the training weight ∝ its count to this power: 0.5 leans to the
    # rare classes, 0 weighs every class the same (the floor's "balanced")
    class_power: float = 0.5
    # "stethoscope": features standardised by their stethoscope's own statistics, as a device
    # calibrated on its stethoscope (`lungedge calibrate`) standardises them
    normalise: Literal["global", "stethoscope"] = "global"
    loss: Literal["ce", "focal"] = "ce"
    # weight of the gradient reversal from a stethoscope-guessing head (0: none)
    adversary: float = 0.0
    # decide with an adventitious threshold chosen on out-of-fold predictions (convert.choice),
    # or with the argmax (what the class balance of training sets)
    threshold: bool = False
    # what chooses the epoch and threshold (convert.choice): ICBHI and SPRSound together, or
    # ICBHI alone, so SPRSound's one stethoscope cannot carry the choice for ICBHI's
    objective: Counted = "both"
    # the training corpora ("icbhi", "sprsound"): what the protocol validates and the trainer
    # trains on
    datasets: tuple[str, ...] = ("icbhi", "sprsound")
    # a site's own labelled recordings (folders `lungedge station export-labels` wrote): they
    # join the corpus, and the protocol reports them apart
    sites: tuple[str, ...] = ()
    # the shipped members, one network per seed: the protocol trains each in every fold
    seeds: tuple[int, ...] = field(default=(0, 1, 2))

    @property
    def window(self) -> WindowSpec:
        frames = WINDOW_SAMPLES // self.frontend.hop_length
        return WindowSpec(frames=frames, hop_frames=frames // 2, pad="repeat",
                          aggregate=self.aggregate)

    @property
    def arch(self) -> dict[str, Any]:
        return {"filters": self.filters, "lstm_units": self.lstm_units,
                "time_pool": self.time_pool, "cell_clip": self.cell_clip}

    def to_dict(self) -> dict[str, Any]:
        """Flat, as the flags are: the frontend's parameters, then the rest."""
        rest = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "frontend"}
        return self.frontend.to_dict() | {k: list(v) if isinstance(v, tuple) else v
                                          for k, v in rest.items()}


# The frontend's flags: everything but what a 4 kHz model with Hann windows fixes.
FRONTEND_FLAGS = ("n_fft", "hop_length", "n_mels", "n_mfcc", "features", "deltas", "fmin",
                  "fmax", "log_floor", "band_norm", "band_norm_s")
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
    "band_norm": "subtract each band's level: none, the cycle's own mean, a running "
                 "average over the stream, or (gain) one running level of the stream's total "
                 "band power for every band (edge.dsp.frontend.BandNormaliser)",
    "band_norm_s": "time constant of the running band level, s of cycle audio",
    "filters": "channels of each conv block",
    "lstm_units": "LSTM units",
    "cell_clip": "clip the LSTM's cell state to ±this after every step, so its int8 range "
                 "stays narrow (0: no clip)",
    "time_pool": "each conv block's pooling along time (default 2 each): the LSTM runs "
                 "frames / their product steps",
    "aggregate": "how a cycle's windows combine: the mean of their probabilities, or each "
                 "label's maximum (a crackle heard in one window of a long cycle)",
    "epochs": "the most epochs a member trains; the protocol's rule (convert.choice) picks "
              "how many of them the shipped members train",
    "mixup": "MixUp alpha (0: none)",
    "ema": "keep a moving average of the weights with this decay per batch (0: raw weights)",
    "augmentation": "time shift, gain, noise, time and frequency masks, MixUp",
    "channel_augmentation": "the share of training windows heard as another stethoscope "
                            "would give them: a random frequency response (level, tilt, a "
                            "resonance), low- and high-pass band limits, a noise floor "
                            "(convert.fit.other_stethoscope); 0: none",
    "freq_mixstyle": "the share of training windows whose per-band mean and sd over time are "
                     "mixed with another window's (Freq-MixStyle), so a stethoscope's spectral "
                     "balance stops telling the label; 0: none",
    "balance": "sample weights: sqrt inverse frequency of the class, or of the class within "
               "each stethoscope (so no stethoscope predicts a label), or that and each "
               "stethoscope weighing the square root of its events (so the largest does not "
               "set what is learnt for the others)",
    "normalise": "standardise the features over all training events (global), or by each "
                 "stethoscope's own statistics (stethoscope: what a device calibrated on its "
                 "stethoscope with `lungedge calibrate` does)",
    "class_power": "each class's share of the training weight is proportional to its count to "
                   "this power: 0.5 leans to the rare classes, 0 weighs every class the same "
                   "(as the floor does); the balance decides where the weights apply",
    "objective": "what chooses the epochs and threshold on out-of-fold predictions "
                 "(convert.choice): both corpora's scores, or ICBHI's alone",
    "loss": "cross-entropy, or focal (gamma 2)",
    "threshold": "choose an adventitious threshold on the out-of-fold predictions "
                 "(convert.choice); off: the argmax, whose operating point the class balance "
                 "sets within every stethoscope",
    "adversary": "train against a head that guesses the stethoscope from the LSTM's output, "
                 "with a gradient reversal of this weight (0: none), so the features stop "
                 "telling which stethoscope recorded them",
    "datasets": "training corpora: icbhi (ICBHI 2017 train), sprsound (SPRSound train)",
    "sites": "folders of a site's own judged recordings (lungedge station export-labels), "
             "added to the corpus and reported apart",
    "seeds": "one network per seed, in every fold of the protocol and in the package, "
             "whose int8 outputs the device averages",
}


def _flags() -> list[tuple[str, Any, Any]]:
    """(name, default, type hint) of every flag: the frontend's, then the recipe's own."""
    frontend, recipe = typing.get_type_hints(FrontendParams), typing.get_type_hints(Recipe)
    return ([(n, getattr(FrontendParams(), n), frontend[n]) for n in FRONTEND_FLAGS]
            + [(f.name, getattr(Recipe(), f.name), recipe[f.name])
               for f in dataclasses.fields(Recipe) if f.name != "frontend"])


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """One flag per recipe setting, its default the recipe's."""
    g = ap.add_argument_group("recipe")
    for name, default, hint in _flags():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                           help=HELP[name])
        elif name in ("filters", "time_pool", "seeds"):
            g.add_argument(flag, type=int, nargs="+", default=default, help=HELP[name])
        elif name == "datasets":
            g.add_argument(flag, nargs="+", default=default, help=HELP[name],
                           choices=["icbhi", "sprsound"])
        elif name == "sites":
            g.add_argument(flag, nargs="+", default=default, help=HELP[name],
                           metavar="FOLDER")
        else:
            choices = list(typing.get_args(hint)) if typing.get_origin(hint) is Literal \
                else None
            g.add_argument(flag, type=type(default), default=default, help=HELP[name],
                           choices=choices)


def from_dict(values: dict[str, Any]) -> Recipe:
    """A recipe from its to_dict() (a run's recipe.json); a setting it lacks is at its
    default, as it was when the run was made."""
    known = {name for name, _, _ in _flags()} | set(FRONTEND_FLAGS)
    namespace = argparse.Namespace(**({name: default for name, default, _ in _flags()}
                                      | {k: v for k, v in values.items() if k in known}))
    return from_arguments(namespace)


def from_arguments(args: argparse.Namespace) -> Recipe:
    values = {name: getattr(args, name) for name, _, _ in _flags()}
    for name in ("filters", "time_pool", "seeds", "datasets", "sites"):
        if values[name] is not None:
            values[name] = tuple(values[name])
    frontend = FrontendParams(**{n: values.pop(n) for n in FRONTEND_FLAGS})
    return Recipe(frontend=frontend, **values)
