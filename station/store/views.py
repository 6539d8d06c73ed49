"""What the web UI reads: the ward, a device's page, the inbox, an alert, clips and verdicts,
the technician's counts, and the changes the live pages follow."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Connection, func, select, text

from edge.pipeline.breathing import breathing_rate
from edge.pipeline.tracker import TrackerConfig
from station.schema import (
    alert_log,
    alerts,
    changes,
    clips,
    cycles,
    devices,
    gaps,
    invalid,
    minutes,
    received,
    summaries,
    verdicts,
)
from station.store.database import Tables
from station.store.read_models import (
    Alert,
    AlertPage,
    Bucket,
    Change,
    Clip,
    DeviceNow,
    DevicePage,
    Gap,
    JudgedClip,
    LogEntry,
    Refused,
    Session,
    Tile,
    TimelineCycle,
    Verdict,
    of,
)

RATE_WINDOW_S = 120.0  # the breathing rate the ward shows: cycles of the last two minutes
# Breaths per minute are the device's (edge.pipeline.breathing), over stretches ended by the
# pause the device's status says; a device older than status schema 6 ran with the default.
DEFAULT_PAUSE_S = TrackerConfig().session_silence_s


class Views(Tables):
    """Reads only: nothing here writes."""

    def latest_change(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(changes.c.id), 0))).scalar_one()

    def changes_since(self, after: int, limit: int = 500) -> list[Change]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(changes).where(changes.c.id > after)
                                .order_by(changes.c.id).limit(limit)).mappings().all()
        return [of(Change, r) for r in rows]

    def unseen_alarms(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The ids of the clinical and the technical alarms that need someone (open, or ended
        unseen, and not acknowledged since they last escalated): what the alarm sound follows
        on every page."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(alerts.c.alert_id, alerts.c.category, alerts.c.state,
                                       alerts.c.version, alerts.c.acked_version).where(
                alerts.c.state.in_(("open", "ended")))).mappings().all()
        unseen = [r for r in rows if needs_attention(r)
                  and (r["state"] == "open" or r["category"] == "clinical")]
        return (tuple(sorted(r["alert_id"] for r in unseen if r["category"] == "clinical")),
                tuple(sorted(r["alert_id"] for r in unseen if r["category"] != "clinical")))

    def overview(self, now: float) -> list[Tile]:
        """One row per device: identity, state, its alerts (open ones, and clinical ones that
        ended unseen; clinical and technical apart), abnormal burden over the last hour,
        breathing rate over the last two minutes."""
        hour = int(now // 60) - 60
        with self.engine.connect() as conn:
            devs = conn.execute(select(devices)).mappings().all()
            sums = {r.device_id: r for r in conn.execute(
                select(minutes.c.device_id, func.sum(minutes.c.good).label("good"),
                       func.sum(minutes.c.abnormal).label("abnormal"))
                .where(minutes.c.minute >= hour).group_by(minutes.c.device_id))}
            rates = self._breathing_rates(conn, now)
            live = [a for a in conn.execute(
                select(alerts).where(alerts.c.state.in_(("open", "ended")))
                .order_by(alerts.c.priority, alerts.c.opened_at)).mappings()
                # a clinical alert that ended before anyone saw it stays until someone does;
                # a technical one that cleared itself (the device is back) leaves the ward
                if a["state"] == "open" or (a["category"] == "clinical" and needs_attention(a))]
            gap_counts = {r.device_id: r.n for r in conn.execute(
                select(gaps.c.device_id, func.count().label("n"))
                .where(gaps.c.at >= now - 3600).group_by(gaps.c.device_id))}
            last_cycles = {r.device_id: r.end for r in conn.execute(
                select(cycles.c.device_id, func.max(cycles.c.end).label("end"))
                .where(cycles.c.start >= now - 3600).group_by(cycles.c.device_id))}
        out = []
        for d in devs:
            mine = [alert(a) for a in live if a["device_id"] == d["device_id"]]
            s = sums.get(d["device_id"])
            out.append(of(Tile, d,
                          clinical=tuple(a for a in mine if a.category == "clinical"),
                          technical=tuple(a for a in mine if a.category == "technical"),
                          attention=any(a.attention for a in mine),
                          burden=(s.abnormal / s.good) if s and s.good else None,
                          rate=rates.get(d["device_id"]),
                          gaps_last_hour=gap_counts.get(d["device_id"], 0),
                          last_cycle=last_cycles.get(d["device_id"])))
        return out

    @staticmethod
    def _breathing_rates(conn: Connection, now: float, device_id: str | None = None
                         ) -> dict[str, float]:
        """Each device's breathing rate over its cycles of the last two minutes, as the
        device counts it (`edge.pipeline.breathing`, with the device's pause)."""
        q = select(cycles.c.device_id, cycles.c.start, cycles.c.end).where(
            cycles.c.start >= now - RATE_WINDOW_S)
        pauses = select(devices.c.device_id, devices.c.breathing_pause_s)
        if device_id is not None:
            q = q.where(cycles.c.device_id == device_id)
            pauses = pauses.where(devices.c.device_id == device_id)
        pause = {r.device_id: r.breathing_pause_s for r in conn.execute(pauses)}
        heard: dict[str, list[tuple[float, float]]] = {}
        for r in conn.execute(q.order_by(cycles.c.device_id, cycles.c.start)):
            heard.setdefault(r.device_id, []).append((r.start, r.end))
        return {d: rate for d, times in heard.items()
                if (rate := breathing_rate(times, pause.get(d) or DEFAULT_PAUSE_S))
                is not None}

    def device(self, device_id: str, now: float, minutes_back: int = 15,
               hours_back: int = 24, bucket_minutes: int = 15) -> DevicePage | None:
        with self.engine.connect() as conn:
            d = conn.execute(select(devices).where(devices.c.device_id == device_id)
                             ).mappings().first()
            if d is None:
                return None
            timeline = conn.execute(
                select(cycles.c.start, cycles.c.end, cycles.c.label, cycles.c.confidence,
                       cycles.c.quality)
                .where(cycles.c.device_id == device_id,
                       cycles.c.start >= now - minutes_back * 60)
                .order_by(cycles.c.start)).mappings().all()
            n_buckets = hours_back * 60 // bucket_minutes
            first_bucket = int(now // 60) // bucket_minutes - n_buckets + 1
            trend = conn.execute(
                select((minutes.c.minute // bucket_minutes).label("bucket"),
                       func.sum(minutes.c.cycles).label("cycles"),
                       func.sum(minutes.c.good).label("good"),
                       func.sum(minutes.c.abnormal).label("abnormal"),
                       func.sum(minutes.c.quality_sum).label("quality_sum"))
                .where(minutes.c.device_id == device_id,
                       minutes.c.minute >= first_bucket * bucket_minutes)
                .group_by(text("bucket")).order_by(text("bucket"))).mappings().all()
            heard = conn.execute(
                select(cycles.c.start, cycles.c.end)
                .where(cycles.c.device_id == device_id,
                       cycles.c.start >= first_bucket * bucket_minutes * 60)
                .order_by(cycles.c.start)).all()
            sessions = conn.execute(select(summaries).where(summaries.c.device_id == device_id)
                                    .order_by(summaries.c.end.desc()).limit(20)
                                    ).mappings().all()
            history = conn.execute(select(alerts).where(alerts.c.device_id == device_id)
                                   .order_by(alerts.c.opened_at.desc()).limit(50)
                                   ).mappings().all()
            rate = self._breathing_rates(conn, now, device_id).get(device_id)
        rates = rates_by_bucket([(r.start, r.end) for r in heard], bucket_minutes * 60,
                                d["breathing_pause_s"] or DEFAULT_PAUSE_S)
        return DevicePage(
            device=of(DeviceNow, d, rate=rate),
            timeline=tuple(of(TimelineCycle, r) for r in timeline),
            buckets=tuple(of(Bucket, r, bucket=int(r["bucket"]),
                             rate=rates.get(int(r["bucket"]))) for r in trend),
            first_bucket=first_bucket, n_buckets=n_buckets,
            trend_since=first_bucket * bucket_minutes * 60,
            trend_until=(first_bucket + n_buckets) * bucket_minutes * 60,
            sessions=tuple(of(Session, r) for r in sessions),
            alerts=tuple(alert(r) for r in history), since=now - minutes_back * 60)

    def inbox(self) -> list[Alert]:
        """Alerts that need someone: every open one, and ended ones that changed since anyone
        saw them (or were never seen); attention first, then priority, then the oldest."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(alerts, devices.c.label).join(
                    devices, devices.c.device_id == alerts.c.device_id, isouter=True)
                .where(alerts.c.state.in_(("open", "ended")))).mappings().all()
        out = [alert(r) for r in rows if r["state"] == "open" or needs_attention(r)]
        return sorted(out, key=lambda a: (not a.attention, a.priority, a.opened_at))

    def alert(self, alert_id: str) -> AlertPage | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(alerts).where(alerts.c.alert_id == alert_id)
                               ).mappings().first()
            if row is None:
                return None
            history = conn.execute(select(alert_log).where(alert_log.c.alert_id == alert_id)
                                   .order_by(alert_log.c.at)).mappings().all()
        return of(AlertPage, row, attention=needs_attention(row),
                  history=tuple(of(LogEntry, h) for h in history))

    def device_stats(self, device_id: str) -> dict[str, Any] | None:
        """A device's latest stats message (None: none yet)."""
        with self.engine.connect() as conn:
            stats = conn.execute(select(devices.c.stats).where(
                devices.c.device_id == device_id)).scalar()
        return dict(stats) if stats else None

    def clips_of(self, *, alert_id: str | None = None, device_id: str | None = None,
                 limit: int = 20) -> list[Clip]:
        """The clips behind an alert, or a device's latest `limit`, each with its latest
        verdict, without their audio; oldest first, so that a new clip is added below the
        ones a clinician is listening to and judging, never above them."""
        q = select(*(c for c in clips.c if c.name != "audio"))
        q = q.where(clips.c.alert_id == alert_id) if alert_id else \
            q.where(clips.c.device_id == device_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(clips.c.start.desc()).limit(limit)).mappings().all()
            latest = self._latest_verdicts(conn, [r["clip_id"] for r in rows])
        return [of(Clip, r, verdict=latest.get(r["clip_id"])) for r in reversed(rows)]

    @staticmethod
    def _latest_verdicts(conn: Connection, clip_ids: list[str]) -> dict[str, Verdict]:
        out: dict[str, Verdict] = {}
        if not clip_ids:
            return out
        for v in conn.execute(select(verdicts).where(verdicts.c.clip_id.in_(clip_ids))
                              .order_by(verdicts.c.at, verdicts.c.id)).mappings():
            out[v["clip_id"]] = of(Verdict, v)
        return out

    def verdict_counts(self, device_id: str, since: float) -> dict[str, dict[str, int]]:
        """{what the device called it: {what clinicians said: how many clips}}, the latest
        verdict of each clip judged since `since`."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(verdicts).where(
                verdicts.c.device_id == device_id, verdicts.c.at >= since)
                .order_by(verdicts.c.at, verdicts.c.id)).mappings().all()
        latest = {r["clip_id"]: r for r in rows}
        out: dict[str, dict[str, int]] = {}
        for r in latest.values():
            said = out.setdefault(r["model_label"], {})
            said[r["verdict"]] = said.get(r["verdict"], 0) + 1
        return out

    def judged_clips(self) -> Iterator[JudgedClip]:
        """Every clip with a verdict (its latest), with its audio and the stethoscope that
        recorded it (a clip stored before clips kept theirs: its device's now): what
        export-labels writes."""
        with self.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(select(verdicts.c.clip_id).distinct())]
            for i in range(0, len(ids), 200):
                chunk = ids[i:i + 200]
                latest = self._latest_verdicts(conn, chunk)
                stethoscope = func.coalesce(clips.c.stethoscope, devices.c.stethoscope)
                columns = [c for c in clips.c if c.name != "stethoscope"]
                for clip in conn.execute(select(*columns, stethoscope.label("stethoscope"))
                                         .join(devices, devices.c.device_id
                                               == clips.c.device_id, isouter=True)
                                         .where(clips.c.clip_id.in_(chunk))).mappings():
                    yield of(JudgedClip, clip, audio=bytes(clip["audio"]),
                             verdict=latest[clip["clip_id"]])

    def clip_audio(self, clip_id: str) -> tuple[str, int, bytes, str] | None:
        """(encoding, sample rate, audio bytes, label) of a clip."""
        with self.engine.connect() as conn:
            row = conn.execute(select(clips.c.encoding, clips.c.sample_rate, clips.c.audio,
                                      clips.c.label).where(clips.c.clip_id == clip_id)).first()
        return None if row is None else (row[0], row[1], bytes(row[2]), row[3])

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {"invalid": conn.execute(select(func.count()).select_from(invalid))
                    .scalar_one(),
                    "messages": conn.execute(select(func.count()).select_from(received))
                    .scalar_one(),
                    "gaps": conn.execute(select(func.count()).select_from(gaps)).scalar_one()}

    def recent_gaps(self, since: float, limit: int = 100) -> list[Gap]:
        """Messages found missing since `since`, newest first."""
        with self.engine.connect() as conn:
            return [of(Gap, r) for r in conn.execute(select(gaps).where(gaps.c.at >= since)
                                                     .order_by(gaps.c.at.desc()).limit(limit))
                    .mappings()]

    def refused(self, limit: int = 50) -> list[Refused]:
        with self.engine.connect() as conn:
            return [of(Refused, r) for r in conn.execute(
                select(invalid).order_by(invalid.c.id.desc()).limit(limit)).mappings()]


def alert(row: Mapping[Any, Any]) -> Alert:
    """An alert row (with its device's label, where joined) as the pages read it."""
    return of(Alert, row, attention=needs_attention(row))


def needs_attention(alert: Mapping[Any, Any]) -> bool:
    """Open (or ended unseen) and not acknowledged since it last changed."""
    if alert["state"] == "resolved":
        return False
    return alert["acked_version"] is None or alert["version"] > alert["acked_version"]


def rates_by_bucket(heard: list[tuple[float, float]], bucket_s: float, pause_s: float
                    ) -> dict[int, float]:
    """The breathing rate (`edge.pipeline.breathing`) in each time bucket, over the cycles that
    started in it: a quarter of an hour with two minutes of auscultation says the rate of those
    two minutes (it said their cycles spread over the minutes that had any: 6/min for 24 s
    heard at 15/min)."""
    by_bucket: dict[int, list[tuple[float, float]]] = {}
    for start, end in heard:
        by_bucket.setdefault(int(start // bucket_s), []).append((start, end))
    return {b: rate for b, times in by_bucket.items()
            if (rate := breathing_rate(times, pause_s)) is not None}
