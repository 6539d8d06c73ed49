"""Logging in and out (auth: users): throttled, and a login that logout (or idleness) ends for
good. With auth: proxy a trusted proxy says who; with none, the station is read-only."""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from station import auth
from station.web.site import Site


def routes(site: Site) -> list[Route]:
    async def login(request: Request) -> Response:
        if request.method == "GET":
            return site.render(request, "login.html", {"error": None})
        form, _ = await site.check_form(request)
        name = str(form.get("name", ""))[:200]
        address = auth.client_address(site.cfg.web, request)
        now = time.time()
        wait = site.throttle.wait_s(name, address, now)
        if wait:
            return site.render(request, "login.html", {
                "error": f"too many wrong passwords: try again in {wait:.0f} s"}, 429)
        user = None
        if site.cfg.web.auth == "users":
            user = await run_in_threadpool(auth.find_user, site.cfg.web.users, name,
                                           str(form.get("password", "")))
        if user is None:
            site.throttle.failed(name, address, now)
            return site.render(request, "login.html",
                               {"error": "unknown name or wrong password"}, 401)
        site.throttle.succeeded(name, address)
        request.session.clear()
        request.session["login"] = await run_in_threadpool(site.store.logins.login, user.name, now)
        target = str(request.query_params.get("next", "/ward"))
        return RedirectResponse(target if target.startswith("/") and not target.startswith(
            "//") else "/ward", 303)

    async def logout(request: Request) -> Response:
        await site.check_form(request)
        token = request.session.get("login")
        if token:
            await run_in_threadpool(site.store.logins.logout, str(token), time.time())
        request.session.clear()
        return RedirectResponse("/ward", 303)

    return [Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"])]
