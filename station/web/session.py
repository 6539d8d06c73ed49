"""Logging in and out (auth: users). With auth: proxy the proxy says who; with none, the
station is read-only."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from station import auth


def routes(site: Any) -> list[Route]:
    async def login(request: Request) -> Response:
        if request.method == "GET":
            return site.render(request, "login.html", {"error": None})
        form, _ = await site.check_form(request)
        user = None
        if site.cfg.web.auth == "users":
            user = auth.find_user(site.cfg.web.users, str(form.get("name", "")),
                                  str(form.get("password", "")))
        if user is None:
            return site.render(request, "login.html",
                               {"error": "unknown name or wrong password"}, 401)
        request.session.clear()
        request.session["user"] = user.name
        return RedirectResponse("/ward", 303)

    async def logout(request: Request) -> Response:
        await site.check_form(request)
        request.session.clear()
        return RedirectResponse("/ward", 303)

    return [Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"])]
