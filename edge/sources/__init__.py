"""Audio inputs. Each yields `AudioBlock`s; `open_source` builds the one the config names."""

from __future__ import annotations

from edge.sources.base import AudioBlock, AudioSource, SourceError
from edge.sources.settings import SourceConfig

__all__ = ["AudioBlock", "AudioSource", "SourceError", "open_source"]


def open_source(cfg: SourceConfig, wait: bool = False) -> AudioSource:
    """Open the configured input; raises SourceError (with what to do) if it cannot be used.
    With `wait`, a device that is not there yet (a stethoscope or a sound card) is waited for
    instead (edge.sources.waiting); a file or a pipe that is not there is still an error."""
    if wait and cfg.type in ("serial", "pyaudio"):
        try:
            return open_source(cfg)
        except SourceError as exc:
            from edge.sources.waiting import WaitingSource

            device = cfg.serial if cfg.type == "serial" else cfg.pyaudio
            what = (f"stethoscope {cfg.serial.port}" if cfg.type == "serial"
                    else f"audio input {cfg.pyaudio.device!r}")
            return WaitingSource(lambda: open_source(cfg), device.sample_rate, what, exc,
                                 device.reopen_backoff_max_s)
    if cfg.type == "file":
        from edge.sources.file import FileSource

        assert cfg.file.path is not None  # guaranteed by SourceConfig.validate
        return FileSource(cfg.file.path, block_ms=cfg.block_ms, realtime=cfg.file.realtime,
                          loop=cfg.file.loop)
    if cfg.type == "stdin":
        from edge.sources.stdin import StdinSource

        return StdinSource(cfg.stdin.sample_rate, channels=cfg.stdin.channels,
                           block_ms=cfg.block_ms)
    if cfg.type == "serial":
        from edge.sources.serial import SerialSource

        sc = cfg.serial
        assert sc.port is not None  # guaranteed by SourceConfig.validate
        return SerialSource(sc.port, sample_rate=sc.sample_rate, baud=sc.baud,
                            gain_db=sc.gain_db, stall_timeout_s=sc.stall_timeout_s,
                            reopen_backoff_max_s=sc.reopen_backoff_max_s)
    from edge.sources.sound_card import SoundCardSource

    p = cfg.pyaudio
    return SoundCardSource(device=p.device, sample_rate=p.sample_rate, channels=p.channels,
                            block_ms=cfg.block_ms, reopen_backoff_max_s=p.reopen_backoff_max_s)
