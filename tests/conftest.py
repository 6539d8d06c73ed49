"""Shared fixtures: the shipped samples, ../shared/data when present, synthetic audio."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "models" / "samples"
SHARED_DATA = Path(os.environ.get("LUNGEDGE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def sample_wavs() -> list[Path]:
    wavs = sorted(SAMPLES.glob("*.wav"))
    assert len(wavs) == 3, f"expected the 3 shipped sample recordings in {SAMPLES}"
    return wavs


@pytest.fixture(scope="session")
def sprsound() -> Path:
    path = SHARED_DATA / "sprsound"
    if not (path / "test_inter").is_dir():
        pytest.skip(f"SPRSound not found at {path} (set LUNGEDGE_SHARED_DATA to the folder "
                    "holding sprsound/); CI has it, a fresh clone does not")
    return path


def breathing(rate: int, seconds: float, cycles: list[tuple[float, float]],
              seed: int = 0) -> np.ndarray:
    """Synthetic chest audio: quiet noise with louder band-limited noise bursts (breaths)."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    x = rng.standard_normal(n) * 0.002
    t = np.arange(n) / rate
    for start, end in cycles:
        inside = (t >= start) & (t < end)
        ramp = np.sin(np.pi * (t[inside] - start) / (end - start))
        x[inside] += rng.standard_normal(inside.sum()) * 0.05 * ramp
    return x.astype(np.float32)


class Broker:
    """A real Mosquitto on a free port, which a test may stop and start again (same port).

    Persistence is on, so a subscriber's session and its queued QoS 1 messages survive a
    restart: what a subscriber misses is then the publisher's fault, not the test's."""

    def __init__(self, workdir: Path) -> None:
        import shutil
        import socket

        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            pytest.skip("mosquitto not installed (`apt-get install mosquitto`; `make test` "
                        "installs it)")
        self.exe = exe
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = workdir / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             f"persistence true\npersistence_location {workdir}/\n{user}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        import socket
        import time

        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    b = Broker(tmp_path)
    yield b
    b.stop()
