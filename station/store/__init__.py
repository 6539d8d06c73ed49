"""The station's storage: what devices said, what the station made of it, and what people did.

One `Store` per process, on SQLAlchemy Core: an SQLite file (WAL) by default, PostgreSQL by URL
for sites with several ingest workers. `ingest()` writes a batch of messages in one
transaction and returns only after the commit, so the ingest loop acknowledges a message to the
broker only once it is on disk: a station killed at any moment loses nothing it acknowledged,
and a message the broker delivers again is recognised by its (device, epoch, kind, seq) and
stored once. Every change is appended to `changes`, which the web UI follows.

One module per job: `ingest`, `station_alarms`, `actions` (what people do), `retention`,
`views` (what the UI reads), `logins`, and `deliveries` (the router's records).
"""

from __future__ import annotations

import time

from station.store.actions import Actions
from station.store.database import connect, migrate
from station.store.deliveries import Deliveries
from station.store.ingest import Ingest, Refusal
from station.store.logins import Logins
from station.store.retention import Retention
from station.store.station_alarms import StationAlarms
from station.store.views import Views, needs_attention, rates_by_bucket

__all__ = ["Refusal", "Store", "needs_attention", "rates_by_bucket"]


class Store(Ingest, StationAlarms, Actions, Retention, Views, Logins):
    """The station's one door to its database: ingest, alarms, people's actions, the UI's
    reads and the router's deliveries go through it, so what is acknowledged to the broker is
    what is stored, and every table has one owner."""

    def __init__(self, url: str) -> None:
        self.engine = connect(url)
        self.last_foreign = 0
        migrate(self.engine)
        # messages stored before this were checked for gaps (by an earlier run, say; an hour
        # back is checked again, the table's key keeps each gap once)
        self._gaps_checked_until = time.time() - 3600
        self.deliveries = Deliveries(self.engine)
