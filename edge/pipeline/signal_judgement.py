"""Whether a cycle can be judged at all: the device's signal judgement, before any label counts.

A model asked about a cycle always answers, and a channel that hides what it needs still gives
it cycles to answer about: a stethoscope in bell mode passes nothing where crackles are, noise
buries the breath, clipping turns every breath into broadband distortion. The answer is then
"normal", with confidence — false reassurance. So each cycle is judged first, and one that
cannot be judged is never evidence: not for an alert, a burden, or a record label (which
becomes "poor quality" when most cycles are like that), and the poor-signal alert and the
device's status say why in words a nurse can act on.

The channel's conditions hold with hysteresis over the recent cycles, so that a condition is one
steady technical alarm rather than a flicker at a threshold:

- **clipping**: the share of samples at full scale, averaged over the recent cycles, enters
  at `CLIP_ON` and leaves at `CLIP_OFF`;
- **band-limited**: the channel's upper edge (`edge.dsp.bandwidth`) below what the model needs
  to hear crackles (`min_upper_edge_hz`, from its manifest: measured on its own training
  stethoscopes), after `BAND_MIN_S` of cycles, until it reaches 1.15 times that;
- **noise**: the recent cycles' signal quality (`edge.dsp.quality`) averaged below the model's
  cut enters, and it leaves only at `NOISE_MARGIN` above it (a cycle just above the cut in
  noise is noise too); or the stream itself: over the last `STREAM_S` of audio, breathing
  rises and falls (its 50 ms energies spread 10–20 dB from the pauses to the breaths; under
  5 dB on 1–3% of the training recordings' windows), while broadband noise at 0 dB SNR spreads
  them 3.5 dB: under `SPREAD_ON_DB` it enters, over `SPREAD_OFF_DB` it leaves (wheeze under
  such noise gave a "normal" cycle every 15 s, each resetting the no-breathing timer);
- a cycle whose own quality is under the cut is poor on its own, whatever the channel.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edge.dsp.bandwidth import ChannelBandwidth
from edge.vocabulary import Unjudged

CLIP_ON, CLIP_OFF = 0.01, 0.002  # share of samples at full scale
FULL_SCALE = 0.99
BAND_MIN_S = 8.0  # cycle audio before the channel's edge is trusted
BAND_OFF_FACTOR = 1.15
NOISE_MARGIN = 0.1
STREAM_S, FRAME_S = 20.0, 0.05  # the stream's energy spread: over this long, in these frames
SPREAD_ON_DB, SPREAD_OFF_DB = 5.0, 7.0
STREAM_MIN_S = 10.0  # audio heard before the spread is trusted
RECENT = 0.5  # weight of the newest cycle in the running averages (about three cycles)


@dataclass(frozen=True)
class Judgement:
    """One cycle: whether it counts, and if not, why (a key, and words for a person)."""

    good: bool
    why: Unjudged | None = None
    reason: str | None = None


class SignalJudge:
    """The judgement of one stream's cycles, with the state its hysteresis needs."""

    def __init__(self, sample_rate: int, poor_quality_below: float,
                 min_upper_edge_hz: float) -> None:
        self.poor_quality_below = poor_quality_below
        self.min_upper_edge_hz = min_upper_edge_hz
        self.bandwidth = ChannelBandwidth(sample_rate)
        self.clipped = 0.0  # running share of samples at full scale
        self.quality: float | None = None  # running signal quality
        self.conditions: set[Unjudged] = set()
        self.energies: deque[float] = deque(maxlen=round(STREAM_S / FRAME_S))  # dB, 50 ms
        self._rest = np.zeros(0, dtype=np.float32)  # samples short of a frame, and their rate
        self._rate = 0
        self.noisy_stream = False

    def reset(self) -> None:
        """A new stream (after a long gap the stethoscope may be another)."""
        self.bandwidth.reset()
        self.clipped, self.quality = 0.0, None
        self.conditions.clear()
        self.energies.clear()
        self._rest = np.zeros(0, dtype=np.float32)
        self.noisy_stream = False

    def hear(self, samples: np.ndarray, rate: int) -> None:
        """A block of the stream as it arrives (any rate): its 50 ms energies, for the spread
        that tells breathing from noise."""
        if rate != self._rate:
            self._rest, self._rate = np.zeros(0, dtype=np.float32), rate
        x = np.concatenate([self._rest, np.asarray(samples, dtype=np.float32)])
        frame = max(1, round(FRAME_S * rate))
        n = len(x) // frame
        self._rest = x[n * frame:]
        if n:
            power = np.mean(x[:n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)
            self.energies.extend((10 * np.log10(power + 1e-12)).tolist())
        if len(self.energies) * FRAME_S >= STREAM_MIN_S:
            low, high = np.percentile(np.fromiter(self.energies, float), [10, 90])
            spread = float(high - low)
            if spread < SPREAD_ON_DB:
                self.noisy_stream = True
            elif spread > SPREAD_OFF_DB:
                self.noisy_stream = False

    def __call__(self, samples: np.ndarray, quality: float) -> Judgement:
        """Judge one cycle (samples at the model rate) of this signal quality."""
        x = np.asarray(samples)
        clipped = float(np.mean(np.abs(x) >= FULL_SCALE)) if len(x) else 0.0
        self.clipped = RECENT * clipped + (1 - RECENT) * self.clipped
        self.quality = quality if self.quality is None \
            else RECENT * quality + (1 - RECENT) * self.quality
        self.bandwidth.add(x)
        self._hold("clipping", self.clipped >= CLIP_ON, self.clipped <= CLIP_OFF)
        edge = self.bandwidth.upper_edge_hz
        if self.bandwidth.heard_s >= BAND_MIN_S and edge is not None:
            self._hold("band_limited", edge < self.min_upper_edge_hz,
                       edge >= BAND_OFF_FACTOR * self.min_upper_edge_hz)
        self._hold("noise", self.quality < self.poor_quality_below or self.noisy_stream,
                   self.quality >= self.poor_quality_below + NOISE_MARGIN
                   and not self.noisy_stream)
        for why in ("clipping", "band_limited", "noise"):
            if why in self.conditions:
                return Judgement(False, why, self.describe(why, clipped))
        if quality < self.poor_quality_below:
            return Judgement(False, "poor_quality", "this cycle's signal is too poor to judge")
        return Judgement(True)

    def _hold(self, why: Unjudged, enter: bool, leave: bool) -> None:
        if enter:
            self.conditions.add(why)
        elif leave:
            self.conditions.discard(why)

    def describe(self, why: Unjudged, clipped: float) -> str:
        """A condition in words a nurse or a technician can act on."""
        if why == "clipping":
            return (f"the sound is clipped ({100 * max(clipped, self.clipped):.1f}% of samples "
                    "at full scale): lower the stethoscope's gain")
        if why == "band_limited":
            edge = self.bandwidth.upper_edge_hz
            return (f"the stethoscope passes nothing above {edge:.0f} Hz: crackles cannot be "
                    "heard; use diaphragm or extended mode")
        return ("noise covers the breath sounds: check the chest piece's contact, quiet the "
                "room")
