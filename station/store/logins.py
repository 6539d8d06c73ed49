"""Login sessions of the web UI: a token per login, ended by logout, idleness or age."""

from __future__ import annotations

import secrets

from sqlalchemy import insert, select, update

from station.schema import logins
from station.store.database import Tables


class Logins(Tables):
    """Who is logged in."""

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
