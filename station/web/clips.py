"""The audio behind an alert: played in the page (an audio element) beside its spectrogram."""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MEDIA = {"flac": "audio/flac", "wav": "audio/wav"}


def decode(encoding: str, audio: bytes) -> np.ndarray:
    import soundfile

    samples, _ = soundfile.read(io.BytesIO(audio), dtype="float32")
    return samples


@functools.lru_cache(maxsize=64)
def spectrogram(encoding: str, rate: int, audio: bytes, label: str) -> bytes:
    from edge.plot import pyplot

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


def routes(site: Any) -> list[Route]:
    async def audio(request: Request) -> Response:
        clip = await run_in_threadpool(site.store.clip_audio, request.path_params["clip_id"])
        if clip is None:
            return Response(status_code=404)
        return Response(clip[2], media_type=MEDIA[clip[0]],
                        headers={"Cache-Control": "private, max-age=86400"})

    async def picture(request: Request) -> Response:
        clip = await run_in_threadpool(site.store.clip_audio, request.path_params["clip_id"])
        if clip is None:
            return Response(status_code=404)
        png = await run_in_threadpool(spectrogram, *clip)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400"})

    return [Route("/clips/{clip_id}/audio", audio),
            Route("/clips/{clip_id}/spectrogram.png", picture)]
