"""What the daemon measures of itself, in bounded memory: a process meant to run for months.

Inference times go into a fixed ring (the last `RING` cycles), so the percentiles describe the
recent past and memory never grows; CPU is measured between two snapshots; RSS is read from
/proc. `snapshot()` is the `stats` message.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np

from edge.delivery.wire import Stats
from edge.pipeline.signal_path import PathStats

RING = 4096  # inference times kept: about an hour of breathing at one cycle per second


class InferenceTimes:
    def __init__(self, size: int = RING) -> None:
        self._ms = np.zeros(size)
        self._n = 0

    def add(self, ms: float) -> None:
        self._ms[self._n % len(self._ms)] = ms
        self._n += 1

    def percentile(self, q: float) -> float | None:
        if not self._n:
            return None
        return round(float(np.percentile(self._ms[:min(self._n, len(self._ms))], q)), 3)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class DaemonStats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.inference = InferenceTimes()
        self.dropped_blocks = 0
        self._cpu = (time.monotonic(), cpu_seconds())

    def snapshot(self, path: PathStats, *, queue_depth: int, spool_depth: int,
                 spool_in_memory: int, spool_dropped: int, spool_fault: str | None,
                 spool_stranded: int, clips_sent: int, clips_dropped: int, runtime: str,
                 source: str, source_counters: dict[str, int]) -> Stats:
        now, cpu = time.monotonic(), cpu_seconds()
        cpu_percent = 100 * (cpu - self._cpu[1]) / max(now - self._cpu[0], 1e-9)
        self._cpu = (now, cpu)
        return Stats(
            uptime_s=round(now - self.started, 1), audio_s=round(path.audio_s, 1),
            cycles=path.cycles, forced_cuts=path.forced_cuts, gaps=path.gaps,
            gap_s=round(path.gap_s, 3), gap_reasons=dict(path.gap_reasons),
            restarts=path.restarts, dropped_blocks=self.dropped_blocks,
            queue_depth=queue_depth, spool_depth=spool_depth, spool_in_memory=spool_in_memory,
            spool_dropped=spool_dropped, spool_fault=spool_fault, spool_stranded=spool_stranded,
            cpu_percent=round(cpu_percent, 1), rss_mb=round(rss_mb(), 1),
            inference_ms_p50=self.inference.percentile(50),
            inference_ms_p99=self.inference.percentile(99), clips_sent=clips_sent,
            clips_dropped=clips_dropped, runtime=runtime, source=source,
            source_counters=source_counters)
