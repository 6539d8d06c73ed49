"""What every audio source yields: timestamped mono blocks, with lost audio said out loud."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """An input that cannot be opened or read; the message says what to do about it."""


@dataclass(frozen=True)
class AudioBlock:
    """Consecutive mono samples as captured.

    `start_s` is the position on the stream's own audio timeline, which includes lost audio: a
    gap (device overflow, dropped frames, device reopened) is reported in `gap_s` of the block
    after it instead of being silently closed up, so downstream timestamps stay true.
    """

    samples: np.ndarray  # float32, mono, nominally in [-1, 1]
    sample_rate: int
    start_s: float
    wall_time: float  # UNIX time at which the first sample was captured (or played)
    gap_s: float = 0.0
    gap_reason: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


class AudioSource(Protocol):
    """A stream of blocks; `blocks()` ends when the input ends (a live device never does).

    `live`: audio arrives at its own pace and is lost if not taken in time (a device, a pipe
    from a recorder), so the daemon drops and counts blocks when it falls behind; a recording
    that is not played in real time just waits for the reader instead."""

    sample_rate: int
    live: bool
    # why the input gives no audio now ("" while it does): a device that is away, waited for
    problem: str

    def blocks(self) -> Iterator[AudioBlock]: ...

    def show_alert(self) -> bool:
        """Shows a clinical alert to the person at the bedside (a stethoscope's LED), if this
        input can: False if it cannot (a file, a sound card)."""
        ...

    def describe(self) -> str: ...

    def counters(self) -> dict[str, int]:
        """What the source counted of its own troubles since it opened (overflows, reopens,
        bad link frames…), published in `stats` so a station sees a failing cable or device
        before the gaps it causes add up."""
        ...

    def close(self) -> None: ...


class PlainInput:
    """What an input that is only audio says of its abilities: no problem to report beyond
    the errors it raises, no way to show an alert. The inputs that can say more override."""

    problem = ""

    def show_alert(self) -> bool:
        return False


def reopen_with_backoff(attempt: Callable[[], None], stop: threading.Event, *, what: str,
                        first_s: float, max_s: float,
                        errors: tuple[type[BaseException], ...]) -> bool:
    """Calls `attempt` until it stops raising one of `errors`, waiting first_s, then twice as
    long each time up to max_s. False if `stop` was set meanwhile. A device that is away is a
    state to wait out, not a reason to exit."""
    delay = first_s
    while not stop.is_set():
        try:
            attempt()
            return True
        except errors as exc:
            log.warning("%s still unavailable (%s); next try in %.1f s", what, exc, delay)
            if stop.wait(delay):
                return False
            delay = min(delay * 2, max_s)
    return False


def to_mono_float32(frames: np.ndarray) -> np.ndarray:
    """Integer or float PCM frames (n,) or (n, channels) → mono float32 in [-1, 1]."""
    if frames.dtype.kind == "u":  # 8-bit WAV is unsigned with its zero at 128
        bits = frames.dtype.itemsize * 8
        data = (frames.astype(np.float32) - 2 ** (bits - 1)) / 2 ** (bits - 1)
    elif frames.dtype.kind == "i":
        data = frames.astype(np.float32) / float(2 ** (frames.dtype.itemsize * 8 - 1))
    else:
        data = frames.astype(np.float32, copy=False)
    if data.ndim == 2:
        data = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(data, dtype=np.float32)
