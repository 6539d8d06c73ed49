"""systemd's notify protocol (READY, STATUS, WATCHDOG, STOPPING) without libsystemd.

The watchdog is pinged only by the processing loop, and only after it has processed audio: a
pipeline that stalls stops the pings and systemd restarts it, whereas a ping from a side thread
would keep a dead daemon "alive". Without NOTIFY_SOCKET (not under systemd) every call is a
no-op, so the daemon runs the same from a shell.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock: socket.socket | None = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        pid = os.environ.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            usec = 0  # the watchdog is meant for another process
        self.watchdog_s = usec / 1e6
        self._last_ping = 0.0

    def send(self, **fields: str) -> None:
        if self.sock is None:
            return
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self.sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address, exc)

    def ready(self, status: str) -> None:
        self.send(READY="1", STATUS=status)

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def watchdog(self) -> None:
        """Called after audio was processed; pings at most every half watchdog interval."""
        if not self.watchdog_s:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_s / 2:
            self._last_ping = now
            self.send(WATCHDOG="1")

    def stopping(self) -> None:
        self.send(STOPPING="1")
