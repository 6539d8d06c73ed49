"""`lungedge monitor`'s one line per message: readable for every kind a device sends."""

from __future__ import annotations

import base64

from edge.cli.monitor import describe
from edge.delivery.wire import Clip, body_dict


def test_a_clip_is_described_not_dumped() -> None:
    """A clip carries up to 600 KB of base64 audio: a terminal shows what it is and its
    size, never the audio (the demo printed screens of base64)."""
    audio = base64.b64encode(bytes(30_000)).decode()
    clip = body_dict(Clip(clip_id="c0ffee", alert_id="a1", alert_kind="crackle",
                          session_id="s1", cycle_start="2026-12-06T03:53:31.097Z",
                          cycle_end="2026-12-06T03:53:32.367Z", label="crackle",
                          confidence=0.55, sample_rate=4000, encoding="flac",
                          audio_b64=audio))
    line = describe("clip", clip)
    assert line == ("crackle conf 0.55 behind crackle, 03:53:31.097–03:53:32.367, flac at "
                    "4000 Hz, 29 KB")
    assert audio[:40] not in line
