"""Storing what devices sent: a batch of validated messages in one transaction, new ones only
(a redelivery is recognised by its device, epoch, kind and seq), in bulk where a burst needs
it. The ingest loop acknowledges a message to the broker only after this has committed."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from station import alarms
from station.schema import (
    alert_log,
    alerts,
    changes,
    clips,
    cycles,
    devices,
    invalid,
    minutes,
    received,
    summaries,
)
from station.store.database import Tables, upsert
from station.store.station_alarms import end_station_alarm, open_station_alarm
from station.validate import Message, unix

log = logging.getLogger(__name__)

MINUTE_SUMS = ("cycles", "good", "abnormal", "quality_sum")  # what each minute row adds up


@dataclass(frozen=True)
class Refusal:
    """A message that was not stored, kept so a technician can see why."""

    topic: str
    reason: str
    excerpt: str


class Ingest(Tables):
    """What devices said, stored once each; each device's bookkeeping once per batch."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.last_foreign = 0  # messages of the last ingest() refused as another device's data

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
            messages = list(messages)
            # the ids this batch itself gives an owner: an alert is its "new" sender's, a clip
            # its sender's (earlier in the batch than what names them, or not: a batch is
            # sorted by device, so a forger's "end" may come before the owner's "new")
            claims: dict[tuple[str, str], str] = {}
            for m in messages:
                if m.kind == "alert" and m.body["event"] == "new":
                    claims.setdefault(("alert", m.body["alert_id"]), m.device_id)
                elif m.kind == "clip":
                    claims.setdefault(("clip", m.body["clip_id"]), m.device_id)
            for m in messages:
                foreign = self._foreign(conn, m, claims) if m.kind in ("alert", "clip") else ""
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
        record = upsert(conn, received).on_conflict_do_nothing().returning(
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
        ins = upsert(conn, minutes)
        add = ins.on_conflict_do_update(  # one statement, executed for every minute
            index_elements=["device_id", "minute"],
            set_={k: minutes.c[k] + ins.excluded[k] for k in MINUTE_SUMS})
        conn.execute(add, [{"device_id": device_id, "minute": minute, **total}
                           for (device_id, minute), total in sorted(sums.items())])

    @staticmethod
    def _foreign(conn: Connection, m: Message, claims: dict[tuple[str, str], str]) -> str:
        """Why this message touches another device's data ('' if it does not): an alert
        event, or a clip, naming an alert (or a clip id) that is another device's, whether
        stored before or claimed in this same batch (`claims`)."""
        b = m.body
        ids = [("alert", b["alert_id"])] if b.get("alert_id") is not None else []
        if m.kind == "clip":
            ids.append(("clip", b["clip_id"]))
        table = {"alert": (alerts, alerts.c.alert_id), "clip": (clips, clips.c.clip_id)}
        for what, the_id in ids:
            t, column = table[what]
            owner = conn.execute(select(t.c.device_id).where(column == the_id)).scalar() \
                or claims.get((what, the_id))
            if owner is not None and owner != m.device_id:
                return (f"{m.device_id!r} sent {m.kind} for {what} {the_id!r}, which is "
                        f"{owner!r}'s")
        return ""

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
                cycles_unjudged=b["cycles_unjudged"] or None, record_label=b["record_label"],
                breathing_rate_per_min=b["breathing_rate_per_min"], ended_by=b["ended_by"]))
        elif m.kind == "status":
            self._status(conn, m, now)
        elif m.kind == "clip":
            conn.execute(insert(clips).values(
                clip_id=b["clip_id"], device_id=m.device_id, alert_id=b["alert_id"],
                session_id=b["session_id"],
                start=unix(b["cycle_start"]), end=unix(b["cycle_end"]), label=b["label"],
                confidence=b["confidence"], encoding=b["encoding"],
                sample_rate=b["sample_rate"], audio=base64.b64decode(b["audio_b64"]),
                stethoscope=select(devices.c.stethoscope).where(
                    devices.c.device_id == m.device_id).scalar_subquery()))
        elif m.kind == "stats":
            conn.execute(update(devices).where(devices.c.device_id == m.device_id).values(
                stats=b, spool_depth=b["spool_depth"]))

    def _devices_seen(self, conn: Connection, by_device: dict[str, list[Message]],
                      now: float) -> None:
        """Every device's bookkeeping once per batch, in a few statements for all of them
        (a burst from a thousand devices made one upsert and one select per device, and ran
        at 760 messages/s): heard from now; back from offline if it sent anything but a
        status; a new numbering epoch noticed; its model."""
        ins = upsert(conn, devices)
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
                end_station_alarm(conn, device_id, "offline", now)
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
        """The device's latest status, ordered by its connection first: a last will carries
        the time its connection was made, yet is that connection's last word (the broker
        sends it when the connection is lost); a status of a later connection beats both."""
        b = m.body
        key = (unix(b["connected_at"]), bool(b["last_will"]), unix(b["ts"]))
        row = conn.execute(select(devices.c.status_connected_at, devices.c.status_will,
                                  devices.c.status_at).where(
            devices.c.device_id == m.device_id)).first()
        if row is not None and row.status_at is not None and key < (
                row.status_connected_at or row.status_at, bool(row.status_will),
                row.status_at):
            return  # an older status delivered late (a retained copy): the newer one stands
        model = b["model"]
        conn.execute(update(devices).where(devices.c.device_id == m.device_id).values(
            state=b["state"], reasons=b["reasons"], status_at=key[2],
            status_connected_at=key[0], status_will=key[1], heartbeat_s=b["heartbeat_s"],
            breathing_pause_s=b["breathing_pause_s"],
            **({"model": f"{model['name']} {model['version']}", "model_sha256": model["sha256"],
                "model_note": model["note"]} if model else {})))
        if b["state"] == "offline":
            open_station_alarm(conn, m.device_id, "offline", now, {"reason": b["reason"]})
        else:
            end_station_alarm(conn, m.device_id, "offline", now)

    def _device_alert(self, conn: Connection, m: Message, now: float) -> None:
        """A device's alert event. It needs someone again (a new version) only when it
        escalates (`alarms.escalates`) or comes back after ending; its history keeps one
        "more evidence" line per stretch of updates (how many, and the latest), not one per
        cycle."""
        b = m.body
        kind = alarms.of(b["kind"])
        existing = conn.execute(select(alerts.c.state, alerts.c.version,
                                       alerts.c.escalated_fraction).where(
            alerts.c.alert_id == b["alert_id"])).first()
        evidence = b["evidence"]
        fraction = evidence.get("fraction") if isinstance(evidence, dict) else None
        event = b["event"]
        if existing is None:
            conn.execute(insert(alerts).values(
                alert_id=b["alert_id"], device_id=m.device_id, kind=kind.kind,
                category=kind.category, priority=kind.priority, source="device",
                state="ended" if event == "end" else "open", opened_at=unix(b["ts"]),
                updated_at=now, ended_at=now if event == "end" else None, version=1,
                escalated_fraction=fraction, evidence=evidence, session_id=b["session_id"]))
        else:
            values: dict[str, Any] = {"updated_at": now, "evidence": evidence}
            if event == "end":  # good news: no reason to call anyone again
                values |= {"state": "ended", "ended_at": now}
            elif existing.state in ("resolved", "ended"):  # heard again after it ended
                values |= {"state": "open", "resolved_by": None, "resolved_at": None,
                           "ended_at": None, "version": existing.version + 1,
                           "escalated_fraction": fraction}
            elif alarms.escalates(fraction, existing.escalated_fraction):
                values |= {"version": existing.version + 1, "escalated_fraction": fraction}
                event = "escalate"
            conn.execute(update(alerts).where(alerts.c.alert_id == b["alert_id"])
                         .values(**values))
        detail = evidence | ({"end_reason": b["end_reason"]} if b["end_reason"] else {})
        if event == "update" and self._more_evidence(conn, b["alert_id"], now, detail):
            return
        conn.execute(insert(alert_log).values(
            alert_id=b["alert_id"], device_id=m.device_id, at=now, event=event,
            actor=m.device_id, detail=detail | ({"updates": 1} if event == "update" else {})))

    @staticmethod
    def _more_evidence(conn: Connection, alert_id: str, now: float,
                       evidence: dict[str, Any]) -> bool:
        """Folds an update into the history's latest line when that is already "more
        evidence": its count goes up and it shows the latest evidence. False when the latest
        line is something else (a new stretch of updates starts)."""
        last = conn.execute(select(alert_log.c.id, alert_log.c.event, alert_log.c.detail)
                            .where(alert_log.c.alert_id == alert_id)
                            .order_by(alert_log.c.id.desc()).limit(1)).first()
        if last is None or last.event != "update":
            return False
        count = int((last.detail or {}).get("updates", 1)) + 1
        conn.execute(update(alert_log).where(alert_log.c.id == last.id).values(
            at=now, detail=evidence | {"updates": count}))
        return True
