"""A private Mosquitto on a free local port, for the demo, the benchmarks and the tests.

Nothing is left running: `stop()` (or leaving the `with` block) ends it. It can be stopped and
started again on the same port, which is how the tests take the broker away from the daemon.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


class LocalBroker:
    def __init__(self, workdir: Path, *, persistence: bool = False, listener: str = "",
                 anonymous: bool = True) -> None:
        """`listener`: extra lines for the listener (TLS files, password_file)."""
        exe = find_mosquitto()
        if exe is None:
            raise FileNotFoundError("mosquitto is not installed (`sudo apt-get install "
                                    "mosquitto`)")
        self.exe = exe
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.conf = workdir / "mosquitto.conf"
        # As root, mosquitto would switch to user "mosquitto", who cannot write here.
        user = "user root\n" if os.geteuid() == 0 else ""
        store = (f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
                 if persistence else "persistence false\n")
        # a station that is away, or a burst of devices flushing their spools, must not meet
        # Mosquitto's default queue of 1000 messages per client (the rest are dropped)
        queue = "max_queued_messages 0\n"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\n{listener}"
                             f"allow_anonymous {str(anonymous).lower()}\n{store}{queue}{user}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)  # a Ctrl-C is for its owner
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> LocalBroker:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
