"""firmware_bridge: the protocol document, the C firmware code, the Python decoder, the serial
source on a real pseudo-terminal driven by the device simulator."""

from __future__ import annotations

import errno
import random
import re
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.dsp.frontend import FrontendParams
from edge.dsp.segmenter import SegmenterConfig
from edge.pipeline.signal_path import run_signal_path
from edge.sources.audio_file import read_audio
from edge.sources.base import SourceError
from edge.sources.file import FileSource
from edge.sources.serial import SerialSource
from firmware_bridge.decoder import AudioTimeline, FrameDecoder, LinkStats
from firmware_bridge.protocol import (
    MAX_ENCODED,
    MAX_SAMPLES,
    Audio,
    Frame,
    FrameType,
    cobs_decode,
    cobs_encode,
    crc32,
)
from firmware_bridge.serial_port import describe_open_error
from firmware_bridge.simulate import SimulatedStethoscope

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware_bridge" / "firmware"


# -- the document's worked examples ---------------------------------------------------------------
def protocol_examples() -> list[dict[str, str]]:
    text = (ROOT / "firmware_bridge" / "PROTOCOL.md").read_text()
    out = []
    for block in re.findall(r"```text\n(example:.*?)```", text, re.S):
        fields = dict(line.split(":", 1) for line in block.strip().splitlines())
        out.append({k.strip(): v.strip() for k, v in fields.items()})
    assert len(out) >= 6
    return out


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace("(none)", "").replace(" ", ""))


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: the C firmware code cannot be compiled here")
    exe = tmp_path_factory.mktemp("c") / "harness"
    subprocess.run([gcc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
                    "-o", str(exe), str(FIRMWARE / "lungedge_link.c"),
                    str(FIRMWARE / "test_harness.c")], check=True)
    return exe


