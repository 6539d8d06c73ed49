"""The alert inbox: alerts that need someone, filtered by category, device, kind, state and age,
with counts; an alert's own page, live; acknowledge (one, or every technical alarm on the
ward at once) and resolve."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from station.store.read_models import Alert
from station.web.site import Forbidden, Site

NOTE_MAX = 500
SINCE_HOURS = (1, 8, 24)
STATES = {"open": "open", "ended": "ended, not yet seen", "unseen": "not yet seen"}


def choose(inbox: list[Alert], query: Any, now: float) -> dict[str, Any]:
    """The inbox as the query filters it (category, device, kind, state, hours), and the
    counts of the whole inbox for each filter's choices."""
    wanted = {k: str(query.get(k, "")) for k in ("category", "device", "kind", "state", "hours")}
    hours = float(wanted["hours"]) if wanted["hours"] in map(str, SINCE_HOURS) else None

    def keep(a: Alert) -> bool:
        return ((not wanted["category"] or a.category == wanted["category"])
                and (not wanted["device"] or a.device_id == wanted["device"])
                and (not wanted["kind"] or a.kind == wanted["kind"])
                and (wanted["state"] != "open" or a.state == "open")
                and (wanted["state"] != "ended" or a.state == "ended")
                and (wanted["state"] != "unseen" or a.attention)
                and (hours is None or a.opened_at >= now - hours * 3600))

    return {"rows": [a for a in inbox if keep(a)], "wanted": wanted, "total": len(inbox),
            "by_category": Counter(a.category for a in inbox),
            "by_kind": Counter(a.kind for a in inbox),
            "by_device": Counter(a.device_id for a in inbox),
            "unseen": sum(a.attention for a in inbox),
            "states": STATES, "since_hours": SINCE_HOURS}


def no_clip_reason(alert: Alert, stats: dict[str, Any] | None) -> str:
    """Why an alert has no audio, as far as the device's latest stats tell."""
    if alert.category != "clinical":
        return "No audio: a technical alarm has none."
    if stats is None:
        return "No audio yet: the device has not sent its statistics, which say whether it " \
               "sends clips."
    if stats.get("clips_dropped"):
        return (f"No audio: the device's hourly clip budget was spent ({stats['clips_dropped']} "
                "clip(s) not sent since it started; clips.max_per_hour and max_kb_per_hour in "
                "its config).")
    if not stats.get("clips_sent"):
        return "No audio: this device has sent no clip since it started; its clips are " \
               "probably disabled (clips.enabled in its config)."
    return "No audio for this alert yet: the device sends clips, and this one has not arrived."


def safe_back(form: Any, default: str) -> str:
    back = str(form.get("back", default))
    return back if back.startswith("/") and not back.startswith("//") else default


def routes(site: Site) -> list[Route]:
    async def inbox_context(request: Request) -> dict[str, Any]:
        inbox = await run_in_threadpool(site.store.views.inbox)
        return {"inbox": choose(inbox, request.query_params, time.time()),
                "query": request.url.query}

    async def page(request: Request) -> Response:
        return site.render(request, "alerts.html", await inbox_context(request))

    async def fragment(request: Request) -> Response:
        return site.render(request, "_alerts.html", await inbox_context(request))

    async def alert_context(alert_id: str) -> dict[str, Any] | None:
        alert = await run_in_threadpool(site.store.views.alert, alert_id)
        if alert is None:
            return None
        heard = await run_in_threadpool(lambda: site.store.views.clips_of(alert_id=alert_id))
        stats = await run_in_threadpool(site.store.views.device_stats, alert.device_id)
        return {"alert": alert, "clips": heard, "no_clip": no_clip_reason(alert, stats)}

    def one(template: str) -> Any:
        async def handler(request: Request) -> Response:
            context = await alert_context(request.path_params["alert_id"])
            if context is None:
                return site.render(request, "missing.html", {"what": "that alert"}, 404)
            return site.render(request, template, context)
        return handler

    def action(name: str) -> Any:
        async def handler(request: Request) -> Response:
            form, user = await site.check_form(request)
            if user is None:
                raise Forbidden(f"log in to {name} an alert: who did it is recorded")
            note = str(form.get("note", ""))[:NOTE_MAX]
            actions = site.store.actions
            do = actions.acknowledge if name == "acknowledge" else actions.resolve
            if not await run_in_threadpool(do, request.path_params["alert_id"], user, note):
                return site.render(request, "missing.html", {"what": "that alert"}, 404)
            return RedirectResponse(safe_back(form, "/alerts"), 303)
        return handler

    async def acknowledge_technical(request: Request) -> Response:
        """The technical alarms the page showed, no more: one that arrived after the nurse
        confirmed is still unseen."""
        form, user = await site.check_form(request)
        if user is None:
            raise Forbidden("log in to acknowledge alarms: who did it is recorded")
        ids = [str(i) for i in form.getlist("alert_id")][:1000]
        await run_in_threadpool(site.store.actions.acknowledge_technical, ids, user,
                                "acknowledged with every technical alarm on the ward")
        return RedirectResponse(safe_back(form, "/ward"), 303)

    return [Route("/alerts", page), Route("/fragments/alerts", fragment),
            Route("/alerts/ack-technical", acknowledge_technical, methods=["POST"]),
            Route("/alerts/{alert_id}", one("alert.html")),
            Route("/fragments/alerts/{alert_id}", one("_alert.html")),
            Route("/alerts/{alert_id}/ack", action("acknowledge"), methods=["POST"]),
            Route("/alerts/{alert_id}/resolve", action("resolve"), methods=["POST"])]

