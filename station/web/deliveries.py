"""Deliveries: every routed alert, suppressed or sent, and every attempt; failures in view."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from station.web.site import Site


def routes(site: Site) -> list[Route]:
    async def page(request: Request) -> Response:
        rows = await run_in_threadpool(site.store.deliveries.recent)
        return site.render(request, "deliveries.html", {
            "rows": rows, "rules": site.cfg.routing.rules})

    return [Route("/deliveries", page)]
