"""Analyse a recording: upload a WAV or FLAC, get the per-cycle table, every session's summary
and the plot, from the device's own analysis path (edge.cli.classify).

It must never take the station down: a 46 MB WAV took it to 4.8 GB and a 1.1 MB FLAC of two
hours of silence to 6.7 GB (the unit's MemoryMax is 1 GB: five uploads stopped ingest). So it
needs a login, counts the upload's bytes as they arrive, reads the recording's length from its
header before decoding any of it, streams it through the analysis path with a plot of bounded
size, and runs one analysis at a time, in a process of its own that ends with it: the model,
the plotting library and what the analysis allocated go back to the system (sixteen analyses
in the station's own process left it at 410–506 MB).
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from edge.pipeline.tracker import TrackerConfig
from edge.sources.audio_file import open_audio
from edge.sources.base import SourceError
from station.web.site import Site

SUFFIXES = (".wav", ".wave", ".flac")


def analyse_file(model: Path, path: Path, name: str) -> dict[str, Any]:
    """The recording's report, with its plot inline (run in the analysis's own process)."""
    from edge.pipeline.model import ModelRunner
    from edge.pipeline.recording import analyse_recording
    from edge.sources.file import FileSource

    plot = path.with_suffix(".png")
    report = analyse_recording(name, FileSource(path), ModelRunner(model), TrackerConfig(),
                               plot=plot)
    report["plot"] = "data:image/png;base64," + base64.b64encode(plot.read_bytes()).decode()
    return report


def in_its_own_process(model: Path, path: Path, name: str) -> dict[str, Any]:
    """analyse_file in a fresh process that exits when it is done."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        return pool.submit(analyse_file, model, path, name).result()


class TooLarge(Exception):
    pass


def capped(request: Request, limit: int) -> Request:
    """The request with its body counted as it arrives: past `limit` bytes it stops, whether
    or not a Content-Length said so (a chunked upload has none)."""
    received = 0
    receive = request.receive

    async def counting() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise TooLarge
        return message

    return Request(request.scope, counting)


def routes(site: Site) -> list[Route]:
    one_at_a_time = asyncio.Lock()  # an analysis uses a core: never two at once

    async def page(request: Request) -> Response:
        if request.method == "GET":
            return site.render(request, "analyse.html", {"report": None, "error": None})
        web = site.cfg.web
        if web.auth != "none" and site.user(request) is None:
            return site.render(request, "analyse.html", {"report": None, "error":
                               "log in to analyse a recording"}, 401)
        limit = int(web.max_upload_mb * 1e6)
        if int(request.headers.get("content-length", 0) or 0) > limit + 100_000:
            return too_large(site, request)
        if one_at_a_time.locked():
            return site.render(request, "analyse.html", {"report": None, "error":
                               "another recording is being analysed: try again in a "
                               "minute"}, 503)
        async with one_at_a_time:
            request = capped(request, limit + 100_000)
            try:
                async with request.form(max_part_size=limit) as form:
                    await site.check_form(request)  # the same (cached) form: its CSRF token
                    return await analyse_upload(site, request, form)
            except TooLarge:
                return too_large(site, request)

    return [Route("/analyse", page, methods=["GET", "POST"])]


def too_large(site: Site, request: Request) -> Response:
    return site.render(request, "analyse.html", {"report": None, "error": "the recording is "
                       f"over {site.cfg.web.max_upload_mb:g} MB"}, 413)


async def analyse_upload(site: Site, request: Request, form: Any) -> Response:
    upload = form.get("recording")
    name = Path(getattr(upload, "filename", "") or "").name
    if not name or Path(name).suffix.lower() not in SUFFIXES:
        return site.render(request, "analyse.html", {"report": None, "error":
                           "choose a WAV or FLAC recording"}, 400)
    with tempfile.TemporaryDirectory(prefix="station-analyse-") as tmp:
        path = Path(tmp) / f"upload{Path(name).suffix.lower()}"
        with path.open("wb") as out:  # in chunks: the upload is never whole in memory
            while chunk := await upload.read(1 << 20):
                out.write(chunk)
        try:
            longest = site.cfg.web.max_analyse_min
            minutes = open_audio(path).duration_s / 60
            if minutes > longest:
                raise ValueError(f"{name} is {minutes:.0f} minutes long; this station "
                                 f"analyses up to {longest:g} (web.max_analyse_min)")
            report = await run_in_threadpool(in_its_own_process, site.model(), path, name)
        except (SourceError, ValueError) as exc:
            return site.render(request, "analyse.html", {
                "report": None, "error": str(exc).replace(str(path), name)}, 400)
    return site.render(request, "analyse.html", {"report": report, "error": None})
