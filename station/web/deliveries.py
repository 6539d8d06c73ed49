"""Deliveries: every routed alert, suppressed or sent, and every attempt; failures in view."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from station.routing.router import recent


def routes(site: Any) -> list[Route]:
    async def page(request: Request) -> Response:
        rows = await run_in_threadpool(recent, site.store)
        return site.render(request, "deliveries.html", {
            "rows": rows, "rules": site.cfg.routing.rules})

    return [Route("/deliveries", page)]