def c(harness: Path, *args: object) -> str:
    """The harness's answer; "ERROR" (exit 1) when the C encoder refused."""
    proc = subprocess.run([str(harness), *map(str, args)], capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout.strip()


def test_worked_examples_in_python() -> None:
    for ex in protocol_examples():
        kind = FrameType[ex["type"].split()[0]]
        frame = Frame(kind, int(ex["seq"]), hexbytes(ex["payload"]))
        body, crc = ex["body"].split("| crc")
        assert frame.body() == hexbytes(body) + hexbytes(crc), ex["example"]
        assert frame.encode() == hexbytes(ex["wire"]), ex["example"]
        assert FrameDecoder().feed(hexbytes(ex["wire"])) == [frame]


def test_worked_examples_in_c(harness: Path) -> None:
    for ex in protocol_examples():
        kind = FrameType[ex["type"].split()[0]]
        wire = c(harness, "frame", int(kind), ex["seq"], hexbytes(ex["payload"]).hex())
        assert bytes.fromhex(wire) == hexbytes(ex["wire"]), ex["example"]
        if kind == FrameType.AUDIO:
            audio = Audio.unpack(hexbytes(ex["payload"]))
            samples = struct.unpack(f"<{audio.n_samples}h", audio.samples)
            wire = c(harness, "audio", ex["seq"], 1, audio.flags, audio.first_sample, *samples)
            assert bytes.fromhex(wire) == hexbytes(ex["wire"])


def test_crc_check_value(harness: Path) -> None:
    assert crc32(b"123456789") == 0xCBF43926
    assert c(harness, "crc", b"123456789".hex()) == "cbf43926"


# -- C ⇄ Python ------------------------------------------------------------------------------------
def test_c_audio_frames_decode_in_python(harness: Path) -> None:
    rng = np.random.default_rng(7)
    for count in [0, 1, 2, 126, 127, 128, 254, 255, 300, MAX_SAMPLES]:
        kind = rng.integers(3)
        samples = (np.zeros(count) if kind == 0 else rng.integers(-32768, 32768, count)
                   if kind == 1 else rng.integers(-300, 300, count)).astype(int)
        wire = bytes.fromhex(c(harness, "audio", 65535, 5, 1, 4294967295, *samples))
        (frame,) = FrameDecoder().feed(wire)
        audio = Audio.unpack(frame.payload)
        assert (frame.seq, audio.sample_rate, audio.flags, audio.first_sample) == (
            65535, 48000, 1, 4294967295)
        assert np.array_equal(np.frombuffer(audio.samples, "<i2"), samples)
        assert wire == Frame(FrameType.AUDIO, 65535, audio.pack()).encode()
    assert c(harness, "audio", 0, 1, 0, 0, *([1] * (MAX_SAMPLES + 1))) == "ERROR"


def test_c_ack_and_heartbeat_match_python(harness: Path) -> None:
    ack = bytes.fromhex(c(harness, "ack", 3, 513, 0x84, 1))
    assert ack == Frame(FrameType.ACK, 3, struct.pack("<HBB", 513, 0x84, 1)).encode()
    hb = bytes.fromhex(c(harness, "heartbeat", 9, 4000000000, 1, 100))
    assert hb == Frame(FrameType.HEARTBEAT, 9, struct.pack("<IBB", 4000000000, 1, 100)).encode()


def test_python_commands_decode_in_c(harness: Path) -> None:
    good = [Frame(FrameType.START, 0, b""), Frame(FrameType.SET_RATE, 1, b"\x01"),
            Frame(FrameType.SET_GAIN, 2, struct.pack("<b", -6)),
            Frame(FrameType.ALERT, 3, struct.pack("<BH", 2, 3000))]
    damaged = bytearray(Frame(FrameType.STOP, 4, b"").encode())
    damaged[3] ^= 0x10
    # Garbage with no delimiter would swallow the next frame: a sender opens with a lone 0x00.
    stream = (b"\x17garbage\xff" + b"\x00" + good[0].encode() + good[1].encode()
              + bytes(damaged) + b"\x00\x00" + bytes(range(1, 200)) + b"\x00"
              + good[2].encode() + good[3].encode()[:5] + b"\x00" + good[3].encode())
    lines = c(harness, "receive", stream.hex()).splitlines()
    got = [line.split() for line in lines[:-1]]
    # Every intact command, with its payload; the damaged STOP, the garbage and the cut-off
    # copy of the ALERT are not delivered.
    assert got == [["frame", str(int(f.type)), str(f.seq), *([f.payload.hex()] if f.payload
                                                             else [])] for f in good]
    frames, bad, overlong = (int(v) for v in lines[-1].split()[1:])
    assert frames == 4
    assert bad == 3  # the garbage before the first frame, the damaged STOP, the cut ALERT
    assert overlong == 1  # 199 bytes without a delimiter: skipped, back in step after it


# -- the decoder under damage ----------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(1, 700), max_size=20))
def test_decoder_survives_any_bytes(data: bytes, cuts: list[int]) -> None:
    dec = FrameDecoder()
    pos = 0
    for n in [*cuts, len(data)]:
        for frame in dec.feed(data[pos:pos + n]):
            assert crc32(frame.body()[:-4]) == struct.unpack("<I", frame.body()[-4:])[0]
        pos += n
        assert len(dec._buf) <= MAX_ENCODED  # bounded, whatever arrives


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_round_trip(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert cobs_decode(encoded) == data


FUZZ_FRAMES = 2000
FUZZ_SAMPLES = 16


@settings(max_examples=50, deadline=None)  # 50 × 2000 = 10^5 damaged-stream frames
@given(seed=st.integers(0, 2**32 - 1), flip=st.floats(0, 0.1), trunc=st.floats(0, 0.05),
       dup=st.floats(0, 0.05), swap=st.floats(0, 0.05), drop=st.floats(0, 0.05),
       garbage=st.floats(0, 0.05))
def test_damaged_streams_deliver_only_true_samples_and_report_every_loss(
        seed: int, flip: float, trunc: float, dup: float, swap: float, drop: float,
        garbage: float) -> None:
    rng = random.Random(seed)
    rate = 8000
    truth = np.array([rng.randrange(-32768, 32768) for _ in range(FUZZ_FRAMES * FUZZ_SAMPLES)],
                     dtype="<i2")
    wire = [Frame(FrameType.AUDIO, i, Audio(rate, i * FUZZ_SAMPLES, truth[
        i * FUZZ_SAMPLES:(i + 1) * FUZZ_SAMPLES].tobytes()).pack()).encode()
        for i in range(FUZZ_FRAMES)]
    damaged: list[bytes] = []
    i = 0
    while i < len(wire):
        frame = bytearray(wire[i])
        r = rng.random()
        if r < drop:
            i += 1
            continue
        if r < drop + swap and i + 1 < len(wire):
            damaged += [wire[i + 1], wire[i]]
            i += 2
            continue
        if rng.random() < flip:
            for _ in range(rng.randint(1, 3)):
                frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        if rng.random() < trunc:
            frame = frame[:rng.randrange(len(frame))] + b"\x00"
        damaged.append(bytes(frame))
        if rng.random() < dup:
            damaged.append(wire[i])
        if rng.random() < garbage:
            damaged.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 80))))
        i += 1
    stream = b"".join(damaged)
    stats = LinkStats()
    dec, timeline = FrameDecoder(stats), AudioTimeline(rate, stats)
    end = delivered = pos = 0
    device_origin: int | None = None  # device sample index at host position 0
    while pos < len(stream):
        n = rng.randint(1, 2048)
        for frame in dec.feed(stream[pos:pos + n]):
            block = timeline.add(frame)
            if block is None:
                continue
            if device_origin is None:
                device_origin = Audio.unpack(frame.payload).first_sample
            start, gap = round(block.start_s * rate), round(block.gap_s * rate)
            assert start == end + gap  # each block follows the last, after its reported gap
            got = np.round(block.samples * 32768).astype(int)
            first = device_origin + start
            assert np.array_equal(got, truth[first:first + len(got)])  # no corrupted sample
            end = start + len(got)
            delivered += len(got)
        pos += n
    assert delivered + stats.gap_samples == end  # whatever was not delivered was reported
    assert delivered > 0


