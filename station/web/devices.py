"""A device: its timeline of cycles, trends, sessions, alert history, what clinicians made of
its calls; its bed label and the stethoscope it records with."""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from station import charts
from station.web.site import Forbidden, Site, quote_path

MINUTES, HOURS = 15, 24


def routes(site: Site) -> list[Route]:
    async def context(device_id: str) -> dict[str, Any] | None:
        now = time.time()
        data = await run_in_threadpool(site.store.views.device, device_id, now, MINUTES, HOURS)
        if data is None:
            return None
        labels = tuple(sorted({c.label for c in data.timeline} | {
            "normal", "crackle", "wheeze", "both"}))
        heard = await run_in_threadpool(lambda: site.store.views.clips_of(device_id=device_id,
                                                                    limit=5))
        judged = await run_in_threadpool(site.store.views.verdict_counts, device_id, now - WEEK_S)
        return {
            "device": data.device, "sessions": data.sessions, "alerts": data.alerts,
            "clips": heard, "judged": trust(judged), "no_clip": "",
            "bars": charts.timeline(data.timeline, data.since, now, labels),
            "trends": charts.trends(data.buckets, data.first_bucket, data.n_buckets),
            "strip_axis": charts.axis(data.since, now, STRIP_TICK_S, now),
            "trend_axis": charts.axis(data.trend_since, data.trend_until, TREND_TICK_S, now),
            "minutes": MINUTES, "hours": HOURS, "width": charts.WIDTH,
            "height": charts.HEIGHT, "trend_height": charts.TREND_HEIGHT}

    async def page(request: Request) -> Response:
        ctx = await context(request.path_params["device_id"])
        if ctx is None:
            return site.render(request, "missing.html", {
                "what": f"device {request.path_params['device_id']!r}"}, 404)
        return site.render(request, "device.html", ctx)

    async def fragment(request: Request) -> Response:
        ctx = await context(request.path_params["device_id"])
        if ctx is None:
            return Response(status_code=404)
        return site.render(request, "_device.html", ctx)

    async def label(request: Request) -> Response:
        form, user = await site.check_form(request)
        if user is None:
            raise Forbidden("log in to change a device's label")
        device_id = request.path_params["device_id"]
        await run_in_threadpool(site.store.actions.set_label, device_id, str(form.get("label", "")),
                                user)
        if "stethoscope" in form:
            await run_in_threadpool(site.store.actions.set_stethoscope, device_id,
                                    str(form.get("stethoscope", "")), user)
        return RedirectResponse(f"/devices/{quote_path(device_id)}", 303)

    return [Route("/devices/{device_id}", page),
            Route("/fragments/devices/{device_id}", fragment),
            Route("/devices/{device_id}/label", label, methods=["POST"])]


WEEK_S = 7 * 86400
STRIP_TICK_S, TREND_TICK_S = 5 * 60, 3 * 3600  # the time axes' steps


def trust(judged: dict[str, dict[str, int]]) -> list[str]:
    """What clinicians made of the device's calls this week, in words a ward reads: "3 of 12
    crackle calls corrected to normal", per label the device called."""
    out = []
    for said, verdicts in sorted(judged.items()):
        total = sum(verdicts.values())
        parts = [f"{n} confirmed" if v == said else f"{n} corrected to {v.replace('_', ' ')}"
                 for v, n in sorted(verdicts.items(), key=lambda kv: (kv[0] != said, kv[0]))]
        out.append(f"{said} calls judged: {total} — " + ", ".join(parts))
    return out
