"""Ingest against a real Mosquitto, into SQLite and PostgreSQL: a real daemon's stream, hostile
publishers, and a station killed mid-stream."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy", reason="the station extra: pip install 'lungedge[station]'")

import paho.mqtt.client as mqtt
from sqlalchemy import func, select

from edge.delivery.publisher import envelope
from station.config import StationConfig
from station.ingest import Ingest
from station.schema import cycles
from station.store import Store
from tests.conftest import TEST_EPOCH, status_fields
from tests.messages import cycle_message
from tests.test_daemon import finish, start_daemon, write_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "lungedge-cnnlstm"


def station_yaml(tmp: Path, port: int, url: str) -> Path:
    path = tmp / "station.yaml"
    path.write_text(f"""mqtt: {{port: {port}, client_id: station-test, reconnect_min_s: 0.5,
       reconnect_max_s: 1}}
database: {{url: "{url}"}}
web: {{secret_file: {tmp / 'secret'}}}
""")
    return path


def config(tmp: Path, port: int, url: str) -> StationConfig:
    from station.config import load

    return load(station_yaml(tmp, port, url))


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


def stored_cycles(store: Store, device: str | None = None) -> list[int]:
    with store.engine.connect() as conn:
        q = select(cycles.c.seq)
        if device:
            q = q.where(cycles.c.device_id == device)
        return sorted(conn.execute(q).scalars())


def publisher(port: int) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{random.random()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_a_real_daemon_and_hostile_publishers(tmp_path: Path, broker: Any,
                                              database_url: str) -> None:
    store = Store(database_url)
    ingest = Ingest(config(tmp_path, broker.port, database_url), store)
    stop = threading.Event()
    worker = threading.Thread(target=ingest.run, args=(stop,), daemon=True)
    worker.start()
    try:
        wait(ingest.connected.is_set, 10, "the station connects")
        hostile = publisher(broker.port)
        script = "<script>window.pwned=1</script>"
        bad = [("lungedge/bed-x/cycle", b"\x00" + os.urandom(200)),  # NUL: unstorable as is
               ("lungedge/bed-x/cycle", b'{"schema_version": 2, "seq": "one"}'),
               ("lungedge/bed-x/stats", json.dumps({"cpu_percent": "lots"}).encode()),
               ("lungedge/bed-x/telemetry", b"{}"),
               ("lungedge/bed-x/status", b"x" * 200_000),
               ("elsewhere/bed-x/cycle", b"{}")]  # not under the prefix: never subscribed
        for topic, payload in bad:
            hostile.publish(topic, payload, qos=1).wait_for_publish(5)
        status = envelope("bed-x", 0, TEST_EPOCH) | {"state": "degraded", "reason": script,
                                         "reasons": [script], "model": None} | status_fields()
        hostile.publish("lungedge/bed-x/status", json.dumps(status), qos=1, retain=True)
        proc = start_daemon(write_config(tmp_path, broker.port, model=SHIPPED))
        out = finish(proc, timeout=120)
        assert proc.returncode == 0, out
        spooled = json.loads(subprocess.run(
            [sys.executable, "-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1])"
             ".execute('SELECT COUNT(*) FROM messages').fetchone()[0])",
             str(tmp_path / "spool.db")], capture_output=True, text=True).stdout)
        assert spooled == 0  # the daemon delivered everything
        wait(lambda: store.views.device("bed-7", time.time()) is not None
             and len(store.views.device("bed-7", time.time()).sessions) == 1, 90,  # type: ignore
             "the daemon's session summary is stored")
        device = store.views.device("bed-7", time.time())
        assert device is not None
        (session,) = device.sessions
        assert len(stored_cycles(store, "bed-7")) == session.cycles > 5
        assert stored_cycles(store, "bed-7") == list(range(session.cycles))
        wait(lambda: store.views.counts()["invalid"] == 5, 10, "the five refusals are counted")
        assert worker.is_alive() and ingest.refused == 5
        # a message the schema allows but a database may not (PostgreSQL refuses NUL in text):
        # the rest of its batch is stored, the message kept as a refusal, ingest goes on
        nul = json.loads(cycle_message("bed-n", 0)) | {"label": "a\u0000b"}
        hostile.publish("lungedge/bed-n/cycle", json.dumps(nul), qos=1).wait_for_publish(5)
        hostile.publish("lungedge/bed-y/cycle", cycle_message("bed-y", 0),
                        qos=1).wait_for_publish(5)
        wait(lambda: stored_cycles(store, "bed-y") == [0], 10, "the next message is stored")
        postgres = database_url.startswith("postgresql")
        assert store.views.counts()["invalid"] == 5 + postgres and worker.is_alive()
        (tile,) = [t for t in store.views.overview(time.time()) if t.device_id == "bed-x"]
        assert tile.reasons == [script]  # kept as text, escaped where shown
        hostile.loop_stop()
    finally:
        stop.set()
        worker.join(10)


def test_station_killed_mid_stream_loses_and_doubles_nothing(tmp_path: Path, broker: Any,
                                                             database_url: str) -> None:
    """300 QoS 1 messages at ~150/s; the station is SIGKILLed after about a third, and
    restarted: the broker kept its session, so everything arrives, each message stored once."""
    cfg = station_yaml(tmp_path, broker.port, database_url)
    Store(database_url)  # migrated before the race starts

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "edge", "station", "--no-web",
                                 "--config", str(cfg)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    station = start()
    store = Store(database_url)
    pub = publisher(broker.port)
    try:
        wait(lambda: bool(stored_cycles(store)) or _publish_probe(pub), 20,
             "the station is subscribed")
        total = 300

        def send() -> None:
            for seq in range(1, total):
                pub.publish("lungedge/bed-k/cycle", cycle_message("bed-k", seq), qos=1)
                time.sleep(1 / 150)

        sender = threading.Thread(target=send)
        sender.start()
        wait(lambda: len(stored_cycles(store, "bed-k")) >= 100, 30, "a third stored")
        station.send_signal(signal.SIGKILL)
        station.wait(10)
        killed_at = len(stored_cycles(store, "bed-k"))
        time.sleep(0.5)
        station = start()
        sender.join()
        wait(lambda: len(stored_cycles(store, "bed-k")) >= total, 60, "everything stored")
        assert 100 <= killed_at < total
        assert stored_cycles(store, "bed-k") == list(range(total))  # each once
        with store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(cycles)).scalar_one() == total
    finally:
        station.send_signal(signal.SIGTERM)
        station.wait(20)
        pub.loop_stop()


def _publish_probe(pub: mqtt.Client) -> bool:
    """Seq 0, repeated until the station has stored it (it may not be subscribed yet)."""
    pub.publish("lungedge/bed-k/cycle", cycle_message("bed-k", 0), qos=1)
    time.sleep(0.3)
    return False
