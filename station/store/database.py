"""The station's database connection: SQLite (WAL, one writer, many readers) by default,
PostgreSQL by URL; its schema brought up to date by Alembic; the base every part of the store
shares."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite

from station.schema import Lock, wait_turn


class Tables:
    """What every role of the `Store` works on: one engine, one set of tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine


def connect(url: str) -> Engine:
    """An engine, with SQLite set up for one writer and many readers."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # a writer waits this long for another's lock, then the caller's retry takes over (and
        # says so: with 30 s here, a lock held by another program stopped ingest unseen)
        engine = create_engine(url, connect_args={"timeout": 5})

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
    cfg.set_main_option("script_location", str(Path(__file__).parents[1] / "migrations"))
    with engine.begin() as conn:
        wait_turn(conn, Lock.MIGRATE)  # several workers may start together
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def upsert(conn: Connection, table: Any) -> Any:
    """An INSERT that can say ON CONFLICT, in the dialect of this connection."""
    return (postgresql.insert(table) if conn.dialect.name == "postgresql"
            else sqlite.insert(table))
