"""Audio inputs. Each yields `AudioBlock`s; `open_source` builds the one the config names."""

from __future__ import annotations

from edge.config import SourceConfig
from edge.sources.base import AudioBlock, AudioSource, SourceError

__all__ = ["AudioBlock", "AudioSource", "SourceError", "open_source"]


def open_source(cfg: SourceConfig) -> AudioSource:
    """Open the configured input; raises SourceError (with what to do) if it cannot be used."""
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
    from edge.sources.microphone import MicrophoneSource

    p = cfg.pyaudio
    return MicrophoneSource(device=p.device, sample_rate=p.sample_rate, channels=p.channels,
                            block_ms=cfg.block_ms, reopen_backoff_max_s=p.reopen_backoff_max_s)
