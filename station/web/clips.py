"""The audio behind an alert: played in the page (an audio element) beside its spectrogram, and
what a clinician says it is (confirmed, or corrected), kept with who and when."""

from __future__ import annotations

import functools
import io
import time

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from station.web.site import VERDICT_CHOICES, Forbidden, Site

MEDIA = {"flac": "audio/flac", "wav": "audio/wav"}
# What a clinician may say a clip is: one of the model's labels, or no breath at all.
VERDICTS = VERDICT_CHOICES


def decode(encoding: str, audio: bytes) -> np.ndarray:
    import soundfile

    samples, _ = soundfile.read(io.BytesIO(audio), dtype="float32")
    return samples


@functools.lru_cache(maxsize=64)
def spectrogram(encoding: str, rate: int, audio: bytes, label: str) -> bytes:
    from edge.pipeline.plot import pyplot

    plt = pyplot()
    samples = decode(encoding, audio)
    fig, ax = plt.subplots(figsize=(6, 2.4))
    ax.specgram(samples, NFFT=256, Fs=rate, noverlap=192, cmap="magma")
    ax.set_ylim(0, rate / 2)
    ax.set_xlabel("seconds")
    ax.set_ylabel("Hz")
    ax.set_title(f"the device heard: {label}", fontsize=9)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()


def routes(site: Site) -> list[Route]:
    async def audio(request: Request) -> Response:
        clip = await run_in_threadpool(site.store.views.clip_audio, request.path_params["clip_id"])
        if clip is None:
            return Response(status_code=404)
        return Response(clip[2], media_type=MEDIA[clip[0]],
                        headers={"Cache-Control": "private, max-age=86400"})

    async def picture(request: Request) -> Response:
        clip = await run_in_threadpool(site.store.views.clip_audio, request.path_params["clip_id"])
        if clip is None:
            return Response(status_code=404)
        png = await run_in_threadpool(spectrogram, *clip)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400"})

    async def verdict(request: Request) -> Response:
        form, user = await site.check_form(request)
        if user is None:
            raise Forbidden("log in to judge a clip: who said so is recorded with it")
        said = str(form.get("verdict", ""))
        if said not in VERDICTS:
            raise Forbidden(f"a verdict is one of {', '.join(VERDICTS)}")
        if not await run_in_threadpool(site.store.actions.record_verdict,
                                       request.path_params["clip_id"], said, user, time.time()):
            return site.render(request, "missing.html", {"what": "that clip"}, 404)
        back = str(form.get("back", "/alerts"))
        return RedirectResponse(back if back.startswith("/") and not back.startswith("//")
                                else "/alerts", 303)

    return [Route("/clips/{clip_id}/verdict", verdict, methods=["POST"]),
            Route("/clips/{clip_id}/audio", audio),
            Route("/clips/{clip_id}/spectrogram.png", picture)]
