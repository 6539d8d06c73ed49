"""Analyse a recording: upload a WAV or FLAC, get the per-cycle table, every session's summary
and the plot, from the device's own analysis path (edge.classify)."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.config import Config
from edge.sources.base import SourceError

SUFFIXES = (".wav", ".wave", ".flac")


def analyse_file(site: Any, path: Path, name: str) -> dict[str, Any]:
    from edge.classify import classify_source
    from edge.sources.file import FileSource

    plot = path.with_suffix(".png")
    report = classify_source(name, FileSource(path), site.runner(), Config(), plot=plot,
                             quiet=True)
    report["plot"] = "data:image/png;base64," + base64.b64encode(plot.read_bytes()).decode()
    return report


def routes(site: Any) -> list[Route]:
    async def page(request: Request) -> Response:
        if request.method == "GET":
            return site.render(request, "analyse.html", {"report": None, "error": None})
        limit = int(site.cfg.web.max_upload_mb * 1e6)
        if int(request.headers.get("content-length", 0)) > limit + 100_000:
            return site.render(request, "analyse.html", {"report": None, "error":
                               f"the recording is over {site.cfg.web.max_upload_mb:g} MB"}, 413)
        async with request.form(max_part_size=limit) as form:
            await site.check_form(request)  # the same (cached) form: its CSRF token
            upload = form.get("recording")
            name = Path(getattr(upload, "filename", "") or "").name
            if not name or Path(name).suffix.lower() not in SUFFIXES:
                return site.render(request, "analyse.html", {"report": None, "error":
                                   "choose a WAV or FLAC recording"}, 400)
            with tempfile.TemporaryDirectory(prefix="station-analyse-") as tmp:
                path = Path(tmp) / f"upload{Path(name).suffix.lower()}"
                path.write_bytes(await upload.read())
                try:
                    report = await run_in_threadpool(analyse_file, site, path, name)
                except (SourceError, ValueError) as exc:
                    return site.render(request, "analyse.html", {
                        "report": None, "error": str(exc).replace(str(path), name)}, 400)
        return site.render(request, "analyse.html", {"report": report, "error": None})

    return [Route("/analyse", page, methods=["GET", "POST"])]
