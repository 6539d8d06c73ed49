"""What audio any source may deliver: one set of limits for the config's bounds, `classify`'s
flags and a recording's header (a header claiming 1 Hz would otherwise be read as 34 hours of
audio, and 0 channels end in a division by zero)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

MIN_RATE, MAX_RATE = 1000, 192000
MAX_CHANNELS = 8
# Rates a stethoscope or sound card really uses; anything else in range is read with a warning.
USUAL_RATES = (4000, 8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000,
               176400, 192000)


class FormatError(ValueError):
    """Audio of a rate or channel count no recording this device takes has."""


def check_format(rate: int, channels: int, where: str) -> None:
    """Raises FormatError if audio of this rate and channel count cannot be a recording this
    device takes; logs a warning for an unusual rate."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise FormatError(f"{where}: a sample rate of {rate} Hz; lungedge takes "
                          f"{MIN_RATE}–{MAX_RATE} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise FormatError(f"{where}: {channels} channel(s); lungedge takes 1–{MAX_CHANNELS}")
    if rate not in USUAL_RATES:
        log.warning("%s: an unusual sample rate, %d Hz (usual: %s); is that what it really "
                    "is?", where, rate, ", ".join(map(str, USUAL_RATES)))
