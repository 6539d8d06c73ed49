"""The station's tables (SQLAlchemy Core): the same on SQLite and PostgreSQL.

Times are UNIX seconds (double precision): what devices send as ISO-8601, parsed once. Every
message a device sends is keyed by (device, numbering epoch, topic kind, seq), so a message the
broker delivers twice (after a station restart) is stored once, and a device whose numbering
starts again (a new spool) is not taken for repeats. The migrations in `station/migrations` create
these tables; a test checks that they agree.
"""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)


class Lock(IntEnum):
    """PostgreSQL advisory locks: the jobs that station workers sharing one database take in
    turns. Named here once, so no two jobs share an id by accident."""
    MIGRATE = 7453921  # upgrading the schema at start (waited for)
    SWEEP = 7453922  # station alarms and gaps
    ROUTE = 7453923  # the router's pass


def wait_turn(conn: Connection, lock: Lock) -> None:
    """Holds `lock` until the transaction ends, waiting for another worker to finish with it
    (nothing to wait for on SQLite: one process writes)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": int(lock)})


def my_turn(conn: Connection, lock: Lock) -> bool:
    """True if this transaction now holds `lock` (until it ends); False while another worker
    does that job, which it then skips."""
    return conn.dialect.name != "postgresql" or bool(conn.execute(
        text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": int(lock)}).scalar())


metadata = MetaData()

devices = Table(
    "devices", metadata,
    Column("device_id", String(200), primary_key=True),
    Column("label", String(200)),  # the bed or place, edited in the UI
    Column("state", String(20), nullable=False, default="unknown"),  # online/degraded/offline
    Column("reasons", JSON, nullable=False, default=list),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),  # any message
    Column("status_at", Float),  # the latest status message's own time
    # …and its connection's: statuses are ordered by (connection, last will, time), so a
    # last will (written when its connection was made) still ends that connection
    Column("status_connected_at", Float),
    Column("status_will", Boolean),
    # the device's promise to send something this often: silent for a few, it is offline
    Column("heartbeat_s", Float),
    Column("breathing_pause_s", Float),  # the device's: edge.pipeline.breathing
    Column("clock_synced", Boolean),
    Column("model", String(200)),
    # which package exactly (its manifest's sha256) and how it came to run: installed, rolled
    # back and why (a device of status schema 7; null before)
    Column("model_sha256", String(64)),
    Column("model_note", String(300)),
    Column("spool_depth", Integer),
    Column("stats", JSON),  # the latest stats message
    Column("epoch", String(32)),  # the numbering epoch of its latest messages
    Column("epoch_since", Float),  # when that epoch was first heard
    # the stethoscope (and site) it records with, as people name it: clinicians' verdicts on
    # its clips are exported per stethoscope, a site's own validation data
    Column("stethoscope", String(200)),
)

# Every message stored, by its identity: deduplication and gap detection.
received = Table(
    "received", metadata,
    Column("device_id", String(200), primary_key=True),
    Column("epoch", String(32), primary_key=True),
    Column("kind", String(20), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("sent", Float, nullable=False),  # the message's own time (`ts`): ingest lag
    Column("at", Float, nullable=False),  # stored
    Index("received_at", "at"),
)

cycles = Table(
    "cycles", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(200), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("session_id", String(64)),
    Column("start", Float, nullable=False),
    Column("end", Float, nullable=False),
    Column("label", String(64), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("quality", Float, nullable=False),
    Column("probs", JSON, nullable=False),
    Column("forced_cut", Boolean, nullable=False),
    Column("model", String(200), nullable=False),
    Column("latency_ms", Float, nullable=False),
    Index("cycles_device_start", "device_id", "start"),
)

# Per device and minute: what the overview's burden and rate, and the trends, are made of.
minutes = Table(
    "minutes", metadata,
    Column("device_id", String(200), primary_key=True),
    Column("minute", Integer, primary_key=True),  # UNIX time // 60
    Column("cycles", Integer, nullable=False),
    Column("good", Integer, nullable=False),  # quality at or above the device's poor bound
    Column("abnormal", Integer, nullable=False),  # good and not normal
    Column("quality_sum", Float, nullable=False),
)

alerts = Table(
    "alerts", metadata,
    Column("alert_id", String(100), primary_key=True),
    Column("device_id", String(200), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("category", String(20), nullable=False),  # clinical or technical
    Column("priority", Integer, nullable=False),  # 1 high … 3 low
    Column("source", String(20), nullable=False),  # device, or station (offline, gaps …)
    Column("state", String(20), nullable=False),  # open, ended, resolved
    Column("opened_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("ended_at", Float),
    # +1 each time it escalates (station.alarms.escalates): someone must look again
    Column("version", Integer, nullable=False, default=1),
    Column("escalated_fraction", Float),  # its evidence's share of cycles when it last did
    Column("evidence", JSON, nullable=False),
    Column("session_id", String(64)),
    Column("detail", Text),
    Column("acked_by", String(200)),
    Column("acked_at", Float),
    Column("ack_note", Text),
    Column("acked_version", Integer),  # attention again once version > acked_version
    Column("resolved_by", String(200)),
    Column("resolved_at", Float),
    Index("alerts_state", "state", "priority"),
    Index("alerts_device", "device_id", "opened_at"),
)

# What happened to each alert, and who did what: the alert history.
alert_log = Table(
    "alert_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(100), nullable=False),
    Column("device_id", String(200), nullable=False),
    Column("at", Float, nullable=False),
    Column("event", String(20), nullable=False),  # new update end ack resolve reopen
    Column("actor", String(200)),  # the device, the station, or the user
    Column("detail", JSON),
    Index("alert_log_alert", "alert_id", "at"),
)

summaries = Table(
    "summaries", metadata,
    Column("device_id", String(200), primary_key=True),
    Column("epoch", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("session_id", String(64), nullable=False),
    Column("start", Float, nullable=False),
    Column("end", Float, nullable=False),
    Column("cycles", Integer, nullable=False),
    Column("cycles_by_label", JSON, nullable=False),
    Column("abnormal_burden", Float, nullable=False),
    Column("poor_quality_fraction", Float, nullable=False),
    Column("cycles_unjudged", JSON),  # by why; null: a device before schema 6 did not say
    Column("record_label", String(40), nullable=False),
    Column("breathing_rate_per_min", Float),
    Column("ended_by", String(20), nullable=False),
    Index("summaries_device_end", "device_id", "end"),
)

# Evidence: the audio of cycles behind alerts, kept for their own (shorter) time.
clips = Table(
    "clips", metadata,
    Column("clip_id", String(64), primary_key=True),
    Column("device_id", String(200), nullable=False),
    Column("alert_id", String(100)),
    Column("session_id", String(64)),  # the auscultation (a patient): what exports group by
    Column("start", Float, nullable=False),
    Column("end", Float, nullable=False),
    Column("label", String(64), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("encoding", String(8), nullable=False),
    Column("sample_rate", Integer, nullable=False),
    Column("audio", LargeBinary, nullable=False),
    # the stethoscope its device recorded with when it arrived (a later change of stethoscope
    # does not move it: exports group by what recorded it); null: stored before schema 0005
    Column("stethoscope", String(200)),
    Index("clips_alert", "alert_id"),
    Index("clips_device_start", "device_id", "start"),
)

# Seqs that never arrived (once the rest had settled: messages may arrive out of order, e.g.
# split over several ingest workers).
gaps = Table(
    "gaps", metadata,
    Column("device_id", String(200), primary_key=True),
    Column("epoch", String(32), primary_key=True),
    Column("kind", String(20), primary_key=True),
    Column("first_missing", Integer, primary_key=True),
    Column("last_missing", Integer, nullable=False),
    Column("at", Float, nullable=False),
)

# Messages that were refused: counted, kept short, never trusted.
invalid = Table(
    "invalid", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("topic", String(300), nullable=False),
    Column("reason", Text, nullable=False),
    Column("excerpt", Text, nullable=False),
)

# Routing: what was to be delivered to whom, and every attempt at it.
deliveries = Table(
    "deliveries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(200), nullable=False),
    Column("target", String(20), nullable=False),  # command, webhook, escalate_command, …
    Column("alert_id", String(100), nullable=False),
    Column("device_id", String(200), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("event", String(20), nullable=False),  # new, update, end, escalation
    Column("message", JSON, nullable=False),
    Column("state", String(20), nullable=False),  # pending sending sent failed suppressed
    Column("why", Text),  # suppressed: cooldown or rate limit; failed: the last error
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("next_at", Float),
    Column("done_at", Float),
    Index("deliveries_state_next", "state", "next_at"),
    Index("deliveries_rule_device", "rule", "device_id", "kind", "created_at"),
    Index("deliveries_alert", "alert_id"),
)

delivery_attempts = Table(
    "delivery_attempts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
    Index("delivery_attempts_delivery", "delivery_id"),
)

# Where the router is in the alert log (it survives restarts: nothing is routed twice).
routing_state = Table(
    "routing_state", metadata,
    Column("name", String(40), primary_key=True),
    Column("value", Integer, nullable=False),
)

# Every stored change, in order: the web UI (any worker) follows this to update live.
changes = Table(
    "changes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("device_id", String(200)),
    Column("what", String(20), nullable=False),
)

# Logins, kept here rather than in the cookie alone, so that logging out (or a technician)
# ends one for good and an idle one expires: a cookie copied before logout is worth nothing.
logins = Table(
    "logins", metadata,
    Column("token", String(64), primary_key=True),
    Column("user", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
    Column("ended_at", Float),
    Index("logins_user", "user"),
)

# What clinicians say of the audio behind alerts: confirmed or corrected, by whom and when (the
# latest per clip counts; every verdict is kept). Exported, they are a site's own labelled
# recordings (`lungedge station export-labels`).
verdicts = Table(
    "verdicts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("clip_id", String(64), nullable=False),
    Column("device_id", String(200), nullable=False),
    Column("model_label", String(64), nullable=False),  # what the device called it
    Column("verdict", String(20), nullable=False),  # a label, or not_a_breath
    Column("by", String(200), nullable=False),
    Column("at", Float, nullable=False),
    Index("verdicts_clip", "clip_id", "at"),
    Index("verdicts_device", "device_id", "at"),
)
