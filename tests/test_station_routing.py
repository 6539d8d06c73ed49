"""Alert routing against real targets (a command, a local HTTP server) and a real store on
SQLite and PostgreSQL: which rule takes what, cooldown, rate limit, retries, escalation."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest

pytest.importorskip("sqlalchemy", reason="the station extra: pip install 'lungedge[station]'")

from edge.loader import build
from station.routing.page import PAGE_SCHEMA_VERSION, page_schema, shipped_schema
from station.routing.router import Router
from station.routing.rules import RoutingConfig
from station.store import Store
from tests.conftest import _free_port
from tests.test_station_store import alert_message


class Receiver:
    """A webhook at the other end: a real HTTP server keeping what it is sent."""

    def __init__(self) -> None:
        got: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.got = got
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.close()


def command_to(path: Path) -> list[str]:
    """A program that appends the alert it reads on stdin to `path` (one JSON a line)."""
    return [sys.executable, "-c", f"import sys; open({str(path)!r}, 'a').write("
                                  "sys.stdin.read().strip() + '\\n')"]


def config(rules: list[dict[str, Any]]) -> RoutingConfig:
    return build(RoutingConfig, {"rules": rules, "public_url": "https://station.ward3/"})


def test_rules_route_clinical_and_technical_apart(database_url: str, receiver: Receiver,
                                                  tmp_path: Path) -> None:
    store = Store(database_url)
    technical = tmp_path / "technical.jsonl"
    router = Router(config([
        {"name": "nurses", "category": "clinical", "webhook": receiver.url},
        {"name": "technician", "category": "technical", "command": command_to(technical),
         "events": ["new", "end"]}]), store.deliveries)
    t = time.time()
    router.step(t)  # starts from here: nothing earlier is paged
    store.intake.ingest([alert_message("bed-1", 0, "new", "a1", "wheeze")], now=t + 1)
    store.intake.ingest([alert_message("bed-1", 1, "new", "a2", "no_audio")], now=t + 1)
    router.step(t + 2)
    assert [m["alert"]["kind"] for m in receiver.got] == ["wheeze"]
    message = receiver.got[0]
    assert message["rule"] == "nurses" and message["event"] == "new"
    assert message["alert"]["link"] == "https://station.ward3/alerts/a1"
    assert message["alert"]["category"] == "clinical" and message["alert"]["priority"] == "high"
    lines = [json.loads(line) for line in technical.read_text().splitlines()]
    assert [(m["alert"]["kind"], m["event"]) for m in lines] == [("no_audio", "new")]
    for page in [*receiver.got, *lines]:  # what an integrator receives is the documented page
        jsonschema.validate(page, shipped_schema())
        assert page["schema_version"] == PAGE_SCHEMA_VERSION
    store.intake.ingest([alert_message("bed-1", 2, "update", "a1", "wheeze")], now=t + 3)
    router.step(t + 4)
    assert len(receiver.got) == 1  # the rule takes `new` only
    assert {d.state for d in store.deliveries.recent()} == {"sent"}


def test_a_new_router_pages_what_arrives_before_its_first_pass(database_url: str,
                                                              receiver: Receiver) -> None:
    """On a new database, alerts stored before the station started are history; one stored
    between the router's start and its first pass (the station's first second: seen when a
    device was already sending) is paged."""
    store = Store(database_url)
    t = time.time()
    store.intake.ingest([alert_message("bed-1", 0, "new", "before")], now=t - 60)
    router = Router(config([{"name": "nurses", "webhook": receiver.url}]), store.deliveries)
    store.intake.ingest([alert_message("bed-2", 0, "new", "after")], now=router.started + 0.01)
    router.step(router.started + 0.5)
    assert [m["alert"]["alert_id"] for m in receiver.got] == ["after"]


def test_cooldown_and_rate_limit_hold_back_and_say_so(database_url: str,
                                                      receiver: Receiver) -> None:
    store = Store(database_url)
    router = Router(config([{"name": "nurses", "webhook": receiver.url, "cooldown_s": 300,
                             "max_per_hour": 2}]), store.deliveries)
    t = time.time()
    router.step(t)
    store.intake.ingest([alert_message("bed-1", 0, "new", "a1")], now=t)
    router.step(t + 1)
    store.intake.ingest([alert_message("bed-1", 1, "new", "a2")], now=t + 10)  # same bed and kind
    store.intake.ingest([alert_message("bed-2", 0, "new", "b1")], now=t + 10)
    store.intake.ingest([alert_message("bed-3", 0, "new", "c1")], now=t + 10)
    router.step(t + 11)
    states = {d.alert_id: (d.state, d.why) for d in store.deliveries.recent()}
    assert states["a1"][0] == states["b1"][0] == "sent"
    assert states["a2"][0] == "suppressed" and states["a2"][1].startswith("cooldown")
    assert states["c1"][0] == "suppressed" and states["c1"][1].startswith("rate limit")
    assert len(receiver.got) == 2


def test_a_failing_target_is_retried_then_failed_visibly(database_url: str) -> None:
    store = Store(database_url)
    dead = f"http://127.0.0.1:{_free_port()}/nobody-listens"
    router = Router(config([{"name": "pager", "webhook": dead, "retries": 2,
                             "retry_s": 0.05}]), store.deliveries)
    t = time.time()
    router.step(t)
    store.intake.ingest([alert_message("bed-1", 0, "new", "a1")], now=t)
    deadline = time.time() + 10
    while not store.deliveries.recent() or store.deliveries.recent()[0].state != "failed":
        assert time.time() < deadline
        router.step()
        time.sleep(0.05)
    (d,) = store.deliveries.recent()
    assert d.attempts == 3 and [a.ok for a in d.tries] == [False] * 3
    assert d.why is not None and "Connection refused" in d.why
    assert store.deliveries.failures_since(t) == 1


def test_escalation_of_what_nobody_acknowledged(database_url: str, receiver: Receiver,
                                               tmp_path: Path) -> None:
    store = Store(database_url)
    escalated = tmp_path / "escalated.jsonl"
    router = Router(config([{"name": "nurses", "webhook": receiver.url,
                             "escalate_after_min": 5, "escalate_command":
                             command_to(escalated)}]), store.deliveries)
    t = time.time()
    router.step(t)
    store.intake.ingest([alert_message("bed-1", 0, "new", "seen")], now=t)
    store.intake.ingest([alert_message("bed-2", 0, "new", "unseen")], now=t)
    router.step(t + 1)
    assert len(receiver.got) == 2 and not escalated.exists()
    store.actions.acknowledge("seen", "nurse.ana", "")
    router.step(t + 299)  # not yet five minutes
    assert not escalated.exists()
    router.step(t + 301)
    router.step(t + 400)  # once per alert
    lines = [json.loads(line) for line in escalated.read_text().splitlines()]
    assert [(m["alert"]["alert_id"], m["event"]) for m in lines] == [("unseen", "escalation")]


def test_the_page_schema_is_generated_from_its_dataclasses() -> None:
    assert shipped_schema() == page_schema(), \
        "regenerate: python -m station.routing.page"
