"""Training one CNN-LSTM on a set of events with a recipe: windows, sample weights, augmentation
(including simulated stethoscopes), the loss, and the loop with a moving average of the
weights. The validation protocol and the shipping run both call `fit`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from convert.datasets import LABELS
from convert.features import Events, band_normalised, normalisation
from convert.recipe import Recipe
from edge.dsp.frontend import FrontendParams
from edge.pipeline.model import combine_windows, cycle_windows

DB = np.log(10) / 10  # one decibel of power in natural-log units (the frontend's log)
MAX_WEIGHT = 10.0  # no handful of events may dominate a batch


Calibrations = dict[str, tuple[np.ndarray, np.ndarray]]  # stethoscope → feature mean, sd


@dataclass(kw_only=True)
class Windows:
    """Training windows before the global normalisation, so that a simulated stethoscope can
    be applied to what a stethoscope changes (the band powers) and normalised again."""

    x: np.ndarray  # (n, frames, features): band-normalised features
    levels: np.ndarray  # (n, n_static): the band level the band normalisation subtracted
    y: np.ndarray
    weight: np.ndarray  # per window
    owner: np.ndarray  # index of the event each window came from
    device: np.ndarray  # the stethoscope of each window, an index into `devices`
    devices: tuple[str, ...]
    mean: np.ndarray  # the global per-feature normalisation (of these events)
    std: np.ndarray
    # with normalise "stethoscope": each stethoscope's statistics, and under "" all of them
    # pooled (what a device that was never calibrated falls back to)
    calibration: Calibrations | None = None


def windows(events: Events, recipe: Recipe, mean: np.ndarray | None = None,
            std: np.ndarray | None = None, calibration: Calibrations | None = None
            ) -> Windows:
    """The events' windows as the device cuts a cycle; `mean`/`std` default to these events'
    own (training), or are given (validation: the training set's).

    With the recipe's `normalise` "stethoscope", each event is first standardised by its own
    stethoscope's statistics, as a device calibrated on that stethoscope does: `calibration`
    gives them for validation (the training events' stethoscopes); a stethoscope it does not
    know (held out) is calibrated on its own events, each patient's on the other patients'
    only (`stethoscope_statistics`)."""
    frontend = recipe.frontend
    feats, levels = band_normalised(events, frontend)
    if recipe.normalise == "stethoscope":
        # one stage, as on the device: (features − the stethoscope's mean) / its sd
        calibration = calibration or calibrations(events, feats)
        stats = stethoscope_statistics(events, feats, calibration)
        feats = [(f - stats[i][0]) / stats[i][1] for i, f in enumerate(feats)]
        mean, std = np.zeros(frontend.n_features), np.ones(frontend.n_features)
    if mean is None or std is None:
        mean, std = normalisation(feats)
    zero, one = np.zeros(frontend.n_features), np.ones(frontend.n_features)
    xs, owner = [], []
    for i, f in enumerate(feats):
        w = cycle_windows(f, recipe.window, zero, one)
        xs.append(w)
        owner += [i] * len(w)
    owner_a = np.asarray(owner, dtype=int)
    weight = event_weights(events, recipe.balance, recipe.class_power)[owner_a]
    devices, device = np.unique(events.devices, return_inverse=True)
    return Windows(x=np.concatenate(xs), levels=levels[owner_a], y=events.labels[owner_a],
                   weight=weight, owner=owner_a, device=device[owner_a],
                   devices=tuple(str(d) for d in devices), mean=mean.astype(np.float32),
                   std=std.astype(np.float32), calibration=calibration)


def calibrations(events: Events, feats: list[np.ndarray]) -> Calibrations:
    """Each stethoscope's feature mean and sd over all its events' frames, and under "" the
    statistics of every event pooled."""
    out = {"": normalisation(feats)}
    for device in np.unique(events.devices):
        out[str(device)] = normalisation([f for f, d in zip(feats, events.devices, strict=True)
                                          if d == device])
    return out


def stethoscope_statistics(events: Events, feats: list[np.ndarray],
                           known: Calibrations | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The statistics each event is standardised with: its stethoscope's in `known`, or, for
    a stethoscope `known` lacks, those of its other patients' events here (never the
    patient's own: a calibration is recorded before the patient is), or if it has no other
    patient, the pooled statistics an uncalibrated device uses."""
    known = calibrations(events, feats) if known is None else known
    out: list[tuple[np.ndarray, np.ndarray]] = []
    cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for device, patient in zip(events.devices, events.patients, strict=True):
        if str(device) in known:
            out.append(known[str(device)])
            continue
        key = (str(device), str(patient))
        if key not in cache:
            others = [f for f, d, p in zip(feats, events.devices, events.patients, strict=True)
                      if d == device and p != patient]
            # nobody else recorded on it: the uncalibrated device's statistics
            cache[key] = normalisation(others) if others else known[""]
        out.append(cache[key])
    return out


def event_weights(events: Events, balance: str, power: float = 0.5) -> np.ndarray:
    """Sample weights, mean 1. Every mode aims at the same class mix, each class in proportion
    to its count to `power`: the square root by default (rare classes count more, but not so
    much that their few events dominate), 0 for every class the same (the argmax of a network
    trained at the square root called 93% of ICBHI's normal cycles right and found 6% of its
    crackles, a Score made of specificity). "class" reaches it over all events; "device_class"
    within every stethoscope, so that a stethoscope's sound no longer predicts the label (in
    ICBHI, 40% of the AKG C417L cycles are crackles and 75% of the Meditron ones normal);
    "stethoscope" also weighs each stethoscope in proportion to the square root of its events
    rather than to its events, so SPRSound's one stethoscope (62% of the events) does not set
    what the network learns for the others (ICBHI's cross-validated score peaked at epoch 7 and
    fell as SPRSound's kept rising)."""
    y = events.labels
    if len(y) == 0:
        return np.zeros(0, dtype=np.float32)
    counts = np.bincount(y, minlength=len(LABELS)).astype(float)
    target = counts ** power * (counts > 0)
    target /= target.sum()
    if balance == "class":
        w = target[y] / (counts[y] / counts.sum())
    else:
        w = np.zeros(len(y))
        for d in np.unique(events.devices):
            inside = events.devices == d
            local = np.bincount(y[inside], minlength=len(LABELS)) / inside.sum()
            w[inside] = target[y[inside]] / local[y[inside]]
            if balance == "stethoscope":  # its total weight ∝ √(its events), not its events
                w[inside] /= np.sqrt(inside.sum())
    w = np.minimum(w / w.mean(), MAX_WEIGHT)
    return (w / w.mean()).astype(np.float32)


# -- augmentation --------------------------------------------------------------------------------
def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, mixup: float,
            frontend: FrontendParams, enabled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """On normalised feature windows: time shift, gain, noise, time and frequency masks, and
    MixUp; returns windows and soft labels. A gain moves the energy coefficient of MFCCs and
    every band of a log-mel spectrum; a frequency mask hides a few cepstral coefficients (never
    the energy) or a few bands. `y` is label indices, or already soft targets (n, k) that MixUp
    mixes the same way (the labels beside the stethoscope an adversary guesses)."""
    n, frames, feats = x.shape
    onehot = np.eye(len(LABELS), dtype=np.float32)[y] if y.ndim == 1 else y
    if not enabled:
        return x, onehot
    cepstral = frontend.features == "mfcc"
    static = frontend.n_static
    shifts = rng.integers(-frames // 8, frames // 8 + 1, n)
    x = x[np.arange(n)[:, None], (np.arange(frames)[None, :] - shifts[:, None]) % frames]
    x[:, :, :1 if cepstral else static] += rng.normal(0, 0.3, (n, 1, 1)).astype(np.float32)
    x += rng.normal(0, 0.05, x.shape).astype(np.float32)
    t, f = np.arange(frames)[None, :], np.arange(feats)[None, :]
    t0 = rng.integers(0, frames, size=(n, 1))
    tw = rng.integers(0, frames // 10 + 1, size=(n, 1))
    f0 = rng.integers(1 if cepstral else 0, static, size=(n, 1))
    fw = rng.integers(0, 4 if cepstral else static // 8 + 1, size=(n, 1))
    x[(t >= t0) & (t < t0 + tw)] = 0
    x *= ~((f >= f0) & (f < np.minimum(f0 + fw, static)))[:, None, :]
    if mixup > 0:
        lam = rng.beta(mixup, mixup, size=(n, 1, 1)).astype(np.float32)
        perm = rng.permutation(n)
        x = lam * x + (1 - lam) * x[perm]
        onehot = lam[:, :, 0] * onehot + (1 - lam[:, :, 0]) * onehot[perm]
    return x, onehot


def other_stethoscope(x: np.ndarray, levels: np.ndarray, rng: np.random.Generator,
                      frontend: FrontendParams, p: float = 1.0) -> np.ndarray:
    """Band-normalised log mel windows as another stethoscope would have given them, each
    window with probability `p` (the rest as they are).

    A frequency response, drawn per window, in dB at each mel band's centre: a level of ±10
    dB; a tilt of ±6 dB per octave about 500 Hz; one resonance or notch of ±10 dB, 0.3–1.5
    octaves wide, centred 100–1500 Hz; with probability 0.5 a low-pass (a Butterworth of
    order 2–8, cut-off 250–2000 Hz, log-uniform: a bell, a filter mode, a cheap chest piece,
    SPRSound's stethoscope) and with 0.3 a high-pass (order 2–6, 80–300 Hz: a diaphragm). Then
    what a real chain adds after the filter: a noise floor 40–80 dB below the window's mean
    band power (the microphone and the converter, unfiltered), and with probability 0.3
    background noise 10–30 dB below it, white to pink. The channels of the protocol's stress
    test (`convert.channels`) are inside this family, never drawn exactly.

    Then the band normalisation is redone as the device would do it through that channel:
    exactly over the window for "cycle"; for "running" the same change applied to the
    running level; for "gain" the running gain moved by how much the change moved the
    window's own gain (the recording as a whole went through that stethoscope)."""
    if frontend.features != "log_mel" or frontend.deltas:
        raise ValueError("simulated stethoscopes need log mel features without deltas")
    n, _, bands = x.shape
    hz = mel_centres(frontend)[None, :]
    octaves = np.log2(hz / 500.0)
    u = rng.uniform
    centre = np.log2(np.exp(u(np.log(100), np.log(1500), (n, 1))) / 500.0)
    width = u(0.3, 1.5, (n, 1))
    db = (u(-10, 10, (n, 1)) + u(-6, 6, (n, 1)) * octaves
          + u(-10, 10, (n, 1)) * np.exp(-0.5 * ((octaves - centre) / (width / 2)) ** 2))
    cut = np.exp(u(np.log(250), np.log(2000), (n, 1)))
    order = rng.integers(2, 9, (n, 1))
    db -= np.where(u(0, 1, (n, 1)) < 0.5,
                   10 * np.log10(1 + (hz / cut) ** (2 * order)), 0.0)
    cut = np.exp(u(np.log(80), np.log(300), (n, 1)))
    order = rng.integers(2, 7, (n, 1))
    db -= np.where(u(0, 1, (n, 1)) < 0.3,
                   10 * np.log10(1 + (cut / hz) ** (2 * order)), 0.0)
    eq = np.maximum(db, -150) * DB
    raw = x.astype(np.float64) + levels[:, None, :]
    power = np.exp(raw).mean(axis=(1, 2))[:, None]
    colour = (hz / hz[0, 0]) ** -u(0, 1, (n, 1))  # 1/f^k shape, k in 0 (white) … 1 (pink)
    colour /= colour.mean(axis=1, keepdims=True)
    floor_db = u(40, 80, (n, 1))
    background = np.where(u(0, 1, (n, 1)) < 0.3, 10 ** (-u(10, 30, (n, 1)) / 10), 0.0)
    noise = power * (10 ** (-floor_db / 10) + background * colour)
    log_floor = frontend.log_floor

    def through(v: np.ndarray) -> np.ndarray:  # (n, ..., bands)
        shape = (n,) + (1,) * (v.ndim - 2) + (bands,)
        return np.log(np.maximum(np.exp(v + eq.reshape(shape)) + noise.reshape(shape),
                                 log_floor))

    heard = through(raw)
    if frontend.band_norm == "none":
        level = np.zeros((n, 1, bands))
    elif frontend.band_norm == "cycle":
        level = heard.mean(axis=1, keepdims=True)
    elif frontend.band_norm == "gain":
        moved = (log_mean_exp(heard) - log_mean_exp(raw)).mean(axis=1, keepdims=True)
        level = levels.astype(np.float64)[:, None, :] + moved
    else:
        level = through(levels.astype(np.float64)[:, None, :])
    out = (heard - level).astype(np.float32)
    keep = u(0, 1, n) >= p
    out[keep] = x[keep]
    return out


def log_mean_exp(v: np.ndarray) -> np.ndarray:
    """(…, bands) → (…, 1): the log of the mean band power, as the "gain" normalisation
    measures a frame's level."""
    top = v.max(axis=-1, keepdims=True)
    return top + np.log(np.exp(v - top).mean(axis=-1, keepdims=True))


def mel_centres(frontend: FrontendParams) -> np.ndarray:
    """The centre frequency of each mel band, Hz."""
    from edge.dsp.frontend import hz_to_mel, mel_to_hz

    mels = np.linspace(hz_to_mel(frontend.fmin), hz_to_mel(frontend.fmax),
                       frontend.n_mels + 2)
    return np.asarray(mel_to_hz(mels[1:-1]))


def freq_mixstyle(x: np.ndarray, rng: np.random.Generator, p: float, alpha: float = 0.4
                  ) -> np.ndarray:
    """Freq-MixStyle (Schmid et al., DCASE 2022): with probability `p` per window, each band's
    mean and sd over time are replaced by a mix of its own and another window's (λ ~ Beta(α,
    α)), so the network cannot lean on a recording's spectral balance — what a stethoscope's
    frequency response sets — and must hear how the sound moves in time."""
    n = len(x)
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True) + 1e-5
    perm = rng.permutation(n)
    lam = rng.beta(alpha, alpha, (n, 1, 1)).astype(np.float32)
    mixed = (x - mu) / sd * (lam * sd + (1 - lam) * sd[perm]) + lam * mu + (1 - lam) * mu[perm]
    return np.where((rng.uniform(0, 1, n) < p)[:, None, None], mixed, x).astype(np.float32)


# -- the loop ------------------------------------------------------------------------------------
def focal_loss(gamma: float = 2.0) -> Callable[[Any, Any], Any]:
    """Cross-entropy that weighs down the examples already classified with confidence."""
    import tensorflow as tf

    def loss(y_true: Any, y_pred: Any) -> Any:
        p = tf.clip_by_value(y_pred, 1e-7, 1 - 1e-7)
        return -tf.reduce_sum(y_true * (1 - p) ** gamma * tf.math.log(p), axis=-1)

    return loss


def event_predictions(probs: np.ndarray, owner: np.ndarray, n_events: int,
                      aggregate: str = "mean") -> np.ndarray:
    """Per event, its windows' probabilities combined as the device combines them
    (`owner`: the event of each window, in order)."""
    out = np.zeros((n_events, probs.shape[1]))
    bounds = np.searchsorted(owner, np.arange(n_events + 1))
    for i in range(n_events):
        if bounds[i + 1] > bounds[i]:
            out[i] = combine_windows(probs[bounds[i]:bounds[i + 1]], aggregate)
    return out


def fit(recipe: Recipe, train: Windows, seed: int, log: Callable[[str], None],
        on_epoch: Callable[[int, Any], dict[str, Any]] | None = None) -> tuple[Any, list[Any]]:
    """One seed's model after `recipe.epochs` epochs (its moving-average weights, with `ema`).
    `on_epoch(epoch, model)` sees the model that would be returned after each epoch and may
    return numbers to log; the history of losses and those numbers is returned too."""
    import tensorflow as tf

    from convert.package import build_cnn_lstm, keras

    tf.keras.utils.set_random_seed(seed)
    k = keras()
    frontend = recipe.frontend
    x, y = train.x, train.y
    # named by its seed: seeds trained in separate processes are averaged into one graph
    model = build_cnn_lstm(x.shape[1], x.shape[2], len(LABELS), name=f"seed_{seed}",
                           **recipe.arch)
    loss = focal_loss() if recipe.loss == "focal" else "categorical_crossentropy"
    model.compile(optimizer=k.optimizers.Adam(1e-3), loss=loss)
    trainer = adversarial(model, len(train.devices), recipe.adversary, loss) \
        if recipe.adversary else model
    stethoscopes = np.eye(len(train.devices), dtype=np.float32)
    rng = np.random.default_rng(seed)
    averaged = model.get_weights() if recipe.ema else []
    steps = 0
    history = []
    for epoch in range(recipe.epochs):
        t = time.time()
        order = rng.permutation(len(x))
        losses = []
        for b in range(0, len(order), 64):
            idx = order[b:b + 64]
            xb = x[idx]
            if recipe.channel_augmentation:
                xb = other_stethoscope(xb, train.levels[idx], rng, frontend,
                                       recipe.channel_augmentation)
            xb = (xb - train.mean) / train.std
            if recipe.freq_mixstyle:
                xb = freq_mixstyle(xb, rng, recipe.freq_mixstyle)
            if trainer is model:
                xb, yb = augment(xb, y[idx], rng, recipe.mixup, frontend, recipe.augmentation)
                losses.append(model.train_on_batch(xb[..., None], yb,
                                                   sample_weight=train.weight[idx]))
            else:
                targets = np.hstack([np.eye(len(LABELS), dtype=np.float32)[y[idx]],
                                     stethoscopes[train.device[idx]]])
                xb, tb = augment(xb, targets, rng, recipe.mixup, frontend,
                                 recipe.augmentation)
                w = train.weight[idx]
                losses.append(trainer.train_on_batch(
                    xb[..., None], [tb[:, :len(LABELS)], tb[:, len(LABELS):]],
                    sample_weight=[w, np.ones_like(w)])[1])
            if recipe.ema:
                steps += 1
                d = min(recipe.ema, (1 + steps) / (10 + steps))  # short memory while it starts
                averaged = [d * a + (1 - d) * w for a, w in zip(averaged, model.get_weights(),
                                                                 strict=True)]
        if recipe.ema:
            raw = model.get_weights()
            model.set_weights(averaged)
        numbers = on_epoch(epoch, model) if on_epoch else {}
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), **numbers})
        log(f"seed {seed} epoch {epoch:2d} loss {np.mean(losses):.3f} "
            + " ".join(f"{k} {v}" for k, v in numbers.items()) + f" ({time.time() - t:.0f} s)")
        if recipe.ema and epoch < recipe.epochs - 1:
            model.set_weights(raw)
        if epoch == 8:
            trainer.optimizer.learning_rate.assign(3e-4)
    return model, history


def adversarial(model: Any, n_stethoscopes: int, weight: float, loss: Any) -> Any:
    """A training model that also guesses the stethoscope from the LSTM's output through a
    gradient reversal: the better the guess, the more the features are pushed away from
    telling the stethoscope (Ganin & Lempitsky's domain-adversarial training). The classifier
    is `model` itself, sharing every layer, so what ships has no trace of the adversary."""
    import tensorflow as tf

    from convert.package import keras

    k = keras()

    @tf.custom_gradient
    def reverse(v: Any) -> Any:
        return tf.identity(v), lambda dy: -weight * dy

    lstm = next(layer for layer in model.layers if layer.__class__.__name__ == "RNN")
    h = k.layers.Lambda(reverse, name="gradient_reversal")(lstm.output)
    h = k.layers.Dense(32, activation="relu", name="adversary_hidden")(h)
    guess = k.layers.Dense(n_stethoscopes, activation="softmax", name="adversary")(h)
    trainer = k.Model(model.input, [model.output, guess])
    trainer.compile(optimizer=k.optimizers.Adam(1e-3),
                    loss=[loss, "categorical_crossentropy"])
    return trainer
