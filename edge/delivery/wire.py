"""What lungedge publishes: one frozen dataclass per message body, the envelope every message
carries, the topic kinds with their delivery settings, and the JSON Schemas.

The dataclasses are the definition. The JSON Schemas in `edge/delivery/schemas/` (shipped, so
a station in any language validates against the same files) are generated from them
(`python -m edge.delivery.wire`), and a test keeps the committed files equal to what the
dataclasses generate; other tests validate real messages against them. Keys are snake_case;
labels are whatever the model's manifest says, so they are strings here, not an enumeration.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from edge.loader import wire
from edge.pipeline.tracker import Evidence
from edge.vocabulary import (
    AlertEvent,
    AlertKind,
    DeviceState,
    EndReason,
    MessageKind,
    RecordLabel,
    SessionEnd,
    Unjudged,
)

# 2: labels are the model's (no fixed enumeration); stats carry forced cuts, restarts and gap
# reasons; timestamps say whether the wall clock was synchronised. 3: the status names the model.
# 4: every message carries the numbering epoch of its seq (a subscriber keys repeats on epoch,
# kind and seq), and a poor_signal alert may say sound was heard but no breathing found.
# 5: a cycle says whether it was good enough to count (`good`), the device's judgement.
# 6: a poor_signal alert says why in words (`evidence.reason`: a band-limited stethoscope,
# clipping, noise), and a summary counts the cycles it could not judge by why; an alert's end
# says why (`end_reason`); an alert goes on across sessions cut at their longest; a status says
# which connection it belongs to and whether it is its last will, and the device's heartbeat.
# 7: a status says which package exactly the device runs (`model.sha256`, of its manifest) and
# how it came to run it (`model.note`: installed, rolled back and why, pinned, shipped).
SCHEMA_VERSION = 7
EPOCH = r"^[0-9a-f]{8,32}$"
# Ids a device makes (sessions, alerts, clips: 16 hex digits) go into a station's URLs and keys:
# no "/", nothing a database column of 64 characters cannot hold.
ID = r"^[A-Za-z0-9_.-]{1,64}$"
# Every number a message carries fits the columns a station stores it in, so that the schema,
# not the database, refuses what cannot be stored (a seq of 2**31 was stored in SQLite, then
# crash-looped a PostgreSQL station whose sweep computed seq + 1 in an int4; 1e400 parses to
# infinity): integers as PostgreSQL's INTEGER holds them, numbers finite and well inside a
# double.
MAX_INT = 2**31 - 1
MAX_NUMBER = 1e15
SCHEMAS = Path(__file__).resolve().parent / "schemas"
ISO_MS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def iso_ms(t: float) -> str:
    """UNIX time → ISO-8601 UTC with milliseconds, e.g. 2026-11-21T14:43:51.123Z."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class TopicKind:
    name: str
    qos: int
    retain: bool
    keep: int  # spool eviction order: lower goes first when the spool is full


KINDS = {k.name: k for k in (
    TopicKind("status", 1, True, 3),
    TopicKind("cycle", 1, False, 1),
    TopicKind("alert", 1, False, 2),
    TopicKind("summary", 1, False, 2),
    TopicKind("stats", 0, False, 0),
    TopicKind("clip", 1, False, 0),  # evidence, but the largest: it makes room first
)}


def topic(prefix: str, device_id: str, kind: str) -> str:
    return f"{prefix}/{device_id}/{kind}"


# -- the bodies -------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Envelope:
    """In every message, before its body's keys."""

    schema_version: int = field(metadata=wire(const=SCHEMA_VERSION))
    device_id: str = field(metadata=wire(minLength=1, maxLength=200))
    # the numbering this seq belongs to: it changes when a device's counters could have gone
    # back (a new spool, an unclean stop), so (epoch, seq) is never reused
    epoch: str = field(metadata=wire(pattern=EPOCH))
    seq: int = field(metadata=wire(minimum=0))  # per topic and epoch, increasing: gaps show
    ts: str = field(metadata=wire(pattern=ISO_MS))  # when the message was made (wall clock, UTC)
    clock_synced: bool = field(metadata=wire())  # false: the wall clock had not been set (NTP) yet


@dataclass(frozen=True)
class ModelRef:
    name: str = field(metadata=wire(minLength=1, maxLength=100))
    version: str = field(metadata=wire(minLength=1, maxLength=50))


@dataclass(frozen=True, kw_only=True)
class RunningModel(ModelRef):
    """What a status says of the model: which package exactly, and how it came to run."""

    # of its manifest.json, which names every member's sha256 (null: a device of schema ≤ 6)
    sha256: str | None = field(metadata=wire(pattern=r"^[0-9a-f]{64}$"))
    # installed (and its self-test), rolled back and why, pinned by model.path, shipped
    note: str | None = field(metadata=wire(maxLength=300))


