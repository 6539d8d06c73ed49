"""Raw signed 16-bit little-endian PCM on standard input, so `arecord … | lungedge run` works."""

from __future__ import annotations

import logging
import os
import select
import sys
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from edge import clock
from edge.sources.audio_format import FormatError, check_format
from edge.sources.base import AudioBlock, PlainInput, SourceError, to_mono_float32

log = logging.getLogger(__name__)


class StdinSource(PlainInput):
    def __init__(self, sample_rate: int, *, channels: int = 1, block_ms: int = 100,
                 stream: BinaryIO | None = None) -> None:
        try:
            check_format(sample_rate, channels, "standard input (--rate, --channels)")
        except FormatError as exc:
            raise SourceError(str(exc)) from None
        self.sample_rate = sample_rate
        self.live = True
        self.channels = channels
        self.block_frames = max(1, round(sample_rate * block_ms / 1000))
        self.stream = stream if stream is not None else sys.stdin.buffer
        self._closed = False

    def describe(self) -> str:
        return f"stdin (raw s16le, {self.sample_rate} Hz, {self.channels} ch)"

    def counters(self) -> dict[str, int]:
        return {}

    def blocks(self) -> Iterator[AudioBlock]:
        frame_bytes = 2 * self.channels
        want = self.block_frames * frame_bytes
        position = 0
        pending = b""
        while not self._closed:
            chunk = self._read(want - len(pending))
            if chunk is None:
                continue  # nothing yet: look at _closed again
            if not chunk:
                break
            pending += chunk
            if len(pending) < want:
                continue  # a pipe delivers what it has; wait for a whole block
            yield self._block(pending, position)
            position += self.block_frames
            pending = b""
        whole = len(pending) - len(pending) % frame_bytes
        if whole:
            yield self._block(pending[:whole], position)
        if len(pending) != whole:
            log.warning("stdin ended inside a sample frame; %d trailing byte(s) ignored "
                        "(is the input really s16le with %d channel(s)?)",
                        len(pending) - whole, self.channels)

    def _read(self, n: int) -> bytes | None:
        """Up to n bytes; b"" at end of input; None if nothing arrived within 0.2 s, so a
        silent pipe never keeps close() from taking effect."""
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError):  # an in-memory stream: it never blocks
            return self.stream.read(n)
        ready, _, _ = select.select([fd], [], [], 0.2)
        return os.read(fd, n) if ready else None

    def _block(self, raw: bytes, position: int) -> AudioBlock:
        frames = np.frombuffer(raw, dtype="<i2").reshape(-1, self.channels)
        samples = to_mono_float32(frames)
        return AudioBlock(samples, self.sample_rate, position / self.sample_rate,
                          clock.wall() - len(samples) / self.sample_rate)

    def close(self) -> None:
        self._closed = True
