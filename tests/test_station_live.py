"""A page's live updates: nothing stored while a page is being made is lost to it.

The web app is driven in-process through its ASGI interface (no server, no browser): what is
tested is which change a page says its updates start after."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

from edge.delivery.publisher import envelope
from edge.loader import build
from station.config import StationConfig
from station.store import Store
from station.store.read_models import Tile
from station.validate import parse
from station.web.app import create_app
from tests.conftest import TEST_EPOCH, status_fields


def get(app: Any, path: str) -> str:
    """One GET through the ASGI app, as a browser on the station's own machine sends it."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1"), (b"accept", b"text/html")],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200, sent[0]
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"
                    ).decode()


def test_a_change_stored_while_the_ward_is_made_reaches_its_updates(tmp_path: Path) -> None:
    """A device's status stored after the ward's data was read, but before the page was
    rendered, was in neither the page nor its live updates (they started after it): the ward
    missed that device until reloaded. The page's `since` is now taken before its data."""
    store = Store(f"sqlite:///{tmp_path / 'station.db'}")
    cfg = build(StationConfig, {"web": {"secret_file": str(tmp_path / "secret")},
                                "database": {"url": f"sqlite:///{tmp_path / 'station.db'}"}})
    read = store.views.overview

    def overview_then_a_device_speaks(now: float) -> list[Tile]:
        tiles = read(now)
        status = envelope("bed-late", 0, TEST_EPOCH) | {
            "state": "online", "reason": None, "reasons": [], "model": None} | status_fields()
        store.intake.ingest([parse("lungedge/bed-late/status", json.dumps(status).encode(),
                            "lungedge")], now=time.time())
        return tiles

    store.views.overview = overview_then_a_device_speaks  # type: ignore[method-assign]
    html = get(create_app(cfg, store), "/ward")
    assert "bed-late" not in html  # stored after the page's data was read…
    since = int(re.search(r'data-since="(\d*)"', html).group(1) or 0)  # type: ignore[union-attr]
    # …so the page's updates must start before it: the browser will be told and refetch
    assert [c.device_id for c in store.views.changes_since(since)] == ["bed-late"]
