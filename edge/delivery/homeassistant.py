"""Home Assistant MQTT discovery: the device shows up in a ward's Home Assistant by itself.

Why on the device: a small site may have Home Assistant (or any MQTT dashboard) and no station.
The entities read one retained state message (PREFIX/DEVICE/ha) that the daemon keeps current,
and their availability follows the device's own retained status (the broker's will turns it
offline when the device vanishes), so Home Assistant never shows a stale "no wheeze" from a
device that is gone. Discovery messages are retained and sent again whenever Home Assistant
announces that it (re)started on DISCOVERY_PREFIX/status, as its MQTT integration asks.

The state is a latest value, not an event: it is not spooled. After a broker outage the
current state is sent again; alerts and cycles themselves travel through the spool as always.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge import __version__
from edge.delivery.settings import HomeAssistantConfig
from edge.delivery.wire import ModelRef, topic

ALERT_KINDS = ("wheeze", "crackle", "no_audio", "poor_signal")
_NAMES = {"wheeze": "Wheeze alert", "crackle": "Crackle alert", "no_audio": "No audio",
          "poor_signal": "Poor signal"}


@dataclass(frozen=True)
class HaState:
    """What the entities show: open alerts, and the open session's figures so far."""

    open_alerts: frozenset[str]
    abnormal_burden: float | None  # fraction of good-quality cycles that are abnormal
    breathing_rate_per_min: float | None

    def payload(self) -> bytes:
        body: dict[str, Any] = {k: "ON" if k in self.open_alerts else "OFF"
                                for k in ALERT_KINDS}
        body["abnormal_burden_pct"] = (None if self.abnormal_burden is None
                                       else round(100 * self.abnormal_burden))
        body["breathing_rate_per_min"] = (None if self.breathing_rate_per_min is None
                                          else round(self.breathing_rate_per_min))
        return json.dumps(body, separators=(",", ":")).encode()


def state_topic(prefix: str, device_id: str) -> str:
    return topic(prefix, device_id, "ha")


def birth_topic(cfg: HomeAssistantConfig) -> str:
    return f"{cfg.discovery_prefix}/status"


def discovery(cfg: HomeAssistantConfig, prefix: str, device_id: str,
              model: ModelRef) -> dict[str, bytes]:
    """Topic → retained discovery config of each entity of this device."""
    node = f"lungedge_{device_id.replace('.', '_')}"
    state, status = state_topic(prefix, device_id), topic(prefix, device_id, "status")
    common: dict[str, Any] = {
        "state_topic": state,
        # the status is JSON: online and degraded both mean the device is there
        "availability_topic": status,
        "availability_template": "{{ 'offline' if value_json.state == 'offline' "
                                 "else 'online' }}",
        "device": {"identifiers": [node], "name": cfg.name or f"lungedge {device_id}",
                   "manufacturer": "lungedge", "model": f"{model.name} {model.version}",
                   "sw_version": __version__},
        "origin": {"name": "lungedge", "sw_version": __version__},
    }
    entities: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in ALERT_KINDS:
        entities["binary_sensor", kind] = {
            "name": _NAMES[kind], "device_class": "problem",
            "value_template": f"{{{{ value_json.{kind} }}}}",
            **({"entity_category": "diagnostic"} if kind in ("no_audio", "poor_signal")
               else {})}
    entities["sensor", "abnormal_burden"] = {
        "name": "Abnormal burden", "unit_of_measurement": "%", "state_class": "measurement",
        "icon": "mdi:lungs", "value_template": "{{ value_json.abnormal_burden_pct }}"}
    entities["sensor", "breathing_rate"] = {
        "name": "Breathing rate", "unit_of_measurement": "breaths/min",
        "state_class": "measurement", "icon": "mdi:pulse",
        "value_template": "{{ value_json.breathing_rate_per_min }}"}
    entities["sensor", "status"] = {  # why a device is degraded, for the technician
        "name": "Device status", "entity_category": "diagnostic", "state_topic": status,
        "value_template": "{{ value_json.state }}", "json_attributes_topic": status,
        "json_attributes_template": "{{ {'reasons': value_json.reasons, "
                                    "'model': value_json.model} | tojson }}"}
    # default_entity_id (the entity id it gets) replaced object_id in Home Assistant 2025.10
    return {f"{cfg.discovery_prefix}/{component}/{node}/{obj}/config": json.dumps(
        {**common, "unique_id": f"{node}_{obj}", "default_entity_id": f"{component}.{node}_{obj}",
         **config}, separators=(",", ":")).encode()
        for (component, obj), config in entities.items()}
