"""The lungedge serial link, version 1: frame layout, CRC, COBS framing (see PROTOCOL.md).

This module only packs and unpacks bytes; the incremental decoder (`decoder.py`), the serial
transport (`serial_port.py`) and the C encoder (`firmware/`) build on the same definitions, and
the worked examples in PROTOCOL.md are checked against it by the tests.
"""

from __future__ import annotations

import enum
import itertools
import struct
import zlib
from dataclasses import dataclass

VERSION = 1
HEADER = struct.Struct("<BBHH")  # version, type, seq, payload length
CRC_SIZE = 4
MAX_PAYLOAD = 1024
MAX_BODY = HEADER.size + MAX_PAYLOAD + CRC_SIZE
# COBS adds one byte per 254 plus one; the delimiter is not counted.
MAX_ENCODED = MAX_BODY + MAX_BODY // 254 + 1
AUDIO_HEADER = struct.Struct("<BBHI")  # rate code, flags, sample count, first sample index
MAX_SAMPLES = (MAX_PAYLOAD - AUDIO_HEADER.size) // 2


class FrameType(enum.IntEnum):
    AUDIO = 0x01
    HEARTBEAT = 0x02
    INFO = 0x03
    ERROR = 0x04
    ACK = 0x05
    START = 0x81
    STOP = 0x82
    SET_GAIN = 0x83
    SET_RATE = 0x84
    ALERT = 0x85


RATES = {0: 4000, 1: 8000, 2: 16000, 3: 22050, 4: 44100, 5: 48000}
RATE_CODES = {rate: code for code, rate in RATES.items()}


class ProtocolError(ValueError):
    """Bytes that are not a valid frame; the message says which check failed."""


def crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, as zlib: reflected poly 0xEDB88320, init and final xor 0xFFFFFFFF).

    Not CRC-16: at ~30 frames/s for days, a 1-in-65536 escape for a randomly damaged frame
    would let a corrupted frame through about daily on a bad cable; CRC-32 makes it 1 in 4e9."""
    return zlib.crc32(data) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
            continue
        block.append(byte)
        if len(block) == 254:
            out.append(255)
            out += block
            block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Walks only the code bytes: each one becomes the zero it stands for (or is dropped, after
    a full 254-byte block), so the cost is per zero, not per byte."""
    if b"\x00" in data:
        raise ProtocolError(f"COBS: zero byte at offset {data.index(0)} inside a frame")
    n = len(data)
    out = bytearray(data)
    dropped = [0]  # the first code byte never stands for a zero
    code = data[0] if n else 1
    j = code
    while j < n:
        if code == 255:
            dropped.append(j)
        else:
            out[j] = 0
        code = data[j]
        j += code
    if j > n:
        raise ProtocolError("COBS: last block runs past the frame end")
    if len(dropped) == 1:
        return bytes(out[1:])
    dropped.append(n)
    return b"".join(out[a + 1:b] for a, b in itertools.pairwise(dropped))


@dataclass(frozen=True)
class Frame:
    type: FrameType
    seq: int
    payload: bytes
    version: int = VERSION

    def body(self) -> bytes:
        head = HEADER.pack(self.version, self.type, self.seq & 0xFFFF, len(self.payload))
        data = head + self.payload
        return data + struct.pack("<I", crc32(data))

    def encode(self) -> bytes:
        """The bytes on the wire: COBS(header + payload + CRC) and a 0x00 delimiter."""
        if len(self.payload) > MAX_PAYLOAD:
            raise ProtocolError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")
        return cobs_encode(self.body()) + b"\x00"


def parse_body(body: bytes) -> Frame:
    """A decoded (un-COBSed) frame body → Frame; raises ProtocolError naming the failed check."""
    if len(body) < HEADER.size + CRC_SIZE:
        raise ProtocolError(f"frame of {len(body)} bytes is shorter than header + CRC")
    (crc,) = struct.unpack_from("<I", body, len(body) - CRC_SIZE)
    if crc32(body[:-CRC_SIZE]) != crc:
        raise ProtocolError("CRC mismatch")
    version, ftype, seq, length = HEADER.unpack_from(body)
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}, this host speaks {VERSION}")
    if length != len(body) - HEADER.size - CRC_SIZE:
        raise ProtocolError(f"length field {length} disagrees with the frame size")
    try:
        kind = FrameType(ftype)
    except ValueError:
        raise ProtocolError(f"unknown frame type 0x{ftype:02x}") from None
    return Frame(kind, seq, bytes(body[HEADER.size:-CRC_SIZE]), version)


# -- payloads -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Audio:
    sample_rate: int
    first_sample: int  # index of the first sample on the device's sample clock since START
    samples: bytes  # int16 little-endian PCM
    flags: int = 0  # bit 0: the device's own buffer overflowed before this frame

    @property
    def n_samples(self) -> int:
        return len(self.samples) // 2

    def pack(self) -> bytes:
        if self.sample_rate not in RATE_CODES:
            raise ProtocolError(f"sample rate {self.sample_rate} has no rate code; "
                                f"supported: {sorted(RATE_CODES)}")
        if self.n_samples > MAX_SAMPLES:
            raise ProtocolError(f"{self.n_samples} samples exceed {MAX_SAMPLES} per frame")
        return AUDIO_HEADER.pack(RATE_CODES[self.sample_rate], self.flags, self.n_samples,
                                 self.first_sample & 0xFFFFFFFF) + self.samples

    @classmethod
    def unpack(cls, payload: bytes) -> Audio:
        if len(payload) < AUDIO_HEADER.size:
            raise ProtocolError("audio payload shorter than its header")
        code, flags, count, first = AUDIO_HEADER.unpack_from(payload)
        if code not in RATES:
            raise ProtocolError(f"unknown sample-rate code {code}")
        pcm = payload[AUDIO_HEADER.size:]
        if len(pcm) != 2 * count:
            raise ProtocolError(f"sample count {count} disagrees with {len(pcm)} PCM bytes")
        return cls(RATES[code], first, bytes(pcm), flags)


HEARTBEAT = struct.Struct("<IBB")  # uptime ms, status flags, device buffer fill (%)
INFO_HEAD = struct.Struct("<BBBBbB")  # fw major, minor, patch, mic type, gain dB, rate code
ACK = struct.Struct("<HBB")  # acknowledged seq, acknowledged type, status
ALERT = struct.Struct("<BH")  # pattern, duration ms

MIC_TYPES = {0: "electret", 1: "MEMS", 2: "piezo"}
ACK_STATUS = {0: "ok", 1: "bad parameter", 2: "unsupported", 3: "busy"}


@dataclass(frozen=True)
class Info:
    firmware: tuple[int, int, int]
    mic: str
    gain_db: int
    sample_rate: int
    name: str

    @classmethod
    def unpack(cls, payload: bytes) -> Info:
        if len(payload) < INFO_HEAD.size:
            raise ProtocolError("info payload shorter than its header")
        major, minor, patch, mic, gain, code = INFO_HEAD.unpack_from(payload)
        name = payload[INFO_HEAD.size:].decode("ascii", "replace")
        return cls((major, minor, patch), MIC_TYPES.get(mic, f"type {mic}"), gain,
                   RATES.get(code, 0), name)

    def pack(self) -> bytes:
        mic = {v: k for k, v in MIC_TYPES.items()}.get(self.mic, 255)
        return INFO_HEAD.pack(*self.firmware, mic, self.gain_db,
                              RATE_CODES[self.sample_rate]) + self.name.encode("ascii")
