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

from station import alarms
from station.routing.page import Page, PagedAlert, PageEvent
from station.routing.rules import RoutingConfig, Rule
from station.routing.targets import DeliveryFailed, post_webhook, run_command
from station.store.deliveries import Deliveries, RoutingTurn
from station.store.read_models import Alert

log = logging.getLogger(__name__)

Send = Callable[[str, Any, dict[str, Any]], str]  # (target kind, where, message) → detail


def send(target: str, where: Any, message: dict[str, Any]) -> str:
    if target.endswith("command"):
        return run_command(where, message)
    return post_webhook(where, message)


class Router:
    """Gets each alert to the people the rules name, once, across restarts and workers, and
    escalates what nobody acknowledged: paging is a record in the database, not a side effect."""

    def __init__(self, cfg: RoutingConfig, deliveries: Deliveries, deliver: Send = send
                 ) -> None:
        self.cfg = cfg
        self.rules = {r.name: r for r in cfg.rules}
        self.deliveries = deliveries  # its one role in the store
        self.deliver = deliver
        # on a new database, what arrived before this router existed is history, not paged;
        # what arrives from now on is, even before its first pass
        self.started = time.time()

    def step(self, now: float | None = None) -> None:
        """One pass: route what happened, escalate what waited too long, deliver what is due."""
        now = time.time() if now is None else now
        if not self.rules:
            return
        with self.deliveries.routing_turn() as turn:
            if turn is None:
                return  # another worker is routing
            self._route(turn, now)
            self._escalate(turn, now)
        self._deliver_due(now)

    # -- deciding -----------------------------------------------------------------------------
    def _route(self, turn: RoutingTurn, now: float) -> None:
        routed = turn.alert_events(self.started)
        for r in routed:
            for rule in self.rules.values():
                if rule.takes(r.alert, r.event):
                    self._enqueue(turn, rule, r.alert, r.event, now,
                                  [("command", rule.command), ("webhook", rule.webhook)])
        if routed:  # in the same transaction as the deliveries they made
            turn.routed_to(routed[-1].log_id)

    def _escalate(self, turn: RoutingTurn, now: float) -> None:
        for rule in self.rules.values():
            if rule.escalate_after_min is None:
                continue
            for alert in turn.open_since(now - rule.escalate_after_min * 60):
                if not (alert.attention and rule.takes(alert, "new")):
                    continue
                if not turn.escalated(rule.name, alert.alert_id):
                    self._enqueue(turn, rule, alert, "escalation", now,
                                  [("escalate_command", rule.escalate_command),
                                   ("escalate_webhook", rule.escalate_webhook)],
                                  limited=False)

    def _enqueue(self, turn: RoutingTurn, rule: Rule, alert: Alert, event: PageEvent,
                 now: float, targets: list[tuple[str, Any]], limited: bool = True) -> None:
        why = self._held(turn, rule, alert, now) if limited else None
        message = self._message(rule, alert, event)
        for target, where in targets:
            if not where:
                continue
            turn.add(rule=rule.name, target=target, alert=alert, event=event, message=message,
                     held_back=why, now=now)
            if why:
                log.info("rule %r: %s for %r held back (%s)", rule.name, event,
                         alert.device_id, why)

    @staticmethod
    def _held(turn: RoutingTurn, rule: Rule, alert: Alert, now: float) -> str | None:
        """Why this delivery is held back, if it is: the device and kind's cooldown, or the
        rule's hourly limit."""
        recent = turn.last_paged(rule.name, alert.device_id, alert.kind)
        if recent is not None and now - recent < rule.cooldown_s:
            return f"cooldown: a delivery {now - recent:.0f} s ago"
        hour = turn.alerts_paged_since(rule.name, now - 3600)
        if hour >= rule.max_per_hour:
            return f"rate limit: {hour} in the last hour"
        return None

    def _message(self, rule: Rule, alert: Alert, event: PageEvent) -> dict[str, Any]:
        url = self.cfg.public_url
        return Page(rule=rule.name, event=event, alert=PagedAlert(
            alert_id=alert.alert_id, device_id=alert.device_id, bed=alert.label,
            kind=alert.kind, title=alarms.of(alert.kind).title, category=alert.category,
            priority=alarms.PRIORITY[alert.priority], state=alert.state,
            opened_at=alert.opened_at, evidence=alert.evidence,
            link=f"{url.rstrip('/')}/alerts/{alert.alert_id}" if url else None)).to_json()

    # -- delivering ---------------------------------------------------------------------------
    def _deliver_due(self, now: float) -> None:
        claimed = self.deliveries.claim_due(now)
        for d in claimed:  # outside any transaction: a slow webhook holds no lock
            rule = self.rules.get(d.rule)
            where = getattr(rule, d.target, None) if rule else None
            attempts = d.attempts + 1
            try:
                if not where:
                    raise DeliveryFailed(f"rule {d.rule!r} or its {d.target} is no "
                                         "longer configured")
                detail, ok = self.deliver(d.target, where, d.message), True
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
                          d.id, d.rule, d.event, d.device_id, attempts, detail)
            self.deliveries.attempted(d.id, attempts, ok, detail, time.time(),
                                            **values)

