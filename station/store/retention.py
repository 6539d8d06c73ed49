"""How long the station keeps what: data, alerts and clips each for their own time; a clip a
clinician judged is labelled data and kept as long as alerts."""

from __future__ import annotations

from sqlalchemy import delete, select

from station.schema import (
    alert_log,
    alerts,
    changes,
    clips,
    cycles,
    gaps,
    invalid,
    logins,
    minutes,
    received,
    summaries,
    verdicts,
)
from station.store.database import Tables


class Retention(Tables):
    """The purge, run by the station's housekeeping."""

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
