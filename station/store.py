"""The station's storage: what devices said, what the station made of it, and what people did.

One `Store` per process, on SQLAlchemy Core: an SQLite file (WAL) by default, PostgreSQL by URL
for sites with several ingest workers. `ingest()` writes a batch of messages in one
transaction and returns only after the commit, so the ingest loop acknowledges a message to the
broker only once it is on disk: a station killed at any moment loses nothing it acknowledged,
and a message the broker delivers again is recognised by its (device, epoch, kind, seq) and
stored once. Every change is appended to `changes`, which the web UI follows.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from station import alarms
from station.schema import (
    Lock,
    alert_log,
    alerts,
    changes,
    clips,
    cycles,
    devices,
    gaps,
    invalid,
    logins,
    minutes,
    my_turn,
    received,
    summaries,
    verdicts,
    wait_turn,
)
from station.validate import Message, unix

log = logging.getLogger(__name__)

GAP_KINDS = ("cycle", "alert", "summary")  # seq gaps worth an alarm (stats are QoS 0)
SETTLE_S = 30.0  # a missing seq is a gap once it is this late (workers may reorder messages)
MINUTE_SUMS = ("cycles", "good", "abnormal", "quality_sum")  # what each minute row adds up
RATE_WINDOW_S = 120.0  # the breathing rate the ward shows: cycles of the last two minutes
# A pause between cycles longer than this ends a stretch of breathing heard (the device's own
# session ends after 30 s without cycles): rates are measured over such stretches only.
BREATHING_PAUSE_S = 30.0


@dataclass(frozen=True)
class Refusal:
    topic: str
    reason: str
    excerpt: str


def connect(url: str) -> Engine:
    """An engine, with SQLite set up for one writer and many readers."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi: Any, record: Any) -> None:
            cur = dbapi.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a batch is on the disk before its messages are acknowledged, even across
            # a power cut (NORMAL would survive a killed process only).
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the database to the current schema (Alembic), one process at a time."""
    from alembic import command
    from alembic.config import Config

    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        wait_turn(conn, Lock.MIGRATE)  # several workers may start together
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _upsert(conn: Connection, table: Any) -> Any:
    return (postgresql.insert(table) if conn.dialect.name == "postgresql"
            else sqlite.insert(table))


class Store:
    """The station's one door to its database: ingest, alarms, people's actions and the UI's
    reads go through it, so what is acknowledged to the broker is what is stored."""

    def __init__(self, url: str) -> None:
        self.engine = connect(url)
        self.last_foreign = 0  # messages of the last ingest() refused as another's data
        migrate(self.engine)
        # messages stored before this were checked for gaps (by an earlier run, say; an hour
        # back is checked again, the table's key keeps each gap once)
        self._gaps_checked_until = time.time() - 3600

    # -- ingest ---------------------------------------------------------------------------
    def ingest(self, messages: Iterable[Message], refused: Iterable[Refusal] = (),
               now: float | None = None) -> int:
        """Store a batch in one transaction; returns how many were new (not repeats).

        In bulk, as a burst needs it (a device's spool flushed after an outage, thousands at
        once): the identities in one statement, each device's bookkeeping once per batch,
        cycles and their per-minute sums as single inserts, one change row per device and
        kind; the rest (alerts, summaries, statuses, clips, stats) in their order."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            rows = [{"at": now, "topic": r.topic[:300], "reason": r.reason[:1000],
                     "excerpt": r.excerpt[:1000]} for r in refused]
            self.last_foreign = 0
            candidates = []
            for m in messages:
                foreign = self._foreign(conn, m) if m.kind in ("alert", "clip") else ""
                if foreign:  # one device must not touch another's data: kept as a refusal
                    self.last_foreign += 1
                    rows.append({"at": now, "topic": f"…/{m.device_id[:200]}/{m.kind}",
                                 "reason": foreign[:1000], "excerpt": json.dumps(
                                     {k: m.body.get(k) for k in ("alert_id", "clip_id",
                                                                 "event")})[:1000]})
                    log.warning("refused: %s", foreign[:300])
                else:
                    candidates.append(m)
            if rows:
                conn.execute(insert(invalid), rows)
            fresh = self._first_time(conn, candidates, now)
            if not fresh:
                if rows:
                    conn.execute(insert(changes).values(at=now, device_id=None,
                                                        what="invalid"))
                return 0
            by_device: dict[str, list[Message]] = {}
            for m in fresh:
                by_device.setdefault(m.device_id, []).append(m)
            self._devices_seen(conn, by_device, now)
            self._cycles(conn, [m for m in fresh if m.kind == "cycle"])
            for m in fresh:
                if m.kind != "cycle":
                    self._store(conn, m, now)
            what = sorted({(m.device_id, m.kind) for m in fresh})
            conn.execute(insert(changes), [{"at": now, "device_id": d, "what": k}
                                           for d, k in what]
                         + ([{"at": now, "device_id": None, "what": "invalid"}] if rows
                            else []))
        return len(fresh)

    def _first_time(self, conn: Connection, candidates: list[Message], now: float
                    ) -> list[Message]:
        """Records the messages' identities in one statement; those stored before (a
        redelivery) are left out of what is returned."""
        if not candidates:
            return []
        values = [{"device_id": m.device_id, "epoch": m.epoch, "kind": m.kind, "seq": m.seq,
                   "sent": unix(m.body["ts"]), "at": now} for m in candidates]
        # one statement, compiled once, that SQLAlchemy sends in batches ("insertmanyvalues"),
        # returning the rows it inserted: those are the new messages
        record = _upsert(conn, received).on_conflict_do_nothing().returning(
            received.c.device_id, received.c.epoch, received.c.kind, received.c.seq)
        new = {tuple(r) for r in conn.execute(record, values)}
        seen: set[tuple[str, str, str, int]] = set()
        fresh = []
        for m in candidates:  # a message twice in one batch is stored once
            key = (m.device_id, m.epoch, m.kind, m.seq)
            if key in new and key not in seen:
                seen.add(key)
                fresh.append(m)
        return fresh

    def _cycles(self, conn: Connection, new: list[Message]) -> None:
        """Cycles in one insert, and the per-minute sums they add to in one upsert each."""
        if not new:
            return
        rows: list[dict[str, Any]] = []
        sums: dict[tuple[str, int], dict[str, float]] = {}
        for m in new:
            b = m.body
            start = unix(b["start"])
            rows.append({"device_id": m.device_id, "seq": m.seq, "session_id": b["session_id"],
                         "start": start, "end": unix(b["end"]), "label": b["label"],
                         "confidence": b["confidence"], "quality": b["quality"],
                         "probs": b["probs"], "forced_cut": b["forced_cut"],
                         "model": f"{b['model']['name']} {b['model']['version']}",
                         "latency_ms": b["latency_ms"]})
            good = b["good"]
            key = (m.device_id, int(start // 60))
            total = sums.setdefault(key, {"cycles": 0, "good": 0, "abnormal": 0,
                                          "quality_sum": 0.0})
            total["cycles"] += 1
            total["good"] += int(good)
            total["abnormal"] += int(good and b["label"] != "normal")
            total["quality_sum"] += b["quality"]
        conn.execute(insert(cycles), rows)
        ins = _upsert(conn, minutes)
        add = ins.on_conflict_do_update(  # one statement, executed for every minute
            index_elements=["device_id", "minute"],
            set_={k: minutes.c[k] + ins.excluded[k] for k in MINUTE_SUMS})
        conn.execute(add, [{"device_id": device_id, "minute": minute, **total}
                           for (device_id, minute), total in sorted(sums.items())])

    @staticmethod
    def _foreign(conn: Connection, m: Message) -> str:
        """Why this message touches another device's data ('' if it does not): an alert
        update, or a clip, naming an alert (or a clip id) that is another device's."""
        b = m.body
        ids = []
        if m.kind == "alert":
            ids.append(("alert", b["alert_id"]))
        elif m.kind == "clip":
            if b["alert_id"] is not None:
                ids.append(("alert", b["alert_id"]))
            owner = conn.execute(select(clips.c.device_id).where(
                clips.c.clip_id == b["clip_id"])).scalar()
            if owner is not None and owner != m.device_id:
                return (f"{m.device_id!r} sent clip {b['clip_id']!r}, which is {owner!r}'s")
        for what, alert_id in ids:
            owner = conn.execute(select(alerts.c.device_id).where(
                alerts.c.alert_id == alert_id)).scalar()
            if owner is not None and owner != m.device_id:
                return (f"{m.device_id!r} sent {m.kind} for {what} {alert_id!r}, which is "
                        f"{owner!r}'s")
        return ""

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
                   ~select(nxt.c.seq).where(same(nxt), nxt.c.seq == r.c.seq + 1).exists())
        ).all()
        for device_id, epoch, kind, seq, resumes in holes:
            if resumes is None:
                continue  # the latest message: nothing is missing after it (yet)
            new = conn.execute(_upsert(conn, gaps).values(
                device_id=device_id, epoch=epoch, kind=kind, first_missing=seq + 1,
                last_missing=resumes - 1, at=now).on_conflict_do_nothing()
                .returning(gaps.c.at)).first()
            if new is not None:
                self._station_alarm(conn, device_id, "seq_gap", now, {
                    "kind": kind, "first_missing": seq + 1, "last_missing": resumes - 1})
                conn.execute(insert(changes).values(at=now, device_id=device_id,
                                                    what="alert"))

    def _store(self, conn: Connection, m: Message, now: float) -> None:
        """One message other than a cycle (those go in bulk)."""
        b = m.body
        if m.kind == "alert":
            self._device_alert(conn, m, now)
        elif m.kind == "summary":
            conn.execute(insert(summaries).values(
                device_id=m.device_id, epoch=m.epoch, seq=m.seq, session_id=b["session_id"],
                start=unix(b["start"]), end=unix(b["end"]), cycles=b["cycles"],
                cycles_by_label=b["cycles_by_label"], abnormal_burden=b["abnormal_burden"],
                poor_quality_fraction=b["poor_quality_fraction"],
                record_label=b["record_label"],
                breathing_rate_per_min=b["breathing_rate_per_min"], ended_by=b["ended_by"]))
        elif m.kind == "status":
            self._status(conn, m, now)
        elif m.kind == "clip":
            conn.execute(insert(clips).values(
                clip_id=b["clip_id"], device_id=m.device_id, alert_id=b["alert_id"],
                session_id=b["session_id"],
                start=unix(b["cycle_start"]), end=unix(b["cycle_end"]), label=b["label"],
                confidence=b["confidence"], encoding=b["encoding"],
                sample_rate=b["sample_rate"], audio=base64.b64decode(b["audio_b64"])))
        elif m.kind == "stats":
            conn.execute(update(devices).where(devices.c.device_id == m.device_id).values(
                stats=b, spool_depth=b["spool_depth"]))

    def _devices_seen(self, conn: Connection, by_device: dict[str, list[Message]],
                      now: float) -> None:
        """Every device's bookkeeping once per batch, in a few statements for all of them
        (a burst from a thousand devices made one upsert and one select per device, and ran
        at 760 messages/s): heard from now; back from offline if it sent anything but a
        status; a new numbering epoch noticed; its model."""
        ins = _upsert(conn, devices)
        heard = ins.on_conflict_do_update(
            index_elements=["device_id"],
            set_={"last_seen": ins.excluded.last_seen,
                  "clock_synced": ins.excluded.clock_synced})
        conn.execute(heard, [{"device_id": d, "state": "online", "reasons": [],
                              "first_seen": now, "last_seen": now,
                              "clock_synced": mine[-1].body["clock_synced"]}
                             for d, mine in sorted(by_device.items())])
        ids = sorted(by_device)
        known: dict[str, Any] = {}
        for i in range(0, len(ids), 500):  # bounded statements (SQLite: 999 parameters)
            known |= {r.device_id: r for r in conn.execute(
                select(devices.c.device_id, devices.c.state, devices.c.epoch, devices.c.model)
                .where(devices.c.device_id.in_(ids[i:i + 500])))}
        models = []
        for device_id in ids:
            mine, row = by_device[device_id], known[device_id]
            epoch = row.epoch
            for m in mine:
                if m.epoch != epoch and self._new_epoch(conn, m):
                    if epoch is not None:
                        log.warning("%s numbers its messages in a new epoch, %s (was %s): a "
                                    "new spool, or a stop that left its counters in doubt; "
                                    "its numbering starts again", device_id, m.epoch, epoch)
                    conn.execute(update(devices).where(devices.c.device_id == device_id)
                                 .values(epoch=m.epoch, epoch_since=now))
                    epoch = m.epoch
            if row.state == "offline" and any(m.kind != "status" for m in mine):  # it is back
                conn.execute(update(devices).where(devices.c.device_id == device_id).values(
                    state="online", reasons=[]))
                self._end_station_alarm(conn, device_id, "offline", now)
            latest = [m.body["model"] for m in mine if m.kind == "cycle"][-1:]
            if latest and (model := f"{latest[0]['name']} {latest[0]['version']}") != row.model:
                models.append({"id": device_id, "new_model": model})
        if models:
            conn.execute(update(devices).where(devices.c.device_id == bindparam("id"))
                         .values(model=bindparam("new_model")), models)

    @staticmethod
    def _new_epoch(conn: Connection, m: Message) -> bool:
        """Whether this message's epoch is newer than every other the device has used (a late
        message of an older epoch, redelivered, is not)."""
        older = conn.execute(select(func.max(received.c.sent)).where(
            received.c.device_id == m.device_id, received.c.epoch != m.epoch)).scalar()
        return older is None or unix(m.body["ts"]) >= older

    def _status(self, conn: Connection, m: Message, now: float) -> None:
        b = m.body
        at = unix(b["ts"])
        latest = conn.execute(select(devices.c.status_at).where(
            devices.c.device_id == m.device_id)).scalar()
        if latest is not None and at < latest:
            return  # an older status delivered late (a retained copy): the newer one stands
        model = b["model"]
        conn.execute(update(devices).where(devices.c.device_id == m.device_id).values(
            state=b["state"], reasons=b["reasons"], status_at=at,
            **({"model": f"{model['name']} {model['version']}"} if model else {})))
        if b["state"] == "offline":
            self._station_alarm(conn, m.device_id, "offline", now, {"reason": b["reason"]})
        else:
            self._end_station_alarm(conn, m.device_id, "offline", now)

    # -- alerts ---------------------------------------------------------------------------
    def _device_alert(self, conn: Connection, m: Message, now: float) -> None:
        b = m.body
        kind = alarms.of(b["kind"])
        existing = conn.execute(select(alerts.c.state, alerts.c.version).where(
            alerts.c.alert_id == b["alert_id"])).first()
        evidence = b["evidence"]
        if existing is None:
            conn.execute(insert(alerts).values(
                alert_id=b["alert_id"], device_id=m.device_id, kind=kind.kind,
                category=kind.category, priority=kind.priority, source="device",
                state="ended" if b["event"] == "end" else "open", opened_at=unix(b["ts"]),
                updated_at=now, ended_at=now if b["event"] == "end" else None, version=1,
                evidence=evidence, session_id=b["session_id"]))
        else:
            values: dict[str, Any] = {"updated_at": now, "evidence": evidence}
            if b["event"] == "end":  # good news: no reason to call anyone again
                values |= {"state": "ended", "ended_at": now}
            else:
                values["version"] = existing.version + 1
                if existing.state == "resolved":  # resolved, but the device still hears it
                    values |= {"state": "open", "resolved_by": None, "resolved_at": None}
            conn.execute(update(alerts).where(alerts.c.alert_id == b["alert_id"])
                         .values(**values))
        conn.execute(insert(alert_log).values(alert_id=b["alert_id"], device_id=m.device_id,
                                              at=now, event=b["event"], actor=m.device_id,
                                              detail=evidence))

    def _station_alarm(self, conn: Connection, device_id: str, kind: str, now: float,
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

    def _end_station_alarm(self, conn: Connection, device_id: str, kind: str,
                           now: float) -> None:
        ids = conn.execute(select(alerts.c.alert_id).where(
            alerts.c.device_id == device_id, alerts.c.kind == kind,
            alerts.c.source == "station", alerts.c.state == "open")).scalars().all()
        for alert_id in ids:
            conn.execute(update(alerts).where(alerts.c.alert_id == alert_id).values(
                state="ended", ended_at=now, updated_at=now))
            conn.execute(insert(alert_log).values(alert_id=alert_id, device_id=device_id,
                                                  at=now, event="end", actor="station"))

    def sweep(self, now: float, offline_after_s: float, spool_backlog: int) -> None:
        """Time- and state-driven station alarms: silent devices, spool backlogs, and the gaps
        among messages that have had time to settle. One worker at a time."""
        with self.engine.begin() as conn:
            if not my_turn(conn, Lock.SWEEP):
                return  # another worker is sweeping
            checked = self._gaps_checked_until
            self._gaps_checked_until = now - SETTLE_S
            self._gaps(conn, checked - SETTLE_S, now - SETTLE_S, now)
            silent = conn.execute(select(devices.c.device_id).where(
                devices.c.last_seen < now - offline_after_s,
                devices.c.state != "offline")).scalars().all()
            for device_id in silent:
                conn.execute(update(devices).where(devices.c.device_id == device_id).values(
                    state="offline", reasons=["not heard from"]))
                self._station_alarm(conn, device_id, "offline", now,
                                    {"reason": f"silent for more than {offline_after_s:.0f} s"})
                conn.execute(insert(changes).values(at=now, device_id=device_id,
                                                    what="status"))
            rows = conn.execute(select(devices.c.device_id, devices.c.spool_depth)).all()
            for device_id, depth in rows:
                backlog = conn.execute(select(alerts.c.alert_id).where(
                    alerts.c.device_id == device_id, alerts.c.kind == "spool_backlog",
                    alerts.c.state == "open")).first()
                if depth is not None and depth >= spool_backlog and backlog is None:
                    self._station_alarm(conn, device_id, "spool_backlog", now,
                                        {"spool_depth": depth})
                    conn.execute(insert(changes).values(at=now, device_id=device_id,
                                                        what="alert"))
                elif backlog is not None and (depth or 0) < spool_backlog // 2:
                    self._end_station_alarm(conn, device_id, "spool_backlog", now)
                    conn.execute(insert(changes).values(at=now, device_id=device_id,
                                                        what="alert"))

    # -- what people do -------------------------------------------------------------------
    def acknowledge_technical(self, alert_ids: Iterable[str], user: str, note: str,
                              now: float | None = None) -> int:
        """Acknowledges these alarms at once, technical ones only (a clinical alert is
        acknowledged by itself, by someone who looked at it); how many were."""
        ids = list(alert_ids)
        with self.engine.connect() as conn:
            technical = [r[0] for r in conn.execute(select(alerts.c.alert_id).where(
                alerts.c.alert_id.in_(ids), alerts.c.category == "technical"))]
        return sum(self.acknowledge(a, user, note, now) for a in technical)

    def acknowledge(self, alert_id: str, user: str, note: str, now: float | None = None
                    ) -> bool:
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            row = conn.execute(select(alerts.c.device_id, alerts.c.version).where(
                alerts.c.alert_id == alert_id)).first()
            if row is None:
                return False
            conn.execute(update(alerts).where(alerts.c.alert_id == alert_id).values(
                acked_by=user, acked_at=now, ack_note=note or None,
                acked_version=row.version))
            conn.execute(insert(alert_log).values(alert_id=alert_id, device_id=row.device_id,
                                                  at=now, event="ack", actor=user,
                                                  detail={"note": note} if note else None))
            conn.execute(insert(changes).values(at=now, device_id=row.device_id, what="alert"))
        return True

    def resolve(self, alert_id: str, user: str, note: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            row = conn.execute(select(alerts.c.device_id).where(
                alerts.c.alert_id == alert_id)).first()
            if row is None:
                return False
            conn.execute(update(alerts).where(alerts.c.alert_id == alert_id).values(
                state="resolved", resolved_by=user, resolved_at=now))
            conn.execute(insert(alert_log).values(alert_id=alert_id, device_id=row.device_id,
                                                  at=now, event="resolve", actor=user,
                                                  detail={"note": note} if note else None))
            conn.execute(insert(changes).values(at=now, device_id=row.device_id, what="alert"))
        return True

    def set_label(self, device_id: str, label: str, user: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(update(devices).where(devices.c.device_id == device_id)
                                  .values(label=label.strip()[:200] or None))
            if result.rowcount:
                conn.execute(insert(changes).values(at=time.time(), device_id=device_id,
                                                    what="label"))
                log.info("%s labelled device %r %r", user, device_id, label)
        return bool(result.rowcount)

    # -- housekeeping ---------------------------------------------------------------------
    def purge(self, now: float, retention_days: float, alert_retention_days: float,
              clip_retention_days: float) -> None:
        data_before = now - retention_days * 86400
        alerts_before = now - alert_retention_days * 86400
        with self.engine.begin() as conn:
            # a clip a clinician has judged is labelled data: kept as long as alerts are
            judged = select(verdicts.c.clip_id)
            conn.execute(delete(clips).where(
                clips.c.start < now - clip_retention_days * 86400, clips.c.clip_id.not_in(judged)))
            conn.execute(delete(clips).where(
                clips.c.start < now - alert_retention_days * 86400))
            conn.execute(delete(cycles).where(cycles.c.start < data_before))
            conn.execute(delete(minutes).where(minutes.c.minute < data_before // 60))
            conn.execute(delete(summaries).where(summaries.c.end < data_before))
            conn.execute(delete(gaps).where(gaps.c.at < data_before))
            conn.execute(delete(invalid).where(invalid.c.at < data_before))
            conn.execute(delete(logins).where(logins.c.seen_at < now - 30 * 86400))
            conn.execute(delete(changes).where(changes.c.at < now - 3600))
            # the identities must outlive any redelivery: keep them as long as the data
            conn.execute(delete(received).where(received.c.at < data_before))
            old = select(alerts.c.alert_id).where(alerts.c.state != "open",
                                                  alerts.c.updated_at < alerts_before)
            conn.execute(delete(alert_log).where(alert_log.c.alert_id.in_(old)))
            conn.execute(delete(alerts).where(alerts.c.alert_id.in_(old)))

    # -- what the UI reads ------------------------------------------------------------------
    def latest_change(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(changes.c.id), 0))).scalar_one()

    def changes_since(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(changes).where(changes.c.id > after)
                                .order_by(changes.c.id).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    def overview(self, now: float) -> list[dict[str, Any]]:
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
        out = []
        for d in devs:
            mine = [dict(a) | {"attention": needs_attention(a)} for a in live
                    if a["device_id"] == d["device_id"]]
            s = sums.get(d["device_id"])
            out.append(dict(d) | {
                "clinical": [a for a in mine if a["category"] == "clinical"],
                "technical": [a for a in mine if a["category"] == "technical"],
                "attention": any(a["attention"] for a in mine),
                "burden": (s.abnormal / s.good) if s and s.good else None,
                "rate": rates.get(d["device_id"]),
                "gaps_last_hour": gap_counts.get(d["device_id"], 0)})
        return out

    @staticmethod
    def _breathing_rates(conn: Connection, now: float, device_id: str | None = None
                         ) -> dict[str, float]:
        """Each device's breathing rate over its cycles of the last two minutes
        (`breathing_rate`)."""
        q = select(cycles.c.device_id, cycles.c.start, cycles.c.end).where(
            cycles.c.start >= now - RATE_WINDOW_S)
        if device_id is not None:
            q = q.where(cycles.c.device_id == device_id)
        heard: dict[str, list[tuple[float, float]]] = {}
        for r in conn.execute(q.order_by(cycles.c.device_id, cycles.c.start)):
            heard.setdefault(r.device_id, []).append((r.start, r.end))
        return {d: rate for d, times in heard.items()
                if (rate := breathing_rate(times)) is not None}

    def device(self, device_id: str, now: float, minutes_back: int = 15,
               hours_back: int = 24, bucket_minutes: int = 15) -> dict[str, Any] | None:
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
        rates = rates_by_bucket([(r.start, r.end) for r in heard], bucket_minutes * 60)
        return {"device": dict(d) | {"rate": rate}, "timeline": [dict(r) for r in timeline],
                "buckets": [dict(r) | {"rate": rates.get(int(r["bucket"]))} for r in trend],
                "first_bucket": first_bucket,
                "n_buckets": n_buckets, "trend_since": first_bucket * bucket_minutes * 60,
                "trend_until": (first_bucket + n_buckets) * bucket_minutes * 60,
                "sessions": [dict(r) for r in sessions],
                "alerts": [dict(r) for r in history], "since": now - minutes_back * 60}

    def inbox(self) -> list[dict[str, Any]]:
        """Alerts that need someone: every open one, and ended ones that changed since anyone
        saw them (or were never seen); attention first, then priority, then the oldest."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(alerts, devices.c.label).join(
                    devices, devices.c.device_id == alerts.c.device_id, isouter=True)
                .where(alerts.c.state.in_(("open", "ended")))).mappings().all()
        out = [dict(r) | {"attention": needs_attention(r)} for r in rows
               if r["state"] == "open" or needs_attention(r)]
        return sorted(out, key=lambda a: (not a["attention"], a["priority"], a["opened_at"]))

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(alerts).where(alerts.c.alert_id == alert_id)
                               ).mappings().first()
            if row is None:
                return None
            history = conn.execute(select(alert_log).where(alert_log.c.alert_id == alert_id)
                                   .order_by(alert_log.c.at)).mappings().all()
        return dict(row) | {"history": [dict(h) for h in history],
                            "attention": needs_attention(row)}

    def clips_of(self, *, alert_id: str | None = None, device_id: str | None = None,
                 limit: int = 20) -> list[dict[str, Any]]:
        """The clips behind an alert, or a device's latest, each with its latest verdict;
        without their audio."""
        q = select(*(c for c in clips.c if c.name != "audio"))
        q = q.where(clips.c.alert_id == alert_id) if alert_id else \
            q.where(clips.c.device_id == device_id)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q.order_by(clips.c.start.desc())
                                                  .limit(limit)).mappings()]
            latest = self._latest_verdicts(conn, [r["clip_id"] for r in rows])
        return [r | {"verdict": latest.get(r["clip_id"])} for r in rows]

    @staticmethod
    def _latest_verdicts(conn: Connection, clip_ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if not clip_ids:
            return out
        for v in conn.execute(select(verdicts).where(verdicts.c.clip_id.in_(clip_ids))
                              .order_by(verdicts.c.at, verdicts.c.id)).mappings():
            out[v["clip_id"]] = dict(v)
        return out

    def record_verdict(self, clip_id: str, verdict: str, user: str, now: float) -> bool:
        """A clinician's verdict on a clip (kept with who and when); False if no such clip."""
        with self.engine.begin() as conn:
            clip = conn.execute(select(clips.c.device_id, clips.c.label).where(
                clips.c.clip_id == clip_id)).first()
            if clip is None:
                return False
            conn.execute(insert(verdicts).values(clip_id=clip_id, device_id=clip.device_id,
                                                 model_label=clip.label, verdict=verdict,
                                                 by=user, at=now))
            conn.execute(insert(changes).values(at=now, device_id=clip.device_id,
                                                what="verdict"))
        log.info("%s: clip %s (%s) is %s", user, clip_id, clip.label, verdict)
        return True

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

    def judged_clips(self) -> Iterator[dict[str, Any]]:
        """Every clip with a verdict (its latest), with its audio and its device's
        stethoscope: what export-labels writes."""
        with self.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(select(verdicts.c.clip_id).distinct())]
            for i in range(0, len(ids), 200):
                chunk = ids[i:i + 200]
                latest = self._latest_verdicts(conn, chunk)
                for clip in conn.execute(select(clips, devices.c.stethoscope).join(
                        devices, devices.c.device_id == clips.c.device_id, isouter=True)
                        .where(clips.c.clip_id.in_(chunk))).mappings():
                    yield dict(clip) | {"verdict": latest[clip["clip_id"]]}

    def set_stethoscope(self, device_id: str, stethoscope: str, user: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(update(devices).where(devices.c.device_id == device_id)
                                  .values(stethoscope=stethoscope.strip()[:200] or None))
            if result.rowcount:
                conn.execute(insert(changes).values(at=time.time(), device_id=device_id,
                                                    what="label"))
                log.info("%s: device %r records with %r", user, device_id, stethoscope)
        return bool(result.rowcount)

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

    def recent_gaps(self, since: float, limit: int = 100) -> list[dict[str, Any]]:
        """Messages found missing since `since`, newest first."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(gaps).where(gaps.c.at >= since)
                                                  .order_by(gaps.c.at.desc()).limit(limit))
                    .mappings()]

    def refused(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(invalid).order_by(invalid.c.id.desc())
                                                  .limit(limit)).mappings()]

    # -- logins -----------------------------------------------------------------------------
    def login(self, user: str, now: float) -> str:
        """A new login session's token."""
        token = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(insert(logins).values(token=token, user=user, created_at=now,
                                               seen_at=now))
        return token

    def logged_in(self, token: str, now: float, idle_s: float, max_s: float) -> str | None:
        """Who this login is, if it has not ended, been idle longer than `idle_s` or lasted
        longer than `max_s`; using it counts as activity (written at most once a minute)."""
        with self.engine.begin() as conn:
            row = conn.execute(select(logins).where(logins.c.token == token)).first()
            if row is None or row.ended_at is not None:
                return None
            if now - row.seen_at > idle_s or now - row.created_at > max_s:
                conn.execute(update(logins).where(logins.c.token == token).values(
                    ended_at=now))
                return None
            if now - row.seen_at > 60:
                conn.execute(update(logins).where(logins.c.token == token).values(seen_at=now))
            return str(row.user)

    def logout(self, token: str, now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(logins).where(logins.c.token == token,
                                              logins.c.ended_at.is_(None)).values(ended_at=now))


def needs_attention(alert: Any) -> bool:
    """Open (or ended unseen) and not acknowledged since it last changed."""
    if alert["state"] == "resolved":
        return False
    return alert["acked_version"] is None or alert["version"] > alert["acked_version"]


def breathing_rate(heard: list[tuple[float, float]]) -> float | None:
    """Breaths per minute as the device counts a session's (cycles × 60 / the time they span),
    over the stretches of breathing among these cycles: a pause longer than
    BREATHING_PAUSE_S ends one, so the time between two auscultations is not breathing. The
    ward, the device page (now and its trend) and the session summaries say one thing under
    one name. `heard`: the cycles' (start, end), in order; None with no stretch of two."""
    stretches: list[list[float]] = []  # [cycles, first start, last end]
    for start, end in heard:
        if stretches and start - stretches[-1][2] <= BREATHING_PAUSE_S:
            stretches[-1][0] += 1
            stretches[-1][2] = max(stretches[-1][2], end)
        else:
            stretches.append([1, start, end])
    counted = [(n, last - first) for n, first, last in stretches if n >= 2 and last > first]
    span = sum(s for _, s in counted)
    return round(60 * sum(n for n, _ in counted) / span, 1) if span else None


def rates_by_bucket(heard: list[tuple[float, float]], bucket_s: float) -> dict[int, float]:
    """`breathing_rate` in each time bucket, over the cycles that started in it: a quarter of
    an hour with two minutes of auscultation says the rate of those two minutes (it said their
    cycles spread over the minutes that had any: 6/min for 24 s heard at 15/min)."""
    by_bucket: dict[int, list[tuple[float, float]]] = {}
    for start, end in heard:
        by_bucket.setdefault(int(start // bucket_s), []).append((start, end))
    return {b: rate for b, times in by_bucket.items()
            if (rate := breathing_rate(times)) is not None}
