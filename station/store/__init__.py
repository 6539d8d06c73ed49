"""The station's storage: what devices said, what the station made of it, and what people did.

One `Store` per process, on SQLAlchemy Core: an SQLite file (WAL) by default, PostgreSQL by URL
for sites with several ingest workers. `ingest()` writes a batch of messages in one
transaction and returns only after the commit, so the ingest loop acknowledges a message to the
broker only once it is on disk: a station killed at any moment loses nothing it acknowledged,
and a message the broker delivers again is recognised by its (device, epoch, kind, seq) and
stored once. Every change is appended to `changes`, which the web UI follows.

One module per role: `ingest`, `station_alarms`, `actions` (what people do), `retention`,
`views` (what the UI reads), `logins`, and `deliveries` (the router's records); a `Store`
holds one of each on one engine.
"""

from __future__ import annotations

from station.store.actions import Actions
from station.store.database import connect, migrate
from station.store.deliveries import Deliveries
from station.store.ingest import Ingest, Refusal
from station.store.logins import Logins
from station.store.retention import Retention
from station.store.station_alarms import StationAlarms
from station.store.views import Views, needs_attention, rates_by_bucket

__all__ = ["Refusal", "Store", "needs_attention", "rates_by_bucket"]


class Store:
    """The station's one door to its database, as roles: each consumer is handed the one it
    needs (the ingest worker `intake`, `alarms` and `retention`; the router `deliveries`; the
    web pages `views`, `actions` and `logins`), so what is acknowledged to the broker is what
    is stored, and every table has one owner."""

    def __init__(self, url: str) -> None:
        self.engine = connect(url)
        migrate(self.engine)
        self.intake = Ingest(self.engine)
        self.alarms = StationAlarms(self.engine)
        self.actions = Actions(self.engine)
        self.retention = Retention(self.engine)
        self.views = Views(self.engine)
        self.logins = Logins(self.engine)
        self.deliveries = Deliveries(self.engine)