@dataclass(frozen=True, kw_only=True)
class Status:
    state: DeviceState
    reason: str | None  # the first of `reasons`
    reasons: list[str]
    model: RunningModel | None  # what the device classifies with (null: not loaded)
    # The MQTT connection this status belongs to, made at this time, and whether it is that
    # connection's last will (the broker publishes it when the connection is lost, after every
    # status the connection sent, though it was written when it was made): a subscriber orders
    # statuses by (connected_at, last_will, ts), never by ts alone.
    connected_at: str = field(metadata=wire(pattern=ISO_MS))
    last_will: bool
    # the device sends a message at least this often while it is alive (its stats): a
    # subscriber that hears nothing for a few of these knows it is gone
    heartbeat_s: float = field(metadata=wire(minimum=1, maximum=3600))
    # a pause longer than this ends a stretch of breathing (the device's
    # tracker.session_silence_s): readers count breaths per minute as the device does
    # (edge.pipeline.breathing)
    breathing_pause_s: float = field(metadata=wire(minimum=0, maximum=86400))


@dataclass(frozen=True, kw_only=True)
class Cycle:
    session_id: str = field(metadata=wire(pattern=ID))
    start: str = field(metadata=wire(pattern=ISO_MS))
    end: str = field(metadata=wire(pattern=ISO_MS))
    duration_s: float = field(metadata=wire(minimum=0))
    label: str = field(metadata=wire(minLength=1, maxLength=64))
    probs: dict[str, float]
    confidence: float = field(metadata=wire(minimum=0, maximum=1))
    quality: float = field(metadata=wire(minimum=0, maximum=1))
    # the device's own judgement: quality enough to count in alerts and summaries
    # (tracker.poor_quality_below), so a reader never copies the device's cut
    good: bool
    forced_cut: bool
    model: ModelRef
    latency_ms: float = field(metadata=wire(minimum=0))


@dataclass(frozen=True, kw_only=True)
class Alert:
    alert_id: str = field(metadata=wire(pattern=ID))
    event: AlertEvent
    kind: AlertKind
    session_id: str | None = field(metadata=wire(pattern=ID))
    evidence: Evidence
    first_cycle: str | None = field(metadata=wire(pattern=ISO_MS))
    last_cycle: str | None = field(metadata=wire(pattern=ISO_MS))
    end_reason: EndReason | None  # with "end": why it ended


@dataclass(frozen=True, kw_only=True)
class Summary:
    session_id: str = field(metadata=wire(pattern=ID))
    start: str = field(metadata=wire(pattern=ISO_MS))
    end: str = field(metadata=wire(pattern=ISO_MS))
    duration_s: float = field(metadata=wire(minimum=0))
    cycles: int = field(metadata=wire(minimum=0))
    cycles_by_label: dict[str, int]
    abnormal_burden: float = field(metadata=wire(minimum=0, maximum=1))
    poor_quality_fraction: float = field(metadata=wire(minimum=0, maximum=1))
    # the cycles that could not be judged (not evidence), by why: a band-limited stethoscope,
    # clipping, noise, a poor cycle (edge.pipeline.signal_judgement)
    cycles_unjudged: dict[Unjudged, int]
    record_label: RecordLabel
    breathing_rate_per_min: float | None = field(metadata=wire(minimum=0))
    ended_by: SessionEnd
    model: ModelRef


@dataclass(frozen=True, kw_only=True)
class Clip:
    """The audio of a cycle behind an alert, for a clinician to hear what the device heard."""

    clip_id: str = field(metadata=wire(pattern=ID))
    # the alert it opened or updated (None: an abnormal cycle alone)
    alert_id: str | None = field(metadata=wire(pattern=ID))
    alert_kind: str | None = field(metadata=wire(maxLength=40))
    session_id: str | None = field(metadata=wire(pattern=ID))
    cycle_start: str = field(metadata=wire(pattern=ISO_MS))
    cycle_end: str = field(metadata=wire(pattern=ISO_MS))
    label: str = field(metadata=wire(minLength=1, maxLength=64))
    confidence: float = field(metadata=wire(minimum=0, maximum=1))
    sample_rate: int = field(metadata=wire(minimum=1000, maximum=192000))
    encoding: Literal["flac", "wav"] = field(metadata=wire())
    audio_b64: str = field(metadata=wire(maxLength=600_000))  # 16-bit mono at the model rate


