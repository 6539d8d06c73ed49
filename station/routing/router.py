"""The router: follows the alert log, turns what the rules take into deliveries, and delivers
them, with a cooldown per device and kind, a rate limit per rule, retries with backoff, and
escalation of what nobody acknowledged in time. Every decision and attempt is in the database
(`deliveries`, `delivery_attempts`), so a failure is visible in the UI and nothing is routed
twice across restarts. With several station workers on one PostgreSQL, one routes at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from station.routing.page import Page, PagedAlert, PageEvent
from station.routing.rules import RoutingConfig, Rule
from station.routing.targets import DeliveryFailed, post_webhook, run_command
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
from station.store import Store, needs_attention

log = logging.getLogger(__name__)

Send = Callable[[str, Any, dict[str, Any]], str]  # (target kind, where, message) → detail


def send(target: str, where: Any, message: dict[str, Any]) -> str:
    if target.endswith("command"):
        return run_command(where, message)
    return post_webhook(where, message)


class Router:
    """Gets each alert to the people the rules name, once, across restarts and workers, and
    escalates what nobody acknowledged: paging is a record in the database, not a side effect."""

    def __init__(self, cfg: RoutingConfig, store: Store, deliver: Send = send) -> None:
        self.cfg = cfg
        self.rules = {r.name: r for r in cfg.rules}
        self.store = store
        self.deliver = deliver
        # on a new database, what arrived before this router existed is history, not paged;
        # what arrives from now on is, even before its first pass
        self.started = time.time()

    def step(self, now: float | None = None) -> None:
        """One pass: route what happened, escalate what waited too long, deliver what is due."""
        now = time.time() if now is None else now
        if not self.rules:
            return
        with self.store.engine.begin() as conn:
            if not my_turn(conn, Lock.ROUTE):
                return  # another worker is routing
            self._route(conn, now)
            self._escalate(conn, now)
        self._deliver_due(now)

    # -- deciding -----------------------------------------------------------------------------
    def _route(self, conn: Connection, now: float) -> None:
        cursor = conn.execute(select(routing_state.c.value).where(
            routing_state.c.name == "alert_log")).scalar()
        if cursor is None:  # a new router starts from its start: old alerts are not paged
            cursor = conn.execute(select(func.coalesce(func.max(alert_log.c.id), 0)).where(
                alert_log.c.at < self.started)).scalar()
            conn.execute(insert(routing_state).values(name="alert_log", value=cursor))
        rows = conn.execute(select(alert_log.c.id, alert_log.c.event, alerts, devices.c.label)
                            .join(alerts, alerts.c.alert_id == alert_log.c.alert_id)
                            .join(devices, devices.c.device_id == alerts.c.device_id,
                                  isouter=True)
                            .where(alert_log.c.id > cursor,
                                   alert_log.c.event.in_(("new", "update", "end")))
                            .order_by(alert_log.c.id).limit(500)).mappings().all()
        for row in rows:
            for rule in self.rules.values():
                if rule.takes(dict(row), row["event"]):
                    self._enqueue(conn, rule, row, row["event"], now,
                                  [("command", rule.command), ("webhook", rule.webhook)])
            cursor = row["id"]
        conn.execute(update(routing_state).where(routing_state.c.name == "alert_log")
                     .values(value=cursor))

    def _escalate(self, conn: Connection, now: float) -> None:
        for rule in self.rules.values():
            if rule.escalate_after_min is None:
                continue
            waited = now - rule.escalate_after_min * 60
            rows = conn.execute(select(alerts, devices.c.label)
                                .join(devices, devices.c.device_id == alerts.c.device_id,
                                      isouter=True)
                                .where(alerts.c.state == "open",
                                       alerts.c.opened_at <= waited)).mappings().all()
            for row in rows:
                if not (needs_attention(row) and rule.takes(dict(row), "new")):
                    continue
                done = conn.execute(select(deliveries.c.id).where(
                    deliveries.c.rule == rule.name, deliveries.c.alert_id == row["alert_id"],
                    deliveries.c.event == "escalation")).first()
                if done is None:
                    self._enqueue(conn, rule, row, "escalation", now,
                                  [("escalate_command", rule.escalate_command),
                                   ("escalate_webhook", rule.escalate_webhook)],
                                  limited=False)

    def _enqueue(self, conn: Connection, rule: Rule, alert: Any, event: PageEvent, now: float,
                 targets: list[tuple[str, Any]], limited: bool = True) -> None:
        why = self._held(conn, rule, alert, now) if limited else None
        message = self._message(rule, alert, event)
        for target, where in targets:
            if not where:
                continue
            conn.execute(insert(deliveries).values(
                rule=rule.name, target=target, alert_id=alert["alert_id"],
                device_id=alert["device_id"], kind=alert["kind"], event=event,
                message=message, state="suppressed" if why else "pending", why=why,
                attempts=0, created_at=now, next_at=None if why else now,
                done_at=now if why else None))
            if why:
                log.info("rule %r: %s for %r held back (%s)", rule.name, event,
                         alert["device_id"], why)

    @staticmethod
    def _held(conn: Connection, rule: Rule, alert: Any, now: float) -> str | None:
        """Why this delivery is held back, if it is: the device and kind's cooldown, or the
        rule's hourly limit."""
        recent = conn.execute(select(func.max(deliveries.c.created_at)).where(
            deliveries.c.rule == rule.name, deliveries.c.device_id == alert["device_id"],
            deliveries.c.kind == alert["kind"], deliveries.c.state != "suppressed",
            deliveries.c.event != "escalation")).scalar()
        if recent is not None and now - recent < rule.cooldown_s:
            return f"cooldown: a delivery {now - recent:.0f} s ago"
        hour = conn.execute(select(func.count(func.distinct(deliveries.c.alert_id))).where(
            deliveries.c.rule == rule.name, deliveries.c.state != "suppressed",
            deliveries.c.created_at > now - 3600)).scalar() or 0
        if hour >= rule.max_per_hour:
            return f"rate limit: {hour} in the last hour"
        return None

    def _message(self, rule: Rule, alert: Any, event: PageEvent) -> dict[str, Any]:
        from station import alarms

        url = self.cfg.public_url
        return Page(rule=rule.name, event=event, alert=PagedAlert(
            alert_id=alert["alert_id"], device_id=alert["device_id"], bed=alert.get("label"),
            kind=alert["kind"], title=alarms.of(alert["kind"]).title,
            category=alert["category"], priority=alarms.PRIORITY[alert["priority"]],
            state=alert["state"], opened_at=alert["opened_at"], evidence=alert["evidence"],
            link=f"{url.rstrip('/')}/alerts/{alert['alert_id']}" if url else None)).to_json()

    # -- delivering ---------------------------------------------------------------------------
    def _deliver_due(self, now: float) -> None:
        with self.store.engine.begin() as conn:
            # a worker killed while sending: its claims are free again after two minutes
            conn.execute(update(deliveries).where(deliveries.c.state == "sending",
                                                  deliveries.c.next_at < now - 120)
                         .values(state="pending"))
            due = conn.execute(select(deliveries).where(deliveries.c.state == "pending",
                                                        deliveries.c.next_at <= now)
                               .order_by(deliveries.c.id).limit(20)).mappings().all()
            claimed = [d for d in due if conn.execute(
                update(deliveries).where(deliveries.c.id == d["id"],
                                         deliveries.c.state == "pending")
                .values(state="sending", next_at=now).returning(deliveries.c.id)).first()]
        for d in claimed:  # outside any transaction: a slow webhook holds no lock
            rule = self.rules.get(d["rule"])
            where = getattr(rule, d["target"], None) if rule else None
            attempts = d["attempts"] + 1
            try:
                if not where:
                    raise DeliveryFailed(f"rule {d['rule']!r} or its {d['target']} is no "
                                         "longer configured")
                detail, ok = self.deliver(d["target"], where, d["message"]), True
            except DeliveryFailed as exc:
                detail, ok = str(exc), False
            retries = rule.retries if rule else 0
            if ok:
                values = {"state": "sent", "why": None, "done_at": time.time()}
            elif attempts <= retries:
                assert rule is not None
                values = {"state": "pending", "why": detail,
                          "next_at": time.time() + rule.retry_s * 2 ** (attempts - 1)}
            else:
                values = {"state": "failed", "why": detail, "done_at": time.time()}
                log.error("delivery %d (rule %r, %s of %r) failed after %d attempt(s): %s",
                          d["id"], d["rule"], d["event"], d["device_id"], attempts, detail)
            with self.store.engine.begin() as conn:
                conn.execute(update(deliveries).where(deliveries.c.id == d["id"])
                             .values(attempts=attempts, **values))
                conn.execute(insert(delivery_attempts).values(
                    delivery_id=d["id"], at=time.time(), ok=ok, detail=detail[:1000]))


def recent(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """The latest deliveries, each with its attempts: what the Deliveries page shows."""
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(deliveries).order_by(
            deliveries.c.id.desc()).limit(limit)).mappings()]
        ids = [r["id"] for r in rows]
        attempts = conn.execute(select(delivery_attempts).where(
            delivery_attempts.c.delivery_id.in_(ids)).order_by(delivery_attempts.c.at)
        ).mappings().all() if ids else []
    for r in rows:
        r["tries"] = [dict(a) for a in attempts if a["delivery_id"] == r["id"]]
    return rows


def failures_since(store: Store, since: float) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(deliveries).where(
            deliveries.c.state == "failed", deliveries.c.done_at >= since)).scalar_one()
