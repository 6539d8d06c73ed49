"""Incremental decoding of the serial byte stream into frames, and of audio frames into a timeline.

Bytes may arrive in any chunking and with any damage. The framer cuts at 0x00 delimiters, so
after garbage it is back in step at the next delimiter; it never holds more than one maximal
frame, whatever arrives. Every frame that fails a check is counted, never passed on: a sample
reaches the pipeline only inside a frame whose CRC matched.

`AudioTimeline` turns audio frames into `TimedAudio` on a true timeline. Each audio frame
carries the index of its first sample on the device's sample clock, so a lost frame becomes a
gap of exactly its length (the pipeline fills it with silence and reports it), and a duplicated
or late frame is recognised and dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.protocol import (
    MAX_ENCODED,
    Audio,
    Frame,
    ProtocolError,
    cobs_decode,
    parse_body,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimedAudio:
    """Samples on the host's timeline of the stream: `start_s` counts lost audio too, and the
    loss just before them is `gap_s` (why: `gap_reason`)."""

    samples: np.ndarray  # float32 in [-1, 1)
    start_s: float
    gap_s: float
    gap_reason: str


@dataclass(kw_only=True)
class LinkStats:
    bytes: int = 0
    frames: int = 0
    bad_frames: int = 0  # CRC, COBS, length, version or type check failed
    overlong: int = 0  # delimiter missing for longer than any frame: resynchronised
    lost_frames: int = 0  # sequence numbers skipped
    duplicates: int = 0  # audio already delivered (repeated or late frames)
    gap_samples: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def count_error(self, message: str) -> None:
        self.bad_frames += 1
        key = message.split(":")[0].split(" ")[0] if message else "?"
        self.errors[key] = self.errors.get(key, 0) + 1


class FrameDecoder:
    def __init__(self, stats: LinkStats | None = None) -> None:
        self.stats = stats or LinkStats()
        self._buf = bytearray()
        self._skipping = False  # inside an overlong run: drop until the next delimiter
        self._next_seq: int | None = None

    def feed(self, data: bytes) -> list[Frame]:
        self.stats.bytes += len(data)
        frames: list[Frame] = []
        pos = 0
        while pos <= len(data):
            end = data.find(b"\x00", pos)
            chunk = data[pos:] if end < 0 else data[pos:end]
            if not self._skipping:
                if len(self._buf) + len(chunk) > MAX_ENCODED:
                    self.stats.overlong += 1
                    self._buf.clear()
                    self._skipping = True
                else:
                    self._buf += chunk
            if end < 0:
                break
            if not self._skipping and self._buf:
                frame = self._frame(bytes(self._buf))
                if frame is not None:
                    frames.append(frame)
            self._buf.clear()
            self._skipping = False
            pos = end + 1
        return frames

    def _frame(self, encoded: bytes) -> Frame | None:
        try:
            frame = parse_body(cobs_decode(encoded))
        except ProtocolError as exc:
            self.stats.count_error(str(exc))
            return None
        self.stats.frames += 1
        if self._next_seq is not None:
            skipped = (frame.seq - self._next_seq) & 0xFFFF
            if 0 < skipped < 0x8000:
                self.stats.lost_frames += skipped
        self._next_seq = (frame.seq + 1) & 0xFFFF
        return frame


class AudioTimeline:
    """Audio frames → blocks whose `start_s` and `gap_s` follow the device's sample clock."""

    def __init__(self, sample_rate: int, stats: LinkStats) -> None:
        self.sample_rate = sample_rate
        self.stats = stats
        self._expected: int | None = None  # next device sample index
        self._position = 0  # host timeline samples delivered or reported lost
        self._away = 0  # samples the link was down, reported with the next block

    def restart(self, away_s: float) -> None:
        """The device was reopened (its sample clock restarts) after `away_s` away."""
        self._away += round(away_s * self.sample_rate)
        self._expected = None

    def add(self, frame: Frame) -> TimedAudio | None:
        audio = Audio.unpack(frame.payload)
        if audio.sample_rate != self.sample_rate:
            self.stats.count_error(f"rate: frame at {audio.sample_rate} Hz on a "
                                   f"{self.sample_rate} Hz stream")
            log.error("audio frame at %d Hz on a link opened at %d Hz: dropped",
                      audio.sample_rate, self.sample_rate)
            return None
        first, n = audio.first_sample, audio.n_samples
        samples = np.frombuffer(audio.samples, dtype="<i2").astype(np.float32) / 32768.0
        if self._expected is None:  # first frame after (re)start
            self._expected = first
        ahead = (first - self._expected) & 0xFFFFFFFF  # the index wraps after 2^32 samples
        gap = 0
        if ahead >= 0x80000000:  # behind what we delivered: repeated or late
            behind = 0x100000000 - ahead
            if behind >= n:
                self.stats.duplicates += 1
                return None
            samples = samples[behind:]  # keep only the part not yet delivered
        else:
            gap = ahead
        self.stats.gap_samples += gap
        self._expected = (self._expected + gap + len(samples)) & 0xFFFFFFFF
        reason = ""
        if audio.flags & 1:  # the device lost samples itself (its clock still counted them)
            reason = "device buffer overflowed"
        elif gap:
            reason = "frames lost on the serial link"
        if self._away:
            gap += self._away
            reason = "device reopened"
            self._away = 0
        start = self._position + gap
        self._position = start + len(samples)
        return TimedAudio(samples, start / self.sample_rate, gap / self.sample_rate, reason)
