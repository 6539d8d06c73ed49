"""The technical alarms the station raises itself: a device silent too long, a spool backlog,
messages found missing (seq gaps). Opened and ended here, one open alarm per device and kind;
the sweep that finds them runs in one worker at a time."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import BigInteger, Connection, Engine, and_, cast, func, insert, select, update

from edge.vocabulary import StationKind
from station import alarms
from station.schema import Lock, alert_log, alerts, changes, devices, gaps, my_turn, received
from station.store.database import Tables, upsert

GAP_KINDS = ("cycle", "alert", "summary")  # seq gaps worth an alarm (stats are QoS 0)
SETTLE_S = 30.0  # a missing seq is a gap once it is this late (workers may reorder messages)
# A device that says its heartbeat (its status, schema 6) is offline once it has missed this
# many: with the default 5 s, 12.5 s of silence (a power cut, a network gone; a killed daemon's
# last will arrives at once). A device that does not say is given offline_after_s.
HEARTBEATS_MISSED = 2.5


class StationAlarms(Tables):
    """The sweep: time- and state-driven alarms, each device checked once per pass."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # messages stored before this were checked for gaps (by an earlier run, say; an hour
        # back is checked again, the table's key keeps each gap once)
        self._gaps_checked_until = time.time() - 3600

    def sweep(self, now: float, offline_after_s: float, spool_backlog: int) -> None:
        """Time- and state-driven station alarms: silent devices, spool backlogs, and the gaps
        among messages that have had time to settle. One worker at a time."""
        with self.engine.begin() as conn:
            if not my_turn(conn, Lock.SWEEP):
                return  # another worker is sweeping
            checked = self._gaps_checked_until
            self._gaps_checked_until = now - SETTLE_S
            self._gaps(conn, checked - SETTLE_S, now - SETTLE_S, now)
            allowed = func.coalesce(devices.c.heartbeat_s * HEARTBEATS_MISSED, offline_after_s)
            silent = conn.execute(select(devices.c.device_id, allowed).where(
                devices.c.last_seen < now - allowed, devices.c.state != "offline")).all()
            for device_id, after in silent:
                reason = f"not heard from for more than {after:.0f} s"
                conn.execute(update(devices).where(devices.c.device_id == device_id).values(
                    state="offline", reasons=[reason]))
                open_station_alarm(conn, device_id, "offline", now, {"reason": reason})
                conn.execute(insert(changes).values(at=now, device_id=device_id,
                                                    what="status"))
            rows = conn.execute(select(devices.c.device_id, devices.c.spool_depth)).all()
            for device_id, depth in rows:
                backlog = conn.execute(select(alerts.c.alert_id).where(
                    alerts.c.device_id == device_id, alerts.c.kind == "spool_backlog",
                    alerts.c.state == "open")).first()
                if depth is not None and depth >= spool_backlog and backlog is None:
                    open_station_alarm(conn, device_id, "spool_backlog", now,
                                        {"spool_depth": depth})
                    conn.execute(insert(changes).values(at=now, device_id=device_id,
                                                        what="alert"))
                elif backlog is not None and (depth or 0) < spool_backlog // 2:
                    end_station_alarm(conn, device_id, "spool_backlog", now)
                    conn.execute(insert(changes).values(at=now, device_id=device_id,
                                                        what="alert"))

    def _gaps(self, conn: Connection, since: float, until: float, now: float) -> None:
        """Seqs still missing among the messages stored in [since, until): a stored message
        whose next seq never came, though a later one did. Recorded once each (the table's
        key), with a technical alarm."""
        r, nxt, later = received.alias("r"), received.alias("nxt"), received.alias("later")
        same = lambda other: and_(other.c.device_id == r.c.device_id,  # noqa: E731
                                  other.c.epoch == r.c.epoch, other.c.kind == r.c.kind)
        holes = conn.execute(
            select(r.c.device_id, r.c.epoch, r.c.kind, r.c.seq,
                   select(func.min(later.c.seq)).where(same(later), later.c.seq > r.c.seq)
                   .scalar_subquery().label("resumes"))
            .where(r.c.kind.in_(GAP_KINDS), r.c.at >= since, r.c.at < until,
                   ~select(nxt.c.seq).where(same(nxt), nxt.c.seq == cast(r.c.seq, BigInteger)
                                            + 1).exists())
        ).all()
        for device_id, epoch, kind, seq, resumes in holes:
            if resumes is None:
                continue  # the latest message: nothing is missing after it (yet)
            new = conn.execute(upsert(conn, gaps).values(
                device_id=device_id, epoch=epoch, kind=kind, first_missing=seq + 1,
                last_missing=resumes - 1, at=now).on_conflict_do_nothing()
                .returning(gaps.c.at)).first()
            if new is not None:
                open_station_alarm(conn, device_id, "seq_gap", now, {
                    "kind": kind, "first_missing": seq + 1, "last_missing": resumes - 1})
                conn.execute(insert(changes).values(at=now, device_id=device_id,
                                                    what="alert"))


def open_station_alarm(conn: Connection, device_id: str, kind: StationKind, now: float,
                   detail: dict[str, Any]) -> None:
    """Open a technical alarm the station raises itself (one open per device and kind), or
    update the open one."""
    open_one = conn.execute(select(alerts.c.alert_id, alerts.c.version).where(
        alerts.c.device_id == device_id, alerts.c.kind == kind,
        alerts.c.source == "station", alerts.c.state == "open")).first()
    if open_one is None:
        k = alarms.of(kind)
        # unique whatever the device id: two devices whose ids share their first 60
        # characters, silent in the same sweep, collided when the id was cut from them
        alert_id = f"station-{kind}-{uuid.uuid4().hex}"
        conn.execute(insert(alerts).values(
            alert_id=alert_id, device_id=device_id, kind=kind, category=k.category,
            priority=k.priority, source="station", state="open", opened_at=now,
            updated_at=now, version=1, evidence=detail))
        event_name = "new"
    else:
        alert_id = open_one.alert_id
        conn.execute(update(alerts).where(alerts.c.alert_id == alert_id).values(
            updated_at=now, version=open_one.version + 1, evidence=detail))
        event_name = "update"
    conn.execute(insert(alert_log).values(alert_id=alert_id, device_id=device_id, at=now,
                                          event=event_name, actor="station", detail=detail))


def end_station_alarm(conn: Connection, device_id: str, kind: StationKind,
                       now: float) -> None:
    ids = conn.execute(select(alerts.c.alert_id).where(
        alerts.c.device_id == device_id, alerts.c.kind == kind,
        alerts.c.source == "station", alerts.c.state == "open")).scalars().all()
    for alert_id in ids:
        conn.execute(update(alerts).where(alerts.c.alert_id == alert_id).values(
            state="ended", ended_at=now, updated_at=now))
        conn.execute(insert(alert_log).values(alert_id=alert_id, device_id=device_id,
                                              at=now, event="end", actor="station"))
