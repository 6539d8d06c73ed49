"""`lungedge run`: the always-on service that wires source → signal path → model → tracker →
spool/MQTT, and keeps itself observable.

Capture runs in its own thread and never waits for processing or the network: it hands blocks
to a bounded queue and, if processing falls behind, drops and counts blocks (the loss reaches the
pipeline as a gap, so timestamps stay true). The processing loop is the only place the watchdog
is pinged. SIGTERM/SIGINT: stop capture, finish the cycles in flight, end the session, flush the
spool, publish `offline`, exit 0. SIGHUP: check the config file; if it is valid, shut down the
same way and re-execute with it (a log line says so), otherwise keep running and log why.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import Config, ConfigError, load_config
from edge.health import Notifier
from edge.model import RECORD, ModelRunner
from edge.payloads import iso_ms
from edge.pipeline import CycleFeatures, SignalPath
from edge.publisher import MqttPublisher
from edge.sources import open_source
from edge.sources.base import AudioBlock, SourceError
from edge.spool import Spool
from edge.tracker import CycleResult, Tracker, signal_quality

log = logging.getLogger(__name__)

_END = object()  # capture → processing: the source has ended
SILENCE_RMS = 10 ** (-70 / 20)  # a block this quiet counts as no audio


class Daemon:
    def __init__(self, cfg: Config, config_path: Path | None = None) -> None:
        if not cfg.model.path:
            raise ConfigError("model.path is required to run: the folder of a model package "
                              "(model.tflite + manifest.json)", key_path="model.path")
        self.cfg = cfg
        self.config_path = config_path
        self.runner = ModelRunner(cfg.model.path, cfg.model.num_threads)
        m = self.runner.manifest
        self.model_info = {"name": m.name, "version": m.version}
        self.spool = Spool(cfg.spool.path, cfg.spool.max_messages)
        self.publisher = MqttPublisher(cfg.mqtt, cfg.device_id, self.spool)
        self.tracker = Tracker(cfg.tracker, self.model_info, m.thresholds.get(RECORD))
        self.notifier = Notifier()
        self.source = open_source(cfg.source)
        self.path = SignalPath(self.source.sample_rate, m.frontend, cfg.segmenter)
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=cfg.queue_blocks)
        self.stop = threading.Event()
        self.reload_requested = False
        self.dropped_blocks = 0
        self.source_error = ""
        self.inference_ms: list[float] = []
        self.started = time.time()
        self.last_audio = time.time()
        self._reasons: list[str] = []
        self._reexec = False
        self.capture: threading.Thread | None = None
        self._cpu = (time.monotonic(), self._cpu_seconds())

    # -- capture thread ---------------------------------------------------------------------
    def _capture(self) -> None:
        lost_s = 0.0
        try:
            for block in self.source.blocks():
                if lost_s:
                    block = dataclasses.replace(block, gap_s=block.gap_s + lost_s,
                                                gap_reason=block.gap_reason or "processing "
                                                "overloaded: capture dropped blocks")
                try:
                    self.queue.put(block, block=not self.source.live)
                    lost_s = 0.0
                except queue.Full:
                    self.dropped_blocks += 1
                    lost_s += block.gap_s + block.duration_s
                if self.stop.is_set():
                    break
        except (SourceError, OSError) as exc:
            self.source_error = str(exc)
            log.error("audio source failed: %s", exc)
        finally:
            while True:
                try:
                    self.queue.put(_END, timeout=0.5)
                    break
                except queue.Full:
                    continue

    # -- processing loop --------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        self.publisher.start()
        self.capture = threading.Thread(target=self._capture, name="capture", daemon=True)
        self.capture.start()
        self.notifier.ready(f"running: {self.source.describe()}, model "
                            f"{self.model_info['name']} {self.model_info['version']}")
        log.info("running: %s → %s:%d (%s)", self.source.describe(), self.cfg.mqtt.host,
                 self.cfg.mqtt.port, self.runner.runtime)
        next_tick = time.monotonic()
        next_stats = time.monotonic() + self.cfg.mqtt.stats_interval_s
        stopping_since: float | None = None
        while True:
            try:
                item = self.queue.get(timeout=0.25)
            except queue.Empty:
                item = None
            if item is _END:
                break
            if isinstance(item, AudioBlock):
                self._process(item)
            if self.stop.is_set():
                self.source.close()  # capture ends; the loop drains the queue up to _END
                stopping_since = stopping_since or time.monotonic()
                if time.monotonic() - stopping_since > 2.0 and self.queue.empty():
                    # A source stuck in its driver (a USB device that stopped delivering
                    # without an error) must not keep the daemon from stopping.
                    log.warning("audio source did not stop within 2 s; shutting down anyway")
                    break
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + 1.0
                self._tick()
            if now >= next_stats:
                next_stats = now + self.cfg.mqtt.stats_interval_s
                self.publisher.publish("stats", self._stats())
        return self._shutdown()

    def _process(self, block: AudioBlock) -> None:
        if len(block.samples) and np.sqrt(np.mean(block.samples ** 2)) > SILENCE_RMS:
            self.last_audio = time.time()
        for c in self.path.process(block):
            self._cycle(c)
        self.notifier.watchdog()  # only here: after audio was actually processed

    def _cycle(self, c: CycleFeatures) -> None:
        t = time.perf_counter()
        pred = self.runner.predict(c.features)
        self.inference_ms.append((time.perf_counter() - t) * 1000)
        end = c.wall_start + c.duration_s
        result = CycleResult(c.wall_start, end, pred.label, pred.confidence,
                             signal_quality(c.cycle.samples, c.cycle.sample_rate))
        before, after = self.tracker.on_cycle(result)
        for kind, body in before:
            self.publisher.publish(kind, body)
        self.publisher.publish("cycle", {
            "session_id": self.tracker.session_id, "start": iso_ms(c.wall_start),
            "end": iso_ms(end), "duration_s": round(c.duration_s, 3), "label": pred.label,
            "probs": pred.probs, "confidence": round(pred.confidence, 4),
            "quality": result.quality, "forced_cut": c.cycle.forced_cut,
            "model": self.model_info,
            "latency_ms": round(max(0.0, time.time() - end) * 1000, 1)})
        for kind, body in after:
            self.publisher.publish(kind, body)

    def _tick(self) -> None:
        for kind, body in self.tracker.on_tick(time.time(), self.last_audio):
            self.publisher.publish(kind, body)
        reasons = []
        if self.tracker.active("no_audio") or self.source_error:
            reasons.append(self.source_error or "no audio")
        if not self.publisher.connected.is_set() and self.publisher.last_error:
            reasons.append("broker unreachable")
        if self.tracker.active("poor_signal"):
            reasons.append("poor signal")
        dropped = sum(self.spool.dropped().values())
        if dropped:
            reasons.append(f"spool full: {dropped} message(s) dropped")
        if reasons != self._reasons:
            self._reasons = reasons
            state = "degraded" if reasons else "online"
            log.log(logging.WARNING if reasons else logging.INFO, "status %s%s", state,
                    f": {'; '.join(reasons)}" if reasons else "")
            # The broker only ever hears a status while it is reachable, so that reason stays
            # local (log, systemd STATUS); the retained status carries the others.
            remote = [r for r in reasons if r != "broker unreachable"]
            self.publisher.set_status("degraded" if remote else "online", remote)
            self.notifier.status(f"{state}{': ' + '; '.join(reasons) if reasons else ''}")
        if self.reload_requested:
            self.reload_requested = False
            self._check_reload()

    def _stats(self) -> dict[str, Any]:
        ms = np.array(self.inference_ms[-10000:]) if self.inference_ms else None
        now, cpu = time.monotonic(), self._cpu_seconds()
        cpu_percent = 100 * (cpu - self._cpu[1]) / max(now - self._cpu[0], 1e-9)
        self._cpu = (now, cpu)
        s = self.path.stats
        return {
            "uptime_s": round(time.time() - self.started, 1), "audio_s": round(s.audio_s, 1),
            "cycles": s.cycles, "gaps": s.gaps, "gap_s": round(s.gap_s, 3),
            "dropped_blocks": self.dropped_blocks, "queue_depth": self.queue.qsize(),
            "spool_depth": self.spool.depth(), "spool_dropped": sum(self.spool.dropped().values()),
            "cpu_percent": round(cpu_percent, 1), "rss_mb": round(_rss_mb(), 1),
            "inference_ms_p50": round(float(np.percentile(ms, 50)), 3) if ms is not None
            else None,
            "inference_ms_p99": round(float(np.percentile(ms, 99)), 3) if ms is not None
            else None,
            "runtime": self.runner.runtime, "source": self.source.describe(),
            "source_counters": self.source.counters()}

    @staticmethod
    def _cpu_seconds() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    # -- signals and shutdown ---------------------------------------------------------------
    def _on_stop(self, signum: int, frame: Any) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        self.stop.set()

    def _on_hup(self, signum: int, frame: Any) -> None:
        self.reload_requested = True

    @property
    def capture_stuck(self) -> bool:
        """The capture thread is still blocked in its source's read after shutdown."""
        return self.capture is not None and self.capture.is_alive()

    def _check_reload(self) -> None:
        if self.config_path is None:
            log.warning("SIGHUP ignored: no config file to reload")
            return
        try:
            load_config(self.config_path)
        except ConfigError as exc:
            log.error("SIGHUP: new config rejected, keeping the running one: %s", exc)
            return
        log.info("SIGHUP: config %s is valid; restarting cleanly with it", self.config_path)
        self.stop.set()
        self._reexec = True

    def _shutdown(self) -> int:
        self.notifier.stopping()
        for c in self.path.flush():
            self._cycle(c)
        for kind, body in self.tracker.close(time.time()):
            self.publisher.publish(kind, body)
        self.publisher.publish("stats", self._stats())
        if not self.publisher.flush(timeout_s=10):
            log.warning("%d message(s) not yet acknowledged stay in the spool for next time",
                        self.spool.depth())
        self.publisher.close("offline", "shutdown")
        self.spool.close()
        log.info("stopped")
        if self._reexec:
            os.execv(sys.executable, [sys.executable, "-m", "edge", *sys.argv[1:]])
        return 0 if not self.source_error else 1


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
