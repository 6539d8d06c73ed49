"""`/events`: server-sent events, one per stored change, for pages to update themselves.

It follows the store's `changes` table, not the ingest loop, so a web worker shows what every
ingest worker stored (several may share one PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from station.web.site import Site

POLL_S = 0.25
LOGIN_S = 1.0  # how often an open stream checks that its login still stands


def routes(site: Site) -> list[Route]:
    async def stream(request: Request) -> EventSourceResponse:
        async def changes() -> AsyncIterator[dict[str, str]]:
            since = request.query_params.get("since", "")
            last = int(since) if since.isdigit() else \
                await run_in_threadpool(site.store.views.latest_change)
            told = ""
            checked = time.monotonic()
            while not await request.is_disconnected():
                if site.cfg.web.read_needs_login and time.monotonic() - checked >= LOGIN_S:
                    checked = time.monotonic()
                    if await run_in_threadpool(site.user, request) is None:
                        return  # logged out (or expired): the stream ends with the login
                problem = "; ".join(p for p in (site.liveness.problem(),
                                                site.liveness.troubles()) if p)
                if problem != told:  # a worker of this station stopped: every page says so
                    told = problem
                    yield {"event": "health", "data": json.dumps({"problem": problem})}
                new = await run_in_threadpool(site.store.views.changes_since, last)
                if new:
                    last = new[-1].id
                    yield {"event": "change", "data": json.dumps(
                        [{"device_id": c.device_id, "what": c.what} for c in new])}
                await asyncio.sleep(POLL_S)

        return EventSourceResponse(changes(), ping=15)

    return [Route("/events", stream)]
