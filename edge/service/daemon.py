"""`lungedge run`: the always-on service. It wires source → analysis path → publisher, and keeps
itself observable (health, stats, systemd).

Capture runs in its own thread and never waits for processing or the network: it hands blocks
to a bounded queue and, if processing falls behind, drops and counts blocks (the loss reaches the
analysis path as a gap, so timestamps stay true). The processing loop is the only place the
watchdog is pinged. SIGTERM/SIGINT: stop capture, finish the cycles in flight, end the session,
flush the spool, publish `offline`, exit 0. SIGHUP: check the config file; if it is valid, shut
down the same way and re-execute with it (a log line says so), otherwise keep running and log
why.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

from edge.delivery import homeassistant
from edge.delivery.clips import ClipMaker
from edge.delivery.encode import alert_body, cycle_body, summary_body
from edge.delivery.publisher import Publisher, open_publisher
from edge.delivery.wire import ModelRef, RunningModel
from edge.loader import ConfigError
from edge.pipeline.analysis import Analysis, ClassifiedCycle, Event
from edge.pipeline.model import ModelError, ModelRunner, sha256_of
from edge.pipeline.self_test import self_test
from edge.pipeline.tracker import AlertChanged, SessionEnded
from edge.service import logs
from edge.service.config import Config, load_config
from edge.service.health import Change, Health, Observation
from edge.service.model_store import ModelStore, package_to_run
from edge.service.stats import DaemonStats
from edge.service.systemd import Notifier
from edge.sources import open_source
from edge.sources.base import AudioBlock, SourceError

log = logging.getLogger(__name__)

_END = object()  # capture → processing: the source has ended


class Daemon:
    """The always-on service around one analysis: it keeps capture, processing and delivery
    apart so none can stall another, and says how each is doing (health, stats, systemd)."""

    def __init__(self, cfg: Config, config_path: Path | None = None,
                 publisher: Publisher | None = None) -> None:
        """`publisher`: delivery (default: MQTT through the spool); tests give their own."""
        # model.path pins a package; else the store's current one (on trial after an install),
        # else the one that ships
        self.store = ModelStore(Path(cfg.model.store)) if cfg.model.path is None else None
        if self.store is not None and (why := self.store.run_begins()):
            back = self.store.rollback(why)
            log.error("model: back to %s from %s: %s", back.current, back.previous, why)
        path = package_to_run(cfg.model.path, ModelStore(Path(cfg.model.store)))
        if path is None:
            raise ConfigError("no model package: give model.path (the folder of a package: "
                              "manifest.json + its .tflite files); none ships beside this "
                              "installation", key_path="model.path")
        self.cfg = cfg
        self.config_path = config_path
        self.config_text = config_path.read_text() if config_path else None
        self.package = Path(path)
        self.runner = ModelRunner(path, cfg.model.num_threads, cfg.model.calibration,
                                  trusted_keys=cfg.model.trusted_keys)
        if not cfg.model.trusted_keys:
            log.info("the model package's signature is not checked (model.trusted_keys is "
                     "empty): any package at model.path runs")
        m = self.runner.manifest
        self.model = ModelRef(m.name, m.version)
        active = self.store.active() if self.store else None
        self.running = self._running(
            active.why if active else "pinned by model.path" if cfg.model.path
            else "the package that ships with lungedge")
        ha = cfg.homeassistant
        self.publisher: Publisher = publisher or open_publisher(
            cfg.mqtt, cfg.spool, device_id=cfg.device_id, model=self.running,
            birth_topic=homeassistant.birth_topic(ha) if ha.enabled else None,
            breathing_pause_s=cfg.tracker.session_silence_s)
        self.source = open_source(cfg.source, wait=True)
        self.analysis = Analysis(self.source.sample_rate, self.runner, cfg.tracker)
        self.clips = ClipMaker(cfg.clips, self.analysis.clock)
        self._last_cycle: ClassifiedCycle | None = None
        self.health = Health()
        self.stats = DaemonStats()
        self.notifier = Notifier()
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=cfg.queue_blocks)
        self.stop = threading.Event()
        self.reload_requested = False
        self.source_error = ""
        self._reexec = False
        self.capture: threading.Thread | None = None
        self._trial_dropped = 0  # capture's dropped blocks when the model's trial began
        # when the running package's trial ends (wall clock; None: not on trial), held here so
        # the once-a-second check reads no file
        self._trial_ends = self.store.trial_ends(cfg.model.watch_s) if self.store else None

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
                    self.stats.dropped_blocks += 1
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
        repeats = logs.install(self.cfg.log_repeat_s)
        try:
            return self._run(repeats)
        finally:
            logs.uninstall(repeats)

    def _run(self, repeats: logs.RepeatFilter) -> int:
        if self.cfg.homeassistant.enabled:
            for name, payload in homeassistant.discovery(
                    self.cfg.homeassistant, self.cfg.mqtt.topic_prefix, self.cfg.device_id,
                    self.model).items():
                self.publisher.retain(name, payload)
            self._home_assistant_state()
        self.publisher.start()
        self.capture = threading.Thread(target=self._capture, name="capture", daemon=True)
        self.capture.start()
        self.notifier.ready(f"running: {self.source.describe()}, model {self.model.name} "
                            f"{self.model.version}")
        log.info("running: %s → %s:%d (%s)", self.source.describe(), self.cfg.mqtt.host,
                 self.cfg.mqtt.port, self.runner.runtime)
        now = time.monotonic()
        next_tick, next_stats, last_block = now, now + self.cfg.mqtt.stats_interval_s, now
        next_summaries = now + 60
        stopping_since: float | None = None
        ended = False
        while True:
            try:
                item = self.queue.get(timeout=0.25)
            except queue.Empty:
                item = None
            now = time.monotonic()
            if item is _END:
                ended = not self.stop.is_set()
                break
            if isinstance(item, AudioBlock):
                self._handle(self.analysis.process(item))
                last_block = now
                self.notifier.watchdog()  # only here: after audio was actually processed
            elif self.source.live and now - last_block >= 1.0:
                # a live source that delivers nothing: time passes all the same (no_audio)
                self._handle(self.analysis.idle(now - last_block))
            if self.stop.is_set():
                self.source.close()  # capture ends; the loop drains the queue up to _END
                stopping_since = stopping_since or now
                if now - stopping_since > 2.0 and self.queue.empty():
                    # A source stuck in its driver (a USB device that stopped delivering
                    # without an error) must not keep the daemon from stopping.
                    log.warning("audio source did not stop within 2 s; shutting down anyway")
                    break
            if now >= next_tick:
                next_tick = now + 1.0
                self._observe()
            if now >= next_summaries:  # what the log held back, summarised
                next_summaries = now + 60
                logs.write(repeats.summaries())
            if now >= next_stats:
                next_stats = now + self.cfg.mqtt.stats_interval_s
                self.publisher.publish(self._stats())
        return self._shutdown("end_of_stream" if ended else "shutdown")

    def _handle(self, events: list[Event]) -> None:
        clock = self.analysis.clock
        for e in events:
            clip = None
            if isinstance(e, ClassifiedCycle):
                self.stats.inference.add(e.inference_ms)
                self.publisher.publish(cycle_body(e, clock, self.model))
                self._last_cycle = e
                clip = self.clips.for_cycle(e)
            elif isinstance(e, AlertChanged):
                self.publisher.publish(alert_body(e, clock))
                if e.clinical and e.event in ("new", "update"):  # as the README promises
                    self.source.show_alert()  # the bedside LED, where the input has one
                clip = self.clips.for_alert(e, self._last_cycle)
            elif isinstance(e, SessionEnded):
                self.publisher.publish(summary_body(e, clock, self.model))
            if clip is not None:
                self.publisher.publish(clip)
        if events:
            self._home_assistant_state()

    def _home_assistant_state(self) -> None:
        if not self.cfg.homeassistant.enabled:
            return
        tracker = self.analysis.tracker
        assert tracker is not None
        state = homeassistant.HaState(frozenset(tracker.alerts), *tracker.live())
        self.publisher.retain(homeassistant.state_topic(self.cfg.mqtt.topic_prefix,
                                                        self.cfg.device_id), state.payload())

    def _observe(self) -> None:
        tracker = self.analysis.tracker
        assert tracker is not None
        delivery = self.publisher.delivery()
        change = self.health.observe(Observation(
            source_error=self.source_error or self.source.problem,
            no_audio=tracker.active("no_audio"),
            poor_signal=tracker.poor_signal or "",
            broker_unreachable=self.publisher.unreachable(),
            broker_refuses=self.publisher.refused(),
            spool_dropped=delivery.dropped_recent,
            storage=delivery.storage_problem()))
        if change is not None:
            self._report(change)
        if self.store is not None and self._trial_ends is not None:
            if self.stats.dropped_blocks > self._trial_dropped:
                self._fall_back("processing fell behind on it: capture dropped blocks")
            elif time.time() >= self._trial_ends:
                self.store.end_trial(self.cfg.model.watch_s)
                self._trial_ends = None
        if self.reload_requested:
            self.reload_requested = False
            self._check_reload()

    def _report(self, change: Change) -> None:
        log.log(logging.WARNING if change.reasons else logging.INFO, "status %s", change)
        self.publisher.set_status(*change.published)
        self.notifier.status(str(change))

    def _stats(self) -> Any:
        d = self.publisher.delivery()
        return self.stats.snapshot(
            self.analysis.stats, queue_depth=self.queue.qsize(), spool_depth=d.depth,
            spool_in_memory=d.in_memory, spool_dropped=d.dropped,
            spool_fault=d.fault or None, spool_stranded=d.stranded,
            clips_sent=self.clips.sent,
            clips_dropped=self.clips.dropped, runtime=self.runner.runtime,
            source=self.source.describe(), source_counters=self.source.counters())

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

    # -- model swaps -------------------------------------------------------------------------
    def _take_model(self, path: Path) -> str | None:
        """The package loaded and self-tested beside the running one, then classifying from
        the next cycle on (the capture and the session go on); one that hears differently is
        run by a clean restart. Returns why it cannot run, the running one untouched."""
        m = self.cfg.model
        try:
            runner = ModelRunner(path, m.num_threads, m.calibration, trusted_keys=m.trusted_keys)
            test = self_test(runner, path, m.max_window_ms)
        except ModelError as exc:
            return f"{path.name} failed on this device: {exc}"
        different = self.analysis.swap(runner)
        if different:
            log.info("model %s: %s; restarting cleanly to run it", path.name, different)
            self.stop.set()
            self._reexec = True
            return None
        self.runner, self.package = runner, path
        if self.store is not None:
            self.store.run_begins()
        self.model = ModelRef(runner.manifest.name, runner.manifest.version)
        active = self.store.active() if self.store else None
        self.publisher.set_model(self._running(active.why if active else "taken on SIGHUP"))
        self._trial_dropped = self.stats.dropped_blocks
        self._trial_ends = self.store.trial_ends(m.watch_s) if self.store else None
        log.info("model now %s %s from the next cycle (%s)", self.model.name, self.model.version,
                 test)
        return None

    def _running(self, note: str) -> RunningModel:
        """The status's account of the package running now."""
        return RunningModel(self.model.name, self.model.version,
                            sha256=sha256_of(self.package / "manifest.json"), note=note[:300])

    def _fall_back(self, why: str) -> None:
        """Back to the previous package; should that fail too, a clean restart starts on it
        or says why it cannot."""
        assert self.store is not None
        back = self.store.rollback(f"{self.package.name}: {why}")
        log.error("model: back to %s from %s: %s", back.current, back.previous, why)
        failed = self._take_model(self.store.root / back.current)
        if failed:
            log.error("model: %s; restarting", failed)
            self.stop.set()
            self._reexec = True

    def _check_reload(self) -> None:
        if self.config_path is None:
            log.warning("SIGHUP ignored: no config file to reload")
            return
        current = self.store.current() if self.store else None
        if current is not None and current != self.package \
                and self.config_path.read_text() == self.config_text:
            # `lungedge model install` or `rollback`, the config as it was
            failed = self._take_model(current)
            if failed and self.store is not None:
                back = self.store.rollback(failed)
                log.error("model: staying on %s: %s", back.current, failed)
            return
        try:
            load_config(self.config_path)
        except ConfigError as exc:
            log.error("SIGHUP: new config rejected, keeping the running one: %s", exc)
            return
        log.info("SIGHUP: config %s is valid; restarting cleanly with it", self.config_path)
        self.stop.set()
        self._reexec = True

    def _shutdown(self, reason: Literal["shutdown", "end_of_stream"]) -> int:
        self.notifier.stopping()
        self._handle(self.analysis.finish(reason))
        self.publisher.publish(self._stats())
        if not self.publisher.flush(timeout_s=10):
            log.warning("%d message(s) not yet acknowledged stay in the spool for next time",
                        self.publisher.delivery().depth)
        self.health.stop()
        if self.store is not None:
            self.store.stopped_cleanly()  # not a crash on trial
        self.publisher.close("offline", "shutdown")
        log.info("stopped")
        if self._reexec:
            os.execv(sys.executable, [sys.executable, "-m", "edge", *sys.argv[1:]])
        return 0 if not self.source_error else 1
