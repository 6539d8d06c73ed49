"""Routing rules in the station config, and which alert events each one takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge.loader import Invalid, setting
from station.store.read_models import Alert

EVENTS = ("new", "update", "end")


@dataclass(kw_only=True, frozen=True)
class Rule:
    name: str = setting("", "What the rule is for, as the delivery record names it.")
    category: Literal["clinical", "technical", "any"] = setting(
        "clinical", "Clinical alarms (wheeze, crackle) and technical ones (offline, no audio, "
                    "poor signal, spool backlog, lost messages) are routed apart.")
    kinds: list[str] = setting([], "Only these kinds (e.g. [wheeze]); empty: every kind of "
                                   "the category.")
    devices: list[str] = setting([], "Only these devices; empty: all.")
    events: list[str] = setting(["new"], "Alert events to deliver: new, update (the alert "
                                         "escalated, or began to gather more evidence), end.")
    max_priority: int = setting(3, "Only alerts of this priority or higher (1 high … 3 low).",
                                ge=1, le=3)
    command: list[str] = setting([], "Run this (program and arguments, no shell) with the "
                                     "alert as JSON on standard input.")
    webhook: str | None = setting(None, "POST the alert as JSON to this URL.")
    cooldown_s: float = setting(300.0, "After a delivery for a device and kind, hold further "
                                       "ones for them this long, s.", ge=0)
    max_per_hour: int = setting(60, "At most this many deliveries of this rule in any hour.",
                                ge=1)
    retries: int = setting(3, "Failed deliveries are tried again this often, waiting "
                              "twice as long each time.", ge=0, le=20)
    retry_s: float = setting(10.0, "The first wait before trying again, s.", gt=0)
    escalate_after_min: float | None = setting(None, "An alert nobody has acknowledged "
                                                     "this long, min, goes to the escalation "
                                                     "target too.", gt=0)
    escalate_command: list[str] = setting([], "The escalation's command.")
    escalate_webhook: str | None = setting(None, "The escalation's webhook.")

    def validate(self) -> None:
        if not self.name.strip():
            raise Invalid("name", "a rule needs a name")
        if not self.command and not self.webhook:
            raise Invalid("command", "give a command or a webhook (or both)")
        unknown = sorted(set(self.events) - set(EVENTS))
        if unknown:
            raise Invalid("events", f"unknown event(s) {unknown}; one of {list(EVENTS)}")
        for key, url in (("webhook", self.webhook), ("escalate_webhook",
                                                     self.escalate_webhook)):
            if url and not url.startswith(("http://", "https://")):
                raise Invalid(key, f"{url!r} is not an http(s) URL")
        escalates = bool(self.escalate_command or self.escalate_webhook)
        if (self.escalate_after_min is not None) != escalates:
            raise Invalid("escalate_after_min", "escalation needs both a delay and a target "
                                                "(escalate_command or escalate_webhook)")

    def takes(self, alert: Alert, event: str) -> bool:
        return ((self.category == "any" or alert.category == self.category)
                and (not self.kinds or alert.kind in self.kinds)
                and (not self.devices or alert.device_id in self.devices)
                and event in self.events and alert.priority <= self.max_priority)


@dataclass(frozen=True)
class RoutingConfig:
    rules: list[Rule] = setting([], "Who hears of which alert, and how.")
    public_url: str | None = setting(None, "This station's address as people reach it "
                                           "(e.g. https://station.ward3/): links in what is "
                                           "delivered.")