# -- ports -----------------------------------------------------------------------------------------
def test_port_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist: is the stethoscope plugged in"):
        SerialSource(str(tmp_path / "ttyACM9"), sample_rate=8000)
    plain = tmp_path / "file"
    plain.write_text("")
    with pytest.raises(SourceError, match="is not a serial port"):
        SerialSource(str(plain), sample_rate=8000)
    denied = describe_open_error(str(plain), OSError(errno.EACCES, "Permission denied"))
    assert "usermod -aG" in denied and "log in again" in denied
    busy = describe_open_error("/dev/ttyACM0", OSError(errno.EBUSY, "busy"))
    assert "another program" in busy and "fuser" in busy
    with pytest.raises(SourceError, match="carries"):
        SerialSource(str(plain), sample_rate=11025)


# -- end to end on a pseudo-terminal ---------------------------------------------------------------
class Simulator:
    """The device simulator in a thread, on a real pty."""

    def __init__(self, wav: Path, link: Path, **options: object) -> None:
        samples, rate = read_audio(wav)
        pcm = np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2")
        self.sim = SimulatedStethoscope(pcm, rate, link, log=False, **options)  # type: ignore
        self.thread = threading.Thread(target=self.sim.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 5
        while not link.exists():
            assert time.monotonic() < deadline, "simulator did not create its port"
            time.sleep(0.01)
        self.n_samples = len(pcm)


def read_until(source: SerialSource, seconds: float, limit_s: float = 30) -> list:
    blocks, t0 = [], time.monotonic()
    for block in source.blocks():
        blocks.append(block)
        if block.start_s + block.duration_s >= seconds or time.monotonic() - t0 > limit_s:
            break
    source.close()
    return blocks


def test_serial_path_gives_the_same_cycles_as_the_file(tmp_path: Path,
                                                       sample_wavs: list[Path]) -> None:
    wav = sample_wavs[1]
    sim = Simulator(wav, tmp_path / "steth", realtime=False)
    source = SerialSource(str(tmp_path / "steth"), sample_rate=8000)
    blocks = read_until(source, sim.n_samples / 8000)
    assert source.stats.bad_frames == 0 and source.stats.gap_samples == 0
    assert source.device_info is not None and source.device_info.name == "lungedge-sim"
    serial = list(run_signal_path(blocks, 8000, FrontendParams(), SegmenterConfig()))
    f = FileSource(wav)
    direct = list(run_signal_path(f.blocks(), 8000, FrontendParams(), SegmenterConfig()))
    assert [(c.cycle.start, c.cycle.end) for c in serial] == [(c.cycle.start, c.cycle.end)
                                                              for c in direct]
    for a, b in zip(serial, direct, strict=True):
        assert np.array_equal(a.features, b.features)


def test_dropped_and_corrupted_frames_become_reported_gaps(tmp_path: Path,
                                                           sample_wavs: list[Path]) -> None:
    sim = Simulator(sample_wavs[0], tmp_path / "steth", realtime=False, drop=0.05,
                    corrupt=0.0005, seed=3)
    source = SerialSource(str(tmp_path / "steth"), sample_rate=8000)
    blocks = read_until(source, sim.n_samples / 8000 - 0.1)
    truth, _ = read_audio(sample_wavs[0])
    gaps = sum(b.gap_s for b in blocks)
    assert gaps > 0.2 and source.stats.gap_samples > 0
    assert {b.gap_reason for b in blocks if b.gap_s} == {"frames lost on the serial link"}
    for b in blocks:  # every delivered sample is the recording's sample at that time
        i = round(b.start_s * 8000)
        assert np.array_equal(b.samples, np.round(truth[i:i + len(b.samples)] * 32768) / 32768)


def test_unplug_and_replug_reopens_and_reports_the_time_away(tmp_path: Path,
                                                             sample_wavs: list[Path]) -> None:
    Simulator(sample_wavs[2], tmp_path / "steth", unplug_after_s=1.0, replug_after_s=1.0)
    source = SerialSource(str(tmp_path / "steth"), sample_rate=8000, stall_timeout_s=0.5,
                          reopen_backoff_max_s=0.4)
    blocks = read_until(source, 4.0)
    assert source.reopens == 1
    away = [b for b in blocks if b.gap_reason == "device reopened"]
    assert len(away) == 1 and 0.8 < away[0].gap_s < 2.5
    assert blocks[-1].start_s >= 4.0 - blocks[-1].duration_s


def test_stall_restarts_the_stream_without_reopening(tmp_path: Path,
                                                     sample_wavs: list[Path]) -> None:
    """A stall of 2 s: past the stall timeout (1 s) by a second, short of the reopen (3 s) by a
    second, so a busy machine cannot tip it either way."""
    Simulator(sample_wavs[0], tmp_path / "steth", stall_every_s=0.5, stall_for_s=2.0)
    source = SerialSource(str(tmp_path / "steth"), sample_rate=8000, stall_timeout_s=1.0)
    read_until(source, 2.0)
    assert source.stalls >= 1 and source.reopens == 0
