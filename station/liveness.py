"""Whether the station's own workers are alive, for everyone who must know when one is not.

Ingest, the sweep that raises offline alarms, and routing run in threads beside the web UI. A
thread that dies took the station's monitoring with it while every page still looked fine (a
green "live" badge, beds "online"). Each worker runs under `supervised`: if it ends with an
exception anyway (its own guards retry the faults they know), the reason is recorded here,
`/healthz` fails with it, every page shows it, and the process is asked to exit non-zero so
systemd restarts it.

A worker can also be alive and failing: a database that refuses writes (a full disk, a lock
held, a read-only file, PostgreSQL down) stops ingest while it retries, and a periodic job
(the sweep that finds silent devices, the purge) can fail pass after pass. Those are
*troubles*: reported the same way (`/healthz` 503 with the reason, a banner on every page, the
technician's page) for as long as they last, and cleared by the first success, without a
restart: nothing is acknowledged to the broker meanwhile, so nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Liveness:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failed: dict[str, str] = {}  # worker → why it stopped
        self._troubles: dict[str, tuple[float, str]] = {}  # job → since, why it fails
        self.on_failure: Callable[[], None] = lambda: None  # e.g. stop the web server

    def trouble(self, job: str, reason: str) -> None:
        """`job` fails now, for `reason` (kept since its first failure)."""
        with self._lock:
            since = self._troubles.get(job, (time.time(), ""))[0]
            self._troubles[job] = (since, reason)

    def cleared(self, job: str) -> None:
        with self._lock:
            self._troubles.pop(job, None)

    def troubles(self) -> str:
        """'' while every job works; else what fails, since when, and why."""
        with self._lock:
            return "; ".join(f"{j} failing since {time.strftime('%H:%M:%S', time.localtime(t))}"
                             f": {r}" for j, (t, r) in self._troubles.items())

    def stopped(self, worker: str, reason: str) -> None:
        with self._lock:
            self._failed[worker] = reason
        log.critical("%s stopped: %s; the station exits so that it is restarted", worker,
                     reason)

    def problem(self) -> str:
        """'' while every worker runs; else what stopped, and why."""
        with self._lock:
            return "; ".join(f"{w} stopped: {r}" for w, r in self._failed.items())


def supervised(name: str, work: Callable[[], None], liveness: Liveness,
               grace_s: float = 5.0) -> Callable[[], None]:
    """`work` as a thread's target that records its death in `liveness`; after `grace_s`
    (pages and /healthz say so meanwhile) the process is asked to exit."""

    def run() -> None:
        try:
            work()
        except Exception as exc:
            log.exception("%s died", name)
            liveness.stopped(name, f"{type(exc).__name__}: {str(exc)[:300]}")
            time.sleep(grace_s)
            liveness.on_failure()

    return run