@dataclass(frozen=True, kw_only=True)
class Stats:
    uptime_s: float = field(metadata=wire(minimum=0))
    audio_s: float = field(metadata=wire(minimum=0))
    cycles: int = field(metadata=wire(minimum=0))
    # cycles cut at max_cycle_s: sound that did not stop
    forced_cuts: int = field(metadata=wire(minimum=0))
    gaps: int = field(metadata=wire(minimum=0))  # audio lost, as the source reported it
    gap_s: float = field(metadata=wire(minimum=0))
    gap_reasons: dict[str, int]
    # gaps too long to bridge: the segmenter started afresh
    restarts: int = field(metadata=wire(minimum=0))
    dropped_blocks: int = field(metadata=wire(minimum=0))  # capture outran processing
    queue_depth: int = field(metadata=wire(minimum=0))
    # waiting for the broker, on disk and in memory
    spool_depth: int = field(metadata=wire(minimum=0))
    # of those, held in memory: the disk refused them
    spool_in_memory: int = field(metadata=wire(minimum=0))
    spool_dropped: int = field(metadata=wire(minimum=0))
    spool_fault: str | None  # the disk's trouble, while it lasts
    # on a card that cannot even be read now: they wait there (counted before it failed)
    spool_stranded: int = field(metadata=wire(minimum=0))
    cpu_percent: float = field(metadata=wire(minimum=0))
    rss_mb: float = field(metadata=wire(minimum=0))
    inference_ms_p50: float | None = field(metadata=wire(minimum=0))
    inference_ms_p99: float | None = field(metadata=wire(minimum=0))
    clips_sent: int = field(metadata=wire(minimum=0))
    # over the clip budget (clips.max_per_hour, …)
    clips_dropped: int = field(metadata=wire(minimum=0))
    runtime: str
    source: str
    source_counters: dict[str, int]


Body = Status | Cycle | Alert | Summary | Stats | Clip  # what a device publishes
BODIES: dict[MessageKind, type[Body]] = {"status": Status, "cycle": Cycle, "alert": Alert,
                                         "summary": Summary, "stats": Stats, "clip": Clip}
_KINDS: dict[type[Body], MessageKind] = {cls: kind for kind, cls in BODIES.items()}


def kind_of(body: Body) -> MessageKind:
    """A message's kind (its topic's last part), from its type: never written by hand."""
    return _KINDS[type(body)]


def body_dict(body: Any) -> dict[str, Any]:
    return dataclasses.asdict(body)


# -- JSON Schema from the dataclasses ------------------------------------------------------
def json_schema(kind: MessageKind) -> dict[str, Any]:
    """The JSON Schema of a `kind` message: the envelope's keys, then the body's."""
    body = BODIES[kind]
    props = properties(Envelope) | properties(body)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"lungedge/{kind}.json", "title": (body.__doc__ or kind).split("\n")[0]
            if body.__doc__ and not body.__doc__.startswith(body.__name__) else kind,
            "type": "object", "additionalProperties": False, "properties": props,
            "required": list(props)}


def properties(cls: type) -> dict[str, Any]:
    """JSON Schema properties of a dataclass's fields (the station's page schema uses it too)."""
    hints = typing.get_type_hints(cls)
    return {f.name: _schema(hints[f.name]) | f.metadata.get("schema", {})
            for f in dataclasses.fields(cls)}


def _schema(tp: Any) -> dict[str, Any]:
    if tp is Any:  # any JSON value (evidence whose shape depends on its kind)
        return {}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 and type(None) in args:
            inner = _schema(options[0])
            if "type" in inner and isinstance(inner["type"], str):
                return inner | {"type": [inner["type"], "null"]}
            return {"oneOf": [inner, {"type": "null"}]}
        return {"oneOf": [_schema(a) for a in args]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is dict:
        keys = {"propertyNames": _schema(args[0])} if typing.get_origin(args[0]) is Literal \
            else {}
        return {"type": "object", "additionalProperties": _schema(args[1])} | keys
    if origin is list:
        return {"type": "array", "items": _schema(args[0])}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        props = properties(tp)
        return {"type": "object", "additionalProperties": False, "properties": props,
                "required": list(props)}
    if tp is int:  # a bound a database column (and a JSON number) holds exactly
        return {"type": "integer", "minimum": -MAX_INT, "maximum": MAX_INT}
    if tp is float:
        return {"type": "number", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER}
    return {"type": {str: "string", bool: "boolean"}[tp]}


@cache
def schema(kind: str) -> dict[str, Any]:
    """The shipped schema file of a kind."""
    return json.loads((SCHEMAS / f"{kind}.json").read_text())


def write_schemas() -> None:
    for kind in BODIES:
        (SCHEMAS / f"{kind}.json").write_text(json.dumps(json_schema(kind), indent=2) + "\n")


if __name__ == "__main__":
    write_schemas()
    sys.stdout.write(f"wrote {', '.join(BODIES)} to {SCHEMAS}\n")
