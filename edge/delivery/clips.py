"""Evidence: the audio of the cycles behind an alert, as a `clip` message a station plays back.

A clip is the cycle's samples at the model rate (what the model heard), 16-bit, FLAC when
soundfile is installed (about half the size) and WAV otherwise. A budget (clips and bytes per
rolling hour) keeps a chatty device from flooding the broker or the SD card; a clip over the
budget is not made, and counted. Within it every alert gets its audio: an alert has at most
`per_alert` clips, and the last `reserved_for_new` of the hour's clips are kept for alerts
that open (before, a device's 60 clips an hour ran out in three minutes of updates, and later
alerts had none).
"""

from __future__ import annotations

import base64
import io
import time
import uuid
import wave
from collections import deque

import numpy as np

from edge.clock import StreamClock
from edge.delivery.settings import ClipsConfig
from edge.delivery.wire import Clip, iso_ms
from edge.pipeline.analysis import ClassifiedCycle
from edge.pipeline.tracker import AlertChanged

HOUR_S = 3600.0


def encode(samples: np.ndarray, rate: int) -> tuple[str, bytes]:
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    try:
        import soundfile
    except ImportError:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
        return "wav", buf.getvalue()
    buf = io.BytesIO()
    soundfile.write(buf, pcm, rate, format="FLAC", subtype="PCM_16")
    return "flac", buf.getvalue()


class ClipMaker:
    def __init__(self, cfg: ClipsConfig, clock: StreamClock) -> None:
        self.cfg = cfg
        self.clock = clock
        self.sent = self.dropped = 0
        self._recent: deque[tuple[float, int]] = deque()  # (monotonic time, bytes) this hour
        self._last_clipped = -1  # index of the cycle clipped last: one clip per cycle
        self._per_alert: dict[str, int] = {}  # clips sent for each open alert

    def for_alert(self, alert: AlertChanged, cycle: ClassifiedCycle | None) -> Clip | None:
        if alert.event == "end":
            self._per_alert.pop(alert.alert_id, None)
            return None
        if not self.cfg.enabled or not alert.clinical or cycle is None \
                or self._per_alert.get(alert.alert_id, 0) >= self.cfg.per_alert:
            return None
        clip = self._clip(cycle, alert)
        if clip is not None:
            self._per_alert[alert.alert_id] = self._per_alert.get(alert.alert_id, 0) + 1
        return clip

    def for_cycle(self, cycle: ClassifiedCycle) -> Clip | None:
        p = cycle.prediction
        if not (self.cfg.enabled and self.cfg.every_abnormal) or p is None \
                or p.label == "normal":
            return None
        return self._clip(cycle, None)

    def _clip(self, c: ClassifiedCycle, alert: AlertChanged | None) -> Clip | None:
        if c.index == self._last_clipped:
            return None
        assert c.prediction is not None
        encoding, data = encode(c.cycle.samples, c.cycle.sample_rate)
        now = time.monotonic()
        while self._recent and now - self._recent[0][0] > HOUR_S:
            self._recent.popleft()
        reserved = min(self.cfg.reserved_for_new, self.cfg.max_per_hour - 1)
        allowed = self.cfg.max_per_hour - (0 if alert is not None and alert.event == "new"
                                           else reserved)
        if (len(self._recent) >= allowed or
                sum(n for _, n in self._recent) + len(data) > self.cfg.max_kb_per_hour * 1000):
            self.dropped += 1
            return None
        self._recent.append((now, len(data)))
        self._last_clipped = c.index
        self.sent += 1
        return Clip(
            clip_id=uuid.uuid4().hex[:16], alert_id=alert.alert_id if alert else None,
            alert_kind=alert.kind if alert else None, session_id=c.session_id,
            cycle_start=iso_ms(self.clock.wall(c.start)),
            cycle_end=iso_ms(self.clock.wall(c.end)), label=c.prediction.label,
            confidence=round(c.prediction.confidence, 4), sample_rate=c.cycle.sample_rate,
            encoding=encoding,  # type: ignore[arg-type]
            audio_b64=base64.b64encode(data).decode())
