"""The alert inbox: open alerts by attention, priority and age; acknowledge and resolve."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from station.web.site import Forbidden

NOTE_MAX = 500


def routes(site: Any) -> list[Route]:
    async def page(request: Request) -> Response:
        return site.render(request, "alerts.html", {
            "inbox": await run_in_threadpool(site.store.inbox)})

    async def fragment(request: Request) -> Response:
        return site.render(request, "_alerts.html", {
            "inbox": await run_in_threadpool(site.store.inbox)})

    async def detail(request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        alert = await run_in_threadpool(site.store.alert, alert_id)
        if alert is None:
            return site.render(request, "missing.html", {"what": "that alert"}, 404)
        heard = await run_in_threadpool(lambda: site.store.clips_of(alert_id=alert_id))
        return site.render(request, "alert.html", {"alert": alert, "clips": heard})

    def action(name: str) -> Any:
        async def handler(request: Request) -> Response:
            form, user = await site.check_form(request)
            if user is None:
                raise Forbidden(f"log in to {name} an alert: who did it is recorded")
            note = str(form.get("note", ""))[:NOTE_MAX]
            do = site.store.acknowledge if name == "acknowledge" else site.store.resolve
            if not await run_in_threadpool(do, request.path_params["alert_id"], user, note):
                return site.render(request, "missing.html", {"what": "that alert"}, 404)
            back = str(form.get("back", "/alerts"))
            return RedirectResponse(back if back.startswith("/") and not back.startswith("//")
                                    else "/alerts", 303)
        return handler

    return [Route("/alerts", page), Route("/fragments/alerts", fragment),
            Route("/alerts/{alert_id}", detail),
            Route("/alerts/{alert_id}/ack", action("acknowledge"), methods=["POST"]),
            Route("/alerts/{alert_id}/resolve", action("resolve"), methods=["POST"])]
