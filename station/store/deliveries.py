"""The router's records: where it has read the alert log to, the deliveries it decided on
(sent, pending, held back, failed) and every attempt. The router decides; this is how its
decisions and attempts reach the database, one routing worker at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, case, func, insert, select, update

from station.schema import (
    Lock,
    alert_log,
    alerts,
    deliveries,
    delivery_attempts,
    devices,
    my_turn,
    routing_state,
)
from station.store.read_models import Alert, Attempt, Delivery, RoutedEvent, of
from station.store.views import needs_attention

# a worker killed while sending: its claims are free again after this long
CLAIM_EXPIRES_S = 120


def _alert(row: Any) -> Alert:
    return of(Alert, row, attention=needs_attention(row))


class RoutingTurn:
    """One routing pass, in one transaction held by the worker whose turn it is."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def alert_events(self, started: float, limit: int = 500) -> list[RoutedEvent]:
        """Alert events not routed yet (new, update, end), oldest first, each with its alert
        and its bed's label; an escalation is an "update" (a stretch of more evidence is
        one update, its first). A new database starts after what was logged before `started`:
        old alerts are history, not paged."""
        cursor = self._cursor()
        if cursor is None:
            cursor = self.conn.execute(select(func.coalesce(func.max(alert_log.c.id), 0))
                                       .where(alert_log.c.at < started)).scalar()
            self.conn.execute(insert(routing_state).values(name="alert_log", value=cursor))
        event = case((alert_log.c.event == "escalate", "update"), else_=alert_log.c.event)
        rows = self.conn.execute(
            select(alert_log.c.id.label("log_id"), event.label("routed"), alerts,
                   devices.c.label)
            .join(alerts, alerts.c.alert_id == alert_log.c.alert_id)
            .join(devices, devices.c.device_id == alerts.c.device_id, isouter=True)
            .where(alert_log.c.id > cursor,
                   alert_log.c.event.in_(("new", "update", "escalate", "end")))
            .order_by(alert_log.c.id).limit(limit)).mappings()
        return [RoutedEvent(log_id=r["log_id"], event=r["routed"], alert=_alert(r))
                for r in rows]

    def routed_to(self, log_id: int) -> None:
        """Everything in the alert log up to `log_id` is routed."""
        self.conn.execute(update(routing_state).where(routing_state.c.name == "alert_log")
                          .values(value=log_id))

    def _cursor(self) -> int | None:
        return self.conn.execute(select(routing_state.c.value).where(
            routing_state.c.name == "alert_log")).scalar()

    def open_since(self, opened_before: float) -> list[Alert]:
        """Open alerts opened before this time, each with its bed's label."""
        return [_alert(r) for r in self.conn.execute(
            select(alerts, devices.c.label)
            .join(devices, devices.c.device_id == alerts.c.device_id, isouter=True)
            .where(alerts.c.state == "open", alerts.c.opened_at <= opened_before)).mappings()]

    def escalated(self, rule: str, alert_id: str) -> bool:
        return self.conn.execute(select(deliveries.c.id).where(
            deliveries.c.rule == rule, deliveries.c.alert_id == alert_id,
            deliveries.c.event == "escalation")).first() is not None

    def last_paged(self, rule: str, device_id: str, kind: str) -> float | None:
        """When this rule last paged (or tried to) about this device and kind, escalations
        aside."""
        return self.conn.execute(select(func.max(deliveries.c.created_at)).where(
            deliveries.c.rule == rule, deliveries.c.device_id == device_id,
            deliveries.c.kind == kind, deliveries.c.state != "suppressed",
            deliveries.c.event != "escalation")).scalar()

    def alerts_paged_since(self, rule: str, since: float) -> int:
        return self.conn.execute(select(func.count(func.distinct(deliveries.c.alert_id))).where(
            deliveries.c.rule == rule, deliveries.c.state != "suppressed",
            deliveries.c.created_at > since)).scalar() or 0

    def add(self, *, rule: str, target: str, alert: Alert, event: str,
            message: dict[str, Any], held_back: str | None, now: float) -> None:
        """A delivery decided on: pending, or held back (suppressed) for the reason given."""
        self.conn.execute(insert(deliveries).values(
            rule=rule, target=target, alert_id=alert.alert_id, device_id=alert.device_id,
            kind=alert.kind, event=event, message=message,
            state="suppressed" if held_back else "pending", why=held_back, attempts=0,
            created_at=now, next_at=None if held_back else now,
            done_at=now if held_back else None))


class Deliveries:
    """The deliveries table and its attempts: the router's one door to them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def routing_turn(self) -> Iterator[RoutingTurn | None]:
        """A routing pass's transaction, or None when another worker is routing."""
        with self.engine.begin() as conn:
            yield RoutingTurn(conn) if my_turn(conn, Lock.ROUTE) else None

    def claim_due(self, now: float, limit: int = 20) -> list[Delivery]:
        """Pending deliveries that are due, claimed (state sending) by this worker."""
        with self.engine.begin() as conn:
            conn.execute(update(deliveries).where(
                deliveries.c.state == "sending", deliveries.c.next_at < now - CLAIM_EXPIRES_S)
                .values(state="pending"))
            due = conn.execute(select(deliveries).where(deliveries.c.state == "pending",
                                                        deliveries.c.next_at <= now)
                               .order_by(deliveries.c.id).limit(limit)).mappings().all()
            return [of(Delivery, d) for d in due if conn.execute(
                update(deliveries).where(deliveries.c.id == d["id"],
                                         deliveries.c.state == "pending")
                .values(state="sending", next_at=now).returning(deliveries.c.id)).first()]

    def attempted(self, delivery_id: int, attempts: int, ok: bool, detail: str, at: float,
                  **outcome: Any) -> None:
        """An attempt and what it leaves the delivery in (sent, pending again, failed)."""
        with self.engine.begin() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id == delivery_id)
                         .values(attempts=attempts, **outcome))
            conn.execute(insert(delivery_attempts).values(
                delivery_id=delivery_id, at=at, ok=ok, detail=detail[:1000]))

    def recent(self, limit: int = 100) -> list[Delivery]:
        """The latest deliveries, each with its attempts: what the Deliveries page shows."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(deliveries).order_by(
                deliveries.c.id.desc()).limit(limit)).mappings().all()
            ids = [r["id"] for r in rows]
            attempts = [of(Attempt, a) for a in conn.execute(select(delivery_attempts).where(
                delivery_attempts.c.delivery_id.in_(ids)).order_by(delivery_attempts.c.at)
            ).mappings()] if ids else []
        return [of(Delivery, r, tries=tuple(a for a in attempts if a.delivery_id == r["id"]))
                for r in rows]

    def failures_since(self, since: float) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(deliveries).where(
                deliveries.c.state == "failed", deliveries.c.done_at >= since)).scalar_one()
