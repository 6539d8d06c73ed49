"""Is it a lungedge message? Topic, size, JSON, the shipped schema, and the device it claims.

Anything a device (or anyone who can publish to the broker) sends is untrusted: a message that
fails here is counted and kept short for a technician to look at, never stored as data, never
rendered unescaped, and never stops ingest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import fastjsonschema
import jsonschema

from edge.delivery.wire import BODIES, SCHEMA_VERSION, schema
from edge.pipeline.model import POOR_QUALITY_BELOW
from edge.pipeline.tracker import TrackerConfig

MAX_BYTES = 64 * 1024  # the largest real message (stats of a serial source) is under 2 KB


# A device of schema 3 numbered its messages before epochs existed: they keep one epoch of
# their own, and a device updated to 4 starts a new one.
LEGACY_EPOCH = "00000000"
TIMES = ("ts", "start", "end", "first_cycle", "last_cycle", "cycle_start", "cycle_end")


@dataclass(frozen=True)
class Message:
    device_id: str
    kind: str
    epoch: str  # the device's numbering epoch: (device, epoch, kind, seq) is the identity
    seq: int
    body: dict[str, Any]  # the whole payload, envelope included


class Refused(ValueError):
    """Why a message is not a lungedge message."""


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema(kind))
    return cls(schema(kind))


@cache
def _fast(kind: str) -> Any:
    """The same schema compiled to Python (fastjsonschema): 20 times faster than jsonschema,
    which took half of an ingest worker's time in a burst. jsonschema stays the judge: a
    message the fast check refuses is checked again by it, for its verdict and a precise
    reason (tests/test_station_validate.py holds the two to the same verdicts)."""
    return fastjsonschema.compile(schema(kind))


def schema_error(kind: str, body: Any) -> str:
    """Why `body` is not a valid `kind` message ('' if it is)."""
    try:
        _fast(kind)(body)
        return ""
    except fastjsonschema.JsonSchemaException:
        pass
    errors = sorted(_validator(kind).iter_errors(body), key=lambda e: list(e.path))
    if not errors:
        return ""
    e = errors[0]
    where = "/".join(map(str, e.path)) or "(top level)"
    return f"{kind} schema: {where}: {e.message[:200]}"


def upgrade(kind: str, body: Any) -> Any:
    """An older device's message in today's schema (what it meant, said today's way); the
    schema then judges it like any other."""
    if not isinstance(body, dict) or body.get("schema_version") not in (3, 4, 5, 6):
        return body
    if body["schema_version"] == 3 and "epoch" not in body:
        body = body | {"epoch": LEGACY_EPOCH}
    if kind == "cycle" and isinstance(body.get("quality"), (int, float)) and "good" not in body:
        # a device of schema 4 or earlier judged every cycle with the cut that models without
        # one in their manifest get (edge.pipeline.model.POOR_QUALITY_BELOW), and did not say so
        body = body | {"good": body["quality"] >= POOR_QUALITY_BELOW}
    if kind == "summary" and "cycles_unjudged" not in body:
        # before schema 6 a device did not say why cycles could not be judged…
        body = body | {"cycles_unjudged": {}}
    if kind == "alert" and "end_reason" not in body:  # …nor why an alert ended…
        body = body | {"end_reason": None}
    if kind == "status" and "connected_at" not in body and isinstance(body.get("ts"), str):
        # …nor which connection a status belonged to: its own time stands in, and a last will
        # is what the broker published for it ("connection lost"); stats every 60 s then, and
        # the pause that ends its breathing was the tracker's default, unless configured
        body = body | {"connected_at": body["ts"], "heartbeat_s": 60.0,
                       "breathing_pause_s": TrackerConfig().session_silence_s,
                       "last_will": body.get("reasons") == ["connection lost"]}
    if kind == "status" and isinstance(body.get("model"), dict) \
            and "sha256" not in body["model"]:
        # …nor, before schema 7, which package exactly it ran and how it came to
        body = body | {"model": body["model"] | {"sha256": None, "note": None}}
    return body | {"schema_version": SCHEMA_VERSION}


def parse(topic: str, payload: bytes, prefix: str) -> Message:
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != prefix:
        raise Refused(f"not a {prefix}/DEVICE/KIND topic")
    _, device, kind = parts
    if not 0 < len(device) <= 200:
        raise Refused(f"device id of {len(device)} characters (1–200)")
    if kind not in BODIES:
        raise Refused(f"unknown message kind {kind!r}")
    if len(payload) > MAX_BYTES:
        raise Refused(f"{len(payload)} bytes, over {MAX_BYTES}")
    try:
        body = json.loads(payload, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise Refused(f"not JSON: {exc}") from None
    body = upgrade(kind, body)
    why = schema_error(kind, body)
    if why:
        raise Refused(why)
    if body["device_id"] != device:
        raise Refused(f"device_id {body['device_id'][:60]!r} is not the topic's {device!r}")
    for key in TIMES:  # the schema checks the shape; a month 13 or a year 0 pass it
        if isinstance(body.get(key), str):
            try:
                unix(body[key])
            except (ValueError, OverflowError):
                raise Refused(f"{key} {body[key]!r} is not a real date and time") from None
    return Message(device, kind, body["epoch"], body["seq"], body)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def unix(iso: str) -> float:
    """A message's ISO-8601 UTC time (the schema checked its shape) as UNIX seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def excerpt(payload: bytes, n: int = 300) -> str:
    """A refused payload, short and printable (control characters escaped: a NUL byte is not
    even storable in PostgreSQL text), for the technician's list."""
    text = payload[:n].decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text + ("…" if len(payload) > n else "")
