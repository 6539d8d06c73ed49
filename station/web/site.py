"""What every page of the station shares: the config, the store, the templates and their
filters, who is logged in, the CSRF check.

Pages are rendered on the server with Jinja2, whose autoescaping is the one path anything a
device sent takes to the page.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from station import alarms, auth
from station.charts import local_time
from station.config import StationConfig
from station.liveness import Liveness
from station.store import Store

HERE = Path(__file__).parent
VERDICT_CHOICES = ("normal", "crackle", "wheeze", "both", "not_a_breath")


class Site:
    """What the routes share: the config, the store, the templates."""

    def __init__(self, cfg: StationConfig, store: Store, liveness: Liveness) -> None:
        self.cfg = cfg
        self.store = store
        self.liveness = liveness
        # a misspelt field is an error, not empty text on a ward screen
        self.templates = Jinja2Templates(env=jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
            undefined=jinja2.StrictUndefined))
        env = self.templates.env
        env.filters |= {"clock": clock, "ago": ago, "pct": pct, "q": quote_path,
                        "evidence": evidence, "short": short, "happened": happened,
                        "detail": detail}
        env.globals |= {"alarms": alarms, "verdict_choices": VERDICT_CHOICES}
        self.throttle = auth.Throttle()

    def user(self, request: Request) -> str | None:
        """Who is logged in: the proxy's word (from a trusted proxy only), or the login the
        session's token names, if it has not ended or expired."""
        web = self.cfg.web
        if web.auth == "proxy":
            peer = request.client.host if request.client else None
            if not auth.trusted(web, peer):  # the direct peer only: never a forwarded one
                return None
            return str(request.headers.get(web.proxy_user_header, "")).strip()[:200] or None
        token = request.session.get("login")
        if web.auth != "users" or not token:
            return None
        return self.store.logins.logged_in(str(token), time.time(), web.session_idle_min * 60,
                                    web.session_max_h * 3600)

    def render(self, request: Request, name: str, context: dict[str, Any],
               status: int = 200) -> Response:
        now = time.time()
        # the page's live updates start after the change current when its request began
        # (app.page_since), before its data was read: nothing stored meanwhile is missed
        since = request.state.since
        failed = self.store.deliveries.failures_since(now - 3600) if self.cfg.routing.rules else 0
        user = self.user(request)
        # what the alarm sound follows, on every page someone may read
        readable = user is not None or not self.cfg.web.read_needs_login
        return self.templates.TemplateResponse(request, name, {
            "now": now, "user": user, "auth": self.cfg.web.auth,
            "csrf": auth.csrf_token(request.session), "failed_deliveries": failed,
            "station_problem": self.liveness.problem(),
            "station_troubles": self.liveness.troubles(), "since": since,
            "alarm_state": self.store.views.unseen_alarms() if readable else None, **context},
            status_code=status)

    async def check_form(self, request: Request) -> tuple[Any, str | None]:
        """The form of a state-changing request, once its CSRF token is checked; and who sent
        it (None: nobody is logged in)."""
        form = await request.form()
        token = form.get("csrf") or request.headers.get("x-csrf-token")
        if not auth.csrf_ok(request.session, str(token) if token else None):
            raise Forbidden("the page was stale or came from elsewhere: reload it and try "
                            "again")
        return form, self.user(request)

    def model(self) -> Path:
        """The model package `analyse a recording` uses (checked here; loaded by each
        analysis's own process)."""
        from edge.pipeline.model import ModelError, load_manifest, shipped_model

        path = self.cfg.model or shipped_model()
        if path is None:
            raise Forbidden("no model package: set `model:` in the station config")
        try:
            load_manifest(Path(path))
        except ModelError as exc:
            raise Forbidden(f"model: {exc}") from None
        return Path(path)



class Forbidden(Exception):
    """A request the station refuses, with what to do about it."""


def clock(t: float | None, today: float | None = None) -> str:
    """A time as the station's clock shows it, with its date when it is not today."""
    return local_time(t, time.time() if today is None else today) if t else "–"


def ago(t: float | None, now: float) -> str:
    if not t:
        return "never"
    s = max(0, int(now - t))
    return (f"{s} s ago" if s < 90 else f"{s // 60} min ago" if s < 5400
            else f"{s // 3600} h ago" if s < 172800 else f"{s // 86400} days ago")


def evidence(e: dict[str, Any]) -> str:
    """An alert's evidence as a person reads it."""
    if {"cycles", "window_cycles", "fraction"} <= set(e):
        counted = (f"{e['cycles']} of the last {e['window_cycles']} cycles ({pct(e['fraction'])})"
                   + (f", {e['total_cycles']} in all" if "total_cycles" in e else ""))
        return f"{e['reason']} ({counted} not judged)" if e.get("reason") else counted
    if "silent_s" in e:
        return f"silent for {e['silent_s']:.0f} s" if e["silent_s"] else "audio again"
    if "no_cycle_s" in e:
        return (f"sound for {e['no_cycle_s']:.0f} s but no breathing found (hiss, rubbing, off "
                "the chest?)" if e["no_cycle_s"] else "breathing found again")
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in e.items())


HAPPENED = {"new": "opened", "update": "more evidence", "escalate": "escalated",
            "end": "ended", "ack": "acknowledged", "resolve": "resolved"}
ENDED = {"cleared": "ended: no longer heard", "auscultation_ended":
         "ended: the auscultation ended (no breathing heard; nobody hears the patient now)",
         "shutdown": "ended: the device stopped", "end_of_stream": "ended: the recording ended"}


def happened(entry: Any) -> str:
    """An alert's history entry's event in words: why it ended, how many updates a line of
    "more evidence" stands for."""
    detail = entry.detail or {}
    if entry.event == "end":
        return ENDED.get(detail.get("end_reason", ""), "ended")
    if entry.event == "update" and detail.get("updates", 1) > 1:
        return f"more evidence ({detail['updates']} updates, the latest shown)"
    return HAPPENED.get(entry.event, entry.event)


def detail(d: dict[str, Any] | None) -> str:
    """A history entry's detail in words: the evidence as the alert shows it, or the note."""
    if not d:
        return ""
    if set(d) == {"note"}:
        return f"“{d['note']}”"
    return evidence(d)


def short(text: str, n: int) -> str:
    """Device-supplied text cut for display (a 5,000-character status reason made the ward
    23,708 px tall); the whole of it goes in the element's title and on the device page."""
    return text if len(text) <= n else text[:n - 1] + "…"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def quote_path(s: str) -> str:
    """A device or alert id inside a URL path (it may hold any character but '/')."""
    return quote(s, safe="")
