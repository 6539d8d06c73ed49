"""What the station's pages read, typed: one frozen dataclass per thing shown (a device, its
tile on the ward, an alert, a clip and its verdict, a device's page), built from the store's
rows by `of()`. A test keeps each one's fields equal to its table's columns, so a column added
to the schema is a column the pages can see, by name, checked by mypy."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from edge.vocabulary import (
    AlertEvent,
    AlertKind,
    AlertState,
    Category,
    DeviceState,
    LogEvent,
    StationKind,
)

T = TypeVar("T")


def of(cls: type[T], row: Mapping[Any, Any], **more: Any) -> T:
    """A read model from a row: its columns that the class has, and `more`."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in row.items() if k in names and k not in more}, **more)


STALE_S = 60.0  # a tile's numbers without a cycle for this long are not live


@dataclass(frozen=True, kw_only=True)
class Device:
    """A device as the station knows it (table `devices`)."""

    device_id: str
    label: str | None  # the bed or place, edited in the UI
    state: DeviceState
    reasons: list[str]
    first_seen: float
    last_seen: float
    status_at: float | None
    status_connected_at: float | None
    status_will: bool | None
    heartbeat_s: float | None
    breathing_pause_s: float | None  # None: a device older than status schema 6 (30 s)
    clock_synced: bool | None
    model: str | None
    model_sha256: str | None  # of the package's manifest (None: a device of schema ≤ 6)
    model_note: str | None  # how that package came to run (installed, rolled back and why)
    spool_depth: int | None
    stats: dict[str, Any] | None
    epoch: str | None
    epoch_since: float | None
    stethoscope: str | None

    @property
    def name(self) -> str:
        return self.label or self.device_id

    @property
    def model_rolled_back(self) -> bool:
        """The device went back from a package by itself (or was sent back)."""
        return (self.model_note or "").startswith("rolled back")


@dataclass(frozen=True, kw_only=True)
class DeviceNow(Device):
    rate: float | None  # breaths per minute over the last two minutes heard


@dataclass(frozen=True, kw_only=True)
class Alert:
    """An alert or alarm (table `alerts`), whether it needs someone, and its bed's label."""

    alert_id: str
    device_id: str
    kind: AlertKind | StationKind
    category: Category
    priority: int  # 1 high … 3 low
    source: str  # device, or station
    state: AlertState
    opened_at: float
    updated_at: float
    ended_at: float | None
    version: int
    escalated_fraction: float | None
    evidence: dict[str, Any]
    session_id: str | None
    detail: str | None
    acked_by: str | None
    acked_at: float | None
    ack_note: str | None
    acked_version: int | None
    resolved_by: str | None
    resolved_at: float | None
    attention: bool  # open (or ended unseen) and not acknowledged since it last changed
    label: str | None = None  # its device's label, where the page shows it


@dataclass(frozen=True, kw_only=True)
class LogEntry:
    """One line of an alert's history (table `alert_log`)."""

    id: int
    alert_id: str
    device_id: str
    at: float
    event: LogEvent
    actor: str | None
    detail: dict[str, Any] | None


@dataclass(frozen=True, kw_only=True)
class AlertPage(Alert):
    history: tuple[LogEntry, ...]


@dataclass(frozen=True, kw_only=True)
class Tile(DeviceNow):
    """A device on the ward: its alerts, clinical apart from technical, and the last hour."""

    clinical: tuple[Alert, ...]
    technical: tuple[Alert, ...]
    attention: bool
    burden: float | None  # abnormal of the good cycles of the last hour
    gaps_last_hour: int
    last_cycle: float | None  # the end of its latest cycle in the last hour

    def stale(self, now: float) -> bool:
        """Its numbers are not live: no cycle for a minute (shown greyed, with their age)."""
        return self.last_cycle is None or now - self.last_cycle > STALE_S


@dataclass(frozen=True, kw_only=True)
class TimelineCycle:
    start: float
    end: float
    label: str
    confidence: float
    quality: float


@dataclass(frozen=True, kw_only=True)
class Bucket:
    """A stretch of the device page's trend (sums of `minutes`)."""

    bucket: int  # minute // bucket minutes
    cycles: int
    good: int
    abnormal: int
    quality_sum: float
    rate: float | None


@dataclass(frozen=True, kw_only=True)
class Session:
    """An auscultation's summary, as the device sent it (table `summaries`)."""

    device_id: str
    epoch: str
    seq: int
    session_id: str
    start: float
    end: float
    cycles: int
    cycles_by_label: dict[str, int]
    abnormal_burden: float
    poor_quality_fraction: float
    cycles_unjudged: dict[str, int] | None  # by why (None: none, or a device before schema 6)
    record_label: str
    breathing_rate_per_min: float | None
    ended_by: str


@dataclass(frozen=True, kw_only=True)
class DevicePage:
    device: DeviceNow
    timeline: tuple[TimelineCycle, ...]  # the last minutes' cycles
    buckets: tuple[Bucket, ...]  # the trend, where there was anything
    first_bucket: int
    n_buckets: int
    trend_since: float
    trend_until: float
    sessions: tuple[Session, ...]
    alerts: tuple[Alert, ...]  # its latest, any state
    since: float  # where the timeline starts


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """A clinician's word on a clip (table `verdicts`)."""

    id: int
    clip_id: str
    device_id: str
    model_label: str  # what the device called it
    verdict: str
    by: str
    at: float


@dataclass(frozen=True, kw_only=True)
class Clip:
    """A clip's description (table `clips` without its audio) and its latest verdict."""

    clip_id: str
    device_id: str
    alert_id: str | None
    session_id: str | None
    start: float
    end: float
    label: str
    confidence: float
    encoding: str
    sample_rate: int
    stethoscope: str | None  # what recorded it, as its device was named when it arrived
    verdict: Verdict | None


@dataclass(frozen=True, kw_only=True)
class JudgedClip(Clip):
    """A clip a clinician judged, with its audio: labelled data."""

    audio: bytes
    verdict: Verdict


@dataclass(frozen=True, kw_only=True)
class Change:
    """Something stored that a live page may need to show (table `changes`)."""

    id: int
    at: float
    device_id: str | None
    what: str


@dataclass(frozen=True, kw_only=True)
class Gap:
    """Messages found missing (table `gaps`)."""

    device_id: str
    epoch: str
    kind: str
    first_missing: int
    last_missing: int
    at: float


@dataclass(frozen=True, kw_only=True)
class Refused:
    """A message the station did not store, and why (table `invalid`)."""

    id: int
    at: float
    topic: str
    reason: str
    excerpt: str


@dataclass(frozen=True, kw_only=True)
class RoutedEvent:
    """An alert's event as the router takes it (an escalation is an "update"), with the alert
    as it stands."""

    log_id: int
    event: AlertEvent
    alert: Alert


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One try at a delivery (table `delivery_attempts`)."""

    id: int
    delivery_id: int
    at: float
    ok: bool
    detail: str


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """A delivery the router decided on (table `deliveries`), with its tries where shown."""

    id: int
    rule: str
    target: str  # command, webhook, escalate_command, escalate_webhook
    alert_id: str
    device_id: str
    kind: AlertKind | StationKind
    event: str  # new, update, end, escalation
    message: dict[str, Any]
    state: str  # pending sending sent failed suppressed
    why: str | None
    attempts: int
    created_at: float
    next_at: float | None
    done_at: float | None
    tries: tuple[Attempt, ...] = ()
