"""The stethoscope's serial link as an audio source (`source: {type: serial}` in the config).

The link itself (protocol, decoder, port) is `firmware_bridge`, which knows nothing of lungedge.
On open this source configures the device (rate, gain) and starts it; then it reads frames,
turns audio frames into blocks on a true timeline, and keeps the device's info, heartbeats and
errors. A silent link is restarted; an unplugged device is reopened with capped backoff, and the
time it was away is reported as a gap. None of these ends the stream. `alert()` lights the
stethoscope's LED (or buzzer) when the daemon opens a clinical alert.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time
from collections.abc import Iterator

from edge import clock
from edge.sources.base import AudioBlock, PlainInput, SourceError, reopen_with_backoff
from firmware_bridge.decoder import AudioTimeline, FrameDecoder, LinkStats, TimedAudio
from firmware_bridge.protocol import (
    ACK,
    ACK_STATUS,
    ALERT,
    HEARTBEAT,
    RATE_CODES,
    Frame,
    FrameType,
    Info,
    ProtocolError,
)
from firmware_bridge.serial_port import LinkLost, PortError, SerialPort

log = logging.getLogger(__name__)


class SerialSource(PlainInput):
    def __init__(self, port: str, *, sample_rate: int, baud: int = 115200,
                 gain_db: int | None = None, stall_timeout_s: float = 2.0,
                 reopen_backoff_max_s: float = 30.0) -> None:
        if sample_rate not in RATE_CODES:
            raise SourceError(f"the link carries {sorted(RATE_CODES)} Hz, not {sample_rate} Hz")
        self.sample_rate = sample_rate
        self.live = True
        self.gain_db = gain_db
        self.stall_timeout_s = stall_timeout_s
        self.backoff_max_s = reopen_backoff_max_s
        try:
            self.port = SerialPort(port, baud)
        except PortError as exc:
            raise SourceError(str(exc)) from None
        self.stats = LinkStats()
        self.timeline = AudioTimeline(sample_rate, self.stats)
        self.state = "closed"  # closed → streaming ⇄ stalled / reopening
        self.device_info: Info | None = None
        self.device_errors = 0
        self.reopens = 0
        self.stalls = 0
        self.heartbeats = 0
        self.device_buffer_pct = 0  # the device's own buffer fill, from its latest heartbeat
        self._seq = 0
        self._unacked: dict[int, FrameType] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()  # commands may come from another thread (alerts)
        try:
            self._connect()  # the first open fails loudly: a wrong port is a config error
        except PortError as exc:
            raise SourceError(str(exc)) from None

    def describe(self) -> str:
        info = self.device_info
        dev = (f", firmware {'.'.join(map(str, info.firmware))} {info.name!r}" if info else "")
        return f"serial {self.port.path} ({self.sample_rate} Hz, {self.port.baud} baud{dev})"

    def counters(self) -> dict[str, int]:
        s = self.stats
        return {"frames": s.frames, "bad_frames": s.bad_frames, "overlong": s.overlong,
                "lost_frames": s.lost_frames, "duplicates": s.duplicates,
                "gap_samples": s.gap_samples, "device_errors": self.device_errors,
                "stalls": self.stalls, "reopens": self.reopens, "heartbeats": self.heartbeats,
                "device_buffer_pct": self.device_buffer_pct,
                **{f"bad_{kind}": n for kind, n in s.errors.items()}}

    # -- host → device --------------------------------------------------------------------
    def send(self, kind: FrameType, payload: bytes = b"") -> int:
        with self._lock:
            seq = self._seq
            self._seq = (self._seq + 1) & 0xFFFF
            self._unacked[seq] = kind
            self.port.write(Frame(kind, seq, payload).encode())
        return seq

    def show_alert(self) -> bool:
        self.alert()
        return True

    def alert(self, pattern: int = 2, duration_ms: int = 3000) -> None:
        """Show an alert on the stethoscope (by default the LED blinks for 3 s), if it is
        connected: the person holding it learns at once that lungedge heard something."""
        if self.port.is_open:
            try:
                self.send(FrameType.ALERT, ALERT.pack(pattern, duration_ms))
            except LinkLost:
                log.warning("alert not shown: the stethoscope is disconnected")

    def _connect(self) -> None:
        self.decoder = FrameDecoder(self.stats)
        self.port.open()
        self._unacked.clear()
        self.port.write(b"\x00")  # the device drops any partial frame it holds
        self.send(FrameType.SET_RATE, bytes([RATE_CODES[self.sample_rate]]))
        if self.gain_db is not None:
            self.send(FrameType.SET_GAIN, struct.pack("<b", self.gain_db))
        self.send(FrameType.START)
        self.state = "streaming"

    # -- device → host --------------------------------------------------------------------
    def blocks(self) -> Iterator[AudioBlock]:
        last_data = time.monotonic()
        while not self._stop.is_set():
            if not self.port.is_open:
                away_since = time.monotonic()  # NTP may set the wall clock meanwhile
                if not self._reopen():
                    return
                self.timeline.restart(time.monotonic() - away_since)
                last_data = time.monotonic()
            try:
                data = self.port.read(0.2)
            except LinkLost as exc:
                log.error("%s; reopening", exc)
                self.port.close()
                self.state = "reopening"
                continue
            now = time.monotonic()
            if not data:
                silent = now - last_data
                if silent > 3 * self.stall_timeout_s:
                    log.error("no data from %s for %.1f s: reopening", self.port.path, silent)
                    self.port.close()
                    self.state = "reopening"
                elif silent > self.stall_timeout_s and self.state != "stalled":
                    self.stalls += 1
                    self.state = "stalled"
                    log.warning("no data from %s for %.1f s: restarting the stream",
                                self.port.path, silent)
                    self.send(FrameType.START)
                continue
            last_data = now
            self.state = "streaming"
            for frame in self.decoder.feed(data):
                audio = self._handle(frame)
                if audio is not None:
                    yield AudioBlock(audio.samples, self.sample_rate, audio.start_s,
                                     clock.wall() - len(audio.samples) / self.sample_rate,
                                     audio.gap_s, audio.gap_reason)

    def _handle(self, frame: Frame) -> TimedAudio | None:
        try:
            if frame.type == FrameType.AUDIO:
                return self.timeline.add(frame)
            if frame.type == FrameType.ACK:
                seq, kind, status = ACK.unpack(frame.payload)
                sent = self._unacked.pop(seq, None)
                if status != 0:
                    log.error("device refused %s (seq %d): %s",
                              sent.name if sent else f"type 0x{kind:02x}", seq,
                              ACK_STATUS.get(status, f"status {status}"))
            elif frame.type == FrameType.HEARTBEAT:
                self.heartbeats += 1
                self.device_buffer_pct = HEARTBEAT.unpack(frame.payload)[2]
            elif frame.type == FrameType.INFO:
                self.device_info = Info.unpack(frame.payload)
                log.info("device: %s", self.describe())
            elif frame.type == FrameType.ERROR:
                self.device_errors += 1
                code = frame.payload[0] if frame.payload else -1
                text = frame.payload[1:].decode("ascii", "replace")
                log.error("device error %d: %s", code, text)
        except (ProtocolError, struct.error) as exc:
            self.stats.count_error(f"payload: {exc}")
        return None

    def _reopen(self) -> bool:
        def attempt() -> None:
            try:
                self._connect()
            except (PortError, LinkLost):
                self.port.close()
                raise

        if not reopen_with_backoff(attempt, self._stop, what=f"stethoscope {self.port.path}",
                                   first_s=0.2, max_s=self.backoff_max_s,
                                   errors=(PortError, LinkLost)):
            return False
        self.reopens += 1
        log.info("%s reopened (%d reopen(s) so far)", self.port.path, self.reopens)
        return True

    def close(self) -> None:
        self._stop.set()
        if self.port.is_open:
            with contextlib.suppress(OSError):
                self.send(FrameType.STOP)
        self.port.close()
        self.state = "closed"
