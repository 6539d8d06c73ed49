"""The technician's page: what the station refused and why, messages found missing, devices
whose clock is not set or whose numbering started again. The ward keeps these to an icon; a
technician reads them here."""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from station.web.site import Site

DAY_S = 86400


def routes(site: Site) -> list[Route]:
    async def page(request: Request) -> Response:
        now = time.time()

        def read() -> dict[str, Any]:
            tiles = site.store.overview(now)
            return {"refused": site.store.refused(100), "counts": site.store.counts(),
                    "gaps": site.store.recent_gaps(now - DAY_S),
                    "clocks": [t for t in tiles if t.clock_synced is False],
                    "epochs": [t for t in tiles if t.epoch_since
                               and t.epoch_since >= now - DAY_S
                               and t.epoch_since > t.first_seen + 1]}

        return site.render(request, "technician.html", await run_in_threadpool(read))

    return [Route("/technician", page)]
