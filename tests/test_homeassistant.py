"""Home Assistant discovery from the real daemon through a real Mosquitto.

Home Assistant itself cannot run here; what it does with a discovery config is read JSON and
render Jinja2 templates against the messages of the topics named, so the test does exactly
that with the same template engine (Jinja2) and the messages the daemon really sent.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jinja2
import paho.mqtt.client as mqtt

from edge.dev.local_broker import LocalBroker as Broker
from tests.test_daemon import ROOT, finish, start_daemon, write_config

SHIPPED = ROOT / "models" / "lungedge-cnnlstm"


class Recorder:
    """Everything on the discovery prefix and the device's topics, in arrival order."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(
            [("homeassistant/#", 1), ("lungedge/bed-7/#", 1)])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def of(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.messages if t == topic]

    def configs(self) -> dict[str, list[dict[str, Any]]]:
        with self.lock:
            out: dict[str, list[dict[str, Any]]] = {}
            for t, p in self.messages:
                if t.endswith("/config"):
                    out.setdefault(t, []).append(json.loads(p))
            return out

    def wait_for(self, predicate: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out waiting for messages"
            time.sleep(0.05)


def render(template: str, message: bytes) -> str:
    """What Home Assistant does with a value or availability template and a message."""
    env = jinja2.Environment(autoescape=False)
    env.policies["json.dumps_kwargs"] = {"sort_keys": True}
    return env.from_string(template).render(value_json=json.loads(message),
                                            value=message.decode())


def test_discovery_state_availability_and_rebirth(tmp_path: Path, broker: Broker) -> None:
    rec = Recorder(broker.port)
    proc = start_daemon(write_config(tmp_path, broker.port, model=SHIPPED, realtime=True,
                                     loop=True, extra="homeassistant:\n  enabled: true\n"))
    try:
        state_topic = "lungedge/bed-7/ha"
        # seven entities announced, and a wheeze or crackle alert shown as ON
        rec.wait_for(lambda: len(rec.configs()) == 7 and any(
            json.loads(p)["wheeze"] == "ON" or json.loads(p)["crackle"] == "ON"
            for p in rec.of(state_topic)))
        # Home Assistant restarts: its birth message makes the device announce itself again
        rec.client.publish("homeassistant/status", "online", qos=1)
        rec.wait_for(lambda: all(len(v) >= 2 for v in rec.configs().values()), timeout=10)
        proc.send_signal(signal.SIGTERM)
        out = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "homeassistant/status is online: sending discovery and state again" in out
    rec.wait_for(lambda: rec.of("lungedge/bed-7/status")
                 and json.loads(rec.of("lungedge/bed-7/status")[-1])["state"] == "offline")
    rec.client.loop_stop()

    configs = {t: v[-1] for t, v in rec.configs().items()}
    node = "lungedge_bed-7"
    assert set(configs) == {f"homeassistant/binary_sensor/{node}/{k}/config" for k in (
        "wheeze", "crackle", "no_audio", "poor_signal")} | {
        f"homeassistant/sensor/{node}/{k}/config" for k in (
            "abnormal_burden", "breathing_rate", "status")}
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    model = f"{manifest['name']} {manifest['version']}"
    assert {c["device"]["model"] for c in configs.values()} == {model}
    assert len({c["unique_id"] for c in configs.values()}) == 7

    statuses = rec.of("lungedge/bed-7/status")
    online = next(s for s in statuses if json.loads(s)["state"] != "offline")
    assert json.loads(online)["model"] == {
        "name": manifest["name"], "version": manifest["version"],
        "sha256": hashlib.sha256((SHIPPED / "manifest.json").read_bytes()).hexdigest(),
        "note": "pinned by model.path"}
    states = rec.of(state_topic)
    peak = next(s for s in states if b'"ON"' in s)
    final = states[-1]
    for cfg in configs.values():
        assert render(cfg["availability_template"], online) == "online"
        assert render(cfg["availability_template"], statuses[-1]) == "offline"
        source = online if cfg["state_topic"].endswith("/status") else final
        value = render(cfg["value_template"], source)
        if cfg["state_topic"].endswith("/status"):
            assert value == json.loads(online)["state"]
        elif cfg.get("device_class") == "problem":
            assert value == "OFF", cfg["name"]  # the stream ended: every alert closed
            assert render(cfg["value_template"], peak) in ("ON", "OFF")
        else:  # sensors: a number during the session
            assert render(cfg["value_template"], peak).isdigit(), (cfg["name"], peak)
    burden = json.loads(peak)["abnormal_burden_pct"]
    assert 0 < burden <= 100
    assert 5 <= json.loads(peak)["breathing_rate_per_min"] <= 60
    attributes = json.loads(render(configs[f"homeassistant/sensor/{node}/status/config"][
        "json_attributes_template"], online))
    assert attributes["model"]["name"] == manifest["name"]


def test_disabled_by_default_sends_nothing_to_home_assistant(tmp_path: Path,
                                                             broker: Broker) -> None:
    rec = Recorder(broker.port)
    proc = start_daemon(write_config(tmp_path, broker.port))
    out = finish(proc)
    assert proc.returncode == 0, out
    rec.wait_for(lambda: rec.of("lungedge/bed-7/summary"))
    rec.client.loop_stop()
    assert not rec.configs() and not rec.of("lungedge/bed-7/ha")
