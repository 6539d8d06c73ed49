"""A stethoscope on a pseudo-terminal: plays a recording as the firmware would stream it.

    python -m firmware_bridge.simulate RECORDING.wav [--link /tmp/lungedge-stethoscope]

It behaves as the device side of PROTOCOL.md: answers every host command with an ACK, sends INFO
after START, a heartbeat every second and audio frames paced in real time (or as fast as the
host reads, with --fast). Faults for testing the host: --corrupt flips bits, --drop loses frames,
--stall pauses the stream, --unplug-after closes the port (as pulling the USB cable does) and
--replug-after brings it back under the same link path, as udev's /dev/serial/by-id links do.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import random
import select
import struct
import sys
import time
import tty
from pathlib import Path

import numpy as np

from firmware_bridge.decoder import FrameDecoder
from firmware_bridge.protocol import (
    ACK,
    HEARTBEAT,
    MAX_SAMPLES,
    RATE_CODES,
    RATES,
    Audio,
    Frame,
    FrameType,
    Info,
)

FIRMWARE = (1, 0, 0)


class SimulatedStethoscope:
    def __init__(self, pcm: np.ndarray, sample_rate: int, link: Path, *,
                 frame_samples: int = 256, realtime: bool = True, loop: bool = False,
                 corrupt: float = 0.0, drop: float = 0.0, stall_every_s: float = 0.0,
                 stall_for_s: float = 0.0, unplug_after_s: float | None = None,
                 replug_after_s: float | None = None, seed: int = 0,
                 log: bool = True) -> None:
        if sample_rate not in RATE_CODES:
            raise SystemExit(f"{sample_rate} Hz has no rate code in the protocol; "
                             f"use a recording at one of {sorted(RATE_CODES)} Hz")
        if not 1 <= frame_samples <= MAX_SAMPLES:
            raise SystemExit(f"--frame-samples must be 1…{MAX_SAMPLES}")
        self.pcm = pcm.astype("<i2")
        self.rate = sample_rate
        self.link = link
        self.frame_samples = frame_samples
        self.realtime = realtime
        self.loop = loop
        self.corrupt = corrupt
        self.drop = drop
        self.stall_every_s = stall_every_s
        self.stall_for_s = stall_for_s
        self.unplug_after_s = unplug_after_s
        self.replug_after_s = replug_after_s
        self.rng = random.Random(seed)
        self.log = log
        self.master = -1
        self.slave = -1
        self.seq = 0
        self.streaming = False
        self.stopped_by_host = False
        self.sample_clock = 0  # device samples since START
        self.position = 0  # position in the recording (keeps running while unplugged)

    def say(self, text: str) -> None:
        if self.log:
            print(f"[simulator] {text}", file=sys.stderr, flush=True)

    # -- the port ---------------------------------------------------------------------------
    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        tmp = self.link.with_name(self.link.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.link)
        self.decoder = FrameDecoder()
        self.streaming = False
        os.write(self.master, b"\x00")  # start-up: the host drops any partial frame
        self.say(f"plugged in: {self.link} -> {os.ttyname(self.slave)}")

    def unplug(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = -1
        self.say("unplugged")

    def send(self, kind: FrameType, payload: bytes = b"") -> None:
        data = bytearray(Frame(kind, self.seq, payload).encode())
        self.seq = (self.seq + 1) & 0xFFFF
        if kind == FrameType.AUDIO and self.drop and self.rng.random() < self.drop:
            return
        if self.corrupt:
            for i in range(len(data)):
                if self.rng.random() < self.corrupt:
                    data[i] ^= 1 << self.rng.randrange(8)
        view = memoryview(bytes(data))
        while view:
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:  # the host is not reading fast enough: wait for it
                select.select([], [self.master], [], 0.5)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise

    # -- host commands ----------------------------------------------------------------------
    def poll_commands(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return
        for frame in self.decoder.feed(data):
            status = 0
            if frame.type == FrameType.SET_RATE:
                wanted = RATES.get(frame.payload[0]) if frame.payload else None
                status = 0 if wanted == self.rate else 1
                if status:
                    self.say(f"host asked for {wanted} Hz; this recording is {self.rate} Hz")
            elif frame.type == FrameType.SET_GAIN:
                status = 0 if len(frame.payload) == 1 else 1
            elif frame.type == FrameType.START:
                if not self.streaming:
                    self.streaming = True
                    self.sample_clock = 0
                    self.say("streaming")
            elif frame.type == FrameType.STOP:
                self.streaming = False
                self.stopped_by_host = True
                self.say("stopped by the host")
            elif frame.type == FrameType.ALERT:
                pattern, duration = struct.unpack("<BH", frame.payload)
                self.say(f"ALERT pattern {pattern} for {duration} ms")
            else:
                status = 2
            self.send(FrameType.ACK, ACK.pack(frame.seq, frame.type, status))
            if frame.type == FrameType.START:
                info = Info(FIRMWARE, "MEMS", 0, self.rate, "lungedge-sim")
                self.send(FrameType.INFO, info.pack())

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> None:
        self.plug()
        t0 = time.monotonic()
        paced_from = (t0, 0)  # (monotonic time, recording position) pacing is measured from
        next_heartbeat = t0
        next_stall = t0 + self.stall_every_s if self.stall_every_s else None
        unplug_at = t0 + self.unplug_after_s if self.unplug_after_s is not None else None
        try:
            while True:
                now = time.monotonic()
                if unplug_at is not None and now >= unplug_at:
                    self.unplug()
                    if self.replug_after_s is None:
                        return
                    time.sleep(self.replug_after_s)
                    self.position += round(self.replug_after_s * self.rate)  # time went on
                    unplug_at = None
                    self.plug()
                    continue
                if next_stall is not None and now >= next_stall and self.streaming:
                    self.say(f"stalling for {self.stall_for_s} s")
                    time.sleep(self.stall_for_s)
                    next_stall = time.monotonic() + self.stall_every_s
                if now >= next_heartbeat:
                    self.send(FrameType.HEARTBEAT, HEARTBEAT.pack(
                        int((now - t0) * 1000) & 0xFFFFFFFF, int(self.streaming), 0))
                    next_heartbeat = now + 1.0
                if not self.streaming:
                    self.poll_commands(0.05)
                    paced_from = (time.monotonic(), self.position)
                    continue
                if self.position >= len(self.pcm):
                    if not self.loop:
                        self.say("end of recording")
                        self.streaming = False
                        self.wait_for_host_to_leave()
                        return
                    self.position = 0
                    paced_from = (time.monotonic(), 0)
                chunk = self.pcm[self.position:self.position + self.frame_samples]
                self.send(FrameType.AUDIO, Audio(self.rate, self.sample_clock,
                                                 chunk.tobytes()).pack())
                self.position += len(chunk)
                self.sample_clock = (self.sample_clock + len(chunk)) & 0xFFFFFFFF
                if self.realtime:
                    due = paced_from[0] + (self.position - paced_from[1]) / self.rate
                    self.poll_commands(max(0.0, due - time.monotonic()))
                else:
                    self.poll_commands(0)
        finally:
            if self.master >= 0:
                self.unplug()

    def wait_for_host_to_leave(self, limit_s: float = 3600) -> None:
        """Keep the port open after the recording ends, until the host sends STOP."""
        self.stopped_by_host = False
        end = time.monotonic() + limit_s
        while time.monotonic() < end and not self.stopped_by_host:
            self.poll_commands(0.2)


def read_pcm(path: Path) -> tuple[np.ndarray, int]:
    """A recording as the 16-bit mono samples a stethoscope's ADC would give."""
    try:
        import soundfile
    except ImportError:
        raise SystemExit("the simulator reads recordings with soundfile: "
                         "`pip install soundfile`") from None
    try:
        data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise SystemExit(f"{path}: not a readable recording ({exc})") from None
    return data.mean(axis=1).astype("<i2"), int(rate)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m firmware_bridge.simulate",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("recording", type=Path, help="WAV or FLAC at a rate the protocol carries")
    ap.add_argument("--link", type=Path, default=Path("/tmp/lungedge-stethoscope"),
                    help="symlink to the pseudo-terminal; give it to lungedge as the port")
    ap.add_argument("--fast", action="store_true", help="as fast as the host reads")
    ap.add_argument("--loop", action="store_true", help="play the recording forever")
    ap.add_argument("--frame-samples", type=int, default=256)
    ap.add_argument("--corrupt", type=float, default=0.0, metavar="P",
                    help="flip a bit in each sent byte with probability P")
    ap.add_argument("--drop", type=float, default=0.0, metavar="P",
                    help="lose each audio frame with probability P")
    ap.add_argument("--stall-every", type=float, default=0.0, metavar="S")
    ap.add_argument("--stall-for", type=float, default=0.0, metavar="S")
    ap.add_argument("--unplug-after", type=float, default=None, metavar="S")
    ap.add_argument("--replug-after", type=float, default=None, metavar="S")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    pcm, rate = read_pcm(args.recording)
    sim = SimulatedStethoscope(
        pcm, rate, args.link, frame_samples=args.frame_samples, realtime=not args.fast,
        loop=args.loop, corrupt=args.corrupt, drop=args.drop, stall_every_s=args.stall_every,
        stall_for_s=args.stall_for, unplug_after_s=args.unplug_after,
        replug_after_s=args.replug_after, seed=args.seed)
    with contextlib.suppress(KeyboardInterrupt):
        sim.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
