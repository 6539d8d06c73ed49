"""A recording played as if it were a live input (real-time paced or as fast as possible)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from edge import clock
from edge.sources.audio_file import open_audio
from edge.sources.base import AudioBlock, PlainInput


class FileSource(PlainInput):
    def __init__(self, path: str | Path, *, block_ms: int = 100, realtime: bool = False,
                 loop: bool = False) -> None:
        self.audio = open_audio(path)  # fails here, before the pipeline starts
        self.sample_rate = self.audio.sample_rate
        self.block_frames = max(1, round(self.sample_rate * block_ms / 1000))
        self.realtime = realtime
        self.live = realtime
        self.loop = loop
        self._closed = False

    def describe(self) -> str:
        a = self.audio
        return (f"file {a.path} ({a.sample_rate} Hz, {a.channels} ch, {a.duration_s:.1f} s"
                f"{', real-time' if self.realtime else ''}{', looping' if self.loop else ''})")

    def counters(self) -> dict[str, int]:
        return {}

    def blocks(self) -> Iterator[AudioBlock]:
        t0, m0 = clock.wall(), time.monotonic()  # paced by the monotonic clock: a wall clock
        position = 0                           # that jumps must not stall or rush playback
        while not self._closed:
            for samples in self.audio.iter_blocks(self.block_frames):
                start_s = position / self.sample_rate
                duration = len(samples) / self.sample_rate
                if self.realtime:
                    # A block is "captured" once all of it has been heard.
                    delay = m0 + start_s + duration - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    wall = clock.wall() - duration
                else:
                    wall = t0 + start_s
                yield AudioBlock(samples, self.sample_rate, start_s, wall)
                position += len(samples)
                if self._closed:
                    return
            if not self.loop:
                return

    def close(self) -> None:
        self._closed = True
