"""The station's ingest never dies silently: each way it died (issue 25) against a real
Mosquitto and a real database, random schema-valid messages, and a worker that dies anyway
(the station then says so everywhere and exits non-zero for systemd to restart it)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy", reason="the station extra: pip install 'lungedge[station]'")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from edge.delivery.publisher import envelope
from edge.delivery.wire import BODIES, RunningModel, Status, body_dict, schema
from station.ingest import Ingest, Received
from station.schema import alerts, invalid
from station.store import Store
from tests.conftest import TEST_EPOCH, _free_port
from tests.test_station_ingest import (
    config,
    cycle_message,
    publisher,
    station_yaml,
    stored_cycles,
    wait,
)


class Running:
    """An ingest loop in a thread of this process, as `lungedge station` runs it."""

    def __init__(self, tmp: Path, port: int, url: str) -> None:
        self.store = Store(url)
        self.ingest = Ingest(config(tmp, port, url), self.store)
        self.stop = threading.Event()
        self.died: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait(self.ingest.connected.is_set, 10, "the station connects")

    def _run(self) -> None:
        try:
            self.ingest.run(self.stop)
        except BaseException as exc:
            self.died.append(exc)

    def alive(self) -> bool:
        return self.thread.is_alive() and not self.died

    def refusals(self) -> list[str]:
        with self.store.engine.connect() as conn:
            return list(conn.execute(select(invalid.c.reason)).scalars())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def status_message(device: str, seq: int, ts: str | None = None) -> bytes:
    body = envelope(device, seq, TEST_EPOCH) | body_dict(
        Status(state="online", reason=None, reasons=[], model=RunningModel("m", "1", sha256=None,
                                                                            note=None),
               connected_at="2026-12-03T10:00:00.000Z", last_will=False, heartbeat_s=3600.0,
               breathing_pause_s=30.0))
    if ts is not None:
        body["ts"] = ts
    return json.dumps(body).encode()


@pytest.mark.parametrize("ts", ["2026-13-45T25:61:61.000Z", "0000-01-01T00:00:00.000Z"])
def test_a_status_whose_time_is_no_date_is_refused_and_acknowledged(
        tmp_path: Path, broker: Any, database_url: str, ts: str) -> None:
    """It killed ingest, was never acknowledged, and killed it again within a second of every
    restart. Now it is a refusal, acknowledged: a restarted station does not see it again."""
    station = Running(tmp_path, broker.port, database_url)
    pub = publisher(broker.port)
    pub.publish("lungedge/bed-t/status", status_message("bed-t", 0, ts), qos=1)
    pub.publish("lungedge/bed-t/cycle", cycle_message("bed-t", 0), qos=1).wait_for_publish(5)
    wait(lambda: stored_cycles(station.store, "bed-t") == [0], 10, "the next message stored")
    assert station.alive()
    (reason,) = station.refusals()
    assert f"ts {ts!r} is not a real date and time" in reason
    station.close()
    again = Running(tmp_path, broker.port, database_url)  # the same persistent session
    time.sleep(2)
    assert len(again.refusals()) == 1 and again.alive()  # acknowledged: not redelivered
    again.close()
    pub.loop_stop()


def test_a_seq_no_database_holds_is_refused(tmp_path: Path, broker: Any,
                                            database_url: str) -> None:
    station = Running(tmp_path, broker.port, database_url)
    pub = publisher(broker.port)
    huge = json.loads(cycle_message("bed-h", 0)) | {"seq": 2**70}
    pub.publish("lungedge/bed-h/cycle", json.dumps(huge), qos=1)
    pub.publish("lungedge/bed-h/cycle", cycle_message("bed-h", 1), qos=1).wait_for_publish(5)
    wait(lambda: stored_cycles(station.store, "bed-h") == [1], 10, "the next message stored")
    assert station.alive() and "seq" in station.refusals()[0]
    station.close()
    pub.loop_stop()


def test_devices_whose_ids_share_a_long_prefix_go_silent_together(database_url: str) -> None:
    """Their offline alarms' ids were cut from the device id and collided in one sweep (and
    in every sweep after, from a copy of that database)."""
    from station.validate import parse

    store = Store(database_url)
    stem = "ward-7-" + "x" * 70
    now = time.time()
    store.intake.ingest([parse(f"lungedge/{stem}{i}/status", status_message(f"{stem}{i}", 0),
                        "lungedge") for i in range(3)], now=now)
    silent = 3600 * 2.5 + 1  # their statuses say a heartbeat of an hour: 2.5 of them missed
    store.alarms.sweep(now + silent, offline_after_s=60, spool_backlog=10**6)
    store.alarms.sweep(now + silent + 100, offline_after_s=60, spool_backlog=10**6)
    with store.engine.connect() as conn:
        kinds = conn.execute(select(alerts.c.device_id).where(alerts.c.kind == "offline")).all()
    assert sorted(d for (d,) in kinds) == [f"{stem}{i}" for i in range(3)]


def test_a_database_restarted_while_nothing_is_in_flight(tmp_path: Path, broker: Any,
                                                         postgres_server: Any) -> None:
    """PostgreSQL restarted with no message in flight: the sweep met the outage and ingest
    died; nothing was stored after PostgreSQL was back. Now the sweep waits and retries."""
    pg = postgres_server
    station = Running(tmp_path, broker.port, pg.url)
    pub = publisher(broker.port)
    pub.publish("lungedge/bed-p/cycle", cycle_message("bed-p", 0), qos=1).wait_for_publish(5)
    wait(lambda: stored_cycles(station.store, "bed-p") == [0], 10, "stored before")
    pg.stop()
    try:
        time.sleep(12)  # more than two sweeps meet the outage
    finally:
        pg.start()
    pub.publish("lungedge/bed-p/cycle", cycle_message("bed-p", 1), qos=1).wait_for_publish(5)
    wait(lambda: stored_cycles(station.store, "bed-p") == [0, 1], 30, "stored after")
    assert station.alive()
    station.close()
    pub.loop_stop()


KINDS = sorted(BODIES)


def from_schema(s: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Any value the JSON Schema allows (the subset the generated schemas use)."""
    if "const" in s:
        return st.just(s["const"])
    if "enum" in s:
        return st.sampled_from(s["enum"])
    if "oneOf" in s:
        return st.one_of(*map(from_schema, s["oneOf"]))
    kind = s.get("type")
    if isinstance(kind, list):
        return st.one_of(*[from_schema(s | {"type": k}) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(s.get("minimum"), s.get("maximum"))
    if kind == "number":
        return st.floats(s.get("minimum"), s.get("maximum"), allow_nan=False,
                         allow_infinity=False)
    if kind == "string":
        longest = min(s.get("maxLength", 300), 300)
        if "pattern" in s:
            return st.from_regex(s["pattern"], fullmatch=True).filter(
                lambda v: len(v) <= longest)
        return st.text(min_size=s.get("minLength", 0), max_size=longest)
    if kind == "array":
        return st.lists(from_schema(s["items"]), max_size=4)
    if "properties" in s:
        return st.fixed_dictionaries({k: from_schema(v) for k, v in s["properties"].items()})
    return st.dictionaries(st.text(max_size=20), from_schema(s["additionalProperties"]),
                           max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_schema_valid_message_is_stored_or_refused(data: Any, tmp_path: Path,
                                                       database_url: str) -> None:
    """Messages generated from the shipped schemas (any value the schema allows: odd labels,
    extreme numbers, long strings, dates at the edges): each is stored or kept as a refusal,
    and ingest goes on."""
    key = database_url
    if key not in STORES:
        STORES[key] = Store(database_url)
        INGESTS[key] = Ingest(config(tmp_path, 1, database_url), STORES[key])
    ingest = INGESTS[key]
    kind = data.draw(st.sampled_from(KINDS))
    body = data.draw(from_schema(schema(kind)))
    device = body["device_id"]
    if "/" in device or "+" in device or "#" in device or "\x00" in device:
        return  # no such topic can exist
    before = (ingest.stored, ingest.repeats, ingest.refused)
    ingest.handle([Received(f"lungedge/{device}/{kind}", json.dumps(body).encode(), 0, 0, 0)])
    after = (ingest.stored, ingest.repeats, ingest.refused)
    assert sum(after) - sum(before) == 1  # stored, a repeat, or refused: never lost


STORES: dict[str, Store] = {}
INGESTS: dict[str, Ingest] = {}


def test_a_worker_that_dies_anyway_is_said_everywhere_and_restarts_the_station(
        tmp_path: Path, broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should ingest die of something its guards do not know: /healthz fails with the reason,
    every page says the station is not monitoring, live updates carry it to open pages, and
    the process ends with status 1, which systemd's Restart=on-failure restarts."""
    from station import cli
    from station.config import load

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected: a bug in ingest's loop")

    # (the periodic jobs are guarded: a failing sweep is a trouble, not a death)
    monkeypatch.setattr(Ingest, "_batch", broken)
    port = _free_port()
    cfg = load(station_yaml(tmp_path, broker.port, f"sqlite:///{tmp_path / 'st.db'}"))
    cfg = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, port=port))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(cli.run(cfg)), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"

    def health() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    wait(lambda: health()[0] == 503, 20, "healthz fails")
    text = health()[1]
    assert "ingest stopped: RuntimeError: injected: a bug in ingest's loop" in text
    with urllib.request.urlopen(base + "/ward", timeout=5) as r:
        page = r.read().decode()
    assert "This station is not monitoring: ingest stopped" in page
    with urllib.request.urlopen(base + "/events", timeout=5) as r:
        first = b""
        while b"\r\n\r\n" not in first:  # (server-sent events end with a blank line)
            first += r.read1(1024)
    assert b"event: health" in first and b"ingest stopped" in first
    thread.join(30)
    assert result == [1]



def test_a_station_started_before_its_database_waits_for_it(tmp_path: Path, broker: Any,
                                                            postgres_server: Any) -> None:
    """It printed a 130-line traceback that never named database.url, and stopped. Now it
    says which key and why, once per try, and starts when the database does."""
    import subprocess
    import sys

    from tests.test_daemon import ROOT

    pg = postgres_server
    Store(pg.url)  # migrated: this test is about reaching it
    pg.stop()
    log = tmp_path / "station.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "station", "--no-web",
                                 "--config", str(station_yaml(tmp_path, broker.port, pg.url))],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait(lambda: "cannot reach the database" in log.read_text(), 20, "it says why")
        assert proc.poll() is None and "Traceback" not in log.read_text()
        assert "database.url postgresql+psycopg://station@127.0.0.1" in log.read_text()
        pg.start()
        pub = publisher(broker.port)
        store = Store(pg.url)

        def sent_and_stored() -> bool:
            pub.publish("lungedge/bed-w/cycle", cycle_message("bed-w", 0), qos=1)
            time.sleep(0.5)
            return stored_cycles(store, "bed-w") == [0]

        wait(sent_and_stored, 60, "stored once the database is up")
        pub.loop_stop()
    finally:
        proc.terminate()
        proc.wait(20)
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.start()  # the next test's database, whatever happened here


def test_a_seq_at_the_integer_limit_is_stored_and_swept(database_url: str) -> None:
    """Issue 38: a cycle with seq 2147483647 (schema-valid then) was stored, and ~35 s later
    the gap sweep computed seq + 1 in PostgreSQL's int4, raised a DataError it did not catch,
    and the station exited, at every restart for an hour. Now the schema bounds every number
    to what the database holds (2**31 and 1e400 refused with a reason), and the sweep computes
    in a wider type."""
    from station.validate import Refused, parse

    store = Store(database_url)
    now = time.time()
    top = json.loads(cycle_message("bed-i", 2**31 - 1))
    store.intake.ingest([parse("lungedge/bed-i/cycle", json.dumps(top).encode(), "lungedge")],
                 now=now)
    store.alarms.sweep(now + 100, offline_after_s=60, spool_backlog=10**6)  # past the settling time
    assert stored_cycles(store, "bed-i") == [2**31 - 1]
    for key, value in (("seq", "2147483648"), ("duration_s", "1e400"), ("latency_ms", "1e16")):
        payload = json.dumps(top | {key: "VALUE"}).replace('"VALUE"', value)
        with pytest.raises(Refused, match=key):
            parse("lungedge/bed-i/cycle", payload.encode(), "lungedge")


def test_a_periodic_job_survives_anything_and_says_so() -> None:
    """Whatever a periodic job raises, ingest goes on: the job is the station's trouble
    (/healthz, every page) until it works again, logged once and then once a minute."""
    from station.ingest import Periodic
    from station.liveness import Liveness

    liveness = Liveness()
    job = Periodic("sweep", 0.0, liveness)
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise ValueError("integer out of range")

    for _ in range(3):
        job.run(failing)
    assert len(calls) == 3
    assert "sweep failing since" in liveness.troubles()
    assert "ValueError: integer out of range" in liveness.troubles()
    job.run(lambda: None)
    assert liveness.troubles() == ""


def test_a_bad_message_in_a_batch_is_found_by_halving(tmp_path: Path, broker: Any,
                                                      database_url: str) -> None:
    """One message the database refuses in a batch of 500: the batch is halved until it is
    found (about 2 log2 500 tries), not redone message by message (500), and the other 499
    are stored."""
    from station.validate import parse

    ingest = Ingest(config(tmp_path, broker.port, database_url), Store(database_url))
    messages = [parse("lungedge/bed-b/cycle", cycle_message("bed-b", i), "lungedge")
                for i in range(500)]
    poison = dataclasses.replace(messages[250], body=messages[250].body | {"label": None})
    tries: list[int] = []
    real = ingest.store.intake.ingest

    def counting(m: Any, r: Any, **kw: Any) -> int:
        tries.append(len(m))
        return real(m, r, **kw)

    ingest.store.intake.ingest = counting  # type: ignore[method-assign]
    messages[250] = poison
    assert ingest._store(messages, []) == 499
    assert len(tries) < 25, len(tries)
    assert stored_cycles(ingest.store, "bed-b") == [i for i in range(500) if i != 250]


class Health:
    """A running station's /healthz, as (status, body); (0, "") while it does not answer."""

    def __init__(self, base: str) -> None:
        self.base = base

    def __call__(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + "/healthz", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""


@contextlib.contextmanager
def station_process(tmp: Path, broker_port: int, url: str) -> Iterator[Health]:
    """`lungedge station` with ingest and the web UI, on its own port."""
    import subprocess
    import sys

    port = _free_port()
    cfg = station_yaml(tmp, broker_port, url)
    cfg.write_text(cfg.read_text().replace("web: {", f"web: {{port: {port}, "))
    proc = subprocess.Popen([sys.executable, "-m", "edge", "station", "--config", str(cfg)],
                            cwd=Path(__file__).parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield Health(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_store_that_refuses_writes_is_seen_and_recovers(tmp_path: Path,
                                                          broker: Any) -> None:
    """SQLite's write lock held for 20 s by another program: /healthz says 503 with the reason
    within 15 s and every page says so; once the lock goes, everything sent meanwhile is
    stored and the station is healthy again (it said "ok" and showed nothing)."""
    import sqlite3

    db = tmp_path / "station.db"
    with station_process(tmp_path, broker.port, f"sqlite:///{db}") as health:
        wait(lambda: health()[0] == 200, 30, "the station answers")
        pub = publisher(broker.port)
        pub.publish("lungedge/bed-l/cycle", cycle_message("bed-l", 0),
                    qos=1).wait_for_publish(5)
        store = Store(f"sqlite:///{db}")
        wait(lambda: stored_cycles(store, "bed-l") == [0], 10, "stored before")
        lock = sqlite3.connect(db, timeout=1)
        lock.execute("BEGIN IMMEDIATE")  # another writer holds the database
        locked = time.monotonic()
        for i in range(1, 21):
            pub.publish("lungedge/bed-l/cycle", cycle_message("bed-l", i), qos=1)
        wait(lambda: "storing failing since" in health()[1], 20,
             "/healthz says the store refuses writes")
        assert time.monotonic() - locked < 15
        status, why = health()
        assert status == 503 and "the database refuses writes: database is locked" in why, why
        page = urllib.request.urlopen(health.base + "/ward", timeout=5).read().decode()
        assert "Part of this station is failing" in page
        time.sleep(max(0.0, 20 - (time.monotonic() - locked)))
        lock.rollback()
        lock.close()
        wait(lambda: stored_cycles(store, "bed-l") == list(range(21)), 30, "all stored after")
        wait(lambda: health() == (200, "ok"), 15, "healthy again")
        pub.loop_stop()


def test_healthz_says_why_when_postgresql_is_down(tmp_path: Path, broker: Any,
                                                  postgres_server: Any) -> None:
    """PostgreSQL stopped: /healthz answered a bare 500 (its middleware read the database
    first). Now 503, saying the database cannot be reached, and 200 again once it is back."""
    pg = postgres_server
    with station_process(tmp_path, broker.port, pg.url) as health:
        wait(lambda: health() == (200, "ok"), 30, "the station answers")
        pg.stop()
        try:
            wait(lambda: health()[0] == 503, 15, "503")
            assert "database unreachable: " in health()[1], health()
        finally:
            pg.start()
        wait(lambda: health() == (200, "ok"), 60, "healthy again")
