"""The production Mosquitto configuration shipped in systemd/mosquitto/, run for real: what
the broker acknowledged survives its SIGKILL, a device cannot write under another device's
topics nor take the station's place, a packet larger than any device sends is refused, and
nobody connects without a password."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.dev.local_broker import find_mosquitto
from tests.conftest import TEST_EPOCH
from tests.test_daemon import ROOT, finish, write_config

CONF = ROOT / "systemd" / "mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProductionBroker:
    """lungedge.conf and lungedge.acl as shipped, with the paths moved into `tmp`, the local
    listener on a free port and the TLS listener left out (test_daemon covers TLS)."""

    def __init__(self, tmp: Path, users: dict[str, str]) -> None:
        exe = find_mosquitto()
        if exe is None or shutil.which("mosquitto_passwd") is None:
            pytest.skip("mosquitto and mosquitto_passwd not installed (`make test` installs "
                        "them)")
        self.exe, self.port = exe, free_port()
        (tmp / "db").mkdir()
        passwd = tmp / "lungedge.passwd"
        for user, password in users.items():
            subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if not passwd.exists() else []),
                            str(passwd), user, password], check=True, capture_output=True)
        shutil.copy(CONF / "lungedge.acl", tmp / "lungedge.acl")
        lines = []
        tls = False  # the TLS listener's lines, left out
        for line in (CONF / "lungedge.conf").read_text().splitlines():
            tls = line.startswith("listener 8883") or (tls and not line.startswith("listener"))
            if tls:
                continue
            line = line.replace("listener 1883 127.0.0.1", f"listener {self.port} 127.0.0.1")
            line = line.replace("/var/lib/mosquitto/", f"{tmp / 'db'}/")
            line = line.replace("/etc/mosquitto/lungedge.passwd", str(passwd))
            line = line.replace("/etc/mosquitto/conf.d/lungedge.acl", str(tmp / "lungedge.acl"))
            lines.append(line)
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto switches to a user who cannot write
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        assert not [line for line in lines if "/etc/" in line and not line.startswith("#")]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


USERS = {"station": "station-pw", "bed-7": "bed-7-pw", "bed-8": "bed-8-pw"}


@pytest.fixture
def production(tmp_path: Path) -> Iterator[ProductionBroker]:
    broker = ProductionBroker(tmp_path, USERS)
    yield broker
    broker.stop()


class Station:
    """A persistent session, QoS 1, as the station's ingest keeps one."""

    def __init__(self, port: int) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="station-1",
                                  clean_session=False)
        self.client.username_pw_set("station", USERS["station"])
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe("lungedge/#", qos=1)
        self.client.on_message = self._on
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait(self.client.is_connected, "the station connects")
        time.sleep(0.3)

    def _on(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:  # a message too big or not JSON: counted by topic all the same
            payload = {}
        with self.lock:
            self.got.append((msg.topic, payload))

    def of_raw(self, topic_end: str) -> int:
        with self.lock:
            return sum(t.endswith(topic_end) for t, _ in self.got)

    def of(self, topic_end: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for t, p in self.got if t.endswith(topic_end)]

    def away(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait(predicate: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.05)


def test_what_the_broker_acknowledged_survives_its_sigkill(tmp_path: Path,
                                                           production: ProductionBroker) -> None:
    """The station is away; a device sends a session (every message acknowledged by the broker
    and gone from its spool); the broker is killed. With the shipped autosave (1 s) the
    station, back, gets every message; with Debian's default (1800 s) they were lost."""
    station = Station(production.port)
    station.away()
    cfg = write_config(tmp_path, production.port, mqtt_extra="""\
  username: bed-7
  password_env: LUNGEDGE_BROKER_PASSWORD
""")
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                            cwd=ROOT, env={**os.environ, "LUNGEDGE_BROKER_PASSWORD": "bed-7-pw"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = finish(proc)
    assert proc.returncode == 0, out
    time.sleep(1.5)  # longer than the autosave interval
    production.kill()
    production.start()
    station = Station(production.port)
    wait(lambda: station.of("/summary"), "the session's summary")
    wait(lambda: station.of("/status") and station.of("/status")[-1]["state"] == "offline",
         "the daemon's last status")
    seqs = sorted(c["seq"] for c in station.of("bed-7/cycle"))
    assert len(seqs) >= 8 and seqs == list(range(len(seqs)))
    station.away()


def test_a_device_writes_only_under_its_own_topics(production: ProductionBroker) -> None:
    station = Station(production.port)
    forger = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bed-8")
    forger.username_pw_set("bed-8", USERS["bed-8"])
    forger.connect("127.0.0.1", production.port)
    forger.loop_start()
    wait(forger.is_connected, "bed-8 connects")
    body = {"schema_version": 4, "device_id": "bed-7", "epoch": TEST_EPOCH, "seq": 0}
    forger.publish("lungedge/bed-8/cycle", json.dumps(body | {"device_id": "bed-8"}),
                   qos=1).wait_for_publish(5)
    wait(lambda: station.of("bed-8/cycle"), "bed-8's own message")
    forger.publish("lungedge/bed-7/alert", json.dumps(body), qos=1)  # (the broker may drop
    time.sleep(1.0)                                                   # bed-8 for it)
    assert not station.of("bed-7/alert")  # the forged one never reached the station
    forger.loop_stop()
    forger.disconnect()
    anonymous = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    refused: list[Any] = []
    anonymous.on_connect = lambda c, u, f, r, p: refused.append(r)
    anonymous.connect("127.0.0.1", production.port)
    anonymous.loop_start()
    wait(lambda: refused, "the broker answers an anonymous client")
    anonymous.loop_stop()
    assert refused[0].is_failure
    station.away()


def publish_as(user: str, port: int, client_id: str, n: int, clean: bool = True) -> None:
    """`n` QoS 1 messages from `user`, under its own prefix, each acknowledged."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean)
    client.username_pw_set(user, USERS[user])
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait(client.is_connected, f"{user} connects")
    for i in range(n):
        client.publish(f"lungedge/{user}/cycle", json.dumps({"seq": i}),
                       qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def test_a_device_cannot_take_the_stations_place(production: ProductionBroker) -> None:
    """A device with valid credentials connects with the station's client id, with a clean
    session, while the station is away with 100 messages queued for it, and again while it is
    connected: the broker makes the device's id its user name, so the station's queue and
    connection are untouched (before: 100 of 100 lost, and 60 of 140 while they fought)."""
    station = Station(production.port)
    station.away()
    publish_as("bed-7", production.port, "lungedge-bed-7", 100)
    publish_as("bed-8", production.port, "station-1", 0)  # the station's id, clean start
    publish_as("bed-8", production.port, "station", 0)  # its user name too
    station = Station(production.port)
    wait(lambda: len(station.of("bed-7/cycle")) == 100, "all 100 queued messages")
    drops: list[Any] = []
    station.client.on_disconnect = lambda c, u, f, r, p: drops.append(r)
    fighter = threading.Thread(target=lambda: [publish_as("bed-8", production.port,
                                                          "station-1", 1) for _ in range(10)])
    fighter.start()
    publish_as("bed-7", production.port, "lungedge-bed-7", 140)
    fighter.join(30)
    wait(lambda: len(station.of("bed-7/cycle")) == 240, "140 more while the fight went on")
    assert not drops  # never thrown off by a device using its id
    station.away()


def test_a_packet_larger_than_any_device_sends_is_refused(production: ProductionBroker) -> None:
    """A 2 MB message on a device's own topic: the device is disconnected and nothing reaches
    the station; a clip of the largest size the wire schema allows still goes through."""
    station = Station(production.port)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bed-7")
    client.username_pw_set("bed-7", USERS["bed-7"])
    gone: list[Any] = []
    client.on_disconnect = lambda c, u, f, r, p: gone.append(r)
    client.connect("127.0.0.1", production.port)
    client.loop_start()
    wait(client.is_connected, "bed-7 connects")
    client.publish("lungedge/bed-7/clip", b"{" + b"x" * 610_000 + b"}", qos=1)
    wait(lambda: station.of_raw("bed-7/clip") == 1, "the largest legitimate message")
    client.publish("lungedge/bed-7/cycle", b"x" * 2_000_000, qos=1)
    wait(lambda: gone, "the broker disconnects the sender of 2 MB")
    time.sleep(0.5)
    assert station.of_raw("bed-7/cycle") == 0
    client.loop_stop()
    station.away()


def test_a_broker_that_refuses_is_heard(tmp_path: Path, production: ProductionBroker) -> None:
    """mqtt.username bed-7 with device_id bed-8 under the shipped ACL: the broker acknowledged
    and dropped every message, the device deleted them from its spool and said "online".
    Speaking MQTT 5, the device hears "Not authorized": the messages stay in its spool, its
    status says why, and check-config says the ACL will not let that user publish there."""
    station = Station(production.port)
    cfg = write_config(tmp_path, production.port, realtime=True, mqtt_extra="""\
  username: bed-7
  password_env: LUNGEDGE_BROKER_PASSWORD
""")
    cfg.write_text(cfg.read_text().replace("device_id: bed-7", "device_id: bed-8"))
    check = subprocess.run([sys.executable, "-m", "edge", "check-config", str(cfg)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert "device_id: the broker's shipped ACL lets user 'bed-7' publish under " \
        "lungedge/bed-7/ only" in check.stdout + check.stderr, check.stdout + check.stderr
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                            cwd=ROOT, env={**os.environ, "LUNGEDGE_BROKER_PASSWORD": "bed-7-pw",
                                           "NOTIFY_SOCKET": ""},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = finish(proc)
    assert "the broker refuses the messages: Not authorized" in out, out[-3000:]
    assert "status degraded: the broker refuses the messages" in out
    import sqlite3

    with sqlite3.connect(tmp_path / "spool.db") as db:
        (kept,) = db.execute("SELECT COUNT(*) FROM messages").fetchone()
    assert kept >= 8  # nothing deleted that the broker did not take
    assert not station.of("bed-8/cycle") and not station.of("bed-7/cycle")
    station.away()
