"""The ward: one tile per device, the beds that need a person first (`station.ward`), the
counts above them, clinical alerts apart from technical problems."""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from station import ward
from station.web.site import Site


def routes(site: Site) -> list[Route]:
    async def context() -> dict[str, Any]:
        now = time.time()
        tiles = ward.by_urgency(await run_in_threadpool(site.store.views.overview, now))
        return {"tiles": tiles, "summary": ward.summary(tiles), "now": now,
                "rank": ward.rank, "QUIET": ward.QUIET}

    async def page(request: Request) -> Response:
        return site.render(request, "ward.html", await context())

    async def fragment(request: Request) -> Response:
        return site.render(request, "_ward.html", await context())

    async def alarm_state(request: Request) -> Response:
        return site.render(request, "_alarms.html", {})

    return [Route("/ward", page), Route("/fragments/ward", fragment),
            Route("/fragments/alarms", alarm_state)]
