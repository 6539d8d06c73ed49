"""A device input that was not there when the daemon started (the stethoscope unplugged at
boot, the sound card not yet enumerated): the daemon starts all the same, says why it hears
nothing, and opens the input as soon as it can, instead of exiting into a restart loop that
systemd ends by giving up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from edge.sources.base import AudioBlock, AudioSource, SourceError, reopen_with_backoff

log = logging.getLogger(__name__)


class WaitingSource:
    def __init__(self, open_: Callable[[], AudioSource], sample_rate: int, what: str,
                 error: SourceError, backoff_max_s: float) -> None:
        self._open = open_
        self.sample_rate = sample_rate
        self.live = True
        self.what = what
        self.problem = str(error)  # "" once the input is open
        self.backoff_max_s = backoff_max_s
        self._source: AudioSource | None = None
        self._stop = threading.Event()
        log.error("%s: %s; waiting for it", what, error)

    def describe(self) -> str:
        return self._source.describe() if self._source else f"{self.what} (not open yet)"

    def counters(self) -> dict[str, int]:
        return self._source.counters() if self._source else {}

    def show_alert(self) -> bool:
        """The input's own, once it is open: a stethoscope plugged in after the daemon started
        blinks its LED like one that was there from the start (it never did)."""
        return self._source.show_alert() if self._source else False

    def blocks(self) -> Iterator[AudioBlock]:
        def attempt() -> None:
            try:
                self._source = self._open()
            except SourceError as exc:
                self.problem = str(exc)
                raise

        if not reopen_with_backoff(attempt, self._stop, what=self.what, first_s=1.0,
                                   max_s=self.backoff_max_s, errors=(SourceError,)):
            return
        assert self._source is not None
        log.info("%s is there now: %s", self.what, self._source.describe())
        self.problem = ""
        if self._source.sample_rate != self.sample_rate:
            raise SourceError(f"{self.what} opened at {self._source.sample_rate} Hz, not the "
                              f"configured {self.sample_rate} Hz")
        yield from self._source.blocks()

    def close(self) -> None:
        self._stop.set()
        if self._source is not None:
            self._source.close()
