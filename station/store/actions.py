"""What people do: acknowledge and resolve alerts, name a bed and its stethoscope, give a
verdict on a clip. Each is logged with who and when, and announced to the live pages."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from sqlalchemy import insert, select, update

from station.schema import alert_log, alerts, changes, clips, devices, verdicts
from station.store.database import Tables

log = logging.getLogger(__name__)


class Actions(Tables):
    """People's changes to alerts, devices and clips."""

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
        """The bed or place a device is at; False if no such device."""
        return self._name_device(device_id, "label", label, user)

    def set_stethoscope(self, device_id: str, stethoscope: str, user: str) -> bool:
        """The stethoscope a device records with (what exports group by)."""
        return self._name_device(device_id, "stethoscope", stethoscope, user)

    def _name_device(self, device_id: str, column: str, text: str, user: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(update(devices).where(devices.c.device_id == device_id)
                                  .values({column: text.strip()[:200] or None}))
            if result.rowcount:
                conn.execute(insert(changes).values(at=time.time(), device_id=device_id,
                                                    what=column))
                log.info("%s set the %s of device %r to %r", user, column, device_id, text)
        return bool(result.rowcount)

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
