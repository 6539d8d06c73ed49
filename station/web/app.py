"""The station's web UI (Starlette): the routes of every resource, joined, and the security
around them.

The only script is our own static file: the Content Security Policy forbids inline scripts, so
an injected `<script>` could not run even if escaping failed. Pages update themselves live:
the script follows `/events` (server-sent events) and re-fetches the page's fragments when
something they show has changed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from station import auth
from station.config import StationConfig
from station.liveness import Liveness
from station.store import Store
from station.web import (
    alerts,
    analyse,
    clips,
    deliveries,
    devices,
    events,
    login,
    technician,
    ward,
)
from station.web.site import HERE, Forbidden, Site

OPEN = {"/login", "/logout", "/healthz"}  # what answers without a login, whatever the config
# Every request body but an upload to analyse (which counts its own against max_upload_mb) is a
# small form: an anonymous 1 GB multipart POST to /login wrote a 1,072 MB temporary file.
MAX_FORM_BYTES = 64 * 1024


class BodyLimit:
    """Refuses a request body over MAX_FORM_BYTES (413) before anything parses it: by its
    Content-Length, or, for a chunked body that has none, as its bytes arrive."""

    def __init__(self, app: Any, exempt: tuple[str, ...]) -> None:
        self.app, self.exempt = app, exempt

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
            await PlainTextResponse("request body too large", 413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_FORM_BYTES:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await PlainTextResponse("request body too large", 413)(scope, receive, send)


class BodyTooLarge(Exception):
    pass
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


async def security_headers(request: Request, call_next: Any) -> Response:
    response = await call_next(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def create_app(cfg: StationConfig, store: Store, liveness: Liveness | None = None
               ) -> Starlette:
    """`liveness`: the station's workers in this process (a web-only process has none)."""
    site = Site(cfg, store, liveness or Liveness())

    async def forbidden(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"refused: {exc}", status_code=403)

    async def health(request: Request) -> Response:
        """200 "ok", or 503 with the reason: a worker stopped, a job failing (the store
        refusing writes, the sweep), or a database this process cannot read (it answered a
        bare 500 when PostgreSQL was down)."""
        problems = [p for p in (site.liveness.problem(), site.liveness.troubles()) if p]
        try:
            await run_in_threadpool(site.store.views.latest_change)
        except Exception as exc:
            why = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
            problems.append(f"database unreachable: {why}")
        return PlainTextResponse("; ".join(problems), status_code=503) if problems \
            else PlainTextResponse("ok")

    routes = [
        Route("/", lambda r: RedirectResponse("/ward", 303)),
        *ward.routes(site), *devices.routes(site), *alerts.routes(site),
        *analyse.routes(site), *clips.routes(site), *deliveries.routes(site),
        *events.routes(site), *technician.routes(site),
        *login.routes(site),
        Route("/healthz", health),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    async def login_to_read(request: Request, call_next: Any) -> Response:
        """Patient audio and state are not public: with login_to_read, nothing but the login
        page, the health check and the static files answers anyone not logged in."""
        path = request.url.path
        if not cfg.web.read_needs_login or path in OPEN or path.startswith("/static/") \
                or await run_in_threadpool(site.user, request) is not None:
            return await call_next(request)
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"/login?next={quote(path, safe='/')}", 303)
        return PlainTextResponse("log in first", status_code=401)

    async def page_since(request: Request, call_next: Any) -> Response:
        """The change a page's live updates start after is the one current when the request
        began, before its data was read: taken after (as it was), a change stored while the
        page was being made was in neither the page nor its updates, and the ward could miss a
        device for good (a browser test caught it under load)."""
        if not request.url.path.startswith(("/static/", "/events", "/healthz")):
            request.state.since = await run_in_threadpool(site.store.views.latest_change)
        return await call_next(request)

    middleware = [
        Middleware(BodyLimit, exempt=("/analyse",)),
        Middleware(SessionMiddleware, secret_key=auth.session_secret(cfg.web.secret_file),
                   session_cookie="lungedge_station", same_site="strict",
                   https_only=cfg.web.secure_cookies, max_age=int(cfg.web.session_max_h * 3600)),
        Middleware(BaseHTTPMiddleware, dispatch=login_to_read),
        Middleware(BaseHTTPMiddleware, dispatch=security_headers),
        Middleware(BaseHTTPMiddleware, dispatch=page_since),
    ]
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={Forbidden: forbidden})
