"""Host-side decoding speed of the serial link, in multiples of real time.

Encodes a shipped sample recording into link frames once, then times the host's FrameDecoder and
AudioTimeline over the byte stream in 4 KiB reads, as the serial source does. Goal: ≥ 1000×
real time at 8 kHz, so decoding is never what a Pi's CPU is spent on.

    python bench/serial_decode.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.sources.audio_file import read_audio
from firmware_bridge.decoder import AudioTimeline, FrameDecoder, LinkStats
from firmware_bridge.protocol import Audio, Frame, FrameType

SAMPLES = Path(__file__).resolve().parents[1] / "models" / "samples"


def encode(pcm: np.ndarray, rate: int, per_frame: int) -> bytes:
    return b"".join(
        Frame(FrameType.AUDIO, i & 0xFFFF, Audio(rate, start, pcm[start:start + per_frame]
                                                 .tobytes()).pack()).encode()
        for i, start in enumerate(range(0, len(pcm), per_frame)))


def decode_seconds(stream: bytes, rate: int) -> float:
    stats = LinkStats()
    decoder, timeline = FrameDecoder(stats), AudioTimeline(rate, stats)
    t = time.perf_counter()
    for pos in range(0, len(stream), 4096):
        for frame in decoder.feed(stream[pos:pos + 4096]):
            timeline.add(frame)
    elapsed = time.perf_counter() - t
    assert stats.bad_frames == 0 and stats.gap_samples == 0
    return elapsed


def main() -> int:
    x, rate = read_audio(sorted(SAMPLES.glob("*.wav"))[0])
    pcm = np.tile(np.clip(np.round(x * 32768), -32768, 32767).astype("<i2"), 4)  # ~61 s
    audio_s = len(pcm) / rate
    print(f"{audio_s:.0f} s of a shipped recording at {rate} Hz, decoded in 4 KiB reads\n")
    print(f"{'samples/frame':>13} {'wire bytes':>11} {'overhead':>9} {'MB/s':>7} "
          f"{'x-real-time':>12}")
    for per_frame in (64, 256, 508):
        stream = encode(pcm, rate, per_frame)
        best = min(decode_seconds(stream, rate) for _ in range(5))
        overhead = len(stream) / (2 * len(pcm)) - 1
        print(f"{per_frame:>13} {len(stream):>11,} {overhead:>8.1%} "
              f"{len(stream) / best / 1e6:>7.1f} {audio_s / best:>11,.0f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
