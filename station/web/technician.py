"""The technician's page, live: the devices that need a technician now (offline, silent,
hissing, a stethoscope that passes too little, a clock not set) with why, what the station
refused and why, messages found missing, devices whose numbering started again. The ward keeps
these to an icon; a technician reads them here."""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from station import alarms, ward
from station.store.read_models import Alert, Tile
from station.web.site import Site

DAY_S = 86400


def needs_technician(tiles: list[Tile]) -> list[tuple[Tile, list[str], float | None]]:
    """Each device a technician should look at, with what is wrong in words (its status
    reasons, its open technical alarms with their own reasons, an unset clock) and since
    when (its oldest open technical alarm)."""
    out = []
    for t in tiles:
        why = [f"{alarms.of(a.kind).title}: {reason}" if (reason := alarm_reason(a))
               else alarms.of(a.kind).title for a in t.technical if a.state == "open"]
        why += [r for r in t.reasons if not any(r in w for w in why)] \
            if t.state != "online" else []
        if t.clock_synced is False:
            why.append("clock not set (NTP): its times may be off")
        if t.model_rolled_back:
            why.append(f"model {t.model}: {t.model_note}")
        if why:
            since = min((a.opened_at for a in t.technical if a.state == "open"), default=None)
            out.append((t, why, since))
    return out


def alarm_reason(a: Alert) -> str:
    """An alarm's own reason, where its evidence gives one (a poor signal says why)."""
    e = a.evidence if isinstance(a.evidence, dict) else {}
    return str(e.get("reason") or "")


def routes(site: Site) -> list[Route]:
    def read(now: float) -> dict[str, Any]:
        tiles = ward.by_urgency(site.store.views.overview(now))
        return {"refused": site.store.views.refused(100), "counts": site.store.views.counts(),
                "gaps": site.store.views.recent_gaps(now - DAY_S),
                "attention": needs_technician(tiles),
                "epochs": [t for t in tiles if t.epoch_since
                           and t.epoch_since >= now - DAY_S
                           and t.epoch_since > t.first_seen + 1]}

    async def page(request: Request) -> Response:
        return site.render(request, "technician.html",
                           await run_in_threadpool(read, time.time()))

    async def fragment(request: Request) -> Response:
        return site.render(request, "_technician.html",
                           await run_in_threadpool(read, time.time()))

    return [Route("/technician", page), Route("/fragments/technician", fragment)]
